"""Typed wrappers over the C kernels: the only module that imports ``tet._native``.

Every call returns a `tet_status`; `_check` turns a failure into the matching
`TetError` subclass through one table.  Arrays cross with ``ffi.from_buffer``
(no copies) and CFFI releases the GIL for the duration of each call.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from tet import _native
from tet.errors import CatalogError, ChunkError, TetError

__all__ = [
    "Gather",
    "copy_strided",
    "encode",
    "gather",
    "simd_level",
    "simd_levels",
    "thread_count",
    "using_simd",
]

ffi: Any = _native.ffi
lib: Any = _native.lib

_SIMD_NAMES = ("scalar", "avx2", "neon")
lib.tet_dispatch_init()

U64 = np.dtype("<u8")


def simd_level() -> str:
    """Name of the SIMD body in use ("scalar", "avx2" or "neon")."""
    return _SIMD_NAMES[lib.tet_simd_get()]


def simd_levels() -> list[str]:
    """The SIMD bodies this CPU can run, scalar first."""
    return [n for i, n in enumerate(_SIMD_NAMES) if lib.tet_simd_supported(i)]


@contextmanager
def using_simd(name: str) -> Iterator[None]:
    """Test hook: run the block with one SIMD body, then restore the previous one."""
    previous = lib.tet_simd_get()
    if lib.tet_simd_set(_SIMD_NAMES.index(name)) != 0:
        raise TetError(f"SIMD body {name!r} is not available on this CPU ({simd_levels()})")
    try:
        yield
    finally:
        lib.tet_simd_set(previous)


def thread_count() -> int:
    """Worker threads for chunk loops: ``TET_THREADS`` or the CPUs we may run on."""
    env = os.environ.get("TET_THREADS")
    if env is not None and env.isdigit() and int(env) > 0:
        return min(int(env), 64)
    return max(1, min(len(os.sched_getaffinity(0)), 64))


def zstd_error_name(code: int) -> str:
    return str(ffi.string(lib.tet_zstd_error_name(code)).decode())


# status -> exception class; messages are built by `_check`, which knows the row.
_STATUS: dict[int, type[TetError]] = {
    lib.TET_ERR_ARGUMENT: TetError,
    lib.TET_ERR_NOMEM: TetError,
    lib.TET_ERR_BOUNDS: ChunkError,
    lib.TET_ERR_CODEC: ChunkError,
    lib.TET_ERR_ZSTD: ChunkError,
    lib.TET_ERR_LENGTH: ChunkError,
    lib.TET_ERR_TILE: ChunkError,
    lib.TET_ERR_THREAD: TetError,
    lib.TET_ERR_SIMD: TetError,
}


@dataclass(frozen=True)
class _Failure:
    status: int
    chunk: int
    detail: int


def _check(report: Any, what: str, explain: Callable[[_Failure], str]) -> None:
    status = int(report.status)
    if status == 0:
        return
    failure = _Failure(status, int(report.chunk), int(report.detail))
    cls = _STATUS.get(status, TetError)
    raise cls(f"{what}: {explain(failure)}")


def _u64(a: np.ndarray[Any, Any]) -> Any:
    return ffi.from_buffer("uint64_t[]", np.ascontiguousarray(a, dtype=U64))


@dataclass(frozen=True)
class Gather:
    """A read plan in the shape the C gather wants: one row per touched chunk."""

    payload_offset: np.ndarray[Any, Any]
    stored_len: np.ndarray[Any, Any]
    raw_len: np.ndarray[Any, Any]
    codec: np.ndarray[Any, Any]
    tile_shape: np.ndarray[Any, Any]   # [n, ndim]
    src_start: np.ndarray[Any, Any]    # [n, ndim]
    count: np.ndarray[Any, Any]        # [n, ndim]
    dst_start: np.ndarray[Any, Any]    # [n, ndim]
    step: tuple[int, ...]


def gather(
    file: Any,
    file_len: int,
    plan: Gather,
    dst: np.ndarray[Any, Any],
    *,
    describe: Callable[[int], str],
) -> None:
    """Decode the planned chunks of `file` into `dst` (C-contiguous, writable) in one call."""
    if not dst.flags.c_contiguous or not dst.flags.writeable:
        raise TetError("gather destination must be a writable C-contiguous array")
    ndim = dst.ndim
    keep = [
        np.ascontiguousarray(a, dtype=U64)
        for a in (plan.payload_offset, plan.stored_len, plan.raw_len, plan.tile_shape,
                  plan.src_start, plan.count, plan.dst_start)
    ]
    codec = np.ascontiguousarray(plan.codec, dtype="<u4")
    step = np.asarray(plan.step, dtype=U64)
    shape = np.asarray(dst.shape, dtype=U64)
    c = ffi.new("tet_gather_plan *")
    file_ptr = ffi.from_buffer("uint8_t[]", file) if file_len else ffi.NULL
    c.file = file_ptr
    c.file_len = file_len
    c.ndim = ndim
    c.elem_size = dst.dtype.itemsize
    c.n_chunks = len(codec)
    ptrs = [ffi.from_buffer("uint64_t[]", a) for a in keep]
    (c.payload_offset, c.stored_len, c.raw_len, c.tile_shape,
     c.src_start, c.count, c.dst_start) = ptrs
    codec_ptr = ffi.from_buffer("uint32_t[]", codec)
    c.codec = codec_ptr
    step_ptr, shape_ptr = _u64(step), _u64(shape)
    c.step, c.dst_shape = step_ptr, shape_ptr
    dst_ptr = ffi.from_buffer("uint8_t[]", dst, require_writable=True)
    c.dst = dst_ptr
    c.threads = thread_count()
    report = ffi.new("tet_report *")
    lib.tet_gather(c, report)
    elem = dst.dtype.itemsize

    def explain(f: _Failure) -> str:
        where = describe(f.chunk) if f.chunk >= 0 else "read plan"
        raw = int(plan.raw_len[f.chunk]) if f.chunk >= 0 else 0
        if f.status == lib.TET_ERR_ZSTD:
            return f"{where}: zstd decode failed: {zstd_error_name(f.detail)}"
        if f.status == lib.TET_ERR_LENGTH:
            return f"{where}: decoded payload length {f.detail} != raw_byte_len {raw}"
        if f.status == lib.TET_ERR_TILE:
            tile = int(np.prod(plan.tile_shape[f.chunk], dtype=np.uint64))
            return f"{where}: tile has {tile} values but raw_byte_len implies {raw // elem}"
        if f.status == lib.TET_ERR_BOUNDS:
            a = int(plan.payload_offset[f.chunk])
            b = a + int(plan.stored_len[f.chunk])
            return f"{where}: chunk payload [{a}, {b}) out of bounds for file length {file_len}"
        if f.status == lib.TET_ERR_CODEC:
            return f"{where}: unsupported codec {f.detail} (supported: 0 = raw, 1 = zstd)"
        if f.status == lib.TET_ERR_NOMEM:
            return f"could not allocate a {f.detail}-byte decode buffer"
        return f"{where}: internal read plan error (status {f.status})"

    _check(report, "read failed", explain)


def encode(
    src: np.ndarray[Any, Any],
    origin: np.ndarray[Any, Any],
    extent: np.ndarray[Any, Any],
    *,
    codec: int,
    level: int,
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Cut tiles [origin, origin+extent) out of `src` and encode each (0 raw, 1 zstd).

    Returns (payload bytes back to back, per-tile stored lengths).
    """
    src = np.ascontiguousarray(src)
    n, ndim = extent.shape
    elem = src.dtype.itemsize
    raw = np.prod(extent, axis=1, dtype=U64) * np.uint64(elem)
    cap = sum(int(lib.tet_encode_capacity(codec, int(r))) for r in raw) if codec else int(raw.sum())
    out = np.empty(max(cap, 1), dtype=np.uint8)
    out_len = np.zeros(n, dtype=U64)
    origin_c = np.ascontiguousarray(origin, dtype=U64)
    extent_c = np.ascontiguousarray(extent, dtype=U64)
    shape = np.asarray(src.shape, dtype=U64)
    c = ffi.new("tet_encode_plan *")
    src_ptr = ffi.from_buffer("uint8_t[]", src)
    shape_ptr, origin_ptr, extent_ptr = _u64(shape), _u64(origin_c), _u64(extent_c)
    out_ptr = ffi.from_buffer("uint8_t[]", out, require_writable=True)
    len_ptr = ffi.from_buffer("uint64_t[]", out_len, require_writable=True)
    c.src, c.ndim, c.elem_size, c.src_shape = src_ptr, ndim, elem, shape_ptr
    c.n_chunks, c.origin, c.extent = n, origin_ptr, extent_ptr
    c.codec, c.level = codec, level
    c.out, c.out_capacity, c.out_len = out_ptr, cap, len_ptr
    c.threads = thread_count()
    report = ffi.new("tet_report *")
    lib.tet_encode(c, report)

    def explain(f: _Failure) -> str:
        if f.status == lib.TET_ERR_ZSTD:
            return f"tile {f.chunk}: zstd compression failed: {zstd_error_name(f.detail)}"
        return f"tile {f.chunk}: invalid encode plan (status {f.status}, detail {f.detail})"

    try:
        _check(report, "write failed", explain)
    except TetError as exc:
        raise CatalogError(str(exc)) from None
    return out[: int(out_len.sum())], out_len


def copy_strided(level: str, src: np.ndarray[Any, Any], step: int) -> np.ndarray[Any, Any]:
    """Test hook: ``src[::step]`` of a 1-d array through one SIMD body."""
    src = np.ascontiguousarray(src)
    count = -(-len(src) // step)
    dst = np.empty(count, dtype=src.dtype)
    status = lib.tet_copy_strided(
        _SIMD_NAMES.index(level), src.dtype.itemsize,
        ffi.from_buffer("uint8_t[]", dst, require_writable=True),
        ffi.from_buffer("uint8_t[]", src), count, step,
    )
    if status != 0:
        raise TetError(f"SIMD body {level!r} is not available on this CPU")
    return dst
