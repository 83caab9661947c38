"""The six stdout shapes of `tet query` (cli.md §4), as pure functions of a response
document: `full`, `json`, `stats`, `plan`, `quiet` and `table`.

They take the dict `execute_document` returns (or the validate-only echo) and give back
the text to print, so every format is testable without a file or a terminal.  A result
that a format cannot show (a missing field, a partial boolean in a table) is a
`CommandFailed`, never a half-printed output.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tet.cli.common import CommandFailed
from tet.query.ops import OPS
from tet.query.response import PREVIEW_ORDER, clean
from tet.query.transform import METHODS
from tet.wire import format_float

__all__ = [
    "FORMATS",
    "LIST_MAX",
    "fmt_float",
    "fmt_list",
    "fmt_shape",
    "full_text",
    "json_text",
    "not_found_hint",
    "plan_view",
    "quiet_line",
    "render",
    "stats_view",
    "table_text",
]

FORMATS = ("full", "json", "stats", "plan", "quiet", "table")
"""Every `--format` value; `-q` is `quiet`."""

LIST_MAX = 12  # quiet lists: at most this many items, then `,…+N]`
NAMES_MAX = 8  # quiet `available=[…]`
SAMPLE_MAX = 6  # quiet preview sample
GRID_MAX = 16  # table slice: values shown
MESSAGE_MAX = 72  # table `message` row, bytes
NAME_MAX = 40  # table unmatched `datasets:` names, bytes

_STATS_CATALOG = ("matched", "dataset_index", "dtype", "shape")
_STATS_PLAN = ("chunk_touch_policy", "chunk_count", "total_stored_bytes", "chunks_truncated",
               "chunks_omitted", "logical_selection_shape", "logical_f32_element_count")

Response = Mapping[str, Any]


# ---------------------------------------------------------------------------
# numbers and lists


def fmt_float(v: Any) -> str:
    """A float as quiet/table print it: up to 6 decimals, trailing zeros and dot trimmed
    (``3.5``, ``2.916667``, ``21``); ``NaN``/``inf``/``-inf``.  ``None`` is how the wire
    carries a non-finite value it cannot name, so it prints as ``NaN``."""
    return "NaN" if v is None else format_float(float(v), "fixed")


def _fmt_value(v: Any) -> str:
    """One value of any kind: booleans as ``true``/``false``, integers exactly, floats
    by `fmt_float`."""
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return fmt_float(v)


def fmt_list(values: Sequence[Any], fmt: Callable[[Any], str] = _fmt_value,
             limit: int = LIST_MAX) -> str:
    """``[a,b,…]`` with at most `limit` items, then ``,…+N]`` for the rest."""
    head = ",".join(fmt(v) for v in values[:limit])
    more = f",…+{len(values) - limit}" if len(values) > limit else ""
    return f"[{head}{more}]"


def fmt_shape(shape: Sequence[int]) -> str:
    """``2×3``; an empty shape prints as ``0``."""
    return "×".join(str(n) for n in shape) if shape else "0"


def _truncate(text: str, limit: int) -> str:
    """At most `limit` UTF-8 bytes, cut on a character boundary and marked with ``…``."""
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text
    return raw[:max(limit - 1, 0)].decode("utf-8", "ignore") + "…"


def _missing(field: str) -> CommandFailed:
    return CommandFailed(f"table/quiet output: missing execution.{field} after --execute")


def _need(ex: Mapping[str, Any], field: str) -> Any:
    if field not in ex:
        raise _missing(field)
    return ex[field]


# ---------------------------------------------------------------------------
# the response, read


def _operation(resp: Response) -> tuple[str, dict[str, Any]] | None:
    """The echoed operation: its wire key and body (``axes``, ``q``, ``bins``, …)."""
    op = resp.get("operation")
    if not isinstance(op, Mapping) or len(op) != 1:
        return None
    ((key, body),) = op.items()
    return str(key), dict(body) if isinstance(body, Mapping) else {}


def _axes(body: Mapping[str, Any]) -> list[str]:
    return [str(a) for a in body.get("axes") or []]


def _result(key: str) -> str | None:
    """The op's result kind (`OpSpec.result`); None for a key the table does not know."""
    spec = OPS.get(key)
    return spec.result if spec is not None else None


