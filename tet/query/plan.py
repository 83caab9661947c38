"""Read plans: which tiles a selection touches.

The touch rule itself lives in C (`tet_box_touch`, the same code the reads and
folds walk), so reports and reads can never disagree.  Here we build the
per-dataset `TileTable` the C loops index, and the `ReadPlan` that describes a
selection's tiles to callers (a few vectorised array operations, no per-tile
Python loop).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tet import dtypes
from tet.errors import CatalogError
from tet.kernels import TileTable
from tet.layout import MAX_NDIM, ROW_BLOCK, Catalog, DatasetRecord, check_size, tile_counts
from tet.query.budget import allocate, require_memory, resolve_budget
from tet.selection import Box

__all__ = ["ReadPlan", "check_geometry", "plan_read", "tile_table"]

MAX_EXTENT = 2**62
DENSE_SLACK = 1 << 20  # tiles a table may hold beyond twice the dataset's index rows
TABLE_BYTES_PER_TILE = 28  # offset, stored and raw (u64) and codec (u32)


def check_geometry(record: DatasetRecord) -> None:
    """Geometry rules a reader needs before it can plan (layout.md §3.3)."""
    if len(record.shape) != len(record.chunk_shape) or not 1 <= record.ndim <= MAX_NDIM:
        raise CatalogError(f"dataset {record.name!r} has an invalid rank")
    for d, (n, c) in enumerate(zip(record.shape, record.chunk_shape, strict=True)):
        if n < 1 or c < 1 or n >= MAX_EXTENT or c >= MAX_EXTENT:
            raise CatalogError(
                f"dataset {record.name!r} has invalid geometry on axis {d}: "
                f"shape {n}, chunk_shape {c} (both must be >= 1 and < 2**62)"
            )
    if math.prod(tile_counts(record.shape, record.chunk_shape)) >= 2**63:
        raise CatalogError(f"dataset {record.name!r}: chunk grid size overflows")
    check_size(None, record.name, record.dtype, record.shape)  # as the catalog did at open


def tile_table(catalog: Catalog, dataset_id: int, buffer: Any,
               make: Callable[..., TileTable] = TileTable) -> TileTable:
    """The dataset's tiles in linear grid order; the first index row of a tile wins.
    `make` builds the table (a byte source's own `TileTable` subclass)."""
    record = catalog.datasets[dataset_id]
    check_geometry(record)
    elem = dtypes.by_tag(record.dtype).size
    counts = tile_counts(record.shape, record.chunk_shape)
    n_tiles = math.prod(counts)
    entries = catalog.entries
    mask = entries["dataset_id"] == dataset_id
    count = int(np.count_nonzero(mask))
    if n_tiles > max(2 * count, DENSE_SLACK):
        raise CatalogError(
            f"dataset {record.name!r} declares {n_tiles} tiles but the chunk index has "
            f"only {count} rows for it"
        )

    def budget() -> int:
        return resolve_budget(file_bytes=catalog.budget_bytes, file_bps=catalog.budget_percent_bps)

    what = f"the tile table of dataset {record.name!r} ({n_tiles} tiles)"
    limit = budget()
    require_memory(n_tiles * TABLE_BYTES_PER_TILE, limit, what)
    start = int(mask.argmax())
    run = slice(start, start + count)
    if count == n_tiles and mask[run].all() and _in_grid_order(
            entries["chunk_index"][run, : record.ndim], counts):
        # The writer's layout: one row per tile, in grid order, in one run of the index;
        # the table takes the columns as they are (no temporary the size of the index).
        offset, stored = entries["payload_offset"][run], entries["stored_byte_len"][run]
        raw, codec = entries["raw_byte_len"][run], entries["codec"][run]
        return make(buffer, catalog.file_len, record.shape, record.chunk_shape,
                         record.dtype, elem, offset, stored, raw, codec, budget=budget)
    offset = allocate(n_tiles, np.uint64, budget=limit, what=what, fill=0)
    stored = allocate(n_tiles, np.uint64, budget=limit, what=what, fill=0)
    raw = allocate(n_tiles, np.uint64, budget=limit, what=what, fill=0)
    codec = allocate(n_tiles, np.uint32, budget=limit, what=what, fill=TileTable.MISSING)
    mine = np.flatnonzero(mask)
    coords = entries["chunk_index"][:, : record.ndim][mine]  # slice first: 8x less to copy
    inside = np.all(coords < np.asarray(counts, dtype=np.uint64), axis=1)
    mine, coords = mine[inside], coords[inside].astype(np.int64)
    linear = np.ravel_multi_index(coords.T, counts) if len(mine) else np.zeros(0, np.int64)
    if len(linear) < 2 or bool(np.all(linear[1:] > linear[:-1])):  # the writer's order
        keys, rows = linear, mine
    else:
        keys, first = np.unique(linear, return_index=True)
        rows = mine[first]
    offset[keys], stored[keys] = entries["payload_offset"][rows], entries["stored_byte_len"][rows]
    raw[keys], codec[keys] = entries["raw_byte_len"][rows], entries["codec"][rows]
    return make(buffer, catalog.file_len, record.shape, record.chunk_shape, record.dtype,
                     elem, offset, stored, raw, codec, budget=budget)


def _in_grid_order(coords: np.ndarray[Any, Any], counts: tuple[int, ...]) -> bool:
    """Whether every row's coordinates lie in the grid and their linear ids increase
    strictly, checked a block of rows at a time."""
    grid = np.asarray(counts, dtype=np.uint64)
    last = -1
    for lo in range(0, len(coords), 16 * ROW_BLOCK):
        block = coords[lo:lo + 16 * ROW_BLOCK]
        if not np.all(block < grid):
            return False
        linear = np.asarray(np.ravel_multi_index(block.astype(np.int64).T, counts))
        if linear[0] <= last or not np.all(linear[1:] > linear[:-1]):
            return False
        last = int(linear[-1])
    return True


@dataclass(frozen=True)
class ReadPlan:
    """The tiles one selection touches, in linear grid order (last axis fastest)."""

    record: DatasetRecord
    box: Box
    tiles: np.ndarray[Any, Any]      # linear grid ids
    offset: np.ndarray[Any, Any]
    stored: np.ndarray[Any, Any]
    raw: np.ndarray[Any, Any]
    codec: np.ndarray[Any, Any]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.box.shape

    @property
    def chunk_count(self) -> int:
        return len(self.tiles)

    def coords(self, limit: int | None = None) -> np.ndarray[Any, Any]:
        """Grid coordinates ``[n, ndim]`` of the first `limit` touched tiles (all when
        None): computed on demand, so a report that lists a few tiles of a huge plan
        never holds the coordinates of all of them."""
        index = self.tiles[:limit].view("<i8")  # grid ids are < 2**63 (check_geometry)
        if not len(index):
            return np.zeros((0, self.record.ndim), np.int64)
        grid = tile_counts(self.record.shape, self.record.chunk_shape)
        return np.stack(np.unravel_index(index, grid), axis=1)


def plan_read(table: TileTable, record: DatasetRecord, box: Box) -> ReadPlan:
    tiles = table.touch(box.start, box.stop, box.step)
    if len(tiles) == len(table.offset):  # every tile, in order: the table's own arrays
        return ReadPlan(record, box, tiles, table.offset, table.stored, table.raw, table.codec)
    index = tiles.view("<i8")  # grid ids are < 2**63 (check_geometry): no copy
    return ReadPlan(record, box, tiles, table.offset[index], table.stored[index],
                    table.raw[index], table.codec[index])
