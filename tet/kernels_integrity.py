"""Integrity kernels: CRC-32C of bytes and of a mapped file's spans, and the streamed
zstd frame check that `tet verify --deep` runs (csrc/checksum.c)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tet.errors import TetError
from tet.kernels import thread_count
from tet.native import U64, Failure, ffi, lib, run_spans, span_struct, zstd_error_name
from tet.simd import SIMD_NAMES, simd_levels

__all__ = ["FRAME_OK", "FRAME_TOO_BIG", "check_frames", "crc32c", "crc32c_spans",
           "frame_problem"]


def _threads(threads: int | None) -> int:
    return thread_count() if threads is None else threads


def crc32c(data: Any, *, crc: int = 0, level: str | None = None) -> int:
    """CRC-32C (Castagnoli, as in iSCSI and ext4) of a contiguous bytes-like object,
    continuing `crc`; through the active SIMD body, or `level`'s (a test hook)."""
    out = ffi.new("uint32_t *", crc)
    which = lib.tet_simd_get() if level is None else SIMD_NAMES.index(level)
    with memoryview(data) as whole, whole.cast("B") as view:
        buf = ffi.from_buffer("uint8_t[]", view) if len(view) else ffi.NULL
        try:
            status = lib.tet_crc32c(which, buf, len(view), out)
        finally:
            if buf != ffi.NULL:
                ffi.release(buf)  # the caller may close a mapping at once
    if status != 0:
        raise TetError(f"SIMD body {level!r} is not available on this CPU ({simd_levels()})")
    return int(out[0])


def crc32c_spans(file: Any, file_len: int, offset: np.ndarray[Any, Any],
                 length: np.ndarray[Any, Any], *, threads: int | None = None
                 ) -> np.ndarray[Any, Any]:
    """crc32c of each span [offset, offset + length) of a mapped file, in one threaded
    call (nothing is copied or allocated beyond the uint32 result)."""
    s, keep = span_struct(file, file_len, offset, length, _threads(threads))
    out = np.empty(len(offset), dtype=np.uint32)
    s.crc = ffi.from_buffer("uint32_t[]", out, require_writable=True)

    def explain(f: Failure) -> str:
        if f.status == lib.TET_ERR_BOUNDS:
            a = int(offset[f.chunk])
            return f"span {f.chunk}: [{a}, {a + int(length[f.chunk])}) is outside the file " \
                f"of {file_len} bytes"
        return f"status {f.status}"

    run_spans(lib.tet_crc32c_spans, s, keep, "checksum failed", explain)
    return out


FRAME_OK: int = int(lib.TET_OK)
FRAME_TOO_BIG: int = int(lib.TET_ERR_NOMEM)


def check_frames(file: Any, file_len: int, offset: np.ndarray[Any, Any],
                 stored: np.ndarray[Any, Any], raw: np.ndarray[Any, Any], *, window: int,
                 max_need: int, threads: int | None = None
                 ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Decode each span as zstd through a `window`-byte buffer per thread and check its
    length and frame checksum; returns (status, detail) per span (`FRAME_OK`, or a
    failure `frame_problem` explains; `FRAME_TOO_BIG` when a frame's decoder would need
    more than `max_need` bytes, detail = what it needs)."""
    s, keep = span_struct(file, file_len, offset, stored, _threads(threads))
    raw_c = np.ascontiguousarray(raw, dtype=U64)
    status = np.empty(len(offset), dtype=np.int32)
    detail = np.empty(len(offset), dtype=U64)
    keep += [ffi.from_buffer("uint64_t[]", raw_c)]
    s.raw = keep[-1]
    s.status = ffi.from_buffer("int32_t[]", status, require_writable=True)
    s.detail = ffi.from_buffer("uint64_t[]", detail, require_writable=True)
    s.window, s.max_need = window, max_need

    def explain(f: Failure) -> str:
        if f.status == lib.TET_ERR_NOMEM:
            return f"could not allocate a {f.detail}-byte decode window"
        return f"invalid frame check (status {f.status})"

    run_spans(lib.tet_check_frames, s, keep, "decode check failed", explain)
    return status, detail


def frame_problem(status: int, detail: int, offset: int, stored: int, raw: int) -> str:
    """What a failed `check_frames` status says about its span, in the words reads use."""
    if status == lib.TET_ERR_ZSTD:
        return f"zstd decode failed: {zstd_error_name(detail)}"
    if status == lib.TET_ERR_LENGTH:
        return f"decoded payload length {detail} != raw_byte_len {raw}"
    if status == lib.TET_ERR_BOUNDS:
        return f"chunk payload [{offset}, {offset + stored}) out of bounds"
    return f"decode check failed (status {status}, detail {detail})"
