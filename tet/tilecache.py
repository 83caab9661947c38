"""The decoded-tile cache of one open file: repeated small reads of compressed data.

A read of a few elements from a zstd tile costs a whole-tile decode (milliseconds for a
4 MiB tile).  Each `tet.reader.Reader` holds one `TileCache`, a least-recently-used map
of decoded tiles bounded by bytes (``tet.open(path, cache_bytes=...)``, default
`DEFAULT_CACHE_BYTES`, 0 disables it) and shared by every thread that reads through the
reader.  Only small reads use it (`SmallRead`): a box or an orthogonal index selection
touching at most `MAX_TILES` tiles, all zstd (or, on a remote file, raw tiles too, whose
bytes would otherwise be fetched again), whose output is at most a `SMALL_SHARE`-th of
the tiles' bytes and whose tiles fit the cache together.  Each touched tile is decoded
whole once (one `TileTable.read` of the tile's box, through the table's own fetch hook
on a remote file) into a read-only array the cache keeps; the selected part is copied
out with NumPy.  Larger reads keep the one-C-call path and never touch the cache, nor do
masked reads (a query's ``mask_fill``), which read through C as before.

A local raw tile is never cached: it is read from the mapping, which is as fast.

Bounds: the tiles held never exceed ``capacity`` bytes (a tile larger than the capacity
is decoded and not kept); a thread reading holds at most the one tile it is copying from
beyond that.  The lock guards only the map: decoding runs outside it, so two threads
missing the same tile may both decode it (the second insert replaces the first).  The
resident tiles are separate from the per-call memory budget (like h5py's chunk cache):
a decode allocation is charged to the read's budget, and a read whose tile and output
would exceed it takes the uncached path, which reports the budget as before.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tet.kernels import TileTable
from tet.layout import RAW, ZSTD

__all__ = ["DEFAULT_CACHE_BYTES", "MAX_TILES", "SMALL_SHARE", "TileCache", "checked_capacity"]

DEFAULT_CACHE_BYTES = 64 * 1024 * 1024  # 16 tiles of 4 MiB: a 4 x 4 neighbourhood
MAX_TILES = 64  # tiles one cached read may touch (a bounded Python loop)
SMALL_SHARE = 4  # a cached read's output is at most 1/4 of the bytes of its tiles

# Per axis: (tile coordinate, slice of the output, what of the tile lands there).
Piece = tuple[int, slice, Any]


def checked_capacity(cache_bytes: object) -> int:
    """`cache_bytes` as a byte count (an integer >= 0), else TypeError / ValueError."""
    if isinstance(cache_bytes, (bool, np.bool_)) or not isinstance(cache_bytes,
                                                                   (int, np.integer)):
        raise TypeError(f"cache_bytes must be an integer (bytes, 0 disables the tile cache), "
                        f"got {cache_bytes!r}")
    if cache_bytes < 0:
        raise ValueError(f"cache_bytes must be >= 0 (0 disables the tile cache), "
                         f"got {cache_bytes}")
    return int(cache_bytes)


class TileCache:
    """Decoded tiles by (dataset id, linear tile id), least recently used first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = checked_capacity(capacity)
        self._lock = threading.Lock()
        self._tiles: OrderedDict[tuple[int, int], np.ndarray[Any, Any]] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        """Bytes of the tiles held now (never more than ``capacity``)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._tiles)

    def keys(self) -> list[tuple[int, int]]:
        """The keys held, least recently used first."""
        with self._lock:
            return list(self._tiles)

    def get(self, key: tuple[int, int]) -> np.ndarray[Any, Any] | None:
        with self._lock:
            tile = self._tiles.get(key)
            if tile is None:
                self.misses += 1
            else:
                self._tiles.move_to_end(key)
                self.hits += 1
            return tile

    def put(self, key: tuple[int, int], tile: np.ndarray[Any, Any]) -> None:
        """Keep `tile` (read-only), evicting the least recently used tiles until it fits;
        a tile larger than the capacity is not kept."""
        n = tile.nbytes
        if n > self.capacity:
            return
        with self._lock:
            old = self._tiles.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            while self._tiles and self._bytes + n > self.capacity:
                _, gone = self._tiles.popitem(last=False)
                self._bytes -= gone.nbytes
            self._tiles[key] = tile
            self._bytes += n

    def clear(self) -> None:
        with self._lock:
            self._tiles.clear()
            self._bytes = 0

    # -- reads --------------------------------------------------------------------
    def read_box(self, table: TileTable, dataset_id: int, start: Sequence[int],
                 stop: Sequence[int], step: Sequence[int], out: np.ndarray[Any, Any], *,
                 budget: int | None, describe: Callable[[int], str]) -> bool:
        """Fill `out` with the box from cached (or now decoded) tiles and return True
        when the read is small (see the module); else False, `out` untouched."""
        if not self.capacity or out.size == 0 or not _worth(table):
            return False
        chunk, shape = table.chunk_shape, table.shape
        count = 1
        for s, e, k, c in zip(start, stop, step, chunk):
            m = -(-(e - s) // k)
            count *= (s + (m - 1) * k) // c - s // c + 1
            if count > MAX_TILES:
                return False
        if count == 1:
            return self._one_tile(table, dataset_id, start, stop, step, out, budget, describe)
        axes = [_box_pieces(s, e, k, c, n)
                for s, e, k, c, n in zip(start, stop, step, chunk, shape)]
        return self._serve(table, dataset_id, axes, out, budget, describe)

    def read_index(self, table: TileTable, dataset_id: int,
                   index: Sequence[np.ndarray[Any, Any]], out: np.ndarray[Any, Any], *,
                   budget: int | None, describe: Callable[[int], str]) -> bool:
        """`read_box` for an orthogonal selection: per axis strictly increasing indices."""
        if not self.capacity or out.size == 0 or not _worth(table):
            return False
        count = 1
        for idx, c in zip(index, table.chunk_shape):
            count *= int(idx[-1]) // c - int(idx[0]) // c + 1
            if count > MAX_TILES:
                return False
        axes = [_index_pieces(np.asarray(idx, dtype=np.int64), c)
                for idx, c in zip(index, table.chunk_shape)]
        return self._serve(table, dataset_id, axes, out, budget, describe)

    def _one_tile(self, table: TileTable, dataset_id: int, start: Sequence[int],
                  stop: Sequence[int], step: Sequence[int], out: np.ndarray[Any, Any],
                  budget: int | None, describe: Callable[[int], str]) -> bool:
        """`read_box` of a box inside one tile (the common repeated small read)."""
        chunk, grid = table.chunk_shape, table.grid
        lin = 0
        coords = []
        for s, c, g in zip(start, chunk, grid):
            t = s // c
            coords.append(t)
            lin = lin * g + t
        key = (dataset_id, lin)
        tile = self.get(key)
        if tile is None:
            if int(table.codec[lin]) not in _codecs(table):
                return False
            nbytes = table.tile_size(lin) * out.dtype.itemsize
            if (out.nbytes * SMALL_SHARE > nbytes or nbytes > self.capacity
                    or nbytes + out.nbytes > table.budget(budget)):
                return False
            tile = self._decode(table, tuple(coords), out.dtype, budget, describe)
            self.put(key, tile)
        elif out.nbytes * SMALL_SHARE > tile.nbytes:
            return False  # a large part of a cached tile: the C path is as fast
        out[...] = tile[tuple(slice(s - t * c, e - t * c, k)
                              for s, e, k, t, c in zip(start, stop, step, coords, chunk))]
        return True

    def _serve(self, table: TileTable, dataset_id: int, axes: list[list[Piece]],
               out: np.ndarray[Any, Any], budget: int | None,
               describe: Callable[[int], str]) -> bool:
        chunk, shape, grid = table.chunk_shape, table.shape, table.grid
        elem = out.dtype.itemsize
        extents = [[min(c, n - t * c) for t, _, _ in pieces]
                   for pieces, c, n in zip(axes, chunk, shape)]
        total = math.prod(sum(e) for e in extents) * elem  # every piece pairs with every other
        biggest = math.prod(max(e) for e in extents) * elem
        if (out.nbytes * SMALL_SHARE > total or total > self.capacity
                or biggest + out.nbytes > table.budget(budget)):
            return False
        strides = [math.prod(grid[d + 1:]) for d in range(len(grid))]
        allowed = _codecs(table)
        plan: list[tuple[int, tuple[int, ...], tuple[slice, ...], tuple[Any, ...]]] = []
        for combo in itertools.product(*axes):
            coords = tuple(t for t, _, _ in combo)
            lin = sum(t * s for t, s in zip(coords, strides))
            if int(table.codec[lin]) not in allowed:
                return False  # raw on a local file, missing, or an unknown codec: C reads it
            plan.append((lin, coords, tuple(o for _, o, _ in combo),
                         tuple(w for _, _, w in combo)))
        for lin, coords, dst, src in plan:
            tile = self.get((dataset_id, lin))
            if tile is None:
                tile = self._decode(table, coords, out.dtype, budget, describe)
                self.put((dataset_id, lin), tile)
            if all(isinstance(w, slice) for w in src):
                out[dst] = tile[src]
            else:
                out[dst] = tile[np.ix_(*src)]
        return True

    @staticmethod
    def _decode(table: TileTable, coords: tuple[int, ...], dtype: np.dtype[Any],
                budget: int | None, describe: Callable[[int], str]) -> np.ndarray[Any, Any]:
        lo = [t * c for t, c in zip(coords, table.chunk_shape)]
        hi = [min(a + c, n) for a, c, n in zip(lo, table.chunk_shape, table.shape)]
        tile = np.empty([b - a for a, b in zip(lo, hi)], dtype=dtype)
        table.read(lo, hi, [1] * len(lo), tile, describe=describe, budget=budget)
        tile.flags.writeable = False
        return tile


def _codecs(table: TileTable) -> tuple[int, ...]:
    """The codecs of the table's tiles the cache keeps: zstd, and raw when the table's
    raw tiles are fetched rather than mapped (``TileTable.cache_raw``)."""
    return (ZSTD, RAW) if table.cache_raw else (ZSTD,)


def _worth(table: TileTable) -> bool:
    """Whether any tile of the table could be cached (a zstd tile, or a fetched one)."""
    return bool(table.zstd_tile_bytes) or table.cache_raw


def _box_pieces(start: int, stop: int, step: int, chunk: int, extent: int) -> list[Piece]:
    """The tiles one axis of a box touches, with the output slice each fills and the
    slice of the tile it comes from."""
    n = -(-(stop - start) // step)
    out: list[Piece] = []
    for t in range(start // chunk, (start + (n - 1) * step) // chunk + 1):
        lo = t * chunk
        hi = min(lo + chunk, extent)
        k0 = max(0, -(-(lo - start) // step))
        k1 = min(n, -(-(hi - start) // step))
        if k0 < k1:
            a = start + k0 * step - lo
            out.append((t, slice(k0, k1), slice(a, start + (k1 - 1) * step - lo + 1, step)))
    return out


def _index_pieces(idx: np.ndarray[Any, Any], chunk: int) -> list[Piece]:
    """The tiles strictly increasing indices touch, with the output slice each fills and
    the indices inside the tile."""
    tiles = idx // chunk
    cuts = np.flatnonzero(np.diff(tiles)) + 1
    bounds = [0, *cuts.tolist(), len(idx)]
    out: list[Piece] = []
    for a, b in itertools.pairwise(bounds):
        t = int(tiles[a])
        out.append((t, slice(a, b), idx[a:b] - t * chunk))
    return out
