"""Query documents: every validation rule of query.md §1–§8 and §12 with its exact
text, the op-parameter rules of ops.md, plan-time axis/fill resolution, and the
upstream JSON/TOML profile pairs.

Matrix: (rule × offending document) → (error class, exact message); resolve_axes over
ranks and dim names; resolve_fill over attrs; parse_text format detection.
"""

from __future__ import annotations

import contextlib
import json
import math
import tomllib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tet
from tests.conftest import INTEROP, UPSTREAM
from tet.query.document import (
    Execution,
    Operation,
    QueryDocument,
    WriteSpec,
    build_query,
    parse_device,
    parse_text,
    parse_value,
    resolve_axes,
    resolve_fill,
)
from tet.query.ops import OPS, QUERY_OP_KEYS, REDUCTION_OPS

D = {"dataset": "t"}

REFUSED: list[tuple[Any, str]] = [
    ([], "validation: query document must be a JSON object"),
    ({"operation": {}}, "validation: nested `operation` is not supported; use a top-level op "
                        'key (e.g. `"mean": 0`)'),
    ({"output": "x"}, 'validation: nested `output` is not supported; use top-level '
                      '`"spill": "path"`'),
    ({**D, "bogus": 1}, "validation: unknown field `bogus`"),
    ({}, "validation: `dataset` must be a string"),
    ({"dataset": 3}, "validation: `dataset` must be a string"),
    ({"dataset": "  "}, "validation: `dataset` must be a non-empty string"),
    ({"dataset": "x" * 1025}, "validation: `dataset` name exceeds maximum length (1025 > 1024)"),
    ({**D, "layout_version": "1"}, "validation: `layout_version` must be a number"),
    ({**D, "layout_version": -1}, "validation: `layout_version` must be a non-negative integer"),
    ({**D, "layout_version": 1.5}, "validation: `layout_version` must be a non-negative integer"),
    ({**D, "mean": [], "sum": []},
     "validation: query document must include at most one reduction key"),
    ({**D, "mean": None}, "validation: axis spec must not be null"),
    ({**D, "mean": True}, "validation: axis spec must be a number, string, or array"),
    ({**D, "mean": [[0]]}, "validation: axis list entries must be numbers or strings"),
    ({**D, "mean": {"x": 0}}, "validation: axis object must include `axis` or `axes`"),
    ({**D, "mean": -1}, "validation: axis index must be a non-negative integer"),
    ({**D, "mean": 0.5}, "validation: axis index must be a non-negative integer"),
    ({**D, "mean": ""}, "validation: axis index must not be empty"),
    ({**D, "mean": "a" * 33}, "validation: axis label exceeds maximum length (32)"),
    ({**D, "mean": "9lives"},
     'validation: invalid axis label "9lives" (use a non-negative decimal index or a '
     "dimension name)"),
    ({**D, "mean": list(range(9))}, "validation: operation has 9 axes; maximum is 8"),
    ({**D, "quantile": 0.5},
     'validation: `quantile` must be a JSON object (e.g. { "q": 0.95, "axis": 0 })'),
    ({**D, "quantile": {}}, "validation: `quantile.q` is required"),
    ({**D, "quantile": {"q": "x"}}, "validation: `quantile.q` is required"),
    ({**D, "quantile": {"q": 1.5}}, "validation: quantile q must be in [0.0, 1.0], got 1.5"),
    ({**D, "quantile": {"q": 0.5, "bins": 3}}, "validation: unknown field `quantile.bins`"),
    ({**D, "histogram": {}}, "validation: `histogram.bins` is required"),
    ({**D, "histogram": {"bins": 0}}, "validation: histogram bins must be >= 1"),
    ({**D, "histogram": {"bins": 5000}},
     "validation: histogram bins exceeds maximum 4096 (got 5000)"),
    ({**D, "histogram": {"bins": 4, "min": 0}},
     "validation: histogram requires both `min` and `max` when either is set"),
    ({**D, "histogram": {"bins": 4, "min": 2, "max": 1}},
     "validation: histogram min must be < max (got 2 >= 1)"),
    ({**D, "histogram": {"bin": 4}},
     "validation: unknown field `histogram.bin` (did you mean `histogram.bins`?)"),
    ({**D, "covariance": [0, 1]}, "validation: covariance/correlation require exactly one "
                                  'observation axis (e.g. `"axis": 0`)'),
    ({**D, "transform": {}}, "validation: `transform.method` is required"),
    ({**D, "transform": {"method": "log"}},
     "validation: unknown transform method `log` (expected zscore, minmax, l1, l2, center, "
     "scale, log1p, sqrt, or softmax)"),
    ({**D, "spill": ""}, "validation: `spill` path must not be empty"),
    ({**D, "spill": 3}, "validation: `spill` must be a string path (relative to the `.tet` "
                        "parent or absolute)"),
    ({**D, "write": "ram"}, "validation: `write` requires a transform operation"),
    ({**D, "mean": [], "write": "ram"}, "validation: `write` is only valid with `transform`"),
    ({**D, "transform": {"method": "l1"}, "write": "disk"},
     "validation: unknown write target `disk` (expected switch, spill, sidecar, or ram)"),
    ({**D, "transform": {"method": "l1"}, "write": {"target": "ram", "path": "p"}},
     "validation: `write.path` is only valid with `spill` or `sidecar` targets"),
    ({**D, "transform": {"method": "l1"}, "write": {"target": "spill", "timestamp": True}},
     "validation: `write.timestamp` is only valid with `sidecar` target"),
    ({**D, "transform": {"method": "l1"}, "write": {"target": "spill", "x": 1}},
     "validation: unknown field `write.x`"),
    ({**D, "transform": {"method": "l1"}, "write": 3},
     "validation: `write` must be a target string (`switch`, `spill`, `sidecar`, `ram`) or an "
     "object with `target` / `path`"),
    ({**D, "transform": {"method": "l1"}, "spill": "p"},
     "validation: transform operations use top-level `write`, not `spill`"),
    ({**D, "execution": 1}, "validation: `execution` must be a JSON object"),
    ({**D, "execution": {"x": 1}}, "validation: unknown field `execution.x`"),
    ({**D, "execution": {"memory_budget_bytes": -1}},
     "validation: `execution.memory_budget_bytes` must be a non-negative integer"),
    ({**D, "execution": {"memory_budget_percent": 101}},
     "validation: `execution.memory_budget_percent` must be in [0, 100], got 101"),
    ({**D, "execution": {"memory_budget_percent_bps": 70000}},
     "validation: `execution.memory_budget_percent_bps` exceeds u16"),
    ({**D, "execution": {"memory_budget_percent_bps": 10001}},
     "validation: `execution.memory_budget_percent_bps` must be <= 10000 (100%)"),
    ({**D, "execution": {"memory_budget_percent": 1, "memory_budget_percent_bps": 1}},
     "validation: use either `execution.memory_budget_percent` or "
     "`execution.memory_budget_percent_bps`, not both"),
    ({**D, "execution": {"device": ""}}, "validation: device token must not be empty"),
    ({**D, "execution": {"device": "cuda:x"}},
     "validation: invalid device `cuda:x` (expected cuda:N with non-negative N)"),
    ({**D, "selection": [{"step": 0}]}, "validation: selection[0].step must be >= 1, got 0"),
    ({**D, "selection": [{"start": 1, "start_label": "a"}]},
     "validation: selection[0]: use either `start` or `start_label`, not both"),
    ({**D, "selection": [{"start": 3, "stop": 3}]},
     "validation: selection[0]: start must be < stop when both set (got 3 >= 3)"),
    ({**D, "selection": [{}] * 9}, "validation: selection rank 9 exceeds maximum 8"),
    ({**D, "selection": [{"foo": 1}]},
     "invalid query JSON: unknown field `foo`, expected one of `start`, `stop`, `step`, "
     "`start_label`, `stop_label`"),
    ({**D, "selection": [{"start": -1}]},
     "invalid query JSON: invalid value: integer `-1`, expected u64"),
]


