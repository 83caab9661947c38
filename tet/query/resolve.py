"""Plan-time resolution of a query's operation against its dataset: axis tokens to
indices (`resolve_axes`), the fold-time axis rules (`fold_axes`) and null_count's fill
(`resolve_fill`), in the one order the engine applies them (`resolve_operation`)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from tet.errors import validation as _v
from tet.wire import is_axis_index, is_json_int, json_float

if TYPE_CHECKING:
    from tet.query.document import Operation

__all__ = ["FILL_ATTRS", "Resolved", "fold_axes", "json_number",
           "resolve_axes", "resolve_fill", "resolve_operation"]

FILL_ATTRS = ("_FillValue", "missing_value", "fill_value")
# Rust's f64::from_str grammar: no underscores, no hex, no inner whitespace.
_RUST_FLOAT = re.compile(r"[+-]?(?:inf|infinity|nan|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)",
                         re.IGNORECASE)
S = TypeVar("S")


class Resolved(NamedTuple):
    """An operation resolved against its dataset."""

    echoed: tuple[int, ...]  # axis indices in the order written (the response echoes these)
    axes: tuple[int, ...]  # sorted: what a fold reduces
    fill: float | None  # null_count's fill; None for every other op


def resolve_operation(op: Operation, ndim: int, dim_names: Sequence[str] | None,
                      attrs: Mapping[str, Any] | None, select: Callable[[], S], *,
                      fold: bool = True) -> tuple[Resolved, S]:
    """Resolve `op` for a dataset of rank `ndim` in the engine's order (query.md §4):
    the axis tokens (plan-time rules), null_count's fill, then ``select()`` (the
    selection, whose errors come before any fold-time rule), then, with `fold`, the
    fold-time axis rules (a repeated axis, a list naming every axis).  Returns the
    resolution and what `select` returned."""
    echoed = resolve_axes(op.axes, ndim, dim_names, fold_checks=False, ordered=False)
    fill = resolve_fill(op.params, dict(attrs or {})) if op.key == "null_count" else None
    selected = select()
    axes = fold_axes(echoed, ndim) if fold else tuple(sorted(echoed))
    return Resolved(echoed, axes, fill), selected


def json_number(v: Any) -> float | None:
    """A JSON number as f64 (NumPy scalars included); None for anything else (bools
    are not numbers).  Integers too large for f64 become ±inf rather than raising."""
    if is_json_int(v):
        return float(v)
    return json_float(v)


def resolve_axes(tokens: Sequence[str], ndim: int, dim_names: Sequence[str] | None, *,
                 fold_checks: bool = True, ordered: bool = True) -> tuple[int, ...]:
    """Axis tokens -> sorted axis indices of the logical selection (query.md §4).

    Parameters
    ----------
    tokens
        `Operation.axes`: decimal strings or dimension names.
    ndim
        Rank of the dataset (and of its logical selection).
    dim_names
        The dataset's ``dim_names`` from footer metadata, or None.
    fold_checks
        Also refuse duplicate axes and a list naming every axis.  These are fold-time
        rules (query.md §4): a plan, and every selection/fill check, come first, so the
        engine resolves with False at plan time and calls again with True just before
        folding; covariance/correlation never pass True (their rank rule reports).
    ordered
        Sort the indices (what a fold needs); False keeps the document's order, which is
        what the response echoes.

    Raises
    ------
    QueryError
        Index out of range, a name without or unknown to ``dim_names``, ambiguous
        names, and (with `fold_checks`, only once every token resolved) the first
        repeated axis in token order or "reduces every dimension".
    """
    out: list[int] = []
    for token in tokens:
        if is_axis_index(token):
            index = int(token)
            if index >= ndim:
                raise _v(f"operation axis index {index} out of range for rank {ndim}")
        else:
            index = _axis_by_name(token, ndim, dim_names)
        out.append(index)
    if fold_checks:
        return fold_axes(out, ndim)
    return tuple(sorted(out)) if ordered else tuple(out)


def fold_axes(indices: Sequence[int], ndim: int) -> tuple[int, ...]:
    """Resolved axis indices -> the sorted axes a fold reduces, after the fold-time rules
    (query.md §4): the first repeat in the order written, or a list naming every axis.

    Raises
    ------
    QueryError
        ``duplicate operation axis index V`` or "reduces every dimension".
    """
    seen: set[int] = set()
    for index in indices:
        if index in seen:
            raise _v(f"duplicate operation axis index {index}")
        seen.add(index)
    if indices and len(indices) == ndim:
        raise _v('operation axes list reduces every dimension; use "axes": [] for a scalar '
                 "reduction")
    return tuple(sorted(indices))


def _axis_by_name(token: str, ndim: int, dim_names: Sequence[str] | None) -> int:
    if not dim_names:
        raise _v(f"dimension name `{token}` requires footer metadata `dim_names` for this "
                 "dataset")
    if len(dim_names) != ndim:
        raise _v(f"metadata dim_names length {len(dim_names)} does not match dataset rank "
                 f"{ndim}")
    hits = [i for i, n in enumerate(dim_names) if n == token]
    if not hits:
        raise _v(f"unknown dimension name `{token}` (dim_names: {', '.join(dim_names)})")
    if len(hits) > 1:
        raise _v(f"ambiguous dimension name `{token}` (duplicate dim_names entries)")
    return hits[0]


def resolve_fill(params: Mapping[str, Any], attrs: Mapping[str, Any] | None) -> float:
    """null_count's fill (ops.md §4): the query's ``fill``, else the first fill attr.

    Attr text is trimmed; ``nan`` in any case is NaN, anything else must be a float as
    the engine parses it (no ``1_000``, no hex).

    Raises
    ------
    QueryError
        An attr that is not a number, or no fill anywhere.
    """
    fill = json_number(params.get("fill"))
    if fill is not None:
        return fill
    for name in FILL_ATTRS:
        if attrs is None or name not in attrs:
            continue
        raw = attrs[name]
        number = json_number(raw)
        if number is not None:
            return number
        text = raw.strip() if isinstance(raw, str) else None
        if text is not None and text.lower() == "nan":
            return math.nan
        if text is None or not _RUST_FLOAT.fullmatch(text):
            raise _v(f'invalid fill value "{raw}"')
        return float(text)
    raise _v("null_count requires `fill` in the query or dataset attr "
             "(_FillValue, missing_value, fill_value)")
