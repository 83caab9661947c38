"""Query documents: every validation rule of query.md §1–§8 and §12 with its exact
text, the op-parameter rules of ops.md, plan-time axis/fill resolution, and the
upstream JSON/TOML profile pairs.

Matrix: (rule × offending document) → (error class, exact message); resolve_axes over
ranks and dim names; resolve_fill over attrs; parse_text format detection.
"""

from __future__ import annotations

import json
import math
import tomllib
from typing import Any

import pytest

import tet
from tests.conftest import UPSTREAM
from tet.query.document import (
    Execution,
    Operation,
    parse_device,
    parse_text,
    parse_value,
    resolve_axes,
    resolve_fill,
)

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
    ({**D, "histogram": {"bin": 4}}, "validation: unknown field `histogram.bin`"),
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
