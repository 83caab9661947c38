"""Tier C: statistics that need every selected value of a cell at once.

Median, quantile, covariance and correlation work on a dense copy of the selection:
in RAM when it fits the memory budget (``in_memory_materialize``), else in a
memory-mapped temp file under the cache root that is always deleted
(``temp_spill_materialize``).  Histograms need no copy: a streaming C fold counts
them (after a min/max fold when no range is given).  Answers are NumPy's on the
same values promoted to float64 (ops.md §5, "Decision for this project").
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from tet import dtypes
from tet.errors import validation as _v
from tet.kernels import FillMask
from tet.kernels_select import lerp, linear_ranks
from tet.query.allow import Allowlist
from tet.query.budget import WORK_FLOOR, allocate, require_memory
from tet.query.folds import SKIP_NAN, fold_many
from tet.selection import Box

if TYPE_CHECKING:
    from tet.file import TetFile

__all__ = ["MAX_VARIABLES", "covariance", "histogram", "materialized", "quantile"]

Arr = np.ndarray[Any, Any]
MAX_VARIABLES = 1024


@contextmanager
def materialized(f: TetFile, dataset_id: int, box: Box, *, budget: int,
                 allow: Allowlist, mask: FillMask | None = None) -> Iterator[tuple[Arr, str]]:
    """The selection, dense and writable in its own dtype, and the strategy used.

    With `mask` its fill values are NaN, in ``mask.out_dtype`` (float64 for integers),
    and that dtype's size decides between RAM and the temp spill."""
    dtype = dtypes.by_tag(f.catalog.datasets[dataset_id].dtype).numpy
    if mask is not None:
        dtype = mask.out_dtype
    if box.size * dtype.itemsize <= budget:
        out = allocate(box.shape, dtype, budget=budget, what=f"materialising {list(box.shape)}")
        f.reader.fill(dataset_id, box, out, budget=budget, mask=mask)
        yield out, "in_memory_materialize"
        return
    f.reader.check(dataset_id, box)  # a file declaring a huge selection fails before its spill
    x = allow.scratch(dtype, box.shape)  # a file with no name: nothing to clean up
    f.reader.fill(dataset_id, box, x, budget=budget, mask=mask)
    yield x, "temp_spill_materialize"


def _moved_order(ndim: int, axes: Sequence[int]) -> list[int]:
    """The kept axes, then the reduced ones (ascending): each cell's fiber last."""
    kept = [d for d in range(ndim) if d not in axes]
    return kept + sorted(axes)


def _fibers(x: Arr, axes: Sequence[int]) -> Arr:
    """[cells, fiber]: the kept axes row-major, the reduced ones (ascending) per cell."""
    if not axes:
        return x.reshape(1, -1)
    kept = [d for d in range(x.ndim) if d not in axes]
    moved = np.transpose(x, kept + sorted(axes))
    return np.ascontiguousarray(moved).reshape(math.prod(x.shape[d] for d in kept), -1)


def quantile(x: Arr, q: float, axes: Sequence[int], *, median: bool = False,
             budget: int | None = None, allow: Allowlist | None = None) -> Arr:
    """`np.quantile(x, q)` (linear) or `np.median(x)` over `axes`, in float64, by
    selection (partition) on `x`, which is overwritten; a cell holding NaN gives NaN.

    Partial axes need each cell's values side by side: a copy of `x` in that order,
    in RAM when it fits `budget`, else (with `allow`) in a temp spill file."""
    order = _moved_order(x.ndim, axes) if axes else list(range(x.ndim))
    if order != list(range(x.ndim)) and budget is not None and (
            x.nbytes > max(budget, WORK_FLOOR)) and allow is not None:
        shape = [x.shape[d] for d in order]
        y = allow.scratch(x.dtype, shape)  # a file with no name, like the selection's
        np.copyto(y, np.transpose(x, order))  # streams page by page, no RAM copy
        n_kept = x.ndim - len(axes)
        return quantile(y, q, list(range(n_kept, x.ndim)), median=median)
    if budget is not None and order != list(range(x.ndim)):
        require_memory(x.nbytes, budget, f"reordering {list(x.shape)} for a per-cell "
                       f"{'median' if median else 'quantile'}")
    cells = _fibers(x, axes)
    n = cells.shape[1]
    floating = cells.dtype.kind == "f"
    with np.errstate(invalid="ignore"):
        if median:
            lo, hi = (n - 1) // 2, n // 2
            cells.partition(sorted({lo, hi, n - 1}), axis=1)
            out: Arr = cells[:, lo].astype(np.float64)
            if hi != lo:
                out = (out + cells[:, hi]) / 2
        else:
            lo, hi, t = linear_ranks(n, q)
            cells.partition(sorted({0, n - 1, lo, hi}), axis=1)
            out = lerp(cells[:, lo].astype(np.float64), cells[:, hi].astype(np.float64), t)
        if floating:
            out = np.where(np.isnan(cells[:, n - 1]), np.nan, out)
    reduced = axes or range(x.ndim)
    return out.reshape([x.shape[d] for d in range(x.ndim) if d not in reduced])