def _is_partial(key: str, body: Mapping[str, Any]) -> bool:
    """Partial = reduced over listed axes; covariance/correlation name an observation
    axis but always answer with one whole-selection matrix."""
    return bool(_axes(body)) and _result(key) != "matrix"


def _unmatched(resp: Response) -> bool:
    catalog = resp.get("catalog")
    return isinstance(catalog, Mapping) and catalog.get("matched") is False


def _available(resp: Response) -> list[str]:
    catalog = resp.get("catalog") or {}
    return [str(n) for n in catalog.get("available_datasets") or []]


def _method(body: Mapping[str, Any], ex: Mapping[str, Any]) -> str:
    method = body.get("method") or ex.get("transform_method")
    if method not in METHODS:
        raise _missing("transform_method")
    return str(method)


def _preview(ex: Mapping[str, Any]) -> tuple[str, list[Any], bool] | None:
    """The filled preview array (dtype name, values, truncated); f16 bit patterns are
    decoded to their float values for display."""
    for name in PREVIEW_ORDER:
        values = ex.get(f"{name}_preview") or []
        if values:
            if name == "f16":
                bits = np.array([v if v is not None else 0x7E00 for v in values], np.uint16)
                values = bits.view(np.float16).astype(np.float64).tolist()
            return name, list(values), bool(ex.get(f"{name}_preview_truncated"))
    return None


# ---------------------------------------------------------------------------
# full, json, stats, plan


