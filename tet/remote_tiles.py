"""The tile table of a remote file: every C call that reads payload first fetches the
tiles it touches (`tet.remote.RangedSource.hold`), in windows when they are many.

A call whose touched tiles exceed the window (``Tuning.window_bytes``) runs in windows
of whole tiles along the outermost axis with more than one touched tile, each half a
window, the next fetched while the current one is decoded.  Reads write each window
into its part of the destination; folds merge windows with the fold's own merge when
the split axis is reduced (argmin/argmax/first-NaN indices moved to the whole box) and
place them side by side when it is kept; histogram counts add.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tet.kernels import ACC_DTYPE, NO_INDEX, FillMask, TileTable, merge_cells
from tet.remote import RangedSource, Span

__all__ = ["RemoteTiles"]

ARG_FIELDS = ("argmin", "argmax", "first_nan")
Window = tuple[int, int, int, int, list[Span]]  # start, stop, first position, count, spans


class RemoteTiles(TileTable):
    """A `TileTable` over a `RangedSource` (built by `tet.query.plan.tile_table`)."""

    def __init__(self, *args: Any, source: RangedSource, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.source = source

    # -- which bytes ----------------------------------------------------------------
    def spans(self, tiles: np.ndarray[Any, Any]) -> list[Span]:
        """The payload byte ranges of `tiles` (ids), merged where they touch."""
        t = np.asarray(tiles, dtype=np.int64)
        t = t[self.codec[t] != self.MISSING]
        if not len(t):
            return []
        off = self.offset[t].astype(np.int64)
        end = off + self.stored[t].astype(np.int64)
        order = np.argsort(off, kind="stable")
        off, end = off[order], end[order]
        reach = np.maximum.accumulate(end)
        first = np.flatnonzero(np.r_[True, off[1:] > reach[:-1]])
        last = np.maximum.reduceat(end, first)
        return list(zip(off[first].tolist(), last.tolist()))

    def _windows(self, start: Sequence[int], stop: Sequence[int],
                 step: Sequence[int]) -> tuple[int, list[Window]]:
        """The split axis and its windows (one window, axis -1, when all fit)."""
        tiles = self.touch(start, stop, step)
        whole = self.spans(tiles)
        limit = self.source.tuning.window_bytes
        one: list[Window] = [(0, 0, 0, 0, whole)]
        if sum(b - a for a, b in whole) <= limit or not len(tiles):
            return -1, one
        chunk, grid = self.chunk_shape, self.grid
        lasts = [s + (-(-(e - s) // k) - 1) * k for s, e, k in zip(start, stop, step)]
        axis = next((d for d in range(len(start))
                     if lasts[d] // chunk[d] > start[d] // chunk[d]), -1)
        if axis < 0:
            return -1, one
        coord = np.unravel_index(tiles.astype(np.int64), grid)[axis]
        first_tile = start[axis] // chunk[axis]
        ok = self.codec[tiles.astype(np.int64)] != self.MISSING
        per_slab = np.bincount(coord[ok] - first_tile,
                               weights=self.stored[tiles.astype(np.int64)][ok].astype(float),
                               minlength=lasts[axis] // chunk[axis] - first_tile + 1)
        out: list[Window] = []
        j, c, k = 0, chunk[axis], step[axis]
        while j < len(per_slab):
            size, j1 = per_slab[j], j + 1
            while j1 < len(per_slab) and size + per_slab[j1] <= limit // 2:
                size += per_slab[j1]
                j1 += 1
            lo = max(start[axis], (first_tile + j) * c)
            lo = start[axis] + -(-(lo - start[axis]) // k) * k  # on the step lattice
            hi = min(stop[axis], (first_tile + j1) * c)
            n = -(-(hi - lo) // k)
            if n > 0:
                sub_start, sub_stop = list(start), list(stop)
                sub_start[axis], sub_stop[axis] = lo, hi
                spans = self.spans(self.touch(sub_start, sub_stop, step))
                out.append((lo, hi, (lo - start[axis]) // k, n, spans))
            j = j1
        return axis, out

    def _each(self, windows: list[Window], body: Callable[[Window], None]) -> None:
        """Run `body` per window, fetching window k + 1 while window k runs."""
        with contextlib.ExitStack() as outer:
            stacks: list[contextlib.ExitStack] = []

            def start_fetch(w: Window) -> Callable[[], None]:
                stack = contextlib.ExitStack()
                outer.callback(stack.close)
                stacks.append(stack)
                wait: Callable[[], None] = stack.enter_context(self.source.fetching(w[4]))
                return wait

            wait = start_fetch(windows[0])
            for k, w in enumerate(windows):
                wait()
                nxt = start_fetch(windows[k + 1]) if k + 1 < len(windows) else None
                body(w)
                stacks[k].close()  # released before the next window is decoded
                if nxt is not None:
                    wait = nxt

    # -- the C calls ----------------------------------------------------------------
    def read(self, start: Sequence[int], stop: Sequence[int], step: Sequence[int],
             dst: np.ndarray[Any, Any], *, describe: Callable[[int], str] | None = None,
             budget: int | None = None, mask: FillMask | None = None) -> None:
        axis, windows = self._windows(start, stop, step)
        if axis < 0:
            with self.source.hold(windows[0][4]):
                super().read(start, stop, step, dst, describe=describe, budget=budget,
                             mask=mask)
            return

        def body(w: Window) -> None:
            lo, hi, pos, n, _ = w
            sub_start, sub_stop = list(start), list(stop)
            sub_start[axis], sub_stop[axis] = lo, hi
            part = dst[(slice(None),) * axis + (slice(pos, pos + n),)]
            into = part if part.flags.c_contiguous else np.empty(part.shape, dst.dtype)
            super(RemoteTiles, self).read(sub_start, sub_stop, step, into, describe=describe,
                                          budget=budget, mask=mask)
            if into is not part:
                part[...] = into

        self._each(windows, body)

    def read_index(self, index: Sequence[np.ndarray[Any, Any]], dst: np.ndarray[Any, Any], *,
                   describe: Callable[[int], str] | None = None,
                   budget: int | None = None) -> None:
        per_axis = [np.unique(np.asarray(i, dtype=np.int64) // c)
                    for i, c in zip(index, self.chunk_shape)]
        mesh = np.meshgrid(*per_axis, indexing="ij") if per_axis else []
        tiles = (np.ravel_multi_index([m.ravel() for m in mesh], self.grid)
                 if all(len(p) for p in per_axis) else np.zeros(0, np.int64))
        with self.source.hold(self.spans(tiles)):
            super().read_index(index, dst, describe=describe, budget=budget)

    def fold(self, start: Sequence[int], stop: Sequence[int], step: Sequence[int], *,
             reduce: Sequence[int], what: int, fill: float = 0.0, sequential: bool = False,
             scan_window: int = 0, edges: np.ndarray[Any, Any] | None = None,
             budget: int | None = None, mask: FillMask | None = None) -> np.ndarray[Any, Any]:
        axis, windows = self._windows(start, stop, step)
        kw: dict[str, Any] = {"reduce": reduce, "what": what, "fill": fill,
                              "sequential": sequential, "scan_window": scan_window,
                              "budget": budget, "mask": mask}
        if axis < 0:
            with self.source.hold(windows[0][4]):
                return super().fold(start, stop, step, edges=edges, **kw)
        shape = [-(-(e - s) // k) for s, e, k in zip(start, stop, step)]
        kept = [d for d in range(len(shape)) if d not in reduce]
        kept_shape = [shape[d] for d in kept]
        bins = () if edges is None else (edges.shape[1] - 1,)
        parts: list[np.ndarray[Any, Any]] = []
        total: list[np.ndarray[Any, Any]] = []

        def body(w: Window) -> None:
            lo, hi, pos, n, _ = w
            sub_start, sub_stop = list(start), list(stop)
            sub_start[axis], sub_stop[axis] = lo, hi
            sub_edges = edges
            if axis in kept and edges is not None:
                at = kept.index(axis)
                grid_edges = edges.reshape(*kept_shape, -1)
                sub_edges = np.ascontiguousarray(np.take(
                    grid_edges, range(pos, pos + n), axis=at).reshape(-1, edges.shape[1]))
            got = super(RemoteTiles, self).fold(sub_start, sub_stop, step, edges=sub_edges,
                                                **kw)
            if axis in kept:
                sub_kept = [n if d == axis else shape[d] for d in kept]
                parts.append(got.reshape(*sub_kept, *bins))
            elif edges is not None:
                total[:] = [got if not total else total[0] + got]
            else:
                red = sorted(reduce)
                _move_indices(got, [n if d == axis else shape[d] for d in red],
                              [shape[d] for d in red], red.index(axis), pos)
                if total:
                    merge_cells(total[0], got, what)
                else:
                    total.append(got)

        self._each(windows, body)
        if axis in kept:
            whole = np.concatenate(parts, axis=kept.index(axis))
            return np.ascontiguousarray(whole.reshape(-1, *bins) if bins else whole.ravel())
        return total[0]


def _move_indices(cells: np.ndarray[Any, Any], sub: list[int], full: list[int], at: int,
                  pos: int) -> None:
    """Re-express the fiber indices of a window's accumulators (row-major over the
    reduced axes of the window) in the whole box, the window starting at `pos` on the
    reduced axis `at`."""
    assert cells.dtype == ACC_DTYPE
    if math.prod(sub) == 0:
        return
    for name in ARG_FIELDS:
        col = cells[name]
        ok = col != NO_INDEX
        if not ok.any():
            continue
        coords = list(np.unravel_index(col[ok].astype(np.int64), sub))
        coords[at] = coords[at] + pos
        col[ok] = np.ravel_multi_index(coords, full).astype(np.uint64)
