"""Query documents: JSON or TOML text (or a dict) -> a validated `QueryDocument`.

Every rule and message is the engine's (query.md §1–§8, §12; ops.md §3–§6).  Unknown
keys are refused at every level, inside operation objects too (a typo such as
``bin`` for ``bins`` must not pass silently).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tet.errors import QueryError
from tet.query.ops import OPS, QUERY_OP_KEYS
from tet.selection import parse_selection

__all__ = [
    "Execution",
    "Operation",
    "QueryDocument",
    "WriteSpec",
    "build_query",
    "parse_device",
    "parse_text",
    "parse_value",
    "resolve_axes",
    "resolve_fill",
]

MAX_TEXT = 1_048_576
MAX_DEPTH = 64
MAX_NAME = 1024
MAX_AXES = 8
MAX_AXIS_LABEL = 32
MAX_BINS = 4096
TRANSFORMS = ("zscore", "minmax", "l1", "l2", "center", "scale", "log1p", "sqrt", "softmax")
WRITE_TARGETS = ("switch", "spill", "sidecar", "ram")
RESERVED = ("dataset", "layout_version", "selection", "spill", "write", "execution")
_NAME_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
FILL_ATTRS = ("_FillValue", "missing_value", "fill_value")


def _v(msg: str) -> QueryError:
    return QueryError(f"validation: {msg}")


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation: its key, unresolved axis tokens and validated parameters."""

    key: str
    axes: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)

    def echo(self, axes: Sequence[int] | None = None, fill: float | None = None) -> dict[str, Any]:
        """The response's `operation` object (query.md §5); resolved axes when given."""
        tokens = [str(a) for a in axes] if axes is not None else list(self.axes)
        body: dict[str, Any] = {"axes": tokens}
        if self.key == "quantile":
            body["q"] = self.params["q"]
        elif self.key == "histogram":
            body.update(bins=self.params["bins"], min=self.params.get("min"),
                        max=self.params.get("max"))
        elif self.key == "null_count":
            resolved = fill if fill is not None else self.params.get("fill")
            body["fill"] = None if resolved is None or math.isnan(resolved) else resolved
        elif self.key == "transform":
            body = {"method": self.params["method"], "axes": tokens}
        return {self.key: body}

    def to_wire(self) -> Any:
        axes = [int(a) if a.isdigit() else a for a in self.axes]
        if not self.params and self.key not in ("quantile", "histogram", "transform"):
            return axes
        out: dict[str, Any] = dict(self.params)
        if axes:
            out["axes"] = axes
        return out


@dataclass(frozen=True, slots=True)
class Execution:
    memory_budget_bytes: int | None = None
    memory_budget_percent_bps: int | None = None
    fold_parallel: bool | None = None
    device: str | None = None

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.memory_budget_bytes is not None:
            out["memory_budget_bytes"] = self.memory_budget_bytes
        if self.memory_budget_percent_bps is not None:
            out["memory_budget_percent"] = self.memory_budget_percent_bps / 100
        if self.fold_parallel is not None:
            out["fold_parallel"] = self.fold_parallel
        if self.device is not None:
            out["device"] = self.device
        return out


@dataclass(frozen=True, slots=True)
class WriteSpec:
    target: str = "switch"
    path: str | None = None
    timestamp: bool | None = None


@dataclass(frozen=True, slots=True)
class QueryDocument:
    dataset: str
    layout_version: int | None = None
    selection: list[dict[str, Any]] | None = None
    operation: Operation | None = None
    spill: str | None = None
    write: WriteSpec | None = None
    execution: Execution | None = None

    def to_dict(self) -> dict[str, Any]:
        """The wire form (parses back to an equal document)."""
        out: dict[str, Any] = {"dataset": self.dataset}
        if self.layout_version is not None:
            out["layout_version"] = self.layout_version
        if self.selection is not None:
            out["selection"] = [dict(a) for a in self.selection]
        if self.operation is not None:
            out[self.operation.key] = self.operation.to_wire()
        if self.spill is not None:
            out["spill"] = self.spill
        if self.write is not None:
            w: dict[str, Any] = {"target": self.write.target}
            if self.write.path is not None:
                w["path"] = self.write.path
            if self.write.timestamp is not None:
                w["timestamp"] = self.write.timestamp
            out["write"] = w
        if self.execution is not None:
            out["execution"] = self.execution.to_wire()
        return out


