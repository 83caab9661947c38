"""Query documents: JSON or TOML text (or a dict) -> a validated `QueryDocument`.

Every rule and message is the engine's (query.md §1–§8, §12; ops.md §3–§6), so a
document fails the same way from the CLI, from Python and from a profile file.
Unknown keys are refused at every level, inside operation objects too (README #30:
a typo such as ``bin`` for ``bins`` must not pass silently).  An explicit ``null`` is
not "absent": a key that is present must hold a value of its type (``null`` is refused
with the same text as any other wrong type), except where the wire grammar itself
allows ``null`` (selection bounds and labels, histogram ``min``/``max``, ignored op
parameters).  Python dicts may carry NumPy scalars: NumPy integers count wherever an
integer does and NumPy floats wherever a float does; floats are never integers
(``1.0`` is not an axis index) and booleans are never numbers.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tet.errors import validation as _v
from tet.jsonlimits import MAX_DEPTH
from tet.query.doctext import JSON_SYNTAX as JSON_SYNTAX
from tet.query.doctext import MAX_TEXT as MAX_TEXT
from tet.query.doctext import load_text as load_text
from tet.query.doctext import text_bytes as _nbytes
from tet.query.doctext import value_depth
from tet.query.ops import OPS, QUERY_OP_KEYS, TRANSFORM_METHODS
from tet.query.resolve import FILL_ATTRS as FILL_ATTRS
from tet.query.resolve import fold_axes as fold_axes
from tet.query.resolve import json_number as _number
from tet.query.resolve import resolve_axes as resolve_axes
from tet.query.resolve import resolve_fill as resolve_fill
from tet.query.resolve import resolve_operation as resolve_operation
from tet.selection import parse_selection
from tet.wire import format_float, is_json_int
from tet.wire import is_axis_index as _is_index

__all__ = [
    "Execution",
    "Operation",
    "QueryDocument",
    "WriteSpec",
    "build_query",
    "did_you_mean",
    "fold_axes",
    "parse_device",
    "parse_text",
    "parse_value",
    "resolve_axes",
    "resolve_fill",
    "resolve_operation",
]

MAX_NAME = 1024
MAX_AXES = 8
MAX_AXIS_LABEL = 32
MAX_BINS = 4096
U64 = 2**64
TRANSFORMS = TRANSFORM_METHODS
WRITE_TARGETS = ("switch", "spill", "sidecar", "ram")
RESERVED = ("dataset", "layout_version", "selection", "spill", "write", "execution")
EXECUTION_KEYS = ("memory_budget_bytes", "memory_budget_percent", "memory_budget_percent_bps",
                  "fold_parallel", "device", "mask_fill")
_NAME_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _fmt(x: Any) -> str:
    """A number as the engine prints it (Rust ``Display``: ``2`` not ``2.0``, no exponent)."""
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return format_float(x, "display")
    return str(x)


def _is_obj(v: Any) -> bool:
    return isinstance(v, Mapping)


def _is_arr(v: Any) -> bool:
    return isinstance(v, (list, tuple))


def _integer(v: Any, end: int = 2**64) -> int | None:
    """A non-negative JSON integer below `end` (NumPy integers included); None for
    anything else, floats with integral values too."""
    return int(v) if is_json_int(v) and 0 <= int(v) < end else None


def _is_bool(v: Any) -> bool:
    return isinstance(v, (bool, np.bool_))


def _no_unknown(obj: Mapping[Any, Any], known: Sequence[str], prefix: str) -> None:
    """Refuse a key outside `known`; with several, the first in sorted order is named,
    as the engine (whose JSON objects keep their keys sorted) names it."""
    unknown = [k for k in obj if k not in known]
    if unknown:
        name = min(unknown, key=str)
        raise _v(f"unknown field `{prefix}{name}`{did_you_mean(str(name), known, obj, prefix)}")


def did_you_mean(name: str, known: Sequence[str], present: Any = (), prefix: str = "") -> str:
    """`` (did you mean `mean`?)`` for the closest of `known` to a misspelt `name`
    (difflib, keys already `present` left out), or ``""`` when none is close."""
    choices = [k for k in known if k not in present]
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" (did you mean `{prefix}{close[0]}`?)" if close else ""


# ---------------------------------------------------------------------------
# the document model


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation: its key, unresolved axis tokens and validated parameters.

    Axis tokens are decimal strings or dimension names; they are resolved against a
    dataset only at plan time (`resolve_axes`), because names need its metadata.
    `params` holds ``q``, ``bins``/``min``/``max``, ``fill`` or ``method``.
    """

    key: str
    axes: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)

    def echo(self, axes: Sequence[int] | None = None, fill: float | None = None) -> dict[str, Any]:
        """The response's ``operation`` object (query.md §5), with resolved axes/fill if given."""
        tokens = [str(a) for a in axes] if axes is not None else list(self.axes)
        body: dict[str, Any] = {"axes": tokens}
        if self.key == "quantile":
            body["q"] = self.params["q"]
        elif self.key == "histogram":
            body.update(bins=self.params["bins"], min=self.params.get("min"),
                        max=self.params.get("max"))
        elif self.key == "null_count":
            resolved = fill if fill is not None else self.params.get("fill")
            body["fill"] = None if resolved is None or not math.isfinite(resolved) else resolved
        elif self.key == "transform":
            body = {"method": self.params["method"], "axes": tokens}
        return {self.key: body}

    def to_dict(self) -> dict[str, Any]:
        """``{key: wire value}``: a list of axes, or an object when the op has parameters."""
        axes = [int(a) if _is_index(a) and int(a) < U64 else a for a in self.axes]
        if not self.params and not OPS[self.key].object_only:
            return {self.key: axes}
        body: dict[str, Any] = dict(self.params)
        if axes:
            body["axes"] = axes
        return {self.key: body}


