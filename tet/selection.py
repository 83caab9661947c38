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
MAX_RANK = 8


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


def _fail(msg: str) -> SelectionError:
    return SelectionError(f"validation: {msg}")


def _parse_u64(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer() and value >= 0:
            return int(value)
        shown = f"floating point `{value}`" if isinstance(value, float) else f"`{value!r}`"
        raise SelectionError(f"invalid query JSON: invalid type: {shown}, expected u64")
    if value < 0 or value >= 2**64:
        raise SelectionError(f"invalid query JSON: invalid value: integer `{value}`, expected u64")
    return value


def parse_selection(raw: Any) -> list[dict[str, Any]]:
    """Validate the wire form (or expand the box form) into per-axis dicts.

    Checks that need no dataset: key names, types, rank <= 8, step >= 1,
    start/label exclusivity and start < stop.
    """
    if type(raw) is not list and isinstance(raw, Mapping):
        raw = _expand_box_form(raw)
    if not isinstance(raw, (list, tuple)):
        raise SelectionError(
            f"invalid query JSON: invalid type: {type(raw).__name__}, expected a sequence"
        )
    if len(raw) > MAX_RANK:
        raise _fail(f"selection rank {len(raw)} exceeds maximum {MAX_RANK}")
    axes: list[dict[str, Any]] = []
    for i, entry in enumerate(raw):
        if type(entry) is not dict and not isinstance(entry, Mapping):
            raise SelectionError(
                f"invalid query JSON: selection[{i}] must be an object with "
                f"`start`, `stop`, `step`, `start_label` or `stop_label`"
            )
        if not _AXIS_KEY_SET.issuperset(entry):
            key = next(k for k in entry if k not in _AXIS_KEY_SET)
            raise SelectionError(
                f"invalid query JSON: unknown field `{key}`, expected one of "
                + ", ".join(f"`{k}`" for k in AXIS_KEYS)
            )
        axis: dict[str, Any] = {}
        for key, value in entry.items():
            if value is None:
                continue
            if key.endswith("_label"):
                if not isinstance(value, str):
                    raise SelectionError(f"invalid query JSON: `{key}` must be a string")
                axis[key] = value
            else:
                if isinstance(value, np.integer):  # NumPy users pass these; JSON never does
                    value = int(value)
                fast = type(value) is int and 0 <= value < 2**64
                axis[key] = value if fast else _parse_u64(value)
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
        axes.append(axis)
    return axes


def _expand_box_form(box: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``{"start": [..], "stop": [..], "step": [..]}`` -> per-axis dicts."""
    unknown = [k for k in box if k not in ("start", "stop", "step")]
    if unknown:
        raise SelectionError(
            f"invalid query JSON: unknown field `{unknown[0]}` in box selection, "
            "expected `start`, `stop` or `step` arrays"
        )
    lists = {k: v for k, v in box.items() if v is not None}
    lengths = {len(v) for v in lists.values() if isinstance(v, (list, tuple))}
    if len(lengths) != 1 or len(lists) != sum(isinstance(v, (list, tuple)) for v in lists.values()):
        raise SelectionError(
            "invalid query JSON: box selection needs `start`/`stop`/`step` arrays of equal length"
        )
    rank = lengths.pop()
    return [{k: v[i] for k, v in lists.items()} for i in range(rank)]


LabelLookup = Callable[[int], Sequence[str] | None]


def resolve_selection(
    raw: Any, shape: Sequence[int], labels: LabelLookup | None = None, *, has_metadata: bool = True
) -> Box:
    """Resolve a selection (wire or box form, or None) against a dataset shape.

    `labels(d)` returns the coordinate labels of axis d, or None when that axis
    has no coords.
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
    start, stop, step = [], [], []
    for d, axis in enumerate(axes):
        s, e = axis.get("start"), axis.get("stop")
        for end in ("start", "stop") if len(axis) > ("start" in axis) + ("stop" in axis) + (
                "step" in axis) else ():
            label = axis.get(f"{end}_label")
            if label is None:
                continue
            if not has_metadata:
                raise _fail("selection coordinate labels require footer metadata for this dataset")
            found = labels(d) if labels is not None else None
            if found is None:
                raise _fail(
                    f"selection[{d}] coordinate labels require `coords` for this axis "
                    "in footer metadata"
                )
            try:
                index = list(found).index(label)
            except ValueError:
                raise _fail(
                    f'unknown coordinate label "{label}" (axis has {len(found)} labels)'
                ) from None
            if end == "start":
                s = index
            else:
                e = index
        s = 0 if s is None else s
        e = shape[d] if e is None else e
        if s >= shape[d]:
            raise _fail(f"selection[{d}].start must be < shape[{d}] ({shape[d]}), got {s}")
        if e > shape[d]:
            raise _fail(f"selection[{d}].stop must be <= shape[{d}] ({shape[d]}), got {e}")
        if s >= e:
            raise _fail(f"selection[{d}]: require start < stop (got {s} >= {e})")
        start.append(s)
        stop.append(e)
        step.append(axis.get("step", 1))
    return Box(tuple(start), tuple(stop), tuple(step))


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
