"""The SIMD bodies of the kernels: which one runs (`simd_level`), which this CPU can
run (`simd_levels`), and test hooks that switch the body for a block (`using_simd`) or
run one kernel through a named body (`minmax_f32`, `copy_strided`).

A body is named by the C enum ``tet_simd``'s member without its prefix: "scalar",
"avx2", "neon" (`SIMD_NAMES`); ``csrc/dispatch.c`` picks the best one at load time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from tet.errors import TetError
from tet.native import ffi, lib

__all__ = ["SIMD_NAMES", "copy_strided", "minmax_f32", "simd_level", "simd_levels",
           "using_simd"]

# The SIMD levels are the C enum's members, named without their prefix: "scalar", "avx2", ...
SIMD_NAMES: tuple[str, ...] = tuple(
    name.removeprefix("TET_SIMD_").lower()
    for _, name in sorted(ffi.typeof("tet_simd").elements.items()))


def simd_level() -> str:
    """Name of the SIMD body in use ("scalar", "avx2" or "neon")."""
    return SIMD_NAMES[int(lib.tet_simd_get())]


def simd_levels() -> list[str]:
    """The SIMD bodies this CPU can run, scalar first."""
    return [n for i, n in enumerate(SIMD_NAMES) if lib.tet_simd_supported(i)]


@contextmanager
def using_simd(name: str) -> Iterator[None]:
    """Test hook: run the block with one SIMD body, then restore the previous one."""
    previous = lib.tet_simd_get()
    if lib.tet_simd_set(SIMD_NAMES.index(name)) != 0:
        raise TetError(f"SIMD body {name!r} is not available on this CPU ({simd_levels()})")
    try:
        yield
    finally:
        lib.tet_simd_set(previous)



def minmax_f32(level: str, src: np.ndarray[Any, Any]) -> tuple[float, float, bool]:
    """Test hook: (min, max, has NaN) of a float32 vector through one SIMD body."""
    src = np.ascontiguousarray(src, dtype=np.float32)
    lo, hi, nan = ffi.new("float *"), ffi.new("float *"), ffi.new("int32_t *")
    buf = ffi.from_buffer("uint8_t[]", src) if len(src) else ffi.NULL
    if lib.tet_minmax_f32(SIMD_NAMES.index(level), buf, len(src), lo, hi, nan) != 0:
        raise TetError(f"SIMD body {level!r} is not available on this CPU")
    return float(lo[0]), float(hi[0]), bool(nan[0])


def copy_strided(level: str, src: np.ndarray[Any, Any], step: int) -> np.ndarray[Any, Any]:
    """Test hook: ``src[::step]`` of a 1-d array through one SIMD body."""
    src = np.ascontiguousarray(src)
    count = -(-len(src) // step)
    dst = np.empty(count, dtype=src.dtype)
    status = lib.tet_copy_strided(
        SIMD_NAMES.index(level), src.dtype.itemsize,
        ffi.from_buffer("uint8_t[]", dst, require_writable=True),
        ffi.from_buffer("uint8_t[]", src), count, step,
    )
    if status != 0:
        raise TetError(f"SIMD body {level!r} is not available on this CPU")
    return dst

