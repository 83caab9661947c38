"""Typed wrappers over the C kernels (loaded by `tet.native`).

Every call returns a `tet_status`; `tet.native.check_report` turns a failure into the
matching `TetError` subclass through one table.  Arrays cross with ``ffi.from_buffer``
(no copies) and CFFI releases the GIL for the duration of each call.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tet.errors import CatalogError, MemoryBudgetError, TetError
from tet.guard import GuardedMap
from tet.native import (
    U64,
    U64_MAX,
    Failure,
    check_report,
    ffi,
    layout_mismatch,
    lib,
    u64_ptr,
    zstd_error_name,
)
from tet.query.budget import WORK_FLOOR, allocate, require_memory

__all__ = [
    "FillMask",
    "TileTable",
    "encode",
    "encode_capacity",
    "thread_count",
    "transform",
]


_ACC_F64 = ("n", "sum", "sum_c", "mean", "m2", "shift", "nn", "nn_sum", "nn_sum_c", "nn_mean",
            "nn_m2", "nn_shift", "abs_sum", "abs_c", "sq_sum", "sq_c", "prod", "min", "max")
_ACC_U64 = ("argmin", "argmax", "first_nan", "nan_count", "inf_count", "null_count")
ACC_DTYPE = np.dtype([(f, "<f8") for f in _ACC_F64] + [(f, "<u8") for f in _ACC_U64])
# Accumulator arrays are handed to the C folds as tet_acc[]: the two must agree field by field.
if (_acc_problem := layout_mismatch("tet_acc", ACC_DTYPE)) is not None:
    raise ImportError(f"tet._native does not match tet/kernels.py ({_acc_problem}); rebuild it")
PARALLEL_BYTES = 4 * 1024 * 1024  # below this a read runs on the calling thread
MAX_THREADS: int = int(lib.TET_MAX_THREADS)  # threads one kernel call runs on, at most
UNBOUNDED = 2**63  # the budget of a table built without one
MASK_MAX: int = int(lib.TET_MASK_MAX)


def thread_count() -> int:
    """Worker threads for chunk loops: ``TET_THREADS`` or the CPUs we may run on."""
    env = os.environ.get("TET_THREADS")
    if env is not None and env.isascii() and env.isdigit() and int(env) > 0:
        return min(int(env), MAX_THREADS)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cpus or 1, MAX_THREADS))


def _threads(threads: int | None) -> int:
    return thread_count() if threads is None else threads


class FillMask:
    """Fill values that a fold or a read treats as NaN (the C ``tet_mask``).

    `values` are already of `dtype` (the dataset's: they are compared with the stored
    elements exactly); NaN is never among them.  Reads produce `out_dtype`: the
    dataset's own dtype for floats, float64 for integers (which cannot hold NaN).
    """

    def __init__(self, dtype: np.dtype[Any], values: Sequence[Any]) -> None:
        if not 1 <= len(values) <= MASK_MAX:
            raise ValueError(f"a fill mask holds 1..{MASK_MAX} values, got {len(values)}")
        self.dtype = np.dtype(dtype)
        self.values = np.asarray(values, dtype=self.dtype)
        self.out_dtype = self.dtype if self.dtype.kind == "f" else np.dtype("<f8")
        m = ffi.new("tet_mask *")
        m.n = len(values)
        if self.dtype.kind in "iu" and self.dtype.itemsize == 8:
            bits = self.values.astype(self.dtype.newbyteorder("<")).view("<u8")
            for i, b in enumerate(bits.tolist()):
                m.bits[i] = b
        else:
            for i, v in enumerate(self.values.astype(np.float64).tolist()):
                m.value[i] = v
        self.struct = m


class TileTable:
    """One dataset's tiles in linear grid order, ready for the C box loops.

    Built once per dataset (vectorised); a tile without an index row has codec
    `MISSING`.  Holds the C struct so a read costs one struct fill and one call.
    """

    MISSING: int = int(lib.TET_TILE_MISSING)
    cache_raw = False  # raw tiles are read from the mapping: `tet.tilecache` skips them

    def __init__(self, file: Any, file_len: int, shape: tuple[int, ...],
                 chunk_shape: tuple[int, ...], dtype: int, elem_size: int,
                 offset: np.ndarray[Any, Any],
                 stored: np.ndarray[Any, Any], raw: np.ndarray[Any, Any],
                 codec: np.ndarray[Any, Any], *,
                 budget: Callable[[], int] | None = None) -> None:
        self.shape, self.chunk_shape, self.elem_size = shape, chunk_shape, elem_size
        self._budget = budget  # the default memory budget (the file's settings)
        self._zstd_tile: int | None = None
        self.offset = np.ascontiguousarray(offset, dtype=U64)
        self.stored = np.ascontiguousarray(stored, dtype=U64)
        self.raw = np.ascontiguousarray(raw, dtype=U64)
        self.codec = np.ascontiguousarray(codec, dtype="<u4")
        t = ffi.new("tet_tiles *")
        self._keep = [
            ffi.from_buffer("uint8_t[]", file) if file_len else ffi.NULL,
            u64_ptr(np.asarray(shape, dtype=U64)), u64_ptr(np.asarray(chunk_shape, dtype=U64)),
            ffi.from_buffer("uint64_t[]", self.offset), ffi.from_buffer("uint64_t[]", self.stored),
            ffi.from_buffer("uint64_t[]", self.raw), ffi.from_buffer("uint32_t[]", self.codec),
        ]
        t.file, t.shape, t.chunk_shape, t.offset, t.stored, t.raw, t.codec = self._keep
        t.file_len, t.ndim, t.elem_size, t.n_tiles = file_len, len(shape), elem_size, len(offset)
        t.dtype = dtype
        self._struct = t
        # A file truncated under a call reads zeros there (csrc/guard.c): each call that
        # reads the mapping checks its flag and raises FileChangedError instead.
        self._guard: GuardedMap | None = file if isinstance(file, GuardedMap) else None

    def release(self) -> None:
        """Drop the reference to the file buffer (the mapping may then close)."""
        for obj in self._keep[:1]:
            if obj != ffi.NULL:
                ffi.release(obj)
        self._keep.clear()

    def _box(self, start: Sequence[int], stop: Sequence[int], step: Sequence[int]) -> Any:
        b = ffi.new("tet_box *")
        n = len(start)
        # a step at least the extent selects the start alone, whatever its size: clamp
        # steps beyond u64 (a Python slice may carry one) to the largest the C box holds
        b.start[0:n], b.stop[0:n] = start, stop
        b.step[0:n] = [min(int(k), U64_MAX) for k in step]
        return b

    def budget(self, budget: int | None = None) -> int:
        """`budget`, else the default this table was built with (the file's settings);
        a table built without one leaves memory to its caller (no limit)."""
        if budget is not None:
            return budget
        return self._budget() if self._budget is not None else UNBOUNDED

    @property
    def zstd_tile_bytes(self) -> int:
        """Decode scratch one worker needs: the largest tile's bytes when any tile is
        zstd (a zstd row must decode to exactly its tile), else 0."""
        if self._zstd_tile is None:
            full = math.prod(min(c, n) for c, n in zip(self.chunk_shape, self.shape))
            zstd = bool((self.codec == lib.TET_CODEC_ZSTD).any())
            self._zstd_tile = full * self.elem_size if zstd else 0
        return self._zstd_tile

    def _workers(self, threads: int, budget: int, fixed: int, what: str) -> int:
        """Threads whose zstd scratch (one tile each) fits the budget beside `fixed`
        bytes; fewer threads when needed, an error when not even one fits."""
        tile = self.zstd_tile_bytes
        if tile == 0:
            return threads
        limit = max(budget, WORK_FLOOR)
        fit = (limit - fixed) // tile if limit > fixed else 0
        if fit < 1:
            require_memory(fixed + tile, budget,
                           f"{what} with a zstd decode scratch of one {tile}-byte tile")
        return max(1, min(threads, fit))

    def touch(self, start: Sequence[int], stop: Sequence[int],
              step: Sequence[int]) -> np.ndarray[Any, Any]:
        """Linear grid ids of the tiles a box touches, in grid order."""
        box = self._box(start, stop, step)
        count = ffi.new("uint64_t *")
        status = lib.tet_box_touch(self._struct, box, ffi.NULL, 0, count)
        if status == lib.TET_ERR_OVERFLOW:
            raise CatalogError(self._overflow_message())
        if status != 0:
            raise TetError("invalid box for this dataset")
        n = int(count[0])
        out = allocate(n, U64, budget=self.budget(), what=f"listing the {n} touched tiles")
        if lib.tet_box_touch(self._struct, box, ffi.from_buffer("uint64_t[]", out), n, count):
            raise TetError("invalid box for this dataset")
        return out

    def check(self, start: Sequence[int], stop: Sequence[int], step: Sequence[int], *,
              describe: Callable[[int], str] | None = None) -> None:
        """Raise what `read` would for a bad index row the box touches, reading no
        payload: check before sizing an output (a spill file) from the box."""
        report = ffi.new("tet_report *")
        self._arm()
        lib.tet_box_check(self._struct, self._box(start, stop, step), report)
        self._changed()
        if report.status != 0:
            self._raise(report, self.elem_size, describe)

    def read(self, start: Sequence[int], stop: Sequence[int], step: Sequence[int],
             dst: np.ndarray[Any, Any], *, describe: Callable[[int], str] | None = None,
             budget: int | None = None, mask: FillMask | None = None) -> None:
        """Copy the box into `dst` (C-contiguous, writable, the box's shape) in one call.

        With `mask`, its fill values read as NaN; `dst` is then of ``mask.out_dtype``
        (or float64, any dataset dtype promoted)."""
        box = self._box(start, stop, step)
        threads = 1 if dst.nbytes < PARALLEL_BYTES else thread_count()
        threads = self._workers(threads, self.budget(budget), 0, "decoding this selection")
        report = ffi.new("tet_report *")
        out = ffi.from_buffer("uint8_t[]", dst, require_writable=True)
        self._arm()
        if mask is None:
            lib.tet_read_box(self._struct, box, out, threads, report)
        else:
            if dst.dtype == mask.dtype and mask.dtype.kind == "f":
                promote = 0  # the dataset's own float dtype, NaN over the fills
            elif dst.dtype == np.dtype("<f8"):
                promote = lib.TET_DTYPE_F64
            else:
                raise ValueError(f"a masked read fills {mask.out_dtype.name} or float64, not "
                                 f"{dst.dtype.name}")
            lib.tet_read_box_masked(self._struct, box, mask.struct, promote, out, threads,
                                    report)
        self._changed()
        if report.status == 0:
            return
        self._raise(report, dst.dtype.itemsize if mask is None else self.elem_size, describe)

    def read_index(self, index: Sequence[np.ndarray[Any, Any]], dst: np.ndarray[Any, Any], *,
                   describe: Callable[[int], str] | None = None, budget: int | None = None) -> None:
        """The outer product of per-axis increasing indices into C-contiguous `dst`, one call."""
        touched = math.prod((int(np.count_nonzero(np.diff(i // c))) + 1) * min(c, n)
                            for i, c, n in zip(index, self.chunk_shape, self.shape))
        big = max(dst.nbytes, touched * self.elem_size) >= PARALLEL_BYTES  # decoded or copied
        threads = self._workers(thread_count() if big else 1, self.budget(budget), 0,
                                "decoding this selection")
        flat, counts = u64_ptr(np.concatenate(index)), u64_ptr(np.array([len(i) for i in index]))
        report = ffi.new("tet_report *")
        out = ffi.from_buffer("uint8_t[]", dst, require_writable=True)
        self._arm()
        lib.tet_read_index(self._struct, flat, counts, out, threads, report)
        self._changed()
        if report.status != 0:
            self._raise(report, dst.dtype.itemsize, describe)

    def fold(self, start: Sequence[int], stop: Sequence[int], step: Sequence[int], *,
             reduce: Sequence[int], what: int, fill: float = 0.0, sequential: bool = False,
             scan_window: int = 0, edges: np.ndarray[Any, Any] | None = None,
             budget: int | None = None, mask: FillMask | None = None) -> np.ndarray[Any, Any]:
        """Fold the box into one accumulator per output cell (kept axes, row-major).

        Results do not depend on the thread count: the tiles are cut into a fixed
        number of parts, each folded in order, merged in order.  ``scan_window`` > 0
        (sequential only) reads that many bytes ahead of a front-to-back scan.
        With ``edges`` (float64 [cells, bins + 1]) it counts a histogram instead and
        returns the counts (uint64 [cells, bins]).

        Accumulators (and counts, and each worker's zstd scratch) are sized against
        `budget` (default: the file's) before anything is allocated: over it is a
        `MemoryBudgetError` naming the sizes.  With `mask`, elements equal to one of its
        fill values fold as NaN.
        """
        shape = [-(-(e - s) // k) for s, e, k in zip(start, stop, step)]
        n_cells = math.prod(n for d, n in enumerate(shape) if d not in reduce)
        budget = self.budget(budget)
        bins = 0
        if edges is not None:
            if edges.ndim != 2 or edges.shape[0] != n_cells or edges.dtype != np.float64:
                raise ValueError("histogram edges must be float64 [cells, bins + 1]")
            bins = edges.shape[1] - 1
        parts = 1 if sequential else fold_parts(n_cells)
        if bins and n_cells * bins * 8 * parts > FOLD_PART_BYTES:
            parts = 1
        per_part = n_cells * (ACC_DTYPE.itemsize + 8 * bins)
        shared = n_cells * HIST_CELL_BYTES if bins else 0  # each cell's range and rule
        if per_part * parts + shared > max(budget, WORK_FLOOR):
            parts = 1  # parallel parts are an optimisation: drop them before refusing
        what_text = (f"a fold into {n_cells} output cells ({n_cells} accumulators of "
                     f"{ACC_DTYPE.itemsize} bytes" + (f" and {bins} histogram counts each"
                                                      if bins else "")
                     + (f", {parts} ordered parts" if parts > 1 else "") + ")")
        require_memory(per_part * parts + shared, budget, what_text,
                       "reduce fewer cells (a smaller selection or more reduced axes) or "
                       "raise the budget (execution.memory_budget_bytes)")
        threads = self._workers(1 if sequential else thread_count(), budget,
                                per_part * parts + shared, what_text)
        cells = allocate(n_cells, ACC_DTYPE, budget=budget, what=what_text)
        spec = ffi.new("tet_fold_spec *")
        spec.what, spec.fill = what, fill
        spec.reduce_mask = sum(1 << d for d in reduce)
        spec.threads = threads
        spec.parts = parts
        spec.scan_window = scan_window if sequential else 0
        spec.mask = mask.struct if mask is not None else ffi.NULL
        counts = None
        if edges is not None:
            edges = np.ascontiguousarray(edges)
            counts = allocate((n_cells, bins), np.uint64, budget=budget, what=what_text)
            spec.bins = bins
            spec.edges = ffi.cast("const double *", ffi.from_buffer(edges))
            spec.counts = ffi.cast("uint64_t *", ffi.from_buffer(counts, require_writable=True))
        report = ffi.new("tet_report *")
        self._arm()
        lib.tet_fold_box(self._struct, self._box(start, stop, step), spec,
                         ffi.cast("tet_acc *", ffi.from_buffer(cells, require_writable=True)),
                         n_cells, report)
        self._changed()
        if report.status != 0:
            self._raise(report, self.elem_size, None)
        return cells if counts is None else counts

    def run(self, entry: Callable[[Any, Any, Any], None], start: Sequence[int],
            stop: Sequence[int], step: Sequence[int]) -> None:
        """`entry(tiles, box, report)`: a C pass over the box that adds into its own outputs
        (so a remote table may run it window by window), guarded; its failure raised."""
        report = ffi.new("tet_report *")
        self._arm()
        entry(self._struct, self._box(start, stop, step), report)
        self._changed()
        if report.status != 0:
            self._raise(report, self.elem_size, None)

    def _arm(self) -> None:
        if self._guard is not None:
            self._guard.arm()

    def _changed(self) -> None:
        """FileChangedError when the mapped file was truncated under the last call: what
        it read there were zeros, never returned."""
        if self._guard is not None:
            self._guard.check()

    def chunk_name(self, tile: int) -> str:
        """How errors name a tile: its grid coordinates."""
        return f"chunk_index={[int(c) for c in np.unravel_index(tile, self.grid)]}"

    def _raise(self, report: Any, elem: int, describe: Callable[[int], str] | None) -> None:
        describe = describe or self.chunk_name

        def explain(f: Failure) -> str:
            where = describe(f.chunk) if f.chunk >= 0 else "read"
            raw = int(self.raw[f.chunk]) if f.chunk >= 0 else 0
            if f.status == lib.TET_ERR_MISSING:
                return f"chunk index has no row for {where}"
            if f.status == lib.TET_ERR_ZSTD:
                return f"{where}: zstd decode failed: {zstd_error_name(f.detail)}"
            if f.status == lib.TET_ERR_LENGTH:
                return f"{where}: decoded payload length {f.detail} != raw_byte_len {raw}"
            if f.status == lib.TET_ERR_TILE:
                return f"{where}: tile has {self.tile_size(f.chunk)} values but raw_byte_len " \
                    f"implies {raw // elem}"
            if f.status == lib.TET_ERR_BOUNDS:
                a = int(self.offset[f.chunk])
                b = a + int(self.stored[f.chunk])
                return f"{where}: chunk payload [{a}, {b}) out of bounds"
            if f.status == lib.TET_ERR_CODEC:
                return f"{where}: unsupported codec {f.detail} (supported: 0 = raw, 1 = zstd)"
            if f.status == lib.TET_ERR_NOMEM:
                return f"could not allocate a {f.detail}-byte working buffer"
            if f.status == lib.TET_ERR_OVERFLOW:
                return self._overflow_message()
            return f"invalid read request (status {f.status})"

        check_report(report, "read failed", explain)

    def _overflow_message(self) -> str:
        return (f"dataset geometry shape {list(self.shape)}, chunk_shape "
                f"{list(self.chunk_shape)} ({self.elem_size}-byte elements): its sizes do "
                f"not fit 63 bits")

    def tile_size(self, linear: int) -> int:
        coords = [int(i) for i in np.unravel_index(linear, self.grid)]
        return math.prod(min(c, n - i * c) for i, c, n in zip(coords, self.chunk_shape, self.shape))

    @property
    def grid(self) -> tuple[int, ...]:
        return tuple(-(-n // c) for n, c in zip(self.shape, self.chunk_shape))


def encode(
    src: np.ndarray[Any, Any],
    origin: np.ndarray[Any, Any],
    extent: np.ndarray[Any, Any],
    *,
    codec: int,
    level: int,
    scratch: np.ndarray[Any, Any] | None = None,
    checksums: np.ndarray[Any, Any] | None = None,
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Cut tiles [origin, origin+extent) out of `src` and encode each (0 raw, 1 zstd).

    Returns (payload bytes back to back, per-tile stored lengths).  The payload
    is a view of `scratch` when it is large enough (see `encode_capacity`), so
    a loop over windows reuses one buffer instead of faulting in a new one.
    `checksums` (uint32, one per tile, C-contiguous), if given, receives the
    crc32c of each tile's stored bytes, computed while they are in cache.
    """
    src = np.ascontiguousarray(src)
    n, ndim = extent.shape
    elem = src.dtype.itemsize
    raw = np.prod(extent, axis=1, dtype=U64) * np.uint64(elem)
    cap = encode_capacity(codec, raw)
    fits = scratch is not None and scratch.nbytes >= cap
    out = scratch if fits and scratch is not None else np.empty(max(cap, 1), dtype=np.uint8)
    out_len = np.zeros(n, dtype=U64)
    origin_c = np.ascontiguousarray(origin, dtype=U64)
    extent_c = np.ascontiguousarray(extent, dtype=U64)
    shape = np.asarray(src.shape, dtype=U64)
    c = ffi.new("tet_encode_plan *")
    src_ptr = ffi.from_buffer("uint8_t[]", src)
    shape_ptr, origin_ptr, extent_ptr = u64_ptr(shape), u64_ptr(origin_c), u64_ptr(extent_c)
    out_ptr = ffi.from_buffer("uint8_t[]", out, require_writable=True)
    len_ptr = ffi.from_buffer("uint64_t[]", out_len, require_writable=True)
    c.src, c.ndim, c.elem_size, c.src_shape = src_ptr, ndim, elem, shape_ptr
    c.n_chunks, c.origin, c.extent = n, origin_ptr, extent_ptr
    c.codec, c.level = codec, level
    c.out, c.out_capacity, c.out_len = out_ptr, cap, len_ptr
    c.threads = thread_count()
    if checksums is not None:
        if checksums.dtype != np.uint32 or checksums.shape != (n,) or \
                not checksums.flags.c_contiguous:
            raise ValueError("checksums must be a C-contiguous uint32 array, one per tile")
        crc_ptr = ffi.from_buffer("uint32_t[]", checksums, require_writable=True)
        c.out_crc = crc_ptr
    report = ffi.new("tet_report *")
    lib.tet_encode(c, report)

    def explain(f: Failure) -> str:
        if f.status == lib.TET_ERR_ZSTD:
            return f"tile {f.chunk}: zstd compression failed: {zstd_error_name(f.detail)}"
        return f"tile {f.chunk}: invalid encode plan (status {f.status}, detail {f.detail})"

    if report.status == lib.TET_ERR_THREAD:  # not the plan's fault: raised as it is
        check_report(report, "write failed", explain)
    try:
        check_report(report, "write failed", explain)
    except TetError as exc:
        raise CatalogError(str(exc)) from None
    return out[: int(out_len.sum())], out_len


FOLD_MOMENTS: int = int(lib.TET_FOLD_MOMENTS)
FOLD_NAN_MOMENTS: int = int(lib.TET_FOLD_NAN_MOMENTS)
FOLD_NORMS: int = int(lib.TET_FOLD_NORMS)
FOLD_PRODUCT: int = int(lib.TET_FOLD_PRODUCT)
FOLD_MINMAX: int = int(lib.TET_FOLD_MINMAX)
FOLD_COUNTS: int = int(lib.TET_FOLD_COUNTS)
FOLD_SUM: int = int(lib.TET_FOLD_SUM)
NO_INDEX: int = int(lib.TET_NO_INDEX)
FOLD_PART_BYTES = 64 * 1024 * 1024  # accumulator memory allowed for parallel parts
HIST_CELL_BYTES = 32                # the C fold's range and rule per histogram cell
FOLD_PARTS = 8                      # fixed, so results do not depend on the core count


def fold_parts(n_cells: int) -> int:
    """How many ordered parts a fold is cut into (1 when accumulators would be large)."""
    return FOLD_PARTS if n_cells * ACC_DTYPE.itemsize * FOLD_PARTS <= FOLD_PART_BYTES else 1


def fold_vector(x: np.ndarray[Any, Any], what: int, fill: float = 0.0) -> np.ndarray[Any, Any]:
    """Test hook: fold a 1-d float64 vector as one cell."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    acc = np.empty(1, dtype=ACC_DTYPE)
    lib.tet_fold_vector(ffi.from_buffer("double[]", x), len(x), what, fill,
                        ffi.cast("tet_acc *", ffi.from_buffer(acc, require_writable=True)))
    return acc


def merge_cells(into: np.ndarray[Any, Any], other: np.ndarray[Any, Any], what: int) -> None:
    """Merge `other`'s accumulators into `into`'s, cell by cell, with the fold's own merge
    (`other`'s elements follow `into`'s)."""
    if into.dtype != ACC_DTYPE or other.dtype != ACC_DTYPE or into.shape != other.shape:
        raise ValueError("merge_cells takes two accumulator arrays of one shape")
    other = np.ascontiguousarray(other)
    status = lib.tet_acc_merge_cells(
        ffi.cast("tet_acc *", ffi.from_buffer(into, require_writable=True)),
        ffi.cast("const tet_acc *", ffi.from_buffer(other)), into.size, what)
    if status != 0:
        raise TetError(f"accumulator merge refused (status {status})")


def encode_capacity(codec: int, raw: np.ndarray[Any, Any]) -> int:
    """Bytes `encode` may need for tiles of these raw sizes."""
    if codec == lib.TET_CODEC_RAW:
        return int(raw.sum())
    return sum(int(lib.tet_encode_capacity(codec, int(r))) for r in raw)


# zscore, minmax, center, scale, l1 and l2 are all (x - a) / b with per-method (a, b).
TRANSFORMS = {**dict.fromkeys(("zscore", "minmax", "center", "scale", "l1", "l2"),
                              lib.TET_TX_AFFINE),
              "log1p": lib.TET_TX_LOG1P, "sqrt": lib.TET_TX_SQRT, "softmax": lib.TET_TX_SOFTMAX}


def transform(data: np.ndarray[Any, Any], method: str, reduce: Sequence[int],
              a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> tuple[int, list[int]]:
    """Pass 2 in place on a C-contiguous f32/f64 array; (elements made NaN, first indices).

    `a` and `b` are float64 per cell; for log1p/sqrt `a` is an output, set to each cell's
    minimum over finite values (0 where none).
    """
    if data.dtype not in (np.float32, np.float64) or not data.flags.c_contiguous:
        raise ValueError("transform needs a C-contiguous float32/float64 array")
    for p in (a, b):
        if p.dtype != np.float64 or not p.flags.c_contiguous or not p.flags.writeable:
            raise ValueError("transform parameters must be writable C-contiguous float64")
    if len(a) != len(b):
        raise ValueError("transform parameters a and b must have one value per cell each")
    spec = ffi.new("tet_transform_spec *")
    spec.method = TRANSFORMS[method]
    spec.dtype = lib.TET_DTYPE_F32 if data.dtype == np.float32 else lib.TET_DTYPE_F64
    spec.ndim = data.ndim
    spec.reduce_mask = sum(1 << d for d in reduce)
    for d, n in enumerate(data.shape):
        spec.shape[d] = n
    spec.a = ffi.cast("double *", ffi.from_buffer(a, require_writable=True))
    spec.b = ffi.cast("const double *", ffi.from_buffer(b))
    buf = ffi.from_buffer(data, require_writable=True) if data.size else ffi.NULL
    status = lib.tet_transform(spec, ffi.cast("uint8_t *", buf), len(a))
    if status != 0:
        raise MemoryBudgetError(f"transform could not allocate its {8 * len(a)}-byte scratch") if (
            status == lib.TET_ERR_NOMEM) else ValueError(f"transform refused (status {status})")
    n = int(spec.n_bad)
    return n, [int(spec.bad[i]) for i in range(min(n, lib.TET_TX_MAX_BAD))]