@pytest.mark.parametrize(("doc", "message"), REFUSED, ids=[m[:60] for _, m in REFUSED])
def test_rule_and_exact_message(doc: Any, message: str) -> None:
    with pytest.raises(tet.TetError) as info:
        parse_value(doc)
    assert str(info.value) == message


def test_text_limits_and_parse_errors() -> None:
    with pytest.raises(tet.QueryError, match=r"^validation: query document nesting depth 65 "
                                             r"exceeds maximum 64$"):
        parse_text('{"dataset": "t", "x": ' + "[" * 64 + "]" * 64 + "}")
    parse_value({"dataset": "t", "mean": [], "selection": [{}]})  # depth 3 is fine
    with pytest.raises(tet.QueryError, match=r"^invalid query JSON: "):
        parse_text('{"dataset": }')
    with pytest.raises(tet.QueryError, match=r"^invalid query TOML: "):
        parse_text("dataset = = 1")
    big = '{"dataset": "' + "a" * 1_048_600 + '"}'
    with pytest.raises(tet.QueryError) as info:
        parse_text(big)
    assert str(info.value) == (f"validation: query document exceeds maximum size ({len(big)} "
                               "bytes, limit 1048576)")


def test_format_detection_and_equivalence() -> None:
    as_json = parse_text('  {"dataset": "t", "mean": [0, "time"]}')
    as_toml = parse_text('dataset = "t"\nmean = [0, "time"]')
    assert as_json == as_toml
    assert parse_text('dataset = "t"', filename="q.toml") == parse_text('{"dataset":"t"}',
                                                                        filename="q.json")


