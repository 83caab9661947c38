"""The one write loop every importer shares: read blocks aligned to the source's chunk
grid on a bounded thread pool, write them in a fixed order through `DatasetStream`.

Memory stays bounded: at most `2 × jobs` blocks are in flight, each about
`block_bytes(jobs)` (one read unit at least).  The output does not depend on `jobs`:
tiles land in the file in index order whatever order they were read in.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from tet.convert.source import ConvertError, ConvertWarning, Labels, SourceVar, block_boxes
from tet.limits import LIMITS
from tet.writer import DatasetStream, TetWriter, default_chunk_shape

__all__ = ["block_bytes", "fit_footer", "tile_shape", "write_variables"]

ProgressFn = Callable[[str, int, int], None]
IN_FLIGHT_BYTES = 256 * 1024 * 1024
MAX_BLOCK_BYTES = 32 * 1024 * 1024
MIN_BLOCK_BYTES = 4 * 1024 * 1024
# Room kept under the spilled-metadata limit for the file entry and JSON framing.
METADATA_BUDGET = LIMITS["metadata_blob_bytes"] - 64 * 1024


def block_bytes(jobs: int) -> int:
    """Target bytes per block: large enough to amortise per-call costs, small enough that
    `2 × jobs` of them stay near IN_FLIGHT_BYTES."""
    return max(MIN_BLOCK_BYTES, min(MAX_BLOCK_BYTES, IN_FLIGHT_BYTES // (2 * jobs)))


def tile_shape(var: SourceVar) -> tuple[int, ...]:
    """The .tet chunk shape: the source grid, else the writer's default tiling."""
    return var.chunks or default_chunk_shape(var.shape, var.dtype.itemsize)


def _tiles_in(box: tuple[slice, ...], tile: Sequence[int]) -> int:
    """Tiles whose first element lies in `box` (so the blocks' counts sum to the total)."""
    return math.prod(-(-s.stop // c) - -(-s.start // c) for s, c in zip(box, tile))


def _load(var: SourceVar, box: tuple[slice, ...]) -> np.ndarray[Any, Any]:
    """Read, decode and cast one block (runs on a worker thread)."""
    block = var.read(box)
    want = tuple(s.stop - s.start for s in box)
    if block.shape != want:
        raise ConvertError(f"read returned shape {list(block.shape)} for a block of "
                           f"{list(want)}")
    if var.decode is not None:
        block = var.decode(block)
    return np.ascontiguousarray(block, dtype=var.dtype)


def _json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def fit_footer(variables: Sequence[SourceVar], reserved: int = 0) -> None:
    """Drop dataset metadata the footer cannot hold (beyond 256 datasets, or past the
    16 MiB metadata budget less `reserved` bytes), with a warning; the arrays and the
    `extra` fields needed to read them back are all kept."""
    kept = 0
    typed = [var.ext() for var in variables]
    used = reserved + sum(_json_size({k: v for k, v in ext.items() if k != "attrs"})
                          for ext in typed)
    dropped: list[str] = []
    for var, ext in zip(variables, typed):
        meta = var.meta()
        if not meta and "attrs" not in ext:
            continue
        size = _json_size({var.name: meta}) + _json_size(ext.get("attrs", {}))
        if kept < LIMITS["metadata_datasets"] and used + size <= METADATA_BUDGET:
            kept += 1
            used += size
        else:
            dropped.append(var.name)
            var.drop_meta()
    if dropped:
        warnings.warn(f"footer metadata of {len(dropped)} dataset(s) left out (metadata "
                      f"limits: 256 datasets, 16 MiB), first `{dropped[0]}`",
                      ConvertWarning, stacklevel=2)


def write_variables(writer: TetWriter, variables: Sequence[SourceVar], *, codec: str,
                    jobs: int, progress: ProgressFn | None = None) -> None:
    """Queue every variable in `writer` and stream its data in, block by block."""
    streams: list[DatasetStream] = []
    tiles: list[tuple[int, ...]] = []
    for var in variables:
        tile = tile_shape(var)
        tiles.append(tile)
        v1, _ = var.split_attrs()
        streams.append(writer.create_dataset(
            var.name, var.shape, var.dtype, chunk_shape=tile, attrs=v1 or None,
            dim_names=var.dim_names, coords=var.coords or None, codec=codec,
            extra=var.writer_extra() or None))
    types = {dim: {"dtype": labels.dtype} for var in variables if var.dim_names
             for dim, labels in var.coords.items()
             if isinstance(labels, Labels) and labels.dtype is not None}
    if types:
        writer.set_coord_types(types)
    total = sum(math.prod(-(-n // c) for n, c in zip(v.shape, t))
                for v, t in zip(variables, tiles))
    target = block_bytes(jobs)

    def tasks() -> Iterator[tuple[int, tuple[slice, ...]]]:
        for i, var in enumerate(variables):
            unit = var.unit or tiles[i]
            for box in block_boxes(var.shape, unit, var.dtype.itemsize, target):
                yield i, box

    done = 0
    window: deque[tuple[int, tuple[slice, ...], Future[np.ndarray[Any, Any]]]] = deque()
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="tet-convert") as pool:
        try:
            for i, box in tasks():
                window.append((i, box, pool.submit(_load, variables[i], box)))
                while len(window) >= 2 * jobs:
                    done = _drain(window, variables, streams, tiles, done, total, progress)
            while window:
                done = _drain(window, variables, streams, tiles, done, total, progress)
        except BaseException:
            for _, _, fut in window:
                fut.cancel()
            raise


def _drain(window: deque[tuple[int, tuple[slice, ...], Future[np.ndarray[Any, Any]]]],
           variables: Sequence[SourceVar], streams: Sequence[DatasetStream],
           tiles: Sequence[tuple[int, ...]], done: int, total: int,
           progress: ProgressFn | None) -> int:
    """Write the oldest block in flight; returns the tiles done so far."""
    i, box, fut = window.popleft()
    name = variables[i].name
    try:
        block = fut.result()
        streams[i].write(block, [s.start for s in box])
    except Exception as exc:  # whatever the reader library raised: name the variable
        raise ConvertError(f"failed to convert `{name}`: {_text(exc)}") from exc
    done += _tiles_in(box, tiles[i])
    if progress is not None:
        progress(name, done, total)
    return done


def _text(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__
