"""The compiled kernels' boundary: the only module that imports ``tet._native``.

It loads the extension (`ffi`, `lib`; ``TET_NATIVE`` names another build), compares
NumPy structured dtypes with the C structs they stand for (`layout_mismatch`), hands
spans of a mapped file to C (`span_struct`, `run_spans`) and turns a failed call's
`tet_report` into the matching `TetError` subclass through one table (`check_report`).
The typed wrappers over the calls are `tet.kernels`'; the SIMD bodies `tet.simd`'s.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tet.errors import CatalogError, ChunkError, MemoryBudgetError, TetError

__all__ = [
    "U64",
    "U64_MAX",
    "Failure",
    "check_report",
    "ffi",
    "layout_mismatch",
    "lib",
    "missing_library",
    "run_spans",
    "span_struct",
    "thread_failure",
    "u64_ptr",
    "zstd_error_name",
]


def _load_native() -> Any:
    """``tet._native``; with ``TET_NATIVE`` set, the extension file it names instead (a
    sanitizer build in build/asan, say), so the build in the tree is never replaced."""
    path = os.environ.get("TET_NATIVE")
    if not path:
        from tet import _native  # type: ignore[attr-defined]

        return _native
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("tet._native", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"TET_NATIVE={path!r} is not a loadable extension module")
    module = importlib.util.module_from_spec(spec)
    sys.modules["tet._native"] = module
    spec.loader.exec_module(module)
    return module


_LIBRARY_HINTS = {
    "libzstd": "the zstd runtime library: Debian/Ubuntu `apt install libzstd1`, Fedora "
               "`dnf install libzstd`, macOS `brew install zstd`, or a manylinux wheel of "
               "tet, which carries its own copy",
}


def missing_library(exc: ImportError, module: str = "") -> ImportError | None:
    """One clear error for an extension that cannot load because a shared library it
    links is not installed (the loader's text names it), or None for other failures
    (among them the extension file `module` itself missing)."""
    m = re.search(r"([\w.+-]+\.(?:so[.\d]*|dylib))[^:]*: cannot open shared object file",
                  str(exc)) or re.search(r"Library not loaded: \S*?([\w.+-]+\.dylib)", str(exc))
    if m is None:
        return None
    name = m.group(1)
    if module and name == os.path.basename(module):
        return None
    hint = next((h for k, h in _LIBRARY_HINTS.items() if name.startswith(k)),
                "install the system package that provides it")
    return ImportError(f"tet's compiled kernels need {name}, which is not installed ({hint})",
                       name="tet._native")


try:
    _native = _load_native()
except ImportError as exc:
    clear = missing_library(exc, os.environ.get("TET_NATIVE", ""))
    if clear is None:
        raise
    raise clear from exc
ffi: Any = _native.ffi
lib: Any = _native.lib

lib.tet_dispatch_init()  # picks the SIMD body (tet.simd names them)

U64 = np.dtype("<u8")
U64_MAX = 2**64 - 1
_C_SCALARS = {"double": np.dtype("<f8"), "uint64_t": np.dtype("<u8"), "uint32_t": np.dtype("<u4"),
              "int64_t": np.dtype("<i8"), "int32_t": np.dtype("<i4")}


def layout_mismatch(ctype: str, dtype: np.dtype[Any]) -> str | None:
    """How the NumPy structured `dtype` differs from the C struct `ctype` of the extension
    (field names in order, each field's offset and scalar type, the size), or None."""
    c_fields = ffi.typeof(ctype).fields
    names = list(dtype.names or ())
    fields: Mapping[str, tuple[Any, ...]] = dtype.fields or {}
    if names != [name for name, _ in c_fields]:
        return f"{ctype} has fields {[name for name, _ in c_fields]}, the NumPy dtype {names}"
    for name, field in c_fields:
        c_type, c_offset = _C_SCALARS.get(field.type.cname), ffi.offsetof(ctype, name)
        np_type, offset = fields[name][0], fields[name][1]
        if c_offset != offset or c_type != np_type:
            return (f"{ctype}.{name} is {c_type} at byte {c_offset} in C, {np_type} at byte "
                    f"{offset} in NumPy")
    if ffi.sizeof(ctype) != dtype.itemsize:
        return f"{ctype} is {ffi.sizeof(ctype)} bytes in C, {dtype.itemsize} in NumPy"
    return None



def zstd_error_name(code: int) -> str:
    return str(ffi.string(lib.tet_zstd_error_name(code)).decode())


# status -> exception class; messages are built by `check_report`, which knows the row.
_STATUS: dict[int, type[TetError]] = {
    lib.TET_ERR_ARGUMENT: TetError,
    lib.TET_ERR_NOMEM: MemoryBudgetError,
    lib.TET_ERR_BOUNDS: ChunkError,
    lib.TET_ERR_CODEC: ChunkError,
    lib.TET_ERR_ZSTD: ChunkError,
    lib.TET_ERR_LENGTH: ChunkError,
    lib.TET_ERR_TILE: ChunkError,
    lib.TET_ERR_THREAD: TetError,
    lib.TET_ERR_SIMD: TetError,
    lib.TET_ERR_MISSING: CatalogError,
    lib.TET_ERR_OVERFLOW: CatalogError,
}
U64_MAX = 2**64 - 1


@dataclass(frozen=True)
class Failure:
    status: int
    chunk: int
    detail: int


def thread_failure(errno: int) -> str:
    """What a call that could not start its worker threads says (``TET_ERR_THREAD``)."""
    return (f"could not start a worker thread: {os.strerror(errno)} (errno {errno}); "
            f"TET_THREADS=1 runs on the calling thread alone")


def check_report(report: Any, what: str, explain: Callable[[Failure], str]) -> None:
    status = int(report.status)
    if status == 0:
        return
    failure = Failure(status, int(report.chunk), int(report.detail))
    cls = _STATUS.get(status, TetError)
    text = thread_failure(failure.detail) if status == lib.TET_ERR_THREAD else explain(failure)
    if cls is ChunkError:  # the failing tile travels as a field, not only in the text
        raise ChunkError(f"{what}: {text}",
                         tile_index=failure.chunk if failure.chunk >= 0 else None)
    raise cls(f"{what}: {text}")


def u64_ptr(a: np.ndarray[Any, Any]) -> Any:
    return ffi.from_buffer("uint64_t[]", np.ascontiguousarray(a, dtype=U64))


def span_struct(file: Any, file_len: int, offset: np.ndarray[Any, Any],
                length: np.ndarray[Any, Any], threads: int) -> tuple[Any, list[Any]]:
    """A ``tet_spans`` over [offset, offset + length) of `file` (a mapping of `file_len`
    bytes), and the buffers it points into (`run_spans` lets go of the file's)."""
    s = ffi.new("tet_spans *")
    off = np.ascontiguousarray(offset, dtype=U64)
    n_bytes = np.ascontiguousarray(length, dtype=U64)
    keep = [ffi.from_buffer("uint8_t[]", file) if file_len else ffi.NULL,
            ffi.from_buffer("uint64_t[]", off), ffi.from_buffer("uint64_t[]", n_bytes)]
    s.file, s.offset, s.length = keep
    s.file_len, s.n = file_len, len(off)
    s.threads = threads
    return s, keep


def run_spans(call: Callable[[Any, Any], Any], spans: Any, keep: list[Any], what: str,
              explain: Callable[[Failure], str]) -> None:
    """Run one kernel over `spans`, let go of the file buffer whatever happens, then
    raise what its report says (`explain` words a failure)."""
    report = ffi.new("tet_report *")
    try:
        call(spans, report)
    finally:
        if keep and keep[0] != ffi.NULL:
            ffi.release(keep[0])
    check_report(report, what, explain)