def test_parsed_document_fields() -> None:
    doc = parse_value({"dataset": "t", "layout_version": 1, "quantile": {"q": 0.25, "axis": "1"},
                       "execution": {"memory_budget_percent": 12.5, "device": "CUDA:0"}})
    assert doc.operation == Operation("quantile", ("1",), {"q": 0.25})
    assert doc.execution == Execution(None, 1250, None, "cuda")
    assert doc.operation.echo([1]) == {"quantile": {"axes": ["1"], "q": 0.25}}
    assert doc.to_dict()["execution"] == {"memory_budget_percent": 12.5, "device": "cuda"}
    assert parse_value(doc.to_dict()) == doc
    hist = parse_value({**D, "histogram": {"bins": 4}}).operation
    assert hist is not None
    assert hist.echo([]) == {"histogram": {"axes": [], "bins": 4, "min": None, "max": None}}
    axis_wins = parse_value({**D, "sum": {"axis": 1, "axes": [0, 2]}}).operation
    assert axis_wins is not None and axis_wins.axes == ("1",)


def test_devices() -> None:
    assert [parse_device(t) for t in ("cpu", "AUTO", "cuda:3", "rocm:multi", "metal")] == [
        "cpu", "auto", "cuda:3", "rocm:multi", "metal"]
    with pytest.raises(tet.QueryError, match="unknown device `tpu`"):
        parse_device("tpu")


def test_resolve_axes() -> None:
    assert resolve_axes(("2", "0"), 3, None) == (0, 2)
    assert resolve_axes(("time",), 2, ["time", "x"]) == (0,)
    cases = [
        (("2",), 2, None, "validation: operation axis index 2 out of range for rank 2"),
        (("t",), 2, None, "validation: dimension name `t` requires footer metadata `dim_names` "
                          "for this dataset"),
        (("t",), 2, ["t"], "validation: metadata dim_names length 1 does not match dataset "
                           "rank 2"),
        (("y",), 2, ["t", "x"], "validation: unknown dimension name `y` (dim_names: t, x)"),
        (("t",), 2, ["t", "t"], "validation: ambiguous dimension name `t` (duplicate dim_names "
                                "entries)"),
        (("0", "0"), 3, None, "validation: duplicate operation axis index 0"),
        (("0", "1"), 2, None, 'validation: operation axes list reduces every dimension; use '
                              '"axes": [] for a scalar reduction'),
    ]
    for tokens, ndim, dims, message in cases:
        with pytest.raises(tet.QueryError) as info:
            resolve_axes(tokens, ndim, dims)
        assert str(info.value) == message


def test_resolve_fill() -> None:
    assert resolve_fill({"fill": 3}, {"_FillValue": "1"}) == 3.0
    assert resolve_fill({}, {"missing_value": " 7 ", "fill_value": "8"}) == 7.0
    assert math.isnan(resolve_fill({}, {"_FillValue": "NaN"}))
    with pytest.raises(tet.QueryError, match=r'^validation: invalid fill value "abc"$'):
        resolve_fill({}, {"fill_value": "abc"})
    with pytest.raises(tet.QueryError, match=r"null_count requires `fill` in the query or "
                                             r"dataset attr \(_FillValue, missing_value, "
                                             r"fill_value\)"):
        resolve_fill({}, {})


def test_upstream_profile_pairs_parse_to_the_same_document() -> None:
    pairs = sorted((UPSTREAM / "queries").glob("*.json"))
    assert len(pairs) == 9
    for path in pairs:
        as_json = parse_text(path.read_text(), filename=path.name)
        toml_path = path.with_suffix(".toml")
        as_toml = parse_text(toml_path.read_text(), filename=toml_path.name)
        assert as_json == as_toml, path.name
        assert json.loads(path.read_text())["dataset"] == tomllib.loads(
            toml_path.read_text())["dataset"]


# ---------------------------------------------------------------------------
# more rules, each with its exact text

