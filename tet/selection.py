"""Selections: the wire form (one ``{start, stop, step, start_label, stop_label}``
object per axis), the box-form sugar, helpers that build them, h5py-style index
keys, and their resolution against a dataset into a numeric `Box`.

Error texts are the query engine's (query.md §3), so a selection fails the same
way in ``read_numpy``, in ``f[name][...]`` and in a query document.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tet.errors import SelectionError, TetIndexError
from tet.errors import selection_invalid as _fail
from tet.layout import MAX_NDIM
from tet.wire import U64_END, is_json_int, unexpected

__all__ = [
    "Box",
    "KeySelection",
    "axis_slice",
    "box_from_key",
    "full_selection",
    "parse_selection",
    "resolve_selection",
    "selection_slices",
]

AXIS_KEYS = ("start", "stop", "step", "start_label", "stop_label")
_AXIS_KEY_SET = frozenset(AXIS_KEYS)


def axis_slice(
    start: int | None = None,
    stop: int | None = None,
    step: int | None = None,
    *,
    start_label: str | None = None,
    stop_label: str | None = None,
) -> dict[str, Any]:
    """One axis of a selection; only the keys given are present (``{}`` = whole axis)."""
    raw = {"start": start, "stop": stop, "step": step,
           "start_label": start_label, "stop_label": stop_label}
    return {k: v for k, v in raw.items() if v is not None}


def selection_slices(*slices: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A selection from per-axis dicts, axis 0 first (each dict is copied)."""
    return [dict(s) for s in slices]


def full_selection(ndim: int) -> list[dict[str, Any]]:
    """The whole extent on every one of `ndim` axes."""
    return [{} for _ in range(ndim)]