@dataclass(frozen=True, slots=True)
class Execution:
    """Host hints of the ``execution`` block (query.md §6); None = not given."""

    memory_budget_bytes: int | None = None
    memory_budget_percent_bps: int | None = None
    fold_parallel: bool | None = None
    device: str | None = None
    mask_fill: bool | None = None  # our extension: fill values read as missing (tet.query.mask)

    def to_dict(self) -> dict[str, Any]:
        """The wire form; the percentage is written as ``memory_budget_percent`` (bps/100)."""
        out: dict[str, Any] = {}
        if self.memory_budget_bytes is not None:
            out["memory_budget_bytes"] = self.memory_budget_bytes
        if self.memory_budget_percent_bps is not None:
            out["memory_budget_percent"] = self.memory_budget_percent_bps / 100
        if self.fold_parallel is not None:
            out["fold_parallel"] = self.fold_parallel
        if self.device is not None:
            out["device"] = self.device
        if self.mask_fill is not None:
            out["mask_fill"] = self.mask_fill
        return out


@dataclass(frozen=True, slots=True)
class WriteSpec:
    """Where a transform's output goes (query.md §8); path/timestamp None = not given."""

    target: str = "switch"
    path: str | None = None
    timestamp: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """The object wire form (always valid, unlike the bare string with a path)."""
        out: dict[str, Any] = {"target": self.target}
        if self.path is not None:
            out["path"] = self.path
        if self.timestamp is not None:
            out["timestamp"] = self.timestamp
        return out


@dataclass(frozen=True, slots=True)
class QueryDocument:
    """A validated query document; `selection` is `parse_selection`'s per-axis dicts."""

    dataset: str
    layout_version: int | None = None
    selection: list[dict[str, Any]] | None = None
    operation: Operation | None = None
    spill: str | None = None
    write: WriteSpec | None = None
    execution: Execution | None = None

    def to_dict(self) -> dict[str, Any]:
        """The wire form; it parses back to an equal document."""
        out: dict[str, Any] = {}
        if self.layout_version is not None:
            out["layout_version"] = self.layout_version
        out["dataset"] = self.dataset
        if self.selection is not None:
            out["selection"] = [dict(a) for a in self.selection]
        if self.operation is not None:
            out.update(self.operation.to_dict())
        if self.spill is not None:
            out["spill"] = self.spill
        if self.write is not None:
            out["write"] = self.write.to_dict()
        if self.execution is not None:
            out["execution"] = self.execution.to_dict()
        return out


# ---------------------------------------------------------------------------
# text


def parse_text(text: str, *, filename: str | None = None) -> QueryDocument:
    """Parse JSON or TOML text into a validated document (`load_text`, then `parse_value`)."""
    return parse_value(load_text(text, filename=filename))


# ---------------------------------------------------------------------------
# values