MORE_REFUSED: list[tuple[Any, str]] = [
    ("x", "validation: query document must be a JSON object"),
    ({**D, "layout_version": 2**32}, "validation: `layout_version` must be a non-negative integer"),
    ({**D, "layout_version": True}, "validation: `layout_version` must be a number"),
    ({"dataset": "é" * 513}, "validation: `dataset` name exceeds maximum length (1026 > 1024)"),
    ({**D, "operation": {}, "output": 1}, "validation: nested `operation` is not supported; use "
                                          'a top-level op key (e.g. `"mean": 0`)'),
    ({**D, "bogus": 1, "dataset": 3}, "validation: unknown field `bogus`"),
    ({**D, "mean": 2**64}, "validation: axis index must be a non-negative integer"),
    ({**D, "mean": "a.b"},
     'validation: invalid axis label "a.b" (use a non-negative decimal index or a dimension '
     "name)"),
    ({**D, "mean": {"axis": {}}}, "validation: axis object must include `axis` or `axes`"),
    ({**D, "mean": [0, None]}, "validation: axis list entries must be numbers or strings"),
    ({**D, "sum": {"axis": 0, "foo": 1}}, "validation: unknown field `sum.foo`"),
    ({**D, "null_count": {"fill": 1, "fil": 2}}, "validation: unknown field `null_count.fil`"),
    ({**D, "histogram": 4},
     'validation: `histogram` must be a JSON object (e.g. { "bins": 16, "axis": 0 })'),
    ({**D, "transform": "zscore"},
     'validation: `transform` must be a JSON object (e.g. { "method": "zscore", "axis": 0 })'),
    ({**D, "quantile": {"q": -0.0000001}},
     "validation: quantile q must be in [0.0, 1.0], got -0.0000001"),
    ({**D, "quantile": {"q": 2.0}}, "validation: quantile q must be in [0.0, 1.0], got 2"),
    ({**D, "quantile": {"q": True}}, "validation: `quantile.q` is required"),
    ({**D, "histogram": {"bins": 2.5}}, "validation: `histogram.bins` is required"),
    ({**D, "histogram": {"bins": -3}}, "validation: `histogram.bins` is required"),
    ({**D, "histogram": {"bins": 2, "min": 0.5, "max": 0.5}},
     "validation: histogram min must be < max (got 0.5 >= 0.5)"),
    ({**D, "histogram": {"bins": 2, "min": 0, "max": math.inf}},
     "validation: histogram min/max must be finite"),
    ({**D, "histogram": {"bins": 2, "max": 1, "min": "a"}},
     "validation: histogram requires both `min` and `max` when either is set"),
    ({**D, "covariance": []}, "validation: covariance/correlation require exactly one "
                              'observation axis (e.g. `"axis": 0`)'),
    ({**D, "transform": {"method": 1}}, "validation: `transform.method` is required"),
    ({**D, "spill": "p" * 1025}, "validation: `spill` path exceeds maximum length (1025 > 1024)"),
    ({**D, "transform": {"method": "l1"}, "write": {"target": 1}},
     "validation: `write.target` must be a string"),
    ({**D, "transform": {"method": "l1"}, "write": {"target": "spill", "path": ""}},
     "validation: `write.path` must not be empty"),
    ({**D, "transform": {"method": "l1"}, "write": {"target": "spill", "path": "p" * 1025}},
     "validation: `write.path` exceeds maximum length (1025 > 1024)"),
    ({**D, "transform": {"method": "l1"}, "write": {"target": "sidecar", "timestamp": "no"}},
     "validation: `write.timestamp` must be a boolean"),
    ({**D, "transform": {"method": "l1"}, "write": {"path": "p"}},
     "validation: `write.path` is only valid with `spill` or `sidecar` targets"),
    ({**D, "write": {"target": "spill"}, "spill": "p"},
     "validation: `write` requires a transform operation"),
    ({**D, "sum": [], "write": "ram", "spill": "p"},
     "validation: `write` is only valid with `transform`"),
    ({**D, "transform": {"method": "l1"}, "write": "spill", "spill": "p"},
     "validation: transform operations use top-level `write`, not `spill`"),
    ({**D, "execution": {"memory_budget_bytes": 1.5}},
     "validation: `execution.memory_budget_bytes` must be a non-negative integer"),
    ({**D, "execution": {"memory_budget_bytes": 2**64}},
     "validation: `execution.memory_budget_bytes` must be a non-negative integer"),
    ({**D, "execution": {"memory_budget_percent": -0.5}},
     "validation: `execution.memory_budget_percent` must be in [0, 100], got -0.5"),
    ({**D, "execution": {"memory_budget_percent": "5"}},
     "validation: `execution.memory_budget_percent` must be a number"),
    ({**D, "execution": {"memory_budget_percent_bps": -1}},
     "validation: `execution.memory_budget_percent_bps` must be a non-negative integer"),
    ({**D, "execution": {"fold_parallel": 1}},
     "validation: `execution.fold_parallel` must be a boolean"),
    ({**D, "execution": {"device": 0}}, "validation: `execution.device` must be a string"),
    ({**D, "execution": {"device": "tpu"}},
     "validation: unknown device `tpu` (expected cpu, auto, metal, cuda[:N| :multi], or "
     "rocm[:N| :multi])"),
    ({**D, "execution": {"device": "rocm:-1"}},
     "validation: invalid device `rocm:-1` (expected rocm:N with non-negative N)"),
    ({**D, "selection": {"start": [0], "stop": [0]}},
     "validation: selection[0]: start must be < stop when both set (got 0 >= 0)"),
]


@pytest.mark.parametrize(("doc", "message"), MORE_REFUSED, ids=[m[:60] for _, m in MORE_REFUSED])
def test_more_rules_and_exact_messages(doc: Any, message: str) -> None:
    with pytest.raises((tet.QueryError, tet.SelectionError)) as info:
        parse_value(doc)
    assert str(info.value) == message


