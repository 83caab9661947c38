"""Tier A/B operations as C folds: which accumulators each op needs, and how the
finished cells become its value (NumPy semantics; vectorised over all cells)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tet import kernels
from tet.kernels import TileTable
from tet.selection import Box

__all__ = ["FOLDS", "SKIP_NAN", "fold", "fold_many"]

Acc = np.ndarray[Any, Any]


def _total(a: Acc, hi: str, lo: str) -> Acc:
    """A Neumaier sum; a non-finite running sum is the answer by itself."""
    s = a[hi]
    out: Acc = np.where(np.isfinite(s), s + a[lo], s)
    return out


def _nan_first(a: Acc, value: Acc) -> Acc:
    out: Acc = np.where(a["first_nan"] != kernels.NO_INDEX, np.nan, value)
    return out


def _arg(a: Acc, field: str) -> Acc:
    out: Acc = np.where(a["first_nan"] != kernels.NO_INDEX, a["first_nan"], a[field])
    return out.astype(np.int64)


def _ratio(num: Acc, den: Acc) -> Acc:
    with np.errstate(invalid="ignore", divide="ignore"):
        out: Acc = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return out


S, M, NM = kernels.FOLD_SUM, kernels.FOLD_MOMENTS, kernels.FOLD_NAN_MOMENTS
NORMS, PROD = kernels.FOLD_NORMS, kernels.FOLD_PRODUCT
MINMAX, COUNTS = kernels.FOLD_MINMAX, kernels.FOLD_COUNTS

# op -> (accumulators it needs, finished value per cell)
FOLDS: dict[str, tuple[int, Callable[[Acc], Acc]]] = {
    "sum": (S, lambda a: _total(a, "sum", "sum_c")),
    "mean": (S, lambda a: _ratio(_total(a, "sum", "sum_c"), a["n"])),
    "var": (M, lambda a: _ratio(a["m2"], a["n"])),
    "std": (M, lambda a: np.sqrt(_ratio(a["m2"], a["n"]))),
    "count": (0, lambda a: a["n"].astype(np.int64)),
    "product": (PROD, lambda a: a["prod"]),
    "norm_l1": (NORMS, lambda a: _total(a, "abs_sum", "abs_c")),
    "norm_l2": (NORMS, lambda a: np.sqrt(_total(a, "sq_sum", "sq_c"))),
    "min": (MINMAX, lambda a: _nan_first(a, a["min"])),
    "max": (MINMAX, lambda a: _nan_first(a, a["max"])),
    "arg_min": (MINMAX, lambda a: _arg(a, "argmin")),
    "arg_max": (MINMAX, lambda a: _arg(a, "argmax")),
    "nan_count": (COUNTS, lambda a: a["nan_count"].astype(np.float64)),
    "inf_count": (COUNTS, lambda a: a["inf_count"].astype(np.float64)),
    "null_count": (COUNTS, lambda a: a["null_count"].astype(np.float64)),
    "any_nan": (COUNTS, lambda a: a["nan_count"] > 0),
    "any_inf": (COUNTS, lambda a: a["inf_count"] > 0),
    "all_finite": (COUNTS, lambda a: (a["nan_count"] == 0) & (a["inf_count"] == 0)),
    "nan_mean": (NM, lambda a: _ratio(_total(a, "nn_sum", "nn_sum_c"), a["nn"])),
    "nan_std": (NM, lambda a: np.sqrt(_ratio(a["nn_m2"], a["nn"]))),
}


def _skip_nan(a: Acc, field: str, at: str) -> Acc:
    out: Acc = np.where(a[at] != kernels.NO_INDEX, a[field], np.nan)
    return out


# NaN-ignoring extremes (transform statistics, ops.md §6); NaN only for an all-NaN cell.
SKIP_NAN: dict[str, tuple[int, Callable[[Acc], Acc]]] = {
    "min": (MINMAX, lambda a: _skip_nan(a, "min", "argmin")),
    "max": (MINMAX, lambda a: _skip_nan(a, "max", "argmax")),
}


def fold(
    table: TileTable,
    box: Box,
    op: str,
    axes: Sequence[int],
    *,
    fill: float = 0.0,
    sequential: bool = False,
    scan_window: int = 0,
    budget: int | None = None,
    mask: kernels.FillMask | None = None,
) -> Acc:
    """One C call: the op over `box`, reducing `axes` ([] = everything); with `mask`,
    elements equal to its fill values fold as NaN.

    Returns the values shaped like the kept axes of the selection (0-d for scalar).
    """
    return fold_many(table, box, (op,), axes, fill=fill, sequential=sequential,
                     scan_window=scan_window, budget=budget, mask=mask)[op]


def fold_many(
    table: TileTable,
    box: Box,
    ops: Sequence[str],
    axes: Sequence[int],
    *,
    fill: float = 0.0,
    sequential: bool = False,
    scan_window: int = 0,
    table_of: dict[str, tuple[int, Callable[[Acc], Acc]]] | None = None,
    budget: int | None = None,
    mask: kernels.FillMask | None = None,
) -> dict[str, Acc]:
    """Several ops from the same single pass (e.g. a transform's statistics); ops are
    looked up in `table_of` first (e.g. `SKIP_NAN`), then in `FOLDS`.  The accumulators
    must fit `budget` (default: the file's), else `MemoryBudgetError`."""
    table_of = table_of or {}
    spec = {op: table_of.get(op) or FOLDS[op] for op in ops}
    what = 0
    for bits, _ in spec.values():
        what |= bits
    reduce = list(range(len(box.shape))) if not axes else sorted(axes)
    cells = table.fold(box.start, box.stop, box.step, reduce=reduce, what=what, fill=fill,
                       sequential=sequential, scan_window=scan_window, budget=budget,
                       mask=mask)
    kept = tuple(n for d, n in enumerate(box.shape) if d not in reduce)
    return {op: finish(cells).reshape(kept) for op, (_, finish) in spec.items()}