def parse_value(value: Any) -> QueryDocument:
    """Validate a JSON-model value (a dict) into a `QueryDocument`.

    Raises
    ------
    QueryError
        A document rule (``validation: …``), in the engine's order.
    SelectionError
        A selection that is malformed on its own (`parse_selection`).
    """
    depth = value_depth(value)
    if depth > MAX_DEPTH:
        raise _v(f"query document nesting depth {depth} exceeds maximum {MAX_DEPTH}")
    if not _is_obj(value):
        raise _v("query document must be a JSON object")
    if "operation" in value:
        raise _v("nested `operation` is not supported; use a top-level op key "
                 '(e.g. `"mean": 0`)')
    if "output" in value:
        raise _v('nested `output` is not supported; use top-level `"spill": "path"`')
    _no_unknown(value, (*RESERVED, *OPS), "")
    dataset = _dataset(value.get("dataset"))
    layout = _layout_version(value["layout_version"]) if "layout_version" in value else None
    ops = [k for k in value if k in OPS]
    if len(ops) > 1:
        raise _v("query document must include at most one reduction key")
    operation = _operation(ops[0], value[ops[0]]) if ops else None
    selection = parse_selection(value["selection"]) if "selection" in value else None
    execution = _execution(value["execution"]) if "execution" in value else None
    spill = _spill(value["spill"]) if "spill" in value else None
    write = _write(value["write"], operation) if "write" in value else None
    if operation is not None and operation.key == "transform" and spill is not None:
        raise _v("transform operations use top-level `write`, not `spill`")
    if spill is not None and write is not None:
        raise _v("query document must not set both `spill` and `write`")
    return QueryDocument(dataset, layout, selection, operation, spill, write, execution)


def _dataset(dataset: Any) -> str:
    if not isinstance(dataset, str):
        raise _v("`dataset` must be a string")
    if not dataset.strip():
        raise _v("`dataset` must be a non-empty string")
    if _nbytes(dataset) > MAX_NAME:
        raise _v(f"`dataset` name exceeds maximum length ({_nbytes(dataset)} > {MAX_NAME})")
    return dataset


def _layout_version(layout: Any) -> int:
    if _number(layout) is None:
        raise _v("`layout_version` must be a number")
    version = _integer(layout, 2**32)
    if version is None:
        raise _v("`layout_version` must be a non-negative integer")
    return version


def _axis_token(v: Any) -> str:
    if v is None:
        raise _v("axis spec must not be null")
    if _is_bool(v):
        raise _v("axis spec must be a number, string, or array")
    if _number(v) is not None:  # a float (even 1.0 or -0.0), a negative or a huge integer
        index = _integer(v)
        if index is None:
            raise _v("axis index must be a non-negative integer")
        return str(index)
    if isinstance(v, str):
        if not v:
            raise _v("axis index must not be empty")
        if _nbytes(v) > MAX_AXIS_LABEL:
            raise _v(f"axis label exceeds maximum length ({MAX_AXIS_LABEL})")
        if _is_index(v):
            if int(v) >= U64:
                raise _v(f'invalid axis index "{v}"')
            return str(int(v))
        if not _NAME_TOKEN.fullmatch(v):
            raise _v(f'invalid axis label "{v}" (use a non-negative decimal index or a '
                     "dimension name)")
        return v
    raise _v("axis spec must be a number, string, or array")


def _axes(spec: Any, where: str) -> tuple[str, ...]:
    """An axis spec: ``[]``, a number, a name, a list, or ``{"axis"/"axes": spec}``.

    The object form nests (``{"axis": {"axes": [0]}}`` is ``[0]``), as in the engine's
    grammar; a present ``axis`` wins over ``axes`` even when it is ``null`` (which is
    then refused).  `where` names the object for unknown-key messages (``mean.axis``).
    """
    while _is_obj(spec):
        key = "axis" if "axis" in spec else "axes" if "axes" in spec else None
        if key is None:
            raise _v("axis object must include `axis` or `axes`")
        _no_unknown(spec, ("axis", "axes"), f"{where}.")
        spec, where = spec[key], f"{where}.{key}"
    if _is_arr(spec):
        for item in spec:
            if _is_bool(item) or (_number(item) is None and not isinstance(item, str)):
                raise _v("axis list entries must be numbers or strings")
        tokens = tuple(_axis_token(a) for a in spec)
    else:
        tokens = (_axis_token(spec),)
    if len(tokens) > MAX_AXES:
        raise _v(f"operation has {len(tokens)} axes; maximum is {MAX_AXES}")
    return tokens