ACCEPTED: list[tuple[Any, QueryDocument]] = [
    ({**D, "selection": [{"start": None, "stop": None, "step": None, "start_label": None}]},
     QueryDocument("t", selection=[{}])),
    ({**D, "correlation": "0"}, QueryDocument("t", operation=Operation("correlation", ("0",)))),
    ({**D, "sum": {"axes": ["time", "07"]}},
     QueryDocument("t", operation=Operation("sum", ("time", "7")))),
    ({**D, "mean": {"axis": {"axes": [1]}}},
     QueryDocument("t", operation=Operation("mean", ("1",)))),
    ({**D, "null_count": {"fill": 99, "axis": 0}},
     QueryDocument("t", operation=Operation("null_count", ("0",), {"fill": 99.0}))),
    ({**D, "null_count": {"fill": "x"}}, QueryDocument("t", operation=Operation("null_count"))),
    ({**D, "histogram": {"bins": 4, "min": None, "max": "y"}},
     QueryDocument("t", operation=Operation("histogram", (), {"bins": 4}))),
    ({**D, "histogram": {"bins": 2, "min": 2, "max": 4, "axes": [1]}},
     QueryDocument("t", operation=Operation("histogram", ("1",),
                                            {"bins": 2, "min": 2.0, "max": 4.0}))),
    ({**D, "transform": {"method": "softmax"}, "write": {"target": "sidecar", "timestamp": False}},
     QueryDocument("t", operation=Operation("transform", (), {"method": "softmax"}),
                   write=WriteSpec("sidecar", None, False))),
    ({**D, "transform": {"method": "l2", "axis": 1}, "write": {}},
     QueryDocument("t", operation=Operation("transform", ("1",), {"method": "l2"}),
                   write=WriteSpec("switch"))),
    ({**D, "median": [], "spill": "out.bin"},
     QueryDocument("t", operation=Operation("median"), spill="out.bin")),
    ({**D, "selection": {"start": [0, 1], "stop": [2, None]}},
     QueryDocument("t", selection=[{"start": 0, "stop": 2}, {"start": 1}])),
    ({**D, "execution": {"memory_budget_percent": 0.125, "memory_budget_bytes": 0,
                         "fold_parallel": False, "device": " Cuda:MULTI "}},
     QueryDocument("t", execution=Execution(0, 13, False, "cuda:multi"))),
    ({**D, "execution": {"memory_budget_percent_bps": 10_000}},
     QueryDocument("t", execution=Execution(None, 10_000))),
    ({**D, "execution": {}}, QueryDocument("t", execution=Execution())),
]


@pytest.mark.parametrize(("doc", "want"), ACCEPTED, ids=[str(i) for i in range(len(ACCEPTED))])
def test_accepted_documents(doc: Any, want: QueryDocument) -> None:
    """null bounds/labels/histogram range mean absent, axis objects nest, axis wins over
    axes, non-numeric optional params are ignored, percent rounds half away from zero
    (0.125 % -> 13 bps), box-form selection is sugar."""
    got = parse_value(doc)
    assert got == want
    assert parse_value(got.to_dict()) == got


def test_echo_shapes_of_query_md_5() -> None:
    def echo(doc: dict[str, Any], axes: list[int] | None = None,
             fill: float | None = None) -> Any:
        op = parse_value({**D, **doc}).operation
        assert op is not None
        return op.echo(axes, fill)

    assert echo({"mean": []}) == {"mean": {"axes": []}}
    assert echo({"sum": "time"}, [0]) == {"sum": {"axes": ["0"]}}
    assert echo({"sum": "time"}) == {"sum": {"axes": ["time"]}}
    assert echo({"quantile": {"q": 0.25}}, []) == {"quantile": {"axes": [], "q": 0.25}}
    assert echo({"histogram": {"bins": 4}}) == {
        "histogram": {"axes": [], "bins": 4, "min": None, "max": None}}
    assert echo({"null_count": {"axis": 0}}, [0], 3.0) == {
        "null_count": {"axes": ["0"], "fill": 3.0}}
    assert echo({"null_count": {"fill": 1, "axis": 0}}, [0]) == {
        "null_count": {"axes": ["0"], "fill": 1.0}}
    assert echo({"null_count": []}, [], math.nan) == {"null_count": {"axes": [], "fill": None}}
    assert echo({"transform": {"method": "zscore"}}) == {
        "transform": {"method": "zscore", "axes": []}}
    assert json.dumps(echo({"transform": {"method": "zscore"}})) == (
        '{"transform": {"method": "zscore", "axes": []}}')


def test_to_dict_wire_forms() -> None:
    doc = parse_value({"layout_version": 1, **D, "sum": ["x", "3"], "execution":
                       {"memory_budget_percent_bps": 1250, "device": "cuda:0"}})
    assert doc.to_dict() == {"layout_version": 1, "dataset": "t", "sum": ["x", 3],
                             "execution": {"memory_budget_percent": 12.5, "device": "cuda"}}
    q = parse_value({**D, "quantile": {"q": 0.5, "axis": 0}})
    assert q.to_dict() == {"dataset": "t", "quantile": {"q": 0.5, "axes": [0]}}
    w = parse_value({**D, "transform": {"method": "l1"}, "write": "ram"})
    assert w.to_dict()["write"] == {"target": "ram"}
    assert WriteSpec("spill", "o.bin").to_dict() == {"target": "spill", "path": "o.bin"}
    assert Operation("mean").to_dict() == {"mean": []}
    assert Execution().to_dict() == {}


