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

from tet.errors import SelectionError
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


@dataclass(frozen=True, slots=True)
class KeySelection:
    """An h5py-style index resolved against a shape."""

    box: Box | None              # None when some axis selects nothing
    dropped: tuple[int, ...]     # axes an integer index removes
    shape: tuple[int, ...]       # shape of the result (dropped axes removed)


def _index(value: Any, what: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not hasattr(value, "__index__"):
        raise TypeError(f"{what} must be an integer, got {value!r}")
    return operator.index(value)


def box_from_key(key: Any, shape: Sequence[int]) -> KeySelection:
    """Resolve a NumPy basic index (ints, slices, ``...``) as h5py does.

    Negative indices count from the end; steps must be >= 1; an empty slice gives
    an empty result; fancy and boolean indexing are refused with `TypeError`.
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
    start, stop, step, dropped, out = [], [], [], [], []
    for d, (item, n) in enumerate(zip(items, shape, strict=True)):
        if isinstance(item, slice):
            k = 1 if item.step is None else _index(item.step, f"slice step on axis {d}")
            if k < 1:
                raise SelectionError(
                    f"step must be >= 1 on axis {d}, got {k} (reverse with NumPy after reading)"
                )
            s, e, k = slice(item.start, item.stop, k).indices(n)
            start.append(s)
            stop.append(max(s, e))
            step.append(k)
            out.append(len(range(s, e, k)))
        elif isinstance(item, (bool, np.bool_, list, np.ndarray)) and not (
            isinstance(item, np.ndarray) and item.ndim == 0 and item.dtype.kind in "iu"
        ):
            raise TypeError(
                f"unsupported index {item!r} on axis {d}: fancy and boolean indexing are not "
                "supported; use integers, slices and '...' (then index the result with NumPy)"
            )
        elif hasattr(item, "__index__"):
            i = operator.index(item)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of bounds for axis {d} with size {n}")
            i %= n
            start.append(i)
            stop.append(i + 1)
            step.append(1)
            dropped.append(d)
            out.append(1)
        else:
            raise TypeError(
                f"unsupported index {item!r} on axis {d}: use integers, slices and '...' "
                "(read the slice, then index it with NumPy)"
            )
    box = Box(tuple(start), tuple(stop), tuple(step)) if all(out) else None
    kept = tuple(n for d, n in enumerate(out) if d not in dropped)
    return KeySelection(box, tuple(dropped), kept)