@dataclass(frozen=True, slots=True)
class Box:
    """A resolved selection: per axis start, exclusive stop and step (all numeric)."""

    start: tuple[int, ...]
    stop: tuple[int, ...]
    step: tuple[int, ...]
    shape: tuple[int, ...] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        shape = tuple(max(1, -(-(e - s) // k)) for s, e, k in zip(self.start, self.stop, self.step))
        object.__setattr__(self, "shape", shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @classmethod
    def full(cls, shape: Sequence[int]) -> Box:
        return cls((0,) * len(shape), tuple(shape), (1,) * len(shape))

    def is_full(self, shape: Sequence[int]) -> bool:
        return self == Box.full(shape)


def _bad_json(msg: str) -> SelectionError:
    return SelectionError(f"invalid query JSON: {msg}")


def _invalid_type(value: Any, expected: str) -> SelectionError:
    return _bad_json(f"invalid type: {unexpected(value)}, expected {expected}")


def _parse_u64(value: Any) -> int:
    """A ``start``/``stop``/``step`` value: a non-negative integer below 2**64 and nothing
    else (``1.0`` is a float, ``true`` a boolean); NumPy integers count as integers."""
    if is_json_int(value):
        number = int(value)
        if number >= 0:
            return number
        raise _bad_json(f"invalid value: integer `{number}`, expected u64")
    raise _invalid_type(value, "u64")


def _parse_field(key: str, value: Any) -> Any:
    if key.endswith("_label"):
        if not isinstance(value, str):
            raise _invalid_type(value, "a string")
        return value
    if type(value) is int and 0 <= value < U64_END:  # the common case, checked cheaply
        return value
    return _parse_u64(value)


def _parse_entry(entry: Any) -> dict[str, Any]:
    """One axis object, its keys read in sorted order as the engine's JSON reader reads
    them (the first bad key or value is the error); ``null`` values mean absent.

    A 5-element array is the positional form of the same object (``[start, stop, step,
    start_label, stop_label]``), which the engine's reader also accepts.
    """
    axis: dict[str, Any] = {}
    if isinstance(entry, Mapping):
        for key, value in sorted(entry.items(), key=lambda item: str(item[0])):
            if key not in _AXIS_KEY_SET:
                raise _bad_json(f"unknown field `{key}`, expected one of "
                                + ", ".join(f"`{k}`" for k in AXIS_KEYS))
            if value is not None:
                axis[key] = _parse_field(key, value)
        return axis
    if isinstance(entry, (list, tuple)):
        for key, value in zip(AXIS_KEYS, entry, strict=False):
            if value is not None:
                axis[key] = _parse_field(key, value)
        if len(entry) < len(AXIS_KEYS):
            raise _bad_json(f"invalid length {len(entry)}, expected struct AxisSlice with "
                            f"{len(AXIS_KEYS)} elements")
        if len(entry) > len(AXIS_KEYS):
            raise _bad_json(f"invalid length {len(entry)}, expected fewer elements in array")
        return axis
    raise _invalid_type(entry, "struct AxisSlice")


def parse_selection(raw: Any) -> list[dict[str, Any]]:
    """Validate the wire form (or expand the box form) into per-axis dicts.

    Two phases, as in the engine: every entry is read first (key names and types,
    ``invalid query JSON: …``), then checked without a dataset (rank <= MAX_NDIM, step >= 1,
    start/label exclusivity, start < stop: ``validation: …``).  ``null`` for the
    whole selection is a type error; callers treat an absent key as "full extent".
    """
    if type(raw) is not list and isinstance(raw, Mapping):
        raw = _expand_box_form(raw)
    if not isinstance(raw, (list, tuple)):
        raise _invalid_type(raw, "a sequence")
    axes = [_parse_entry(entry) for entry in raw]
    if len(axes) > MAX_NDIM:
        raise _fail(f"selection rank {len(axes)} exceeds maximum {MAX_NDIM}")
    for i, axis in enumerate(axes):
        if axis.get("step") == 0:
            raise _fail(f"selection[{i}].step must be >= 1, got 0")
        for end in ("start", "stop"):
            if end in axis and f"{end}_label" in axis:
                raise _fail(f"selection[{i}]: use either `{end}` or `{end}_label`, not both")
        if "start" in axis and "stop" in axis and axis["start"] >= axis["stop"]:
            raise _fail(
                f"selection[{i}]: start must be < stop when both set "
                f"(got {axis['start']} >= {axis['stop']})"
            )
    return axes


def _expand_box_form(box: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``{"start": [..], "stop": [..], "step": [..]}`` -> per-axis dicts (``null`` arrays
    are absent; each value is then read like the per-axis form)."""
    unknown = [k for k in box if k not in ("start", "stop", "step")]
    if unknown:
        raise _bad_json(f"unknown field `{min(unknown, key=str)}` in box selection, "
                        "expected `start`, `stop` or `step` arrays")
    lists = {k: v for k, v in sorted(box.items()) if v is not None}
    for value in lists.values():
        if not isinstance(value, (list, tuple)):
            raise _invalid_type(value, "a sequence")
    lengths = {len(v) for v in lists.values()}
    if len(lengths) != 1:
        raise _bad_json("box selection needs `start`/`stop`/`step` arrays of equal length")
    rank = lengths.pop()
    return [{k: v[i] for k, v in lists.items()} for i in range(rank)]


LabelLookup = Callable[[int], Sequence[str] | None]


def resolve_selection(
    raw: Any, shape: Sequence[int], labels: LabelLookup | None = None, *, has_metadata: bool = True
) -> Box:
    """Resolve a selection (wire or box form, or None) against a dataset shape.

    `labels(d)` returns the coordinate labels of axis d, or None when that axis
    has no coords.  Labels are resolved before numeric bounds checks (query.md §3):
    every axis that names a label is resolved and checked first, in axis order, then
    the purely numeric axes, so a bad label wins over an out-of-range index elsewhere.
    """
    rank = len(shape)
    if raw is None:
        return Box.full(shape)
    axes = parse_selection(raw)
    if len(axes) != rank:
        raise _fail(
            f"selection must specify exactly {rank} axes (one per dataset dimension), "
            f"got {len(axes)}"
        )
    bounds: list[tuple[int, int] | None] = [None] * rank
    for d, axis in enumerate(axes):
        if "start_label" in axis or "stop_label" in axis:
            s, e = _label_bounds(d, axis, labels, has_metadata)
            bounds[d] = _checked(d, s, e, shape[d])
    start, stop, step = [], [], []
    for d, axis in enumerate(axes):
        s, e = bounds[d] or _checked(d, axis.get("start"), axis.get("stop"), shape[d])
        start.append(s)
        stop.append(e)
        step.append(axis.get("step", 1))
    return Box(tuple(start), tuple(stop), tuple(step))


def _label_bounds(d: int, axis: Mapping[str, Any], labels: LabelLookup | None,
                  has_metadata: bool) -> tuple[int | None, int | None]:
    """Axis d's start/stop with its labels replaced by their positions."""
    if not has_metadata:
        raise _fail("selection coordinate labels require footer metadata for this dataset")
    found = labels(d) if labels is not None else None
    if found is None:
        raise _fail(
            f"selection[{d}] coordinate labels require `coords` for this axis in footer metadata"
        )
    out: dict[str, int | None] = {"start": axis.get("start"), "stop": axis.get("stop")}
    for end in ("start", "stop"):
        label = axis.get(f"{end}_label")
        if label is None:
            continue
        try:
            out[end] = list(found).index(label)
        except ValueError:
            raise _fail(
                f'unknown coordinate label "{label}" (axis has {len(found)} labels)'
            ) from None
    return out["start"], out["stop"]


def _checked(d: int, s: int | None, e: int | None, n: int) -> tuple[int, int]:
    """Defaults filled in and the plan-time bounds rules of query.md §3 applied."""
    s = 0 if s is None else s
    e = n if e is None else e
    if s >= n:
        raise _fail(f"selection[{d}].start must be < shape[{d}] ({n}), got {s}")
    if e > n:
        raise _fail(f"selection[{d}].stop must be <= shape[{d}] ({n}), got {e}")
    if s >= e:
        raise _fail(f"selection[{d}]: require start < stop (got {s} >= {e})")
    return s, e


AxisKey = range | np.ndarray[Any, Any]  # what one axis of a key reads: a range or indices


@dataclass(frozen=True, slots=True)
class KeySelection:
    """An h5py/zarr-style index resolved against a shape.

    Each axis reads `axes[d]`: a `range` (an integer, a slice) or a sorted array of
    distinct indices (an integer array, a mask).  `order[d]`, where not None, holds the
    positions into what axis d read that make up the result (``np.take``): a reversed
    slice, an unsorted or repeated index array.  `box` is the box the axes span when
    every axis is a range, else None (read `points()` instead)."""

    box: Box | None              # None when some axis selects nothing, or is not a range
    dropped: tuple[int, ...]     # axes an integer index removes
    shape: tuple[int, ...]       # shape of the result (dropped axes removed)
    axes: tuple[AxisKey, ...] = ()
    order: tuple[np.ndarray[Any, Any] | None, ...] = ()

    @property
    def empty(self) -> bool:
        return any(len(a) == 0 for a in self.axes) or 0 in self.shape

    @property
    def read_shape(self) -> tuple[int, ...]:
        """The shape of what is read before `order` is applied (dropped axes kept)."""
        return tuple(len(a) for a in self.axes)

    def points(self) -> list[np.ndarray[Any, Any]]:
        """Every axis as uint64 indices (strictly increasing), for an orthogonal read."""
        return [np.arange(a.start, a.stop, a.step, dtype=np.uint64) if isinstance(a, range)
                else a.astype(np.uint64) for a in self.axes]


def _index(value: Any, what: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not hasattr(value, "__index__"):
        raise TypeError(f"{what} must be an integer, got {value!r}")
    return operator.index(value)


def _as_range(u: np.ndarray[Any, Any]) -> AxisKey:
    """Sorted distinct indices as a range when they are evenly spaced, else themselves."""
    if len(u) == 0:
        return range(0)
    if len(u) == 1:
        return range(int(u[0]), int(u[0]) + 1)
    diff = np.diff(u)
    if bool((diff == diff[0]).all()):
        return range(int(u[0]), int(u[-1]) + 1, int(diff[0]))
    return u


def _array_axis(item: Any, d: int, n: int) -> tuple[AxisKey, np.ndarray[Any, Any] | None]:
    """An integer array or a boolean mask on axis d: what it reads and in which order."""
    arr = np.asarray(item)
    if arr.ndim != 1:
        raise TypeError(f"unsupported index on axis {d}: index arrays and masks must be 1-D "
                        f"(one per axis, orthogonal indexing), got shape {arr.shape}")
    if arr.dtype.kind == "b":
        if len(arr) != n:
            raise TetIndexError(f"boolean index on axis {d} has length {len(arr)}, "
                                f"but the axis has size {n}")
        return _as_range(np.flatnonzero(arr)), None
    if arr.size == 0:
        return range(0), None
    if arr.dtype.kind not in "iu":
        raise TypeError(f"unsupported index on axis {d}: index arrays must hold integers or "
                        f"booleans, got {arr.dtype}")
    bad = np.flatnonzero((arr >= n) | (arr < -n) if arr.dtype.kind == "i" else arr >= n)
    if len(bad):
        raise TetIndexError(f"index {int(arr[bad[0]])} is out of bounds for axis {d} "
                            f"with size {n}")
    idx = arr.astype(np.int64)
    idx[idx < 0] += n
    if len(idx) == 1 or bool((idx[1:] > idx[:-1]).all()):
        return _as_range(idx), None
    u, inverse = np.unique(idx, return_inverse=True)
    return _as_range(u), inverse.reshape(-1).astype(np.intp)


def _slice_axis(item: slice, d: int, n: int) -> tuple[AxisKey, np.ndarray[Any, Any] | None]:
    k = 1 if item.step is None else _index(item.step, f"slice step on axis {d}")
    if k == 0:
        raise SelectionError(f"slice step cannot be zero on axis {d}")
    r = range(*slice(item.start, item.stop, k).indices(n))
    if k > 0 or len(r) == 0:
        return r, None
    return range(r[-1], r[0] + 1, -k), np.arange(len(r) - 1, -1, -1, dtype=np.intp)


def box_from_key(key: Any, shape: Sequence[int]) -> KeySelection:
    """Resolve an index as h5py's fancy indexing and zarr's ``oindex`` do.

    Per axis: an integer (negative from the end; the axis is dropped), a slice with any
    nonzero step, a 1-D integer array or list (any order, repeats, negative from the
    end) or a boolean mask of the axis length; ``...`` and omitted trailing axes are
    whole axes.  Arrays index each axis independently (NumPy's ``a[np.ix_(...)]``).
    An index outside its axis or a mask of the wrong length is `TetIndexError`.
    """
    rank = len(shape)
    items = list(key) if isinstance(key, tuple) else [key]
    ellipses = [i for i, item in enumerate(items) if item is Ellipsis]
    if len(ellipses) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if ellipses:
        fill = rank - (len(items) - 1)
        if fill < 0:
            raise IndexError(f"{len(items) - 1} indexing arguments for {rank} dimensions")
        items[ellipses[0] : ellipses[0] + 1] = [slice(None)] * fill
    if len(items) > rank:
        raise IndexError(f"{len(items)} indexing arguments for {rank} dimensions")
    items += [slice(None)] * (rank - len(items))
    axes: list[AxisKey] = []
    order: list[np.ndarray[Any, Any] | None] = []
    dropped: list[int] = []
    for d, (item, n) in enumerate(zip(items, shape, strict=True)):
        axis: AxisKey
        perm: np.ndarray[Any, Any] | None = None
        if isinstance(item, slice):
            axis, perm = _slice_axis(item, d, n)
        elif isinstance(item, (list, range, np.ndarray)) and not (
            isinstance(item, np.ndarray) and item.ndim == 0 and item.dtype.kind in "iu"
        ):
            axis, perm = _array_axis(item, d, n)
        elif hasattr(item, "__index__") and not isinstance(item, (bool, np.bool_)):
            i = operator.index(item)
            if not -n <= i < n:
                raise TetIndexError(f"index {i} is out of bounds for axis {d} with size {n}")
            i %= n
            axis = range(i, i + 1)
            dropped.append(d)
        else:
            raise TypeError(
                f"unsupported index {item!r} on axis {d}: use integers, slices, 1-D integer "
                "arrays, boolean masks and '...'"
            )
        axes.append(axis)
        order.append(perm)
    out = [len(a) if p is None else len(p) for a, p in zip(axes, order)]
    box = None
    if all(out) and all(isinstance(a, range) for a in axes):
        ranges = [a for a in axes if isinstance(a, range)]
        box = Box(tuple(r.start for r in ranges), tuple(r[-1] + 1 for r in ranges),
                  tuple(r.step for r in ranges))
    kept = tuple(n for d, n in enumerate(out) if d not in dropped)
    return KeySelection(box, tuple(dropped), kept, tuple(axes), tuple(order))