def test_text_front_ends() -> None:
    # depth: a scalar is 0 and {} is 1, so 64 levels pass the cap and fail later on meaning
    ok = '{"dataset": "t", "x": ' + "[" * 63 + "]" * 63 + "}"
    with pytest.raises(tet.QueryError, match=r"^validation: unknown field `x`$"):
        parse_text(ok)
    with pytest.raises(tet.QueryError, match=r"^validation: query document must be a JSON "
                                             r"object$"):
        parse_text("[1]", filename="q.json")
    # the extension wins over the leading brace
    with pytest.raises(tet.QueryError, match=r"^invalid query TOML: "):
        parse_text('{"dataset": "t"}', filename="Q.TOML")
    with pytest.raises(tet.QueryError, match=r"^invalid query JSON: "):
        parse_text('dataset = "t"', filename="q.json")
    with pytest.raises(tet.QueryError, match=r"^invalid query JSON: "):
        parse_text('{"dataset": "t", "quantile": {"q": NaN}}')
    # TOML datetimes become strings; TOML nan/inf become the strings "NaN"/"inf"
    with pytest.raises(tet.QueryError, match=r"^validation: `spill` path must not be empty$"):
        parse_text('dataset = "t"\nspill = ""')
    stamped = parse_text('dataset = "t"\nspill = 1979-05-27T07:32:00Z')
    assert stamped.spill == "1979-05-27T07:32:00Z"
    with pytest.raises(tet.QueryError, match=r"^validation: `quantile.q` is required$"):
        parse_text('dataset = "t"\n[quantile]\nq = nan')
    # lone surrogates (legal in JSON escapes) are measured, never crash the encoder
    assert parse_text('{"dataset": "\\ud800"}').dataset == "\ud800"


def test_python_values() -> None:
    cyclic: dict[str, Any] = {**D, "mean": []}
    cyclic["mean"] = [cyclic]
    with pytest.raises(tet.QueryError, match="reference cycle"):
        parse_value(cyclic)
    shared: list[Any] = []
    for _ in range(40):  # 2**40 paths if shared parts were walked again
        shared = [shared, shared]
    with pytest.raises(tet.QueryError, match=r"^validation: unknown field `x`$"):
        parse_value({**D, "x": shared})
    deep: Any = 0
    for _ in range(70):
        deep = (deep,)
    with pytest.raises(tet.QueryError, match="nesting depth 71 exceeds maximum 64"):
        parse_value({**D, "mean": deep})
    assert parse_value({**D, "sum": (0,)}).operation == Operation("sum", ("0",))


def test_device_tokens() -> None:
    assert [parse_device(t) for t in ("cuda:0", "CUDA", "cuda:007", "rocm:0", "ROCm:2",
                                      "Cuda:Multi", "Auto")] == [
        "cuda", "cuda", "cuda:7", "rocm", "rocm:2", "cuda:multi", "auto"]
    for token, message in [
        ("  ", "validation: device token must not be empty"),
        ("cuda:", "validation: invalid device `cuda:` (expected cuda:N with non-negative N)"),
        ("cuda:1_0", "validation: invalid device `cuda:1_0` (expected cuda:N with non-negative "
                     "N)"),
        ("gpu", "validation: unknown device `gpu` (expected cpu, auto, metal, cuda[:N| :multi], "
                "or rocm[:N| :multi])"),
    ]:
        with pytest.raises(tet.QueryError) as info:
            parse_device(token)
        assert str(info.value) == message


def test_resolve_fill_parses_like_the_engine() -> None:
    assert resolve_fill({}, {"_FillValue": " -inf "}) == -math.inf
    assert resolve_fill({}, {"fill_value": "1e3"}) == 1000.0
    assert resolve_fill({"fill": "x"}, {"fill_value": ".5"}) == 0.5  # non-number fill ignored
    assert resolve_fill({}, {"_FillValue": -999}) == -999.0  # numeric attr from foreign files
    for bad in ("1_000", "0x10", "1 0", ""):
        with pytest.raises(tet.QueryError) as info:
            resolve_fill({}, {"missing_value": bad})
        assert str(info.value) == f'validation: invalid fill value "{bad}"'
    with pytest.raises(tet.QueryError, match="null_count requires `fill`"):
        resolve_fill({}, None)


def test_resolve_axes_fold_checks_are_optional() -> None:
    # covariance on a rank-1 selection must reach its own rank rule, not "every dimension"
    assert resolve_axes(("0",), 1, None, fold_checks=False) == (0,)
    assert resolve_axes(("1", "1"), 2, None, fold_checks=False) == (1, 1)
    assert resolve_axes((), 3, None) == ()


def test_build_query() -> None:
    assert tet.build_query is build_query
    assert build_query("t", mean=0) == {"dataset": "t", "mean": 0}
    assert build_query("t", quantile={"q": 0.5}, selection=({"start": 1},)) == {
        "dataset": "t", "quantile": {"q": 0.5}, "selection": [{"start": 1}]}
    assert parse_value(build_query("t", histogram={"bins": 3})).operation == Operation(
        "histogram", (), {"bins": 3})
    for kwargs, message in [({}, "exactly one operation key required"),
                            ({"sum": 0, "mean": 0}, "exactly one operation key required"),
                            ({"numel": 0}, "unknown query op 'numel'")]:
        with pytest.raises(ValueError) as info:
            build_query("t", **kwargs)
        assert str(info.value) == message