# ---------------------------------------------------------------------------
# text


def _depth(value: Any) -> int:
    """Nesting depth without recursion (hostile documents may be deep)."""
    best, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            best = max(best, d)
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            best = max(best, d)
            stack.extend((x, d + 1) for x in v)
    return best


def _from_toml(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _from_toml(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_toml(v) for v in value]
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    return value


def parse_text(text: str, *, filename: str | None = None) -> QueryDocument:
    """Parse JSON or TOML text: the extension decides, else a leading ``{`` means JSON."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_TEXT:
        raise _v(f"query document exceeds maximum size ({size} bytes, limit {MAX_TEXT})")
    text = text.strip()
    suffix = (filename or "").lower().rsplit(".", 1)[-1] if filename and "." in filename else ""
    is_json = suffix == "json" or (suffix != "toml" and text.startswith("{"))
    if is_json:
        if text.count("[") + text.count("{") > MAX_DEPTH and _raw_depth(text) > MAX_DEPTH:
            raise _v(f"query document nesting depth {_raw_depth(text)} exceeds maximum "
                     f"{MAX_DEPTH}")
        try:
            value = json.loads(text, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            raise QueryError(f"invalid query JSON: {exc}") from None
    else:
        try:
            value = _from_toml(tomllib.loads(text))
        except (tomllib.TOMLDecodeError, RecursionError, ValueError) as exc:
            raise QueryError(f"invalid query TOML: {exc}") from None
    return parse_value(value)


def _raw_depth(text: str) -> int:
    """Bracket depth of JSON text, so hostile nesting fails before the parser recurses."""
    depth = best = 0
    in_str = escaped = False
    for ch in text:
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


def _no_constant(name: str) -> Any:
    raise ValueError(f"invalid number `{name}`")


# ---------------------------------------------------------------------------
# values


def parse_value(value: Any) -> QueryDocument:
    """Validate a JSON-model value (dict) into a `QueryDocument`."""
    depth = _depth(value)
    if depth > MAX_DEPTH:
        raise _v(f"query document nesting depth {depth} exceeds maximum {MAX_DEPTH}")
    if not isinstance(value, dict):
        raise _v("query document must be a JSON object")
    if "operation" in value:
        raise _v("nested `operation` is not supported; use a top-level op key "
                 '(e.g. `"mean": 0`)')
    if "output" in value:
        raise _v('nested `output` is not supported; use top-level `"spill": "path"`')
    for key in value:
        if key not in RESERVED and key not in OPS:
            raise _v(f"unknown field `{key}`")
    dataset = value.get("dataset")
    if not isinstance(dataset, str):
        raise _v("`dataset` must be a string")
    if not dataset.strip():
        raise _v("`dataset` must be a non-empty string")
    if len(dataset.encode()) > MAX_NAME:
        raise _v(f"`dataset` name exceeds maximum length ({len(dataset.encode())} > {MAX_NAME})")
    layout = value.get("layout_version")
    if layout is not None:
        if isinstance(layout, bool) or not isinstance(layout, (int, float)):
            raise _v("`layout_version` must be a number")
        if isinstance(layout, float) or not 0 <= layout < 2**32:
            raise _v("`layout_version` must be a non-negative integer")
    ops = [k for k in value if k in OPS]
    if len(ops) > 1:
        raise _v("query document must include at most one reduction key")
    operation = _operation(ops[0], value[ops[0]]) if ops else None
    selection = parse_selection(value["selection"]) if value.get("selection") is not None \
        else None
    spill = _spill(value)
    write = _write(value, operation)
    if operation is not None and operation.key == "transform" and spill is not None:
        raise _v("transform operations use top-level `write`, not `spill`")
    if spill is not None and write is not None:
        raise _v("query document must not set both `spill` and `write`")
    execution = _execution(value["execution"]) if "execution" in value else None
    return QueryDocument(dataset, layout if layout is None else int(layout), selection,
                         operation, spill, write, execution)


def _axis_token(v: Any) -> str:
    if v is None:
        raise _v("axis spec must not be null")
    if isinstance(v, bool):
        raise _v("axis spec must be a number, string, or array")
    if isinstance(v, float):
        if not v.is_integer() or v < 0:
            raise _v("axis index must be a non-negative integer")
        v = int(v)
    if isinstance(v, int):
        if v < 0:
            raise _v("axis index must be a non-negative integer")
        return str(v)
    if isinstance(v, str):
        if not v:
            raise _v("axis index must not be empty")
        if len(v.encode()) > MAX_AXIS_LABEL:
            raise _v(f"axis label exceeds maximum length ({MAX_AXIS_LABEL})")
        if not (v.isascii() and v.isdigit()) and not _NAME_TOKEN.fullmatch(v):
            raise _v(f'invalid axis label "{v}" (use a non-negative decimal index or a '
                     "dimension name)")
        return str(int(v)) if v.isdigit() else v
    raise _v("axis spec must be a number, string, or array")


def _axes(spec: Any) -> tuple[str, ...]:
    if isinstance(spec, dict):
        if "axis" not in spec and "axes" not in spec:
            raise _v("axis object must include `axis` or `axes`")
        spec = spec["axis"] if "axis" in spec else spec["axes"]
    if isinstance(spec, list):
        for item in spec:
            if isinstance(item, bool) or not isinstance(item, (int, float, str)):
                raise _v("axis list entries must be numbers or strings")
        tokens = tuple(_axis_token(a) for a in spec)
    else:
        tokens = (_axis_token(spec),)
    if len(tokens) > MAX_AXES:
        raise _v(f"operation has {len(tokens)} axes; maximum is {MAX_AXES}")
    return tokens


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _operation(key: str, spec: Any) -> Operation:
    op = OPS[key]
    if key in ("quantile", "histogram", "transform") and not isinstance(spec, dict):
        example = {"quantile": '{ "q": 0.95, "axis": 0 }', "histogram": '{ "bins": 16 }',
                   "transform": '{ "method": "zscore" }'}[key]
        raise _v(f"`{key}` must be a JSON object (e.g. {example})")
    params: dict[str, Any] = {}
    if isinstance(spec, dict) and not op.params and "axis" not in spec and "axes" not in spec:
        raise _v("axis object must include `axis` or `axes`")
    if isinstance(spec, dict):
        for k in spec:
            if k not in ("axis", "axes") and k not in op.params:
                raise _v(f"unknown field `{key}.{k}`")
        has_axes = "axis" in spec or "axes" in spec
        axes = _axes(spec) if has_axes else ()
        params = _params(key, spec)
    else:
        axes = _axes(spec)
    if key in ("covariance", "correlation") and len(axes) != 1:
        raise _v("covariance/correlation require exactly one observation axis "
                 '(e.g. `"axis": 0`)')
    return Operation(key, axes, params)


def _params(key: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    if key == "quantile":
        q = _number(spec.get("q"))
        if q is None:
            raise _v("`quantile.q` is required")
        if not 0.0 <= q <= 1.0:
            raise _v(f"quantile q must be in [0.0, 1.0], got {spec['q']}")
        return {"q": q}
    if key == "histogram":
        bins = spec.get("bins")
        if isinstance(bins, bool) or not isinstance(bins, int):
            raise _v("`histogram.bins` is required")
        if bins < 1:
            raise _v("histogram bins must be >= 1")
        if bins > MAX_BINS:
            raise _v(f"histogram bins exceeds maximum {MAX_BINS} (got {bins})")
        lo, hi = _number(spec.get("min")), _number(spec.get("max"))
        if (lo is None) != (hi is None):
            raise _v("histogram requires both `min` and `max` when either is set")
        if lo is not None and hi is not None:
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise _v("histogram min/max must be finite")
            if lo >= hi:
                raise _v(f"histogram min must be < max (got {spec['min']} >= {spec['max']})")
            return {"bins": bins, "min": lo, "max": hi}
        return {"bins": bins}
    if key == "transform":
        method = spec.get("method")
        if not isinstance(method, str):
            raise _v("`transform.method` is required")
        if method not in TRANSFORMS:
            raise _v(f"unknown transform method `{method}` (expected zscore, minmax, l1, l2, "
                     "center, scale, log1p, sqrt, or softmax)")
        return {"method": method}
    if key == "null_count":
        fill = _number(spec.get("fill"))
        return {} if fill is None else {"fill": fill}
    return {}


def _spill(value: Mapping[str, Any]) -> str | None:
    if "spill" not in value:
        return None
    spill = value["spill"]
    if not isinstance(spill, str):
        raise _v("`spill` must be a string path (relative to the `.tet` parent or absolute)")
    if not spill:
        raise _v("`spill` path must not be empty")
    if len(spill.encode()) > MAX_NAME:
        raise _v(f"`spill` path exceeds maximum length ({len(spill.encode())} > {MAX_NAME})")
    return spill


def _write(value: Mapping[str, Any], operation: Operation | None) -> WriteSpec | None:
    if "write" not in value:
        return None
    w = value["write"]
    if isinstance(w, str):
        spec = WriteSpec(_target(w))
    elif isinstance(w, dict):
        for k in w:
            if k not in ("target", "path", "timestamp"):
                raise _v(f"unknown field `write.{k}`")
        target = w.get("target", "switch")
        if not isinstance(target, str):
            raise _v("`write.target` must be a string")
        path = w.get("path")
        if path is not None:
            if not isinstance(path, str) or not path:
                raise _v("`write.path` must not be empty")
            if len(path.encode()) > MAX_NAME:
                raise _v(f"`write.path` exceeds maximum length ({len(path.encode())} > "
                         f"{MAX_NAME})")
        stamp = w.get("timestamp")
        if stamp is not None and not isinstance(stamp, bool):
            raise _v("`write.timestamp` must be a boolean")
        spec = WriteSpec(_target(target), path, stamp)
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
    if not isinstance(ex, dict):
        raise _v("`execution` must be a JSON object")
    known = ("memory_budget_bytes", "memory_budget_percent", "memory_budget_percent_bps",
             "fold_parallel", "device")
    for k in ex:
        if k not in known:
            raise _v(f"unknown field `execution.{k}`")
    budget = ex.get("memory_budget_bytes")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int)
                               or not 0 <= budget < 2**64):
        raise _v("`execution.memory_budget_bytes` must be a non-negative integer")
    if "memory_budget_percent" in ex and "memory_budget_percent_bps" in ex:
        raise _v("use either `execution.memory_budget_percent` or "
                 "`execution.memory_budget_percent_bps`, not both")
    bps = None
    if ex.get("memory_budget_percent") is not None:
        pct = _number(ex["memory_budget_percent"])
        if pct is None or not 0 <= pct <= 100:
            raise _v(f"`execution.memory_budget_percent` must be in [0, 100], got "
                     f"{ex['memory_budget_percent']}")
        bps = round(pct * 100)
    if ex.get("memory_budget_percent_bps") is not None:
        raw = ex["memory_budget_percent_bps"]
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
            raise _v("`execution.memory_budget_percent_bps` must be a non-negative integer")
        if raw > 65535:
            raise _v("`execution.memory_budget_percent_bps` exceeds u16")
        if raw > 10_000:
            raise _v("`execution.memory_budget_percent_bps` must be <= 10000 (100%)")
        bps = raw
    parallel = ex.get("fold_parallel")
    if parallel is not None and not isinstance(parallel, bool):
        raise _v("`execution.fold_parallel` must be a boolean")
    device = ex.get("device")
    if device is not None:
        if not isinstance(device, str):
            raise _v("`execution.device` must be a string")
        device = parse_device(device)
    return Execution(budget, bps, parallel, device)


def parse_device(token: str) -> str:
    """A device token normalised (query.md §12): cpu, auto, metal, cuda[:N|:multi], rocm[…]."""
    t = token.strip()
    if not t:
        raise _v("device token must not be empty")
    low = t.lower()
    if low in ("cpu", "auto", "metal", "cuda", "rocm", "cuda:multi", "rocm:multi"):
        return low
    for family in ("cuda", "rocm"):
        if low.startswith(family + ":"):
            index = low[len(family) + 1:]
            if not index.isdigit():
                raise _v(f"invalid device `{t}` (expected {family}:N with non-negative N)")
            return family if family == "cuda" and int(index) == 0 else f"{family}:{int(index)}"
    raise _v(f"unknown device `{t}` (expected cpu, auto, metal, cuda[:N| :multi], or "
             "rocm[:N| :multi])")


# ---------------------------------------------------------------------------
# plan-time resolution


def resolve_axes(tokens: Sequence[str], ndim: int,
                 dim_names: Sequence[str] | None) -> tuple[int, ...]:
    """Axis tokens -> sorted axis indices of the logical selection (query.md §4)."""
    out: list[int] = []
    for token in tokens:
        if token.isdigit():
            index = int(token)
            if index >= ndim:
                raise _v(f"operation axis index {index} out of range for rank {ndim}")
        else:
            if not dim_names:
                raise _v(f"dimension name `{token}` requires footer metadata `dim_names` for "
                         "this dataset")
            if len(dim_names) != ndim:
                raise _v(f"metadata dim_names length {len(dim_names)} does not match dataset "
                         f"rank {ndim}")
            hits = [i for i, n in enumerate(dim_names) if n == token]
            if not hits:
                raise _v(f"unknown dimension name `{token}` (dim_names: "
                         f"{', '.join(dim_names)})")
            if len(hits) > 1:
                raise _v(f"ambiguous dimension name `{token}` (duplicate dim_names entries)")
            index = hits[0]
        if index in out:
            raise _v(f"duplicate operation axis index {index}")
        out.append(index)
    if out and len(out) == ndim:
        raise _v('operation axes list reduces every dimension; use "axes": [] for a scalar '
                 "reduction")
    return tuple(sorted(out))


def resolve_fill(params: Mapping[str, Any], attrs: Mapping[str, str]) -> float:
    """null_count's fill: the query's, else the first fill attr of the dataset."""
    if params.get("fill") is not None:
        return float(params["fill"])
    for name in FILL_ATTRS:
        if name in attrs:
            text = str(attrs[name]).strip()
            if text.lower() == "nan":
                return math.nan
            try:
                return float(text)
            except ValueError:
                raise _v(f'invalid fill value "{attrs[name]}"') from None
    raise _v("null_count requires `fill` in the query or dataset attr "
             "(_FillValue, missing_value, fill_value)")


def build_query(dataset: str, *, selection: Any = None, **op: Any) -> dict[str, Any]:
    """``{"dataset": …, <op>: …, ["selection": …]}`` with exactly one known op key."""
    if len(op) != 1:
        raise ValueError("exactly one operation key required")
    (key, value), = op.items()
    if key not in QUERY_OP_KEYS:
        raise ValueError(f"unknown query op {key!r}")
    doc: dict[str, Any] = {"dataset": dataset, key: value}
    if selection is not None:
        doc["selection"] = selection
    return doc
