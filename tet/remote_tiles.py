"""The tile table of a remote file: every C call that reads payload first fetches the
tiles it touches (`tet.remote.RangedSource.hold`), in windows when they are many.

A call whose touched tiles exceed the window (``Tuning.window_bytes``) runs in windows
of whole tiles along the outermost axis with more than one touched tile (a single slab
of tiles larger than half a window is cut again along the next such axis), the next
window fetched while the current one is decoded when both fit the window together.
Reads write each window into its part of the destination; folds merge windows that
share output cells with the fold's own merge (argmin/argmax/first-NaN indices moved to
the whole box first) and place the others side by side; histogram counts add.
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


class Window:
    """One window: its sub-box, where it sits in the whole selection (first position and
    count per axis, in selected elements), its payload spans and their bytes."""

    __slots__ = ("count", "nbytes", "pos", "spans", "start", "stop")

    def __init__(self, start: list[int], stop: list[int], pos: list[int],
                 count: list[int], spans: list[Span]) -> None:
        self.start, self.stop, self.pos, self.count = start, stop, pos, count
        self.spans = spans
        self.nbytes = sum(b - a for a, b in spans)

    def cut(self, axes: Sequence[int]) -> tuple[slice, ...]:
        return tuple(slice(self.pos[d], self.pos[d] + self.count[d]) for d in axes)


class RemoteTiles(TileTable):
    """A `TileTable` over a `RangedSource` (built by `tet.query.plan.tile_table`)."""

    cache_raw = True  # small reads keep raw tiles too (`tet.tilecache`): else fetched again

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
                 step: Sequence[int]) -> list[Window]:
        """The windows of a box (one when all its tiles fit the window): a regular grid
        of whole-tile groups, cut along the outermost multi-tile axis first and along
        later axes only while a single slab is over half the window, in row-major order."""
        n = len(start)
        shape = [-(-(e - s) // k) for s, e, k in zip(start, stop, step)]
        tiles = self.touch(start, stop, step).astype(np.int64)
        whole = Window(list(start), list(stop), [0] * n, shape, self.spans(tiles))
        half = self.source.tuning.window_bytes // 2
        if 2 * half >= whole.nbytes or not whole.spans:
            return [whole]
        chunk = self.chunk_shape
        tiles = tiles[self.codec[tiles] != self.MISSING]
        weight = self.stored[tiles].astype(float)
        first = [s // c for s, c in zip(start, chunk)]
        ntile = [(s + (m - 1) * k) // c - f + 1
                 for s, m, k, c, f in zip(start, shape, step, chunk, first)]
        rel = [c - f for c, f in zip(np.unravel_index(tiles, self.grid), first)]
        group = list(ntile)

        def biggest(g: list[int]) -> float:
            key = np.ravel_multi_index([r // k for r, k in zip(rel, g)],
                                       [-(-t // k) for t, k in zip(ntile, g)])
            return float(np.bincount(key, weights=weight).max())

        for d in range(n):
            if ntile[d] == 1:
                continue
            lo, hi = 1, ntile[d]  # the largest group along d whose cells fit
            while lo < hi:
                mid = (lo + hi + 1) // 2
                group[d] = mid
                lo, hi = (mid, hi) if biggest(group) <= half else (lo, mid - 1)
            group[d] = lo
            if biggest(group) <= half:
                break
        out: list[Window] = []
        for cell in np.ndindex(*(-(-t // g) for t, g in zip(ntile, group))):
            sub_start, sub_stop, pos, count = list(start), list(stop), [0] * n, list(shape)
            for d, j in enumerate(cell):
                if group[d] == ntile[d]:
                    continue
                edge = max(start[d], (first[d] + j * group[d]) * chunk[d])
                lo = start[d] + -(-(edge - start[d]) // step[d]) * step[d]  # on the lattice
                hi = min(stop[d], (first[d] + (j + 1) * group[d]) * chunk[d])
                sub_start[d], sub_stop[d] = lo, hi
                pos[d], count[d] = (lo - start[d]) // step[d], -(-(hi - lo) // step[d])
            if all(c > 0 for c in count):
                spans = self.spans(self.touch(sub_start, sub_stop, step))
                out.append(Window(sub_start, sub_stop, pos, count, spans))
        return out

    def _each(self, windows: list[Window], body: Callable[[Window], None]) -> None:
        """Run `body` per window, fetching window k + 1 while window k runs when the
        two fit the window together (else after window k is released)."""
        limit = self.source.tuning.window_bytes
        with contextlib.ExitStack() as outer:
            stacks: list[contextlib.ExitStack] = []

            def start_fetch(w: Window) -> Callable[[], None]:
                stack = contextlib.ExitStack()
                outer.callback(stack.close)
                stacks.append(stack)
                wait: Callable[[], None] = stack.enter_context(self.source.fetching(w.spans))
                return wait

            nxt: Callable[[], None] | None = start_fetch(windows[0])
            for k, w in enumerate(windows):
                wait = nxt if nxt is not None else start_fetch(w)
                wait()
                later = windows[k + 1] if k + 1 < len(windows) else None
                nxt = (start_fetch(later) if later is not None
                       and w.nbytes + later.nbytes <= limit else None)
                body(w)
                stacks[k].close()  # released before the next window is decoded

    # -- the C calls ----------------------------------------------------------------
    def read(self, start: Sequence[int], stop: Sequence[int], step: Sequence[int],
             dst: np.ndarray[Any, Any], *, describe: Callable[[int], str] | None = None,
             budget: int | None = None, mask: FillMask | None = None) -> None:
        windows = self._windows(start, stop, step)
        if len(windows) == 1:
            with self.source.hold(windows[0].spans):
                super().read(start, stop, step, dst, describe=describe, budget=budget,
                             mask=mask)
            return

        def body(w: Window) -> None:
            part = dst[w.cut(range(dst.ndim))]
            into = part if part.flags.c_contiguous else np.empty(part.shape, dst.dtype)
            super(RemoteTiles, self).read(w.start, w.stop, step, into, describe=describe,
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

    def run(self, entry: Callable[[Any, Any, Any], None], start: Sequence[int],
            stop: Sequence[int], step: Sequence[int]) -> None:
        windows = self._windows(start, stop, step)
        if len(windows) == 1:
            with self.source.hold(windows[0].spans):
                super().run(entry, start, stop, step)
            return
        self._each(windows, lambda w: super(RemoteTiles, self).run(entry, w.start, w.stop, step))

    def fold(self, start: Sequence[int], stop: Sequence[int], step: Sequence[int], *,
             reduce: Sequence[int], what: int, fill: float = 0.0, sequential: bool = False,
             scan_window: int = 0, edges: np.ndarray[Any, Any] | None = None,
             budget: int | None = None, mask: FillMask | None = None) -> np.ndarray[Any, Any]:
        windows = self._windows(start, stop, step)
        kw: dict[str, Any] = {"reduce": reduce, "what": what, "fill": fill,
                              "sequential": sequential, "scan_window": scan_window,
                              "budget": budget, "mask": mask}
        if len(windows) == 1:
            with self.source.hold(windows[0].spans):
                return super().fold(start, stop, step, edges=edges, **kw)
        shape = [-(-(e - s) // k) for s, e, k in zip(start, stop, step)]
        kept = [d for d in range(len(shape)) if d not in reduce]
        red = sorted(reduce)
        kept_shape = [shape[d] for d in kept]
        bins = () if edges is None else (edges.shape[1] - 1,)
        blocks: dict[tuple[int, ...], tuple[Window, np.ndarray[Any, Any]]] = {}

        def body(w: Window) -> None:
            sub_edges = edges
            if edges is not None and kept:
                grid_edges = edges.reshape(*kept_shape, edges.shape[1])
                sub_edges = np.ascontiguousarray(
                    grid_edges[w.cut(kept)].reshape(-1, edges.shape[1]))
            got = super(RemoteTiles, self).fold(w.start, w.stop, step, edges=sub_edges, **kw)
            if edges is None:
                _move_indices(got, [w.count[d] for d in red], [shape[d] for d in red],
                              [w.pos[d] for d in red])
            origin = tuple(w.pos[d] for d in kept)
            if origin not in blocks:
                blocks[origin] = (w, got)
            elif edges is not None:
                blocks[origin][1][...] += got
            else:
                merge_cells(blocks[origin][1], got, what)

        self._each(windows, body)
        if len(blocks) == 1:
            return next(iter(blocks.values()))[1]
        first = next(iter(blocks.values()))[1]
        out = np.empty((*kept_shape, *bins), dtype=first.dtype)
        for w, got in blocks.values():
            out[w.cut(kept)] = got.reshape(*(w.count[d] for d in kept), *bins)
        return out.reshape(-1, *bins) if bins else out.ravel()


def _move_indices(cells: np.ndarray[Any, Any], sub: list[int], full: list[int],
                  pos: list[int]) -> None:
    """Re-express the fiber indices of a window's accumulators (row-major over the
    reduced axes of the window) in the whole box, the window starting at `pos` on the
    reduced axes."""
    assert cells.dtype == ACC_DTYPE
    if not sub or math.prod(sub) == 0 or sub == full:
        return
    for name in ARG_FIELDS:
        col = cells[name]
        ok = col != NO_INDEX
        if not ok.any():
            continue
        coords = np.unravel_index(col[ok].astype(np.int64), sub)
        moved = [c + p for c, p in zip(coords, pos)]
        col[ok] = np.ravel_multi_index(moved, full).astype(np.uint64)
