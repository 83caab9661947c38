"""Read plans: a resolved selection box x the chunk grid -> which chunks to touch and
which sub-box of each lands where, as NumPy arrays built without a per-chunk
Python loop (a file with a million tiny chunks is a few array operations).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tet.errors import CatalogError
from tet.kernels import Gather
from tet.layout import Catalog, DatasetRecord, tile_counts
from tet.selection import Box

__all__ = ["ChunkLookup", "ReadPlan", "plan_read"]

I64 = np.int64
MAX_EXTENT = 2**62


@dataclass(frozen=True)
class ChunkLookup:
    """Chunk grid coordinates -> chunk index row, for one dataset."""

    dataset_id: int
    counts: tuple[int, ...]
    keys: np.ndarray[Any, Any]   # sorted linear grid positions
    rows: np.ndarray[Any, Any]   # index row of each key (first row wins on duplicates)

    @classmethod
    def build(cls, catalog: Catalog, dataset_id: int) -> ChunkLookup:
        record = catalog.datasets[dataset_id]
        check_geometry(record)
        counts = tile_counts(record.shape, record.chunk_shape)
        entries = catalog.entries
        mine = np.flatnonzero(entries["dataset_id"] == dataset_id)
        coords = entries["chunk_index"][mine][:, : record.ndim].astype(np.uint64)
        inside = np.all(coords < np.asarray(counts, dtype=np.uint64), axis=1)
        mine, coords = mine[inside], coords[inside].astype(I64)
        linear = np.ravel_multi_index(coords.T, counts) if len(mine) else np.zeros(0, I64)
        keys, first = np.unique(linear, return_index=True)
        return cls(dataset_id, counts, keys.astype(I64), mine[first].astype(I64))

    def find(self, coords: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Index rows of the given grid coordinates ([n, ndim]); a missing one is an error."""
        linear = np.ravel_multi_index(coords.T, self.counts).astype(I64)
        pos = np.searchsorted(self.keys, linear)
        pos_c = np.minimum(pos, max(len(self.keys) - 1, 0))
        found = (pos < len(self.keys)) & (self.keys[pos_c] == linear) if len(self.keys) else (
            np.zeros(len(linear), bool))
        if not found.all():
            miss = coords[int(np.flatnonzero(~found)[0])]
            raise CatalogError(
                f"chunk index has no row for dataset_id={self.dataset_id} "
                f"chunk_index={[int(c) for c in miss]}"
            )
        out: np.ndarray[Any, Any] = self.rows[pos_c]
        return out


def check_geometry(record: DatasetRecord) -> None:
    """Geometry rules a reader needs before it can plan (layout.md §3.3)."""
    if len(record.shape) != len(record.chunk_shape) or not 1 <= record.ndim <= 8:
        raise CatalogError(f"dataset {record.name!r} has an invalid rank")
    for d, (n, c) in enumerate(zip(record.shape, record.chunk_shape, strict=True)):
        if n < 1 or c < 1 or n >= MAX_EXTENT or c >= MAX_EXTENT:
            raise CatalogError(
                f"dataset {record.name!r} has invalid geometry on axis {d}: "
                f"shape {n}, chunk_shape {c} (both must be >= 1)"
            )
    if math.prod(tile_counts(record.shape, record.chunk_shape)) >= 2**63:
        raise CatalogError(f"dataset {record.name!r}: chunk grid size overflows")


@dataclass(frozen=True)
class ReadPlan:
    """Touched chunks of one selection, in linear grid order (last axis fastest)."""

    record: DatasetRecord
    box: Box
    rows: np.ndarray[Any, Any]         # chunk index rows [n]
    coords: np.ndarray[Any, Any]       # grid coordinates [n, ndim]
    tile_shape: np.ndarray[Any, Any]   # [n, ndim]
    src_start: np.ndarray[Any, Any]    # [n, ndim]
    count: np.ndarray[Any, Any]        # [n, ndim]
    dst_start: np.ndarray[Any, Any]    # [n, ndim]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.box.shape

    def gather(self, catalog: Catalog) -> Gather:
        e = catalog.entries[self.rows]
        return Gather(
            payload_offset=e["payload_offset"], stored_len=e["stored_byte_len"],
            raw_len=e["raw_byte_len"], codec=e["codec"], tile_shape=self.tile_shape,
            src_start=self.src_start, count=self.count, dst_start=self.dst_start,
            step=self.box.step,
        )

    def describe(self, i: int) -> str:
        return f"chunk_index={[int(c) for c in self.coords[i]]}"


def _axis_touch(
    start: int, stop: int, step: int, chunk: int, extent: int
) -> tuple[np.ndarray[Any, Any], ...]:
    """Per touched chunk on one axis: (chunk coord, tile extent, local start, count, dst start)."""
    n_sel = -(-(stop - start) // step)
    last = start + (n_sel - 1) * step
    if step >= chunk:  # every selected element sits in its own chunk
        c = (start + np.arange(n_sel, dtype=I64) * step) // chunk
    else:  # consecutive elements are closer than a chunk: every chunk between is touched
        c = np.arange(start // chunk, last // chunk + 1, dtype=I64)
    lo = np.maximum(c * chunk, start)
    j0 = -(-(lo - start) // step)
    hi = np.minimum(np.minimum((c + 1) * chunk, extent), stop)
    j1 = -(-(hi - start) // step)
    tile = np.minimum((c + 1) * chunk, extent) - c * chunk
    return c, tile, start + j0 * step - c * chunk, j1 - j0, j0


def plan_read(catalog: Catalog, lookup: ChunkLookup, box: Box) -> ReadPlan:
    record = catalog.datasets[lookup.dataset_id]
    per_axis = [
        _axis_touch(s, e, k, c, n)
        for s, e, k, c, n in zip(box.start, box.stop, box.step, record.chunk_shape, record.shape)
    ]
    grids = np.meshgrid(*[np.arange(len(a[0])) for a in per_axis], indexing="ij")
    flat = [g.ravel() for g in grids]

    def column(field: int) -> np.ndarray[Any, Any]:
        return np.stack([per_axis[d][field][flat[d]] for d in range(record.ndim)], axis=1)

    coords = column(0)
    return ReadPlan(
        record=record, box=box, rows=lookup.find(coords), coords=coords,
        tile_shape=column(1), src_start=column(2), count=column(3), dst_start=column(4),
    )
