"""Answering ``min``/``max``/``count``/``nan_count``/``any_nan``/``all_finite`` from a
package's checked zone maps (`tet.package_zone`): the tiles a selection covers whole are
answered from their zone rows without being read; the partial tiles at its edges are
folded as usual (one fold per edge slab), or skipped when the zone rows already decide
them.  Results equal the fold's: ``min``/``max`` are NaN when any selected value is.

Used for step-1 selections whose kept axes (reductions over some axes) have chunk
length 1, so each output cell is made of whole tiles; anything else folds as before.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tet.package_zone import DatasetZones, zones_of
from tet.selection import Box

if TYPE_CHECKING:
    from tet.file import TetFile

__all__ = ["ZONE_OPS", "ZoneAnswer", "zone_fold"]

ZONE_OPS = frozenset({"min", "max", "count", "nan_count", "any_nan", "all_finite"})

Acc = np.ndarray[Any, Any]


@dataclass(frozen=True)
class ZoneAnswer:
    values: Acc          # as `tet.query.folds.fold` returns them
    answered: int        # tiles answered from zone rows
    decoded: int         # tiles folded (partial tiles)
    skipped: int         # partial tiles the zone rows decided without a read
    slabs: tuple[Box, ...]  # the boxes that were folded

    def field(self) -> dict[str, int]:
        return {"tiles_answered": self.answered, "tiles_decoded": self.decoded,
                "tiles_skipped": self.skipped}


def _core(box: Box, shape: Sequence[int], chunk: Sequence[int]
          ) -> tuple[list[int], list[int]] | None:
    """Per axis, the first and one-past-last tile the box covers whole."""
    lo, hi = [], []
    for s, e, n, c in zip(box.start, box.stop, shape, chunk):
        a = -(-s // c)
        b = -(-n // c) if e == n else e // c
        if b <= a:
            return None
        lo.append(a)
        hi.append(b)
    return lo, hi


def _slabs(box: Box, lo_e: Sequence[int], hi_e: Sequence[int]) -> list[Box]:
    """The box minus its core [lo_e, hi_e) (element bounds) as disjoint slabs."""
    out = []
    nd = len(box.start)
    for d in range(nd):
        for a, b in ((box.start[d], lo_e[d]), (hi_e[d], box.stop[d])):
            if b <= a:
                continue
            start = [lo_e[i] if i < d else box.start[i] for i in range(nd)]
            stop = [hi_e[i] if i < d else box.stop[i] for i in range(nd)]
            start[d], stop[d] = a, b
            out.append(Box(tuple(start), tuple(stop), (1,) * nd))
    return out


def _tiles(box: Box, chunk: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(s // c, -(-e // c)) for s, e, c in zip(box.start, box.stop, chunk))


def _from_zones(z: DatasetZones, tiles: tuple[slice, ...], op: str, red: tuple[int, ...]
                ) -> Acc:
    nan = z.nan[tiles]
    if op == "count":
        return np.asarray(z.count[tiles].sum(axis=red, dtype=np.int64))
    if op == "nan_count":
        return np.asarray(nan.sum(axis=red).astype(np.float64))
    if op == "any_nan":
        return np.asarray((nan > 0).any(axis=red))
    if op == "all_finite":
        return np.asarray(z.finite[tiles].all(axis=red))
    ext = (z.lo[tiles].min(axis=red) if op == "min" else z.hi[tiles].max(axis=red))
    return np.asarray(np.where((nan > 0).any(axis=red), np.nan, ext))


def _combine(op: str, parts: Sequence[Acc]) -> Acc:
    stack = np.stack(parts)
    if op in ("count", "nan_count"):
        return np.asarray(stack.sum(axis=0))
    if op == "any_nan":
        return np.asarray(stack.any(axis=0))
    if op == "all_finite":
        return np.asarray(stack.all(axis=0))
    return np.asarray(stack.min(axis=0) if op == "min" else stack.max(axis=0))  # NaN wins


def _decided(z: DatasetZones, tiles: tuple[slice, ...], op: str, core: Acc) -> bool:
    """A scalar answer's edge slab that cannot change `core` (its tiles' zone rows say
    so), or whose own value the zones give exactly."""
    nan = z.nan[tiles]
    if op == "any_nan":
        return bool(core) or not (nan > 0).any()
    if op == "all_finite":
        return not bool(core) or bool(z.finite[tiles].all())
    if op == "nan_count":
        return not (nan > 0).any()
    if op in ("min", "max"):
        if math.isnan(float(core)):
            return True
        if (nan > 0).any():
            return False
        return bool(z.lo[tiles].min() >= core) if op == "min" else \
            bool(z.hi[tiles].max() <= core)
    return op == "count"


def zone_fold(f: TetFile, dataset_id: int, box: Box, op: str, axes: Sequence[int],
              fold: Callable[[Box], Acc], *, masked: bool = False) -> ZoneAnswer | None:
    """`op` over `box` with whole tiles answered from zone rows and edge slabs passed to
    `fold` (same op and axes); None when zones do not apply (then fold everything)."""
    if op not in ZONE_OPS or masked or f.generation is None:
        return None
    rec = f.catalog.datasets[dataset_id]
    nd = rec.ndim
    red = tuple(range(nd)) if not axes else tuple(sorted(axes))
    if nd == 0 or any(k != 1 for k in box.step) or \
            any(e <= s for s, e in zip(box.start, box.stop)) or \
            any(rec.chunk_shape[d] != 1 for d in range(nd) if d not in red):
        return None
    core = _core(box, rec.shape, rec.chunk_shape)
    if core is None:
        return None
    zones = zones_of(f)  # loaded here, on the first query that can use it
    z = zones.get(dataset_id) if zones else None
    if z is None:
        return None
    lo_t, hi_t = core
    tiles = tuple(slice(a, b) for a, b in zip(lo_t, hi_t))
    value = _from_zones(z, tiles, op, red)
    answered = math.prod(b - a for a, b in zip(lo_t, hi_t))
    lo_e = [a * c for a, c in zip(lo_t, rec.chunk_shape)]
    hi_e = [min(b * c, n) for b, c, n in zip(hi_t, rec.chunk_shape, rec.shape)]
    parts, folded, decoded, skipped = [value], [], 0, 0
    for slab in _slabs(box, lo_e, hi_e):
        t = _tiles(slab, rec.chunk_shape)
        n = math.prod(s.stop - s.start for s in t)
        if len(red) == nd and _decided(z, t, op, value):
            if op == "count":
                parts.append(np.asarray(slab.size, dtype=np.int64))
            skipped += n
            continue
        parts.append(np.asarray(fold(slab)))
        folded.append(slab)
        decoded += n
    return ZoneAnswer(_combine(op, parts), answered, decoded, skipped, tuple(folded))