def histogram(f: TetFile, dataset_id: int, box: Box, bins: int, axes: Sequence[int],
              value_range: tuple[float, float] | None, *,
              budget: int | None = None, mask: FillMask | None = None) -> tuple[Arr, Arr]:
    """Counts [cells, bins] and edges [cells, bins + 1] of `np.histogram` per cell
    (with `mask`, its fill values are NaN: left out of the range and the counts).

    The edges (and the range arrays they come from) must fit `budget` (default: the
    file's) before anything is allocated; the fold checks its own accumulators."""
    table = f.reader.table(dataset_id)
    budget = table.budget(budget)
    reduce = list(axes) if axes else list(range(len(box.shape)))
    kept = [n for d, n in enumerate(box.shape) if d not in reduce]
    n_cells = math.prod(kept)
    # linspace builds the edges from a few [cells, bins + 1] float64 temporaries
    require_memory(3 * n_cells * (bins + 1) * 8, budget,
                   f"the bin edges of a histogram into {n_cells} cells of {bins} bins",
                   "reduce fewer cells or use fewer bins, or raise the budget "
                   "(execution.memory_budget_bytes)")
    if value_range is not None:
        lo = np.full(n_cells, value_range[0])
        hi = np.full(n_cells, value_range[1])
    else:
        extremes = fold_many(table, box, ("min", "max"), axes, table_of=SKIP_NAN,
                             budget=budget, mask=mask)
        lo, hi = extremes["min"].reshape(-1), extremes["max"].reshape(-1)
        empty = np.isnan(lo)  # every value NaN: NumPy's empty-array range
        lo, hi = np.where(empty, 0.0, lo), np.where(empty, 1.0, hi)
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            bad = int(np.flatnonzero(~(np.isfinite(lo) & np.isfinite(hi)))[0])
            raise _v(f"histogram range taken from the data is not finite "
                     f"([{lo[bad]}, {hi[bad]}]); pass `min` and `max`")
        same = lo == hi
        lo, hi = np.where(same, lo - 0.5, lo), np.where(same, hi + 0.5, hi)
    with np.errstate(over="ignore", invalid="ignore"):  # a width past f64: checked below
        edges = np.linspace(lo, hi, bins + 1, axis=1)
        increasing = np.isfinite(edges).all(axis=1) & (edges[:, 1:] > edges[:, :-1]).all(axis=1)
    if not increasing.all():  # as np.histogram refuses it (its edges would be NaN or equal)
        bad = int(np.flatnonzero(~increasing)[0])
        cell = f" (cell {bad})" if n_cells > 1 else ""
        raise _v(f"too many bins for the histogram range [{float(lo[bad])!r}, "
                 f"{float(hi[bad])!r}]{cell}: cannot create {bins} finite-sized bins")
    counts = table.fold(box.start, box.stop, box.step, reduce=reduce, what=0, edges=edges,
                        budget=budget, mask=mask)
    return counts, edges


COV_COPIES = 3  # float64 copies of the selection np.cov / np.corrcoef make


def covariance(x: Arr, observation_axis: int, *, correlation: bool,
               budget: int | None = None) -> Arr:
    """`np.cov(bias=True)` / `np.corrcoef` of a rank-2 selection, variables on the
    other axis: an order x order float64 matrix.

    When NumPy's float64 copies of the selection would not fit `budget`, the same
    two-pass formula runs over blocks of observations instead."""
    if budget is not None and COV_COPIES * 8 * x.size > max(budget, WORK_FLOOR):
        return _blocked_covariance(x, observation_axis, correlation=correlation,
                                   budget=max(budget, WORK_FLOOR))
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # one observation: NaN, as NumPy says
        rowvar = observation_axis == 1
        m = x.astype(np.float64, copy=False)
        c = np.corrcoef(m, rowvar=rowvar) if correlation else np.cov(m, rowvar=rowvar,
                                                                       bias=True)
    order = x.shape[1 - observation_axis]
    return np.asarray(c, dtype=np.float64).reshape(order, order)


def _blocked_covariance(x: Arr, observation_axis: int, *, correlation: bool,
                        budget: int) -> Arr:
    """np.cov's formula (mean first, then the centred cross products, divided by the
    count) and np.corrcoef's normalisation, over blocks of observations that fit."""
    obs = x.shape[observation_axis]
    order = x.shape[1 - observation_axis]
    step = max(1, budget // (COV_COPIES * 8 * max(order, 1)))

    def block(i: int) -> Arr:
        part = x[i : i + step] if observation_axis == 0 else x[:, i : i + step].T
        out: Arr = np.asarray(part, dtype=np.float64)
        return out

    with np.errstate(invalid="ignore", divide="ignore"):
        total = np.zeros(order)
        for i in range(0, obs, step):
            total += block(i).sum(axis=0)
        mean = total / obs
        c = np.zeros((order, order))
        for i in range(0, obs, step):
            centred = block(i) - mean
            c += centred.T @ centred
        c /= obs
        if correlation:
            d = np.sqrt(np.diag(c))
            c = c / d[:, None] / d[None, :]
            np.clip(c, -1, 1, out=c)
    return c