def _operation(key: str, spec: Any) -> Operation:
    op = OPS[key]
    if op.object_only and not _is_obj(spec):
        raise _v(f"`{key}` must be a JSON object (e.g. {op.object_example})")
    params: dict[str, Any] = {}
    if _is_obj(spec):
        has_axes = "axis" in spec or "axes" in spec
        if not op.params and not has_axes:
            raise _v("axis object must include `axis` or `axes`")
        _no_unknown(spec, ("axis", "axes", *op.params), f"{key}.")
        chosen = "axis" if "axis" in spec else "axes"
        axes = _axes(spec[chosen], f"{key}.{chosen}") if has_axes else ()
        params = _params(key, spec)
    else:
        axes = _axes(spec, key)
    if op.single_axis and len(axes) != 1:
        raise _v("covariance/correlation require exactly one observation axis "
                 '(e.g. `"axis": 0`)')
    return Operation(key, axes, params)


def _params(key: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    if key == "quantile":
        q = _number(spec.get("q"))
        if q is None:
            raise _v("`quantile.q` is required")
        if not 0.0 <= q <= 1.0:
            raise _v(f"quantile q must be in [0.0, 1.0], got {_fmt(q)}")
        return {"q": q}
    if key == "histogram":
        return _histogram(spec)
    if key == "transform":
        method = spec.get("method")
        if not isinstance(method, str):
            raise _v("`transform.method` is required")
        if method not in TRANSFORMS:
            raise _v(f"unknown transform method `{method}` (expected zscore, minmax, l1, l2, "
                     "center, scale, log1p, sqrt, or softmax)")
        return {"method": method}
    if key == "null_count":
        fill = _number(spec.get("fill"))  # a non-number is ignored (ops.md §4)
        return {} if fill is None else {"fill": fill}
    return {}


def _histogram(spec: Mapping[str, Any]) -> dict[str, Any]:
    # The engine reads bins as a u32: a larger integer reads as absent, as the reference
    # says ("is required"); tests/test_document_strict.py pins the texts.
    bins = _integer(spec.get("bins"), 2**32)
    if bins is None:
        raise _v("`histogram.bins` is required")
    if bins < 1:
        raise _v("histogram bins must be >= 1")
    if bins > MAX_BINS:
        raise _v(f"histogram bins exceeds maximum {MAX_BINS} (got {bins})")
    lo, hi = _number(spec.get("min")), _number(spec.get("max"))  # non-numbers are ignored
    if lo is None and hi is None:
        return {"bins": bins}
    if lo is None or hi is None:
        raise _v("histogram requires both `min` and `max` when either is set")
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise _v("histogram min/max must be finite")
    if lo >= hi:
        raise _v(f"histogram min must be < max (got {_fmt(lo)} >= {_fmt(hi)})")
    return {"bins": bins, "min": lo, "max": hi}


def _spill(spill: Any) -> str:
    if not isinstance(spill, str):
        raise _v("`spill` must be a string path (relative to the `.tet` parent or absolute)")
    if not spill:
        raise _v("`spill` path must not be empty")
    if _nbytes(spill) > MAX_NAME:
        raise _v(f"`spill` path exceeds maximum length ({_nbytes(spill)} > {MAX_NAME})")
    return spill


def _write(w: Any, operation: Operation | None) -> WriteSpec:
    if isinstance(w, str):
        spec = WriteSpec(_target(w))
    elif _is_obj(w):
        _no_unknown(w, ("target", "path", "timestamp"), "write.")
        target = w.get("target", "switch")
        if not isinstance(target, str):
            raise _v("`write.target` must be a string")
        target = _target(target)
        path = w.get("path")
        if "path" in w:
            if not isinstance(path, str):
                raise _v("`write.path` must be a string")
            if not path:
                raise _v("`write.path` must not be empty")
            if _nbytes(path) > MAX_NAME:
                raise _v(f"`write.path` exceeds maximum length ({_nbytes(path)} > {MAX_NAME})")
        stamp = w.get("timestamp")
        if "timestamp" in w:
            if not _is_bool(stamp):
                raise _v("`write.timestamp` must be a boolean")
            stamp = bool(stamp)
        spec = WriteSpec(target, path, stamp)
    else:
        raise _v("`write` must be a target string (`switch`, `spill`, `sidecar`, `ram`) or an "
                 "object with `target` / `path`")
    if operation is None:
        raise _v("`write` requires a transform operation")
    if operation.key != "transform":
        raise _v("`write` is only valid with `transform`")
    if spec.path is not None and spec.target not in ("spill", "sidecar"):
        raise _v("`write.path` is only valid with `spill` or `sidecar` targets")
    if spec.timestamp is not None and spec.target != "sidecar":
        raise _v("`write.timestamp` is only valid with `sidecar` target")
    return spec


def _target(token: str) -> str:
    if token not in WRITE_TARGETS:
        raise _v(f"unknown write target `{token}` (expected switch, spill, sidecar, or ram)")
    return token


def _execution(ex: Any) -> Execution:
    if not _is_obj(ex):
        raise _v("`execution` must be a JSON object")
    _no_unknown(ex, EXECUTION_KEYS, "execution.")
    budget = None
    if "memory_budget_bytes" in ex:
        budget = _u64_key(ex, "memory_budget_bytes")
    bps = None
    if "memory_budget_percent_bps" in ex:  # the embedder form is read (and checked) first
        bps = _u64_key(ex, "memory_budget_percent_bps")
        if bps > 0xFFFF:
            raise _v("`execution.memory_budget_percent_bps` exceeds u16")
        if bps > 10_000:
            raise _v("`execution.memory_budget_percent_bps` must be <= 10000 (100%)")
        if "memory_budget_percent" in ex:
            raise _v("use either `execution.memory_budget_percent` or "
                     "`execution.memory_budget_percent_bps`, not both")
    elif "memory_budget_percent" in ex:
        value = _number(ex["memory_budget_percent"])
        if value is None:
            raise _v("`execution.memory_budget_percent` must be a number")
        if not 0 <= value <= 100:
            raise _v(f"`execution.memory_budget_percent` must be in [0, 100], got {_fmt(value)}")
        bps = math.floor(value * 100 + 0.5)  # round half away from zero, as the engine does
    parallel = None
    if "fold_parallel" in ex:
        if not _is_bool(ex["fold_parallel"]):
            raise _v("`execution.fold_parallel` must be a boolean")
        parallel = bool(ex["fold_parallel"])
    device = None
    if "device" in ex:
        device = parse_device(ex["device"])
    mask = None
    if "mask_fill" in ex:
        if not _is_bool(ex["mask_fill"]):
            raise _v("`execution.mask_fill` must be a boolean")
        mask = bool(ex["mask_fill"])
    return Execution(budget, bps, parallel, device, mask)


def _u64_key(ex: Mapping[str, Any], key: str) -> int:
    """An ``execution`` integer: a non-number (``null`` too) is "must be a number", a
    number that is not a u64 (negative, fractional, ``1.0``, >= 2**64) the integer rule."""
    if _number(ex[key]) is None:
        raise _v(f"`execution.{key}` must be a number")
    value = _integer(ex[key])
    if value is None:
        raise _v(f"`execution.{key}` must be a non-negative integer")
    return value


def parse_device(token: Any) -> str:
    """A device token normalised (query.md §12).

    Words are case-insensitive; ``cuda:0`` is ``cuda`` (device 0), as
    ``device_requested`` echoes it, and likewise ``rocm:0`` is ``rocm``.

    Raises
    ------
    QueryError
        Not a string, an empty token, a bad device index, or an unknown device.
    """
    if not isinstance(token, str):
        raise _v("`execution.device` must be a string")
    t = token.strip()
    if not t:
        raise _v("device token must not be empty")
    low = t.lower()
    if low in ("cpu", "auto", "metal", "cuda", "rocm", "cuda:multi", "rocm:multi"):
        return low
    for family in ("cuda", "rocm"):
        if low.startswith(family + ":"):
            index = low[len(family) + 1:]
            if not _is_index(index) or int(index) >= U64:
                raise _v(f"invalid device `{t}` (expected {family}:N with non-negative N)")
            return family if int(index) == 0 else f"{family}:{int(index)}"
    raise _v(f"unknown device `{t}` (expected cpu, auto, metal, cuda[:N| :multi], or "
             "rocm[:N| :multi])")


def build_query(dataset: str, *, selection: Any = None, **op: Any) -> dict[str, Any]:
    """A wire document ``{"dataset": …, <op>: …, ["selection": […]]}`` (python-api.md §1).

    The dataset is not checked; the engine validates everything else.

    Raises
    ------
    ValueError
        Not exactly one op keyword, or an op key the engine does not know.
    """
    if len(op) != 1:
        raise ValueError("exactly one operation key required")
    ((key, value),) = op.items()
    if key not in QUERY_OP_KEYS:
        raise ValueError(f"unknown query op {key!r}")
    doc: dict[str, Any] = {"dataset": dataset, key: value}
    if selection is not None:
        doc["selection"] = ([dict(a) if _is_obj(a) else a for a in selection]
                            if _is_arr(selection) else selection)
    return doc