# ---------------------------------------------------------------------------
# the op table

OPS_MD_3 = {  # ops.md §3: key -> (tier, scalar field, partial field)
    "count": ("A", "operation_element_count", "operation_reduced_count"),
    "arg_min": ("A", "operation_argmin_index", "operation_reduced_argmin"),
    "arg_max": ("A", "operation_argmax_index", "operation_reduced_argmax"),
    **{k: ("A", f"operation_{k}", f"operation_reduced_{k}") for k in (
        "sum", "mean", "min", "max", "var", "std", "product", "norm_l1", "norm_l2",
        "all_finite", "any_nan", "any_inf", "nan_count", "inf_count", "null_count",
        "nan_mean", "nan_std")},
    "median": ("C", "operation_median", "operation_reduced_median"),
    "quantile": ("C", "operation_quantile", "operation_reduced_quantile"),
    "histogram": ("C", "operation_histogram_counts", "operation_reduced_histogram_counts"),
    "covariance": ("C", "operation_covariance", None),
    "correlation": ("C", "operation_correlation", None),
    "transform": ("T", None, None),
}


def test_op_table_matches_ops_md() -> None:
    assert {k: (s.tier, s.scalar_field, s.reduced_field) for k, s in OPS.items()} == OPS_MD_3
    assert all(s.key == k for k, s in OPS.items())
    assert {k for k, s in OPS.items() if s.object_only} == {"quantile", "histogram", "transform"}
    assert {k for k, s in OPS.items() if s.single_axis} == {"covariance", "correlation"}
    list_ops = {k: (f[1], f[2]) for k, f in OPS_MD_3.items()
                if k not in ("quantile", "histogram", "covariance", "correlation", "transform")}
    assert list_ops == REDUCTION_OPS
    assert list(REDUCTION_OPS) == [  # the bindings' order
        "sum", "mean", "min", "max", "var", "std", "product", "norm_l1", "norm_l2",
        "all_finite", "any_nan", "median", "nan_count", "inf_count", "null_count", "nan_mean",
        "nan_std", "any_inf", "count", "arg_min", "arg_max"]
    assert frozenset(REDUCTION_OPS) | {"quantile", "histogram", "covariance", "correlation",
                                       "transform"} == QUERY_OP_KEYS == frozenset(OPS)
    assert tet.REDUCTION_OPS is REDUCTION_OPS and tet.QUERY_OP_KEYS is QUERY_OP_KEYS


# ---------------------------------------------------------------------------
# the interop corpus: `error` cases
#
# Of the 191 `kind == "error"` cases, classified by trying them (test below):
#   54 document-level: `parse_value` alone refuses them with the reference's exact text
#      (27 `selection[i].step must be >= 1, got 0`, 27 `start must be < stop when both set`);
#  137 dataset-level, for the engine:
#      80 axis resolution (index out of range for the rank 27, name without dim_names 16,
#         unknown dim name 11, "reduces every dimension" 26) -- checked here through
#         `resolve_axes` with the rank and dim_names of manifest.json,
#      27 `selection[d].stop must be <= shape[d]`, 10 covariance on a rank != 2 selection,
#       2 partial fold on f16, 18 unknown dataset (not an error: catalog.matched = false).

CASES = [json.loads(line) for line in (INTEROP / "cases.jsonl").read_text().splitlines()]
ERROR_CASES = [c for c in CASES if c["kind"] == "error"]
MANIFEST = json.loads((INTEROP / "manifest.json").read_text())
AXIS_ERRORS = ("validation: operation axis index", "validation: dimension name",
               "validation: unknown dimension name", "validation: operation axes list")


def _document_level(case: dict[str, Any]) -> bool:
    try:
        parse_value(case["query"])
    except tet.TetError:
        return True
    return False


DOCUMENT_LEVEL = [c for c in ERROR_CASES if _document_level(c)]
AXIS_LEVEL = [c for c in ERROR_CASES
              if c not in DOCUMENT_LEVEL and c["reference_error"].startswith(AXIS_ERRORS)
              and "partial-axis fold on f16" not in c["reference_error"]]


def test_error_case_classification_counts() -> None:
    assert (len(ERROR_CASES), len(DOCUMENT_LEVEL), len(AXIS_LEVEL)) == (191, 54, 80)


@pytest.mark.parametrize("case", DOCUMENT_LEVEL, ids=[c["id"] for c in DOCUMENT_LEVEL])
def test_document_level_error_cases(case: dict[str, Any]) -> None:
    with pytest.raises((tet.QueryError, tet.SelectionError)) as info:
        parse_value(case["query"])
    assert str(info.value) == case["reference_error"]


def _geometry(file: str, dataset: str) -> tuple[int, list[str] | None]:
    entry = next(f for f in MANIFEST["files"] if f["file"] == file)
    record = next(d for d in entry["datasets"] if d["name"] == dataset)
    meta = (entry.get("metadata") or {}).get("datasets", {}).get(dataset, {})
    return len(record["shape"]), meta.get("dim_names")


