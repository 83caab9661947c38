"""Dask arrays over ``.tet`` datasets, read through the per-process cache of open files
(`tet.opencache`, whose names this module re-exports).

A block of a `to_dask` array is one read of its box (as `TetFile.read_numpy` reads).
Blocks follow the file's chunk grid: neighbouring chunks are grouped (innermost axis first) until a
block reaches `block_bytes`, so a 1 GiB dataset becomes a graph of tens of tasks,
not thousands.  The graph holds only small picklable descriptions of the file
(path plus device, inode, size and mtime; for a URL the URL, storage options, ETag and
size), never an open handle, so it ships to distributed workers as is, and a worker
on another machine opens the URL itself.  Each worker process opens a file once and keeps it in
`open_cached`'s cache; a file replaced on disk after the graph was built is
refused rather than read.

This module imports dask only inside `to_dask`, so the xarray backend can use the
cache without dask installed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tet import dtypes
from tet.handles import key_of
from tet.opencache import (
    FileKey,
    RemoteKey,
    cache_info,
    clear_cache,
    file_key,
    open_cached,
    open_key,
)
from tet.query.budget import resolve_budget
from tet.selection import Box

if TYPE_CHECKING:
    import dask.array

    from tet.file import TetFile
    from tet.reader import Reader

__all__ = [
    "DEFAULT_BLOCK_BYTES",
    "MAX_BLOCKS",
    "FileKey",
    "RemoteKey",
    "block_chunks",
    "cache_info",
    "clear_cache",
    "file_key",
    "grouped_chunk_shape",
    "open_cached",
    "read_box",
    "to_dask",
]

DEFAULT_BLOCK_BYTES = 64 * 1024 * 1024
MAX_BLOCKS = 1 << 12  # dask blocks of one array at most: a graph dask schedules in well under 1 s

PathLike = str | os.PathLike[str]


def read_box(key: FileKey | RemoteKey, name: str, start: Sequence[int], stop: Sequence[int],
             step: Sequence[int]) -> np.ndarray[Any, Any]:
    """One block: a single `read_numpy` of the box, through the process cache.

    The index rows the block touches are checked before its buffer is allocated (a tiny
    file declaring one huge tile fails as a `CatalogError`, allocating nothing), and the
    buffer comes out of the memory budget, as any `read_numpy` does (`to_dask` sizes
    blocks to fit it; a single chunk larger than the budget is a `MemoryBudgetError`).
    """
    reader = open_cached(key)
    sel = {"start": list(start), "stop": list(stop), "step": list(step)}
    dataset_id, box = reader.resolve(name, sel)
    reader.check(dataset_id, box)
    return reader.read(dataset_id, box, copy=True, budget=None)


# ---------------------------------------------------------------------------
# The block grid


def _segments(start: int, stop: int, step: int, chunk: int) -> list[int]:
    """Lengths (in selected elements) of the runs that fall in one file chunk each,
    in order, along one axis of a selection."""
    count = len(range(start, stop, step))
    if count <= 1:  # one element (or none); a step past int64 never reaches NumPy
        return [count] if count else []
    last = start + (count - 1) * step
    first_chunk, last_chunk = start // chunk, last // chunk
    bounds = np.arange(first_chunk + 1, last_chunk + 1, dtype=np.int64) * chunk
    # first selected index at or past each chunk boundary
    cuts = -((start - bounds) // step)
    edges = np.unique(np.concatenate(([0], cuts, [count])))
    sizes = np.diff(edges)
    return [int(n) for n in sizes[sizes > 0]]


def block_chunks(box: Box, chunk_shape: Sequence[int], itemsize: int,
                 block_bytes: int) -> tuple[tuple[int, ...], ...]:
    """Dask chunks for a selection: whole file chunks grouped into blocks of at most
    `block_bytes` (a single chunk larger than that is one block on its own).

    The innermost axis is grouped first, then, once it is whole, the next one out,
    so blocks are long row-major runs; every block boundary is a chunk boundary.
    """
    segs = [_segments(s, e, k, c) for s, e, k, c in
            zip(box.start, box.stop, box.step, chunk_shape)]
    groups = [1] * len(segs)
    extent = [max(seg) for seg in segs]  # one chunk on every axis: the smallest block
    for d in reversed(range(len(segs))):
        seg = np.asarray(segs[d], dtype=np.int64)
        others = itemsize * math.prod(extent) // extent[d]

        def widest(g: int, seg: np.ndarray[Any, Any] = seg) -> int:
            return int(np.add.reduceat(seg, np.arange(0, len(seg), g)).max())

        lo, hi = 1, len(seg)
        while lo < hi:  # the most chunks per block that still fit the target
            mid = (lo + hi + 1) // 2
            if others * widest(mid) <= block_bytes:
                lo = mid
            else:
                hi = mid - 1
        groups[d], extent[d] = lo, widest(lo)
        if lo < len(seg):
            break
    return tuple(
        tuple(sum(seg[i : i + g]) for i in range(0, len(seg), g))
        for seg, g in zip(segs, groups)
    )


def grouped_chunk_shape(shape: Sequence[int], chunk_shape: Sequence[int],
                        max_blocks: int | None = None) -> tuple[int, ...]:
    """Block extents that are whole multiples of the chunk extents, the chunks
    themselves when the grid has at most `max_blocks` (default `MAX_BLOCKS`) tiles; else
    neighbouring chunks grouped, innermost axis first, until it does (so a file's grid
    of millions of tiny chunks never becomes a dask graph of millions of tasks)."""
    max_blocks = MAX_BLOCKS if max_blocks is None else max_blocks
    block = list(chunk_shape)
    counts = [-(-n // c) for n, c in zip(shape, block, strict=True)]
    for d in reversed(range(len(block))):
        if math.prod(counts) <= max_blocks:
            break
        rest = math.prod(counts) // counts[d]  # blocks on the other axes
        per_axis = max(1, max_blocks // rest)  # blocks this axis may keep
        group = -(-counts[d] // per_axis)      # chunks per block along it
        block[d] = min(shape[d], block[d] * group)
        counts[d] = -(-shape[d] // block[d])
    return tuple(block)


def _resolve(file: TetFile | PathLike, storage_options: Mapping[str, Any] | None,
             store: Any) -> tuple[Reader, FileKey | RemoteKey]:
    if isinstance(file, (str, os.PathLike)):
        return open_key(file, storage_options, store)
    if file.url is not None:  # the object the handle read: same ETag, else refused
        key = key_of(file.path, file.reader)
        return open_cached(key), key
    key = file_key(file.path)
    return open_cached(key), key


def to_dask(
    file: TetFile | PathLike,
    name: str,
    selection: Any = None,
    *,
    block_bytes: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
    store: Any = None,
) -> dask.array.Array:
    """A lazy `dask.array.Array` of one dataset (or of a selection of it).

    Parameters
    ----------
    file : an open `TetFile`, a path, or a URL (``s3://``, ``gs://``, ``az://``,
        ``https://``; a key inside `store`), read with ranged requests.
    name : catalog name of the dataset.
    selection : any `read_numpy` selection (wire form, box form, labels); None = all.
    block_bytes : target block size (default 64 MiB, at most the memory budget).
        Blocks are whole chunks grouped together; a chunk larger than the target is a
        block by itself.  A grid that would give more than `MAX_BLOCKS` blocks gets
        larger ones, so the graph stays small whatever the file declares.
    storage_options, store : as for `tet.open`, for a URL.  They travel in the graph
        (credentials included): each worker opens the URL itself, once per process,
        and an object replaced since is `FileChangedError` there.

    Raises
    ------
    UnknownDatasetError, SelectionError, CatalogError
        At once, not at compute time (a grid the chunk index cannot hold, too).
    ImportError
        dask is not installed (``pip install tet-arrays[dask]``).
    """
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    target = DEFAULT_BLOCK_BYTES if block_bytes is None else int(block_bytes)
    if target < 1:
        raise ValueError(f"block_bytes must be >= 1, got {block_bytes!r}")
    reader, key = _resolve(file, storage_options, store)
    dataset_id, box = reader.resolve(name, selection)  # builds the tile table: grid checked
    catalog = reader.catalog
    record = catalog.datasets[dataset_id]
    dtype = dtypes.by_tag(record.dtype).numpy
    budget = resolve_budget(file_bytes=catalog.budget_bytes, file_bps=catalog.budget_percent_bps)
    target = max(1, min(target, budget))  # each block is one read within the budget
    chunks = block_chunks(box, record.chunk_shape, dtype.itemsize, target)
    for _ in range(64):  # 64 doublings pass any dataset's size (< 2**63 bytes): one block
        if math.prod(len(c) for c in chunks) <= MAX_BLOCKS:
            break
        target *= 2
        chunks = block_chunks(box, record.chunk_shape, dtype.itemsize, target)
    ident = (key.device, key.inode, key.mtime_ns) if isinstance(key, FileKey) else \
        (key.loc.key, key.etag, key.tuning)
    token = tokenize(key.path, key.size, *ident, name, box.start, box.stop, box.step, chunks)
    graph_name = f"tet-{Path(key.loc.key if isinstance(key, RemoteKey) else key.path).stem}" \
        f"-{name}-{token}"
    starts = [np.concatenate(([0], np.cumsum(c)[:-1])).astype(int).tolist() for c in chunks]
    dsk: dict[Any, Any] = {}
    for index in np.ndindex(*(len(c) for c in chunks)):
        lo, hi = [], []
        for d, i in enumerate(index):
            first = starts[d][i]
            lo.append(box.start[d] + first * box.step[d])
            hi.append(box.start[d] + (first + chunks[d][i] - 1) * box.step[d] + 1)
        dsk[(graph_name, *index)] = (read_box, key, name, tuple(lo), tuple(hi), box.step)
    graph = HighLevelGraph.from_collections(graph_name, dsk, dependencies=())
    meta = np.empty((0,) * len(chunks), dtype=dtype)
    array: dask.array.Array = da.Array(  # type: ignore[no-untyped-call]
        graph, graph_name, chunks, meta=meta)
    return array