def full_text(resp: Response) -> str:
    """The whole response, pretty JSON with a 2-space indent."""
    return json.dumps(clean(dict(resp)), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def json_text(resp: Response) -> str:
    """The whole response as one compact line."""
    return json.dumps(clean(dict(resp)), separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False) + "\n"


def stats_view(resp: Response, *, execution: bool = True) -> dict[str, Any]:
    """The slim document: top-level echo, catalog and plan summaries, and the execution
    block without chunk rows or preview arrays; keys that are unset are left out."""
    out: dict[str, Any] = {"status": resp.get("status"), "accepted": resp.get("accepted"),
                           "dataset": resp.get("dataset")}
    for key in ("layout_version", "selection_axes", "operation"):
        if resp.get(key) is not None:
            out[key] = resp[key]
    out["message"] = resp.get("message")
    if resp.get("tet_file") is not None:
        out["tet_file"] = resp["tet_file"]
    catalog = resp.get("catalog")
    if isinstance(catalog, Mapping):
        cat = {k: catalog[k] for k in _STATS_CATALOG if catalog.get(k) is not None}
        if catalog.get("matched") is False and "available_datasets" in catalog:
            cat["available_datasets"] = catalog["available_datasets"]
        out["catalog"] = cat
    plan = resp.get("read_plan")
    if isinstance(plan, Mapping):
        out["read_plan"] = {k: plan[k] for k in _STATS_PLAN if k in plan}
    ex = resp.get("execution")
    if execution and isinstance(ex, Mapping):
        out["execution"] = {k: v for k, v in ex.items()
                            if not k.endswith(("_preview", "_preview_truncated"))}
    slim: dict[str, Any] = clean(out)
    return slim


def plan_view(resp: Response) -> dict[str, Any]:
    """`stats_view` without `execution`, even after ``--execute``."""
    return stats_view(resp, execution=False)


# ---------------------------------------------------------------------------
# quiet


def _extra_tags(key: str, body: Mapping[str, Any]) -> list[str]:
    if key == "quantile":
        return [f"q={fmt_float(body.get('q'))}"]
    if key == "histogram":
        tags = [f"bins={body.get('bins')}"]
        for end in ("min", "max"):
            if body.get(end) is not None:
                tags.append(f"{end}={fmt_float(body[end])}")
        return tags
    if key == "null_count" and "fill" in body:
        return [f"fill={fmt_float(body['fill'])}"]
    return []


def _scalar(key: str, body: Mapping[str, Any], ex: Mapping[str, Any]) -> tuple[str, str]:
    """``(name, value)`` of a whole-selection result, as quiet and table show it."""
    if key == "transform":
        method = _method(body, ex)
        stats = " ".join(f"{s}={fmt_float(_need(ex, f'operation_{s}'))}"
                         for s in METHODS[method][0])
        return "transform", stats
    if _result(key) == "matrix":
        order = _need(ex, f"operation_{key}_order")
        matrix = _need(ex, f"operation_{key}")
        return key, f"order={order} matrix={fmt_list(matrix, fmt_float)}"
    if key == "histogram":
        counts = _need(ex, "operation_histogram_counts")
        return key, f"bins={body.get('bins')} counts={fmt_list(counts, fmt_float)}"
    field = OPS[key].scalar_field
    assert field is not None
    value = _need(ex, field)
    # an index is named by its field (arg_min: argmin_index), every other result by its op
    name = field.removeprefix("operation_") if OPS[key].result == "index" else key
    return name, _fmt_value(value)


def _partial_values(key: str, body: Mapping[str, Any], ex: Mapping[str, Any]) -> str:
    if key == "transform":
        method = _method(body, ex)
        return " ".join(f"{s}={fmt_list(_need(ex, f'operation_reduced_{s}'))}"
                        for s in METHODS[method][0])
    field = OPS[key].reduced_field
    assert field is not None
    return fmt_list(_need(ex, field))


def _transform_tags(ex: Mapping[str, Any]) -> list[str]:
    tags = []
    if "transform_div_by_zero_count" in ex:
        tags.append(f"transform_div_by_zero_count={ex['transform_div_by_zero_count']}")
    if "transform_div_by_zero_indices" in ex:
        tags.append("transform_div_by_zero_indices="
                    + fmt_list(ex["transform_div_by_zero_indices"]))
    return tags


def _mask_tags(ex: Mapping[str, Any]) -> list[str]:
    """``mask_fill=[...]``: the fill values a masked query read as missing."""
    if not ex.get("mask_fill"):
        return []
    return [f"mask_fill={fmt_list(ex.get('mask_fill_values') or [])}"]


def _tail(ex: Mapping[str, Any]) -> list[str]:
    tail = []
    if "operation_element_count" in ex:
        tail.append(f"elements={ex['operation_element_count']}")
    if ex.get("memory_strategy") is not None:
        tail.append(f"memory_strategy={ex['memory_strategy']}")
    return tail + _transform_tags(ex) + _mask_tags(ex)


def _operation_line(dataset: str, key: str, body: Mapping[str, Any],
                    ex: Mapping[str, Any]) -> str:
    parts = [f"dataset={dataset}", "status=ok", f"op={key}"]
    if _is_partial(key, body):
        parts.append(f"axes=[{','.join(_axes(body))}]")
        parts += _extra_tags(key, body)
        if ex.get("operation_reduced_shape") is not None:
            parts.append(f"reduced_shape={fmt_shape(ex['operation_reduced_shape'])}")
        parts.append(f"values={_partial_values(key, body, ex)}")
    else:
        parts += _extra_tags(key, body)
        name, value = _scalar(key, body, ex)
        parts.append(f"{name}={value}")
    return " ".join(parts + _tail(ex))


def _preview_line(dataset: str, ex: Mapping[str, Any]) -> str:
    parts = [f"dataset={dataset}", "status=preview",
             f"read_bytes={_need(ex, 'total_bytes_read_from_disk')}"]
    if ex.get("spill_f32_path") is not None:
        parts.append(f"spill={ex['spill_f32_path']}")
        if ex.get("spill_f32_bytes") is not None:
            parts.append(f"spill_bytes={ex['spill_f32_bytes']}")
    if ex.get("memory_strategy") is not None:
        parts.append(f"memory_strategy={ex['memory_strategy']}")
    parts += _mask_tags(ex)
    preview = _preview(ex)
    if preview is None:
        parts.append("preview=empty")
    else:
        name, values, truncated = preview
        parts.append(f"preview={len(values)} {name}" + (" truncated=true" if truncated else ""))
        parts.append(f"sample={fmt_list(values[:SAMPLE_MAX])}")
    return " ".join(parts)


def quiet_line(resp: Response) -> str:
    """One ``key=value`` line for scripts (cli.md §4 quiet table), newline-terminated."""
    dataset = resp.get("dataset")
    if _unmatched(resp):
        line = (f"dataset={dataset} status=not_found "
                f"available={fmt_list(_available(resp), str, NAMES_MAX)}")
    elif isinstance(resp.get("execution"), Mapping):
        ex = resp["execution"]
        op = _operation(resp)
        line = _operation_line(str(dataset), *op, ex) if op else _preview_line(str(dataset), ex)
    elif isinstance(resp.get("read_plan"), Mapping):
        plan = resp["read_plan"]
        line = (f"dataset={dataset} status=planned chunks={plan.get('chunk_count')} "
                f"elements={plan.get('logical_f32_element_count')} "
                f"stored_bytes={plan.get('total_stored_bytes')} "
                f"logical_shape={fmt_shape(plan.get('logical_selection_shape') or [])} "
                f"touch_policy={plan.get('chunk_touch_policy')}")
    else:
        rank = resp.get("selection_axes")
        line = " ".join([f"dataset={dataset}", "validated",
                         *([f"selection_rank={rank}"] if rank is not None else []),
                         "hint=pass --tet PATH for catalog and read_plan"])
    return line + "\n"


# ---------------------------------------------------------------------------
# table


def _section(title: str, rows: Sequence[tuple[str, Any]]) -> str:
    """``title:`` then ``  <key padded to the widest key (min 4)>  <value>``, blank line."""
    if not rows:
        return ""
    width = max(4, *(len(k) for k, _ in rows))
    body = "".join(f"  {k:<{width}}  {v}\n" for k, v in rows)
    return f"{title}:\n{body}\n"


def _indexed(values: Sequence[Any]) -> str:
    return f"  {'#':>6}  value\n" + "".join(
        f"  {i:>6}  {_fmt_value(v)}\n" for i, v in enumerate(values))


def _grid(shape: Sequence[int], values: Sequence[Any]) -> str:
    """Row-major grid for rank 1 and 2 (missing cells ``—``); linear index table above."""
    if len(shape) > 2 or not shape:
        note = f"  (rank {len(shape)} — linear index; use --preview to raise cap)\n"
        return (note if shape else "") + _indexed(values)
    cols = shape[-1]
    rows = 1 if len(shape) == 1 else min(shape[0], -(-len(values) // cols))
    shown = min(cols, len(values))
    text = " " * 8 + "".join(f"  {f'c{c}':>8}" for c in range(shown)) + "\n"
    for r in range(rows):
        cells = []
        for c in range(shown):
            i = r * cols + c
            cells.append(_fmt_value(values[i]) if i < len(values) else "—")
        text += f"{f'r{r}':>7} " + "".join(f"  {cell:>8}" for cell in cells) + "\n"
    return text


def _slice_section(resp: Response, ex: Mapping[str, Any]) -> str:
    preview = _preview(ex)
    if preview is None:
        return ""
    name, values, truncated = preview
    plan = resp.get("read_plan") or {}
    shape = [int(n) for n in plan.get("logical_selection_shape") or []]
    title = f"slice ({name}, shape={fmt_shape(shape)}{', truncated' if truncated else ''}):"
    text = f"{title}\n{_grid(shape, values[:GRID_MAX])}"
    if truncated:
        text += "  … logical tensor continues beyond preview cap\n"
    return text + "\n"


def _table_rejects(key: str) -> str | None:
    if _result(key) == "bool":
        return "table format: boolean partial reductions use --format quiet or stats"
    if _result(key) == "index":
        return f"table format: {key} partial values use --format quiet or stats"
    if key == "transform":
        return "table format: partial transform statistics use --format quiet or stats"
    return None


def _result_section(key: str, body: Mapping[str, Any], ex: Mapping[str, Any]) -> str:
    if not _is_partial(key, body):
        name, value = _scalar(key, body, ex)
        rows: list[tuple[str, Any]] = [(name, value)]
        if "operation_element_count" in ex:
            rows.append(("elements", ex["operation_element_count"]))
        return _section("result", rows)
    rejected = _table_rejects(key)
    if rejected is not None:
        raise CommandFailed(rejected)
    field = OPS[key].reduced_field
    assert field is not None
    values = _need(ex, field)
    shape = ex.get("operation_reduced_shape")
    title = f"result (reduced_shape={fmt_shape(shape)})" if shape is not None else "result"
    elements = (f"  {'elements':>6}  {ex['operation_element_count']}\n"
                if "operation_element_count" in ex else "")
    return f"{title}:\n{_indexed(values)}{elements}\n"


def table_text(resp: Response) -> str:
    """ASCII sections for people: query, catalog miss, read plan, execution I/O, the
    result and the preview grid."""
    rows: list[tuple[str, Any]] = [("dataset", resp.get("dataset")),
                                   ("status", resp.get("status")),
                                   ("accepted", _fmt_value(bool(resp.get("accepted"))))]
    if resp.get("selection_axes") is not None:
        rows.append(("selection_axes", resp["selection_axes"]))
    op = _operation(resp)
    if op is not None:
        key, body = op
        axes = _axes(body)
        label = f"{key} axes=[{','.join(axes)}]" if axes else f"{key} (scalar)"
        rows.append(("operation", label))
    if resp.get("tet_file") is not None:
        rows.append(("tet_file", resp["tet_file"]))
    if resp.get("message"):
        rows.append(("message", _truncate(str(resp["message"]), MESSAGE_MAX)))
    text = _section("query", rows)
    if _unmatched(resp):
        text += _section("catalog", [("matched", "false")])
        names = _available(resp)
        if not names:
            return text + "datasets:\n  (none)\n\n"
        listing = "".join(f"  {i:>3}  {_truncate(n, NAME_MAX)}\n" for i, n in enumerate(names))
        return text + f"datasets:\n  {'#':>3}  name\n{listing}\n"
    plan = resp.get("read_plan")
    if isinstance(plan, Mapping):
        plan_rows: list[tuple[str, Any]] = [
            ("chunk_touch_policy", plan.get("chunk_touch_policy")),
            ("chunk_count", plan.get("chunk_count"))]
        if plan.get("chunks_truncated"):  # a capped list: how many the response holds
            listed = len(plan.get("chunks") or [])
            plan_rows.append(("chunks_listed", f"{listed} (--max-chunks N lists more)"))
        text += _section("read_plan", [
            *plan_rows,
            ("total_stored_bytes", plan.get("total_stored_bytes")),
            ("logical_shape", fmt_shape(plan.get("logical_selection_shape") or [])),
            ("logical_elements", plan.get("logical_f32_element_count")),
        ])
    ex = resp.get("execution")
    if isinstance(ex, Mapping):
        io = [("bytes_read", _need(ex, "total_bytes_read_from_disk"))]
        for label, field in (("memory_strategy", "memory_strategy"),
                             ("memory_budget_bytes", "memory_budget_bytes"),
                             ("spill_path", "spill_f32_path"), ("spill_bytes", "spill_f32_bytes"),
                             ("io_regime", "io_regime")):
            if ex.get(field) is not None:
                io.append((label, ex[field]))
        if ex.get("mask_fill"):
            io.append(("mask_fill_values", fmt_list(ex.get("mask_fill_values") or [])))
        text += _section("execution", io)
        if op is not None:
            text += _result_section(*op, ex)
        text += _slice_section(resp, ex)
    return text


# ---------------------------------------------------------------------------
# dispatch and the stderr hint


def render(resp: Response, fmt: str) -> str:
    """The stdout text of `resp` in format `fmt` (one of `FORMATS`)."""
    if fmt == "full":
        return full_text(resp)
    if fmt == "json":
        return json_text(resp)
    if fmt == "stats":
        return full_text(stats_view(resp))
    if fmt == "plan":
        return full_text(plan_view(resp))
    if fmt == "quiet":
        return quiet_line(resp)
    if fmt == "table":
        return table_text(resp)
    raise ValueError(f"unknown output format {fmt!r} (expected one of {', '.join(FORMATS)})")


def not_found_hint(resp: Response) -> str | None:
    """The stderr hint for a dataset the file does not have; None when it matched."""
    if not _unmatched(resp):
        return None
    available = _available(resp)
    names = "".join(f"  {n}\n" for n in available)
    where = resp.get("tet_file") or "<path.tet>"
    close = difflib.get_close_matches(str(resp.get("dataset")), available, n=1, cutoff=0.6)
    guess = f"did you mean {json.dumps(close[0], ensure_ascii=False)}?\n" if close else ""
    return (f"hint: dataset {json.dumps(resp.get('dataset'), ensure_ascii=False)} "
            f"not found in this .tet\navailable datasets:\n{names}{guess}"
            f"tip: run `tet info {where}` to list catalog datasets\n")