@pytest.mark.parametrize("case", AXIS_LEVEL, ids=[c["id"] for c in AXIS_LEVEL])
def test_dataset_level_axis_errors_through_resolve_axes(case: dict[str, Any]) -> None:
    op = parse_value(case["query"]).operation
    assert op is not None
    ndim, dim_names = _geometry(case["file"], case["dataset"])
    with pytest.raises(tet.QueryError) as info:
        resolve_axes(op.axes, ndim, dim_names)
    assert str(info.value) == case["reference_error"]


def test_covariance_cases_pass_axis_resolution() -> None:
    rank_rule = [c for c in ERROR_CASES if "require a rank-2 logical" in c["reference_error"]]
    assert len(rank_rule) == 10
    for case in rank_rule:
        op = parse_value(case["query"]).operation
        assert op is not None and OPS[op.key].single_axis
        ndim, dim_names = _geometry(case["file"], case["dataset"])
        assert resolve_axes(op.axes, ndim, dim_names, fold_checks=False) == (0,)


# ---------------------------------------------------------------------------
# round trip and fuzzing


def test_round_trip_of_every_profile_and_corpus_document() -> None:
    docs = [parse_text(p.read_text(), filename=p.name)
            for p in sorted((UPSTREAM / "queries").iterdir())]
    docs += [parse_value(c["query"]) for c in CASES if c["kind"] in ("op", "read")]
    docs += [want for _, want in ACCEPTED]
    for doc in docs:
        wire = doc.to_dict()
        assert parse_value(wire) == doc
        assert parse_text(json.dumps(wire)) == doc


AXIS = st.one_of(st.integers(-2, 10), st.sampled_from(["time", "x", "0", "01", "", "9z", "a-b"]),
                 st.floats(-1, 3), st.none(), st.booleans())
AXES = st.one_of(AXIS, st.lists(AXIS, max_size=9),
                 st.fixed_dictionaries({}, optional={"axis": AXIS, "axes": st.lists(AXIS)}))
NUM = st.one_of(st.integers(-5, 5000), st.floats(), st.none(), st.text(max_size=2))
OP_VALUE = st.one_of(
    AXES,
    st.fixed_dictionaries({}, optional={"q": NUM, "axis": AXIS, "bins": NUM, "min": NUM,
                                        "max": NUM, "fill": NUM, "zz": NUM,
                                        "method": st.sampled_from(["zscore", "l2", "log", 1]),
                                        "axes": st.lists(AXIS, max_size=3)}),
)
BASE = st.fixed_dictionaries(
    {"dataset": st.just("a")},  # dataset rules have their own cases above
    optional={
        "layout_version": st.one_of(st.integers(0, 3), NUM),
        "selection": st.lists(st.fixed_dictionaries({}, optional={
            "start": NUM, "stop": NUM, "step": NUM, "start_label": st.text(max_size=2)}),
            max_size=3),
        "spill": st.one_of(st.text(max_size=3), st.integers()),
        "write": st.one_of(st.sampled_from(["ram", "spill", "sidecar", "switch", "disk"]),
                           st.fixed_dictionaries({}, optional={
                               "target": st.sampled_from(["ram", "spill", "sidecar", 3]),
                               "path": st.text(max_size=3), "timestamp": st.booleans()})),
        "execution": st.fixed_dictionaries({}, optional={
            "memory_budget_bytes": NUM, "memory_budget_percent": NUM,
            "memory_budget_percent_bps": NUM, "fold_parallel": st.booleans(),
            "device": st.sampled_from(["cpu", "cuda:1", "cuda:x", "", "rocm:multi"])}),
    },
)
OP_KEYS = st.sampled_from(sorted(OPS))
DOCS = st.builds(lambda base, op: {**base, **op}, BASE, st.one_of(
    st.just({}), st.dictionaries(OP_KEYS, OP_VALUE, min_size=1, max_size=1),
    st.dictionaries(OP_KEYS, OP_VALUE, max_size=2)))


@given(DOCS)
def test_structured_documents_raise_only_tet_errors_and_round_trip(doc: dict[str, Any]) -> None:
    try:
        parsed = parse_value(doc)
    except tet.TetError:
        return
    assert parse_value(parsed.to_dict()) == parsed
    assert parse_text(json.dumps(parsed.to_dict())) == parsed


@given(DOCS, st.sampled_from([None, "q.json", "q.toml", "q"]))
def test_document_text_raises_only_tet_errors(doc: dict[str, Any], name: str | None) -> None:
    text = json.dumps(doc)
    for candidate in (text, text[: len(text) // 2], text.replace(":", "=")):
        with contextlib.suppress(tet.TetError):
            parse_text(candidate, filename=name)


@given(st.text(max_size=300), st.sampled_from([None, "q.json", "q.toml"]))
def test_random_text_raises_only_tet_errors(text: str, name: str | None) -> None:
    with contextlib.suppress(tet.TetError):
        parse_text(text, filename=name)
