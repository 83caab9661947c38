"""Strict typing of query documents (query.md §1–§8): an explicit ``null`` is a wrong
type, floats are never integers, NumPy scalars are the numbers they hold, type errors
in selections name what they got in the engine's words, labels resolve before numeric
bounds, and fold-time axis checks run only after every axis token resolved.

Every expected text below is the reference engine's (tet-py 0.8.3) for the same input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tet
from tet.query.document import (
    Execution,
    Operation,
    QueryDocument,
    WriteSpec,
    parse_text,
    parse_value,
    resolve_axes,
)
from tet.selection import Box, parse_selection, resolve_selection
from tet.wire import format_float, quote

D = {"dataset": "t"}
T = {**D, "transform": {"method": "zscore"}}
SPILL_TYPE = "validation: `spill` must be a string path (relative to the `.tet` parent or absolute)"
WRITE_TYPE = ("validation: `write` must be a target string (`switch`, `spill`, `sidecar`, `ram`) "
              "or an object with `target` / `path`")
NOT_BOTH = ("validation: use either `execution.memory_budget_percent` or "
            "`execution.memory_budget_percent_bps`, not both")
AXIS_INDEX = "validation: axis index must be a non-negative integer"
AXIS_NULL = "validation: axis spec must not be null"


def _refused(doc: Any) -> str:
    with pytest.raises(tet.TetError) as info:
        parse_text(doc) if isinstance(doc, str) else parse_value(doc)
    assert isinstance(info.value, (tet.QueryError, tet.SelectionError))
    return str(info.value)


# ---------------------------------------------------------------------------
# explicit null is a wrong type, not "absent"

NULLS: list[tuple[Any, str]] = [
    ({**D, "execution": None}, "validation: `execution` must be a JSON object"),
    ({**D, "selection": None}, "invalid query JSON: invalid type: null, expected a sequence"),
    ({**D, "layout_version": None}, "validation: `layout_version` must be a number"),
    ({**D, "spill": None}, SPILL_TYPE),
    ({**D, "mean": [], "spill": None}, SPILL_TYPE),
    ({**T, "write": None}, WRITE_TYPE),
    ({**T, "write": {"target": "spill", "path": None}},
     "validation: `write.path` must be a string"),
    ({**T, "write": {"target": None}}, "validation: `write.target` must be a string"),
    ({**T, "write": {"target": "sidecar", "timestamp": None}},
     "validation: `write.timestamp` must be a boolean"),
    ({**D, "execution": {"memory_budget_bytes": None}},
     "validation: `execution.memory_budget_bytes` must be a number"),
    ({**D, "execution": {"memory_budget_percent": None}},
     "validation: `execution.memory_budget_percent` must be a number"),
    ({**D, "execution": {"memory_budget_percent_bps": None}},
     "validation: `execution.memory_budget_percent_bps` must be a number"),
    ({**D, "execution": {"fold_parallel": None}},
     "validation: `execution.fold_parallel` must be a boolean"),
    ({**D, "execution": {"device": None}}, "validation: `execution.device` must be a string"),
    # presence, not value, decides "both percent keys"; the bps form is read first
    ({**D, "execution": {"memory_budget_percent": None, "memory_budget_percent_bps": 5}},
     NOT_BOTH),
    ({**D, "execution": {"memory_budget_percent": 5, "memory_budget_percent_bps": None}},
     "validation: `execution.memory_budget_percent_bps` must be a number"),
    ({**D, "mean": {"axis": None, "axes": [1]}}, AXIS_NULL),
    ({**D, "mean": {"axes": None}}, AXIS_NULL),
    ({**D, "mean": {"axis": None, "axes": None}}, AXIS_NULL),
    ({**D, "null_count": {"fill": 1, "axis": None}}, AXIS_NULL),
    ({**D, "quantile": {"q": 0.5, "axis": None}}, AXIS_NULL),
    ({**D, "histogram": {"bins": 3, "axes": None}}, AXIS_NULL),
    ({**D, "transform": {"method": "zscore", "axes": None}}, AXIS_NULL),
    ({**D, "covariance": {"axis": None}}, AXIS_NULL),
    ({**D, "selection": [None, {}]},
     "invalid query JSON: invalid type: null, expected struct AxisSlice"),
    # op parameters: null is what a wrong type is (required -> "is required")
    ({**D, "quantile": {"q": None}}, "validation: `quantile.q` is required"),
    ({**D, "histogram": {"bins": None}}, "validation: `histogram.bins` is required"),
    ({**D, "transform": {"method": None}}, "validation: `transform.method` is required"),
    ({**D, "histogram": {"bins": 3, "min": None, "max": 2}},
     "validation: histogram requires both `min` and `max` when either is set"),
]


@pytest.mark.parametrize(("doc", "message"), NULLS, ids=[m[:70] for _, m in NULLS])
def test_explicit_null_is_refused(doc: Any, message: str) -> None:
    assert _refused(doc) == message


def test_nulls_the_grammar_allows_still_mean_absent() -> None:
    doc = parse_value({**D, "selection": [{"start": None, "stop_label": None}],
                       "histogram": {"bins": 3, "min": None, "max": None}})
    assert doc == QueryDocument("t", selection=[{}],
                                operation=Operation("histogram", (), {"bins": 3}))
    assert parse_value({**D, "null_count": {"fill": None, "axis": 0}}).operation == Operation(
        "null_count", ("0",))  # a non-number fill is ignored (ops.md §4)
    assert parse_value({**D, "mean": {"axis": 1, "axes": None}}).operation == Operation(
        "mean", ("1",))  # axis wins; the axes value is never read


# ---------------------------------------------------------------------------
# TOML nan / inf: the engine turns them into strings, so numbers refuse them

TOML_NON_FINITE: list[tuple[str, str]] = [
    ('dataset = "t"\nmean = 0\n[execution]\nmemory_budget_percent = nan',
     "validation: `execution.memory_budget_percent` must be a number"),
    ('dataset = "t"\nmean = 0\n[execution]\nmemory_budget_percent = inf',
     "validation: `execution.memory_budget_percent` must be a number"),
    ('dataset = "t"\n[execution]\nmemory_budget_bytes = nan',
     "validation: `execution.memory_budget_bytes` must be a number"),
    ('dataset = "t"\nlayout_version = nan', "validation: `layout_version` must be a number"),
    ('dataset = "t"\n[[selection]]\nstart = nan\n[[selection]]',
     'invalid query JSON: invalid type: string "NaN", expected u64'),
    ('dataset = "t"\nmean = -inf',
     'validation: invalid axis label "-inf" (use a non-negative decimal index or a dimension '
     "name)"),
    ('dataset = "t"\n[transform]\nmethod = "zscore"\n[write]\ntarget = nan',
     "validation: unknown write target `NaN` (expected switch, spill, sidecar, or ram)"),
    ('dataset = "t"\n[transform]\nmethod = nan',
     "validation: unknown transform method `NaN` (expected zscore, minmax, l1, l2, center, "
     "scale, log1p, sqrt, or softmax)"),
    ('dataset = "t"\n[execution]\ndevice = -nan',
     "validation: unknown device `NaN` (expected cpu, auto, metal, cuda[:N| :multi], or "
     "rocm[:N| :multi])"),
    ('dataset = "t"\n[quantile]\nq = nan', "validation: `quantile.q` is required"),
]


@pytest.mark.parametrize(("text", "message"), TOML_NON_FINITE,
                         ids=[t.split("\n", 1)[1][:40] for t, _ in TOML_NON_FINITE])
def test_toml_non_finite_floats_are_strings(text: str, message: str) -> None:
    assert _refused(text) == message


def test_toml_non_finite_as_names_and_paths() -> None:
    assert parse_text('dataset = "t"\nmean = [nan, inf]').operation == Operation(
        "mean", ("NaN", "inf"))  # dimension names, resolved (and refused) at plan time
    assert parse_text('dataset = "t"\nspill = nan').spill == "NaN"
    assert parse_text("dataset = nan").dataset == "NaN"


# ---------------------------------------------------------------------------
# floats are not integers; huge digit strings are not indices

FLOATS: list[tuple[Any, str]] = [
    ({**D, "mean": 1.0}, AXIS_INDEX),
    ({**D, "mean": -0.0}, AXIS_INDEX),
    ({**D, "mean": 0.0}, AXIS_INDEX),
    ({**D, "mean": [1.0]}, AXIS_INDEX),
    ({**D, "mean": {"axis": [0, 1.0]}}, AXIS_INDEX),
    ({**D, "covariance": {"axis": 0.0}}, AXIS_INDEX),
    ({**D, "mean": np.float64(1.0)}, AXIS_INDEX),
    ({**D, "mean": np.float32(0.0)}, AXIS_INDEX),
    ({**D, "mean": 2**64}, AXIS_INDEX),
    ('{"dataset": "t", "mean": 1e0}', AXIS_INDEX),
    ('{"dataset": "t", "mean": [1E0]}', AXIS_INDEX),
    ('dataset = "t"\nmean = 1.0', AXIS_INDEX),
    ('dataset = "t"\nmean = [1.0]', AXIS_INDEX),
    ({**D, "mean": "99999999999999999999999"},
     'validation: invalid axis index "99999999999999999999999"'),
    ({**D, "mean": ["0", "18446744073709551616"]},
     'validation: invalid axis index "18446744073709551616"'),
    ({**D, "mean": "9" * 33}, "validation: axis label exceeds maximum length (32)"),
    ({**D, "selection": [{"start": 1.0}]},
     "invalid query JSON: invalid type: floating point `1.0`, expected u64"),
    ({**D, "selection": [{"step": -0.0}]},
     "invalid query JSON: invalid type: floating point `-0.0`, expected u64"),
    ({**D, "selection": [{"stop": np.float64(2.0)}]},
     "invalid query JSON: invalid type: floating point `2.0`, expected u64"),
    ('{"dataset": "t", "selection": [{"start": 1e0}, {}]}',
     "invalid query JSON: invalid type: floating point `1.0`, expected u64"),
    ('{"dataset": "t", "selection": [{"start": 1E2}, {}]}',
     "invalid query JSON: invalid type: floating point `100.0`, expected u64"),
    ('dataset = "t"\n[[selection]]\nstart = 1.0\n[[selection]]',
     "invalid query JSON: invalid type: floating point `1.0`, expected u64"),
    ({**D, "selection": {"start": [1.0]}},
     "invalid query JSON: invalid type: floating point `1.0`, expected u64"),
    # integers a JSON reader cannot hold as integers are floats to it
    ({**D, "selection": [{"start": 2**64}]},
     "invalid query JSON: invalid type: floating point `1.8446744073709552e+19`, expected u64"),
    ({**D, "selection": [{"start": -(2**63) - 1}]},
     "invalid query JSON: invalid type: floating point `-9.223372036854776e+18`, expected u64"),
    ('{"dataset": "t", "selection": [{"start": 100000000000000000000000000000}]}',
     "invalid query JSON: invalid type: floating point `1e+29`, expected u64"),
    ({**D, "histogram": {"bins": 2.0}}, "validation: `histogram.bins` is required"),
    ('{"dataset": "t", "histogram": {"bins": 2e0}}', "validation: `histogram.bins` is required"),
    ({**D, "histogram": {"bins": 2**32}}, "validation: `histogram.bins` is required"),
    ({**D, "histogram": {"bins": 2**32 - 1}},
     "validation: histogram bins exceeds maximum 4096 (got 4294967295)"),
    ({**D, "histogram": {"bins": 2**63 - 1}}, "validation: `histogram.bins` is required"),
    ({**D, "execution": {"memory_budget_bytes": 1.0}},
     "validation: `execution.memory_budget_bytes` must be a non-negative integer"),
    ({**D, "execution": {"memory_budget_percent_bps": 5.0}},
     "validation: `execution.memory_budget_percent_bps` must be a non-negative integer"),
    ({**D, "execution": {"memory_budget_percent_bps": 2**64}},
     "validation: `execution.memory_budget_percent_bps` must be a non-negative integer"),
    ({**D, "layout_version": 1.0}, "validation: `layout_version` must be a non-negative integer"),
]


@pytest.mark.parametrize(("doc", "message"), FLOATS, ids=[repr(d)[:60] for d, _ in FLOATS])
def test_floats_are_not_integers(doc: Any, message: str) -> None:
    assert _refused(doc) == message


def test_integer_edges_still_accepted() -> None:
    assert parse_value({**D, "mean": "18446744073709551615"}).operation == Operation(
        "mean", ("18446744073709551615",))
    assert parse_value({**D, "mean": 2**64 - 1}).operation == Operation(
        "mean", ("18446744073709551615",))
    assert parse_value({**D, "selection": [{"step": 2**64 - 1}]}).selection == [
        {"step": 2**64 - 1}]
    assert parse_text('{"dataset": "t", "mean": -0}').operation == Operation("mean", ("0",))


# ---------------------------------------------------------------------------
# NumPy scalars are the numbers they hold; bool is never a number


def test_numpy_scalars_are_accepted_where_numbers_are() -> None:
    doc = parse_value({
        **D, "layout_version": np.int64(2),
        "histogram": {"bins": np.int64(3), "min": np.float32(0.5), "max": np.int8(4),
                      "axes": [np.int32(0), np.uint8(2)]},
        "selection": [{"start": np.int64(1), "stop": np.uint16(3), "step": np.int8(1)},
                      {"start": 0}],
        "execution": {"memory_budget_bytes": np.uint64(10),
                      "memory_budget_percent_bps": np.int64(100),
                      "fold_parallel": np.bool_(True)},
    })
    assert doc == QueryDocument(
        "t", 2, [{"start": 1, "stop": 3, "step": 1}, {"start": 0}],
        Operation("histogram", ("0", "2"), {"bins": 3, "min": 0.5, "max": 4.0}),
        execution=Execution(10, 100, True))
    assert type(doc.layout_version) is int
    assert all(type(v) is int for axis in doc.selection or [] for v in axis.values())
    assert parse_value({**D, "quantile": {"q": np.float32(0.5), "axis": np.int64(1)}}
                       ).operation == Operation("quantile", ("1",), {"q": 0.5})
    assert parse_value({**D, "null_count": {"fill": np.int16(7)}}).operation == Operation(
        "null_count", (), {"fill": 7.0})
    assert parse_value({**D, "execution": {"memory_budget_percent": np.float32(12.5)}}
                       ).execution == Execution(None, 1250)
    assert parse_value({**D, "selection": {"start": [np.int64(1)]}}).selection == [{"start": 1}]
    write = parse_value({**T, "write": {"target": "sidecar", "timestamp": np.bool_(False)}}).write
    assert write == WriteSpec("sidecar", None, False) and type(write.timestamp) is bool


NUMPY_BOOLS: list[tuple[Any, str]] = [
    ({**D, "mean": np.bool_(True)}, "validation: axis spec must be a number, string, or array"),
    ({**D, "mean": [np.bool_(False)]}, "validation: axis list entries must be numbers or strings"),
    ({**D, "histogram": {"bins": np.bool_(True)}}, "validation: `histogram.bins` is required"),
    ({**D, "quantile": {"q": np.bool_(True)}}, "validation: `quantile.q` is required"),
    ({**D, "selection": [{"start": np.bool_(True)}]},
     "invalid query JSON: invalid type: boolean `true`, expected u64"),
    ({**D, "execution": {"memory_budget_bytes": np.bool_(True)}},
     "validation: `execution.memory_budget_bytes` must be a number"),
    ({**D, "execution": {"fold_parallel": np.int64(1)}},
     "validation: `execution.fold_parallel` must be a boolean"),
    ({**D, "layout_version": True}, "validation: `layout_version` must be a number"),
]


@pytest.mark.parametrize(("doc", "message"), NUMPY_BOOLS, ids=[m[:60] for _, m in NUMPY_BOOLS])
def test_booleans_are_not_numbers(doc: Any, message: str) -> None:
    assert _refused(doc) == message


# ---------------------------------------------------------------------------
# type errors in selections, in the engine's words

ODD = 'a"b\né\x01'
GOT: list[tuple[Any, str]] = [  # value -> how the engine names it
    ("1", 'string "1"'),
    ("", 'string ""'),
    (ODD, 'string "a\\"b\\né\\u{1}"'),
    (True, "boolean `true`"),
    (False, "boolean `false`"),
    (1.5, "floating point `1.5`"),
    (1e20, "floating point `1e+20`"),
    ([], "sequence"),
    ((1,), "sequence"),
    ({}, "map"),
    ({"a": 1}, "map"),
]


@pytest.mark.parametrize(("value", "got"), GOT, ids=[g for _, g in GOT])
def test_selection_type_errors_in_every_position(value: Any, got: str) -> None:
    prefix = "invalid query JSON: invalid type: "
    assert _refused({**D, "selection": [{"start": value}]}) == f"{prefix}{got}, expected u64"
    assert _refused({**D, "selection": [{}, {"step": value}]}) == f"{prefix}{got}, expected u64"
    if not isinstance(value, str):
        assert _refused({**D, "selection": [{"stop_label": value}]}) == (
            f"{prefix}{got}, expected a string")
    if not isinstance(value, (dict, list, tuple)):
        assert _refused({**D, "selection": [value]}) == f"{prefix}{got}, expected struct AxisSlice"
        assert _refused({**D, "selection": value}) == f"{prefix}{got}, expected a sequence"


SELECTION_TEXTS: list[tuple[Any, str]] = [
    ({**D, "selection": [{"start": -1}]},
     "invalid query JSON: invalid value: integer `-1`, expected u64"),
    ({**D, "selection": [{"start_label": 1}]},
     "invalid query JSON: invalid type: integer `1`, expected a string"),
    ({**D, "selection": [{"start_label": 2**64 - 1}]},
     "invalid query JSON: invalid type: integer `18446744073709551615`, expected a string"),
    ({**D, "selection": [1, 2]},
     "invalid query JSON: invalid type: integer `1`, expected struct AxisSlice"),
    ({**D, "selection": [-1]},
     "invalid query JSON: invalid type: integer `-1`, expected struct AxisSlice"),
    ({**D, "selection": 1}, "invalid query JSON: invalid type: integer `1`, expected a sequence"),
    ({**D, "selection": 2**64},
     "invalid query JSON: invalid type: floating point `1.8446744073709552e+19`, expected a "
     "sequence"),
    ({**D, "selection": [{"start": {1, 2}}]},
     "invalid query JSON: invalid type: Python object of type `set`, expected u64"),
    # the positional form of an axis object: exactly five values
    ({**D, "selection": [[]]},
     "invalid query JSON: invalid length 0, expected struct AxisSlice with 5 elements"),
    ({**D, "selection": [[1]]},
     "invalid query JSON: invalid length 1, expected struct AxisSlice with 5 elements"),
    ({**D, "selection": [["x"]]}, 'invalid query JSON: invalid type: string "x", expected u64'),
    ({**D, "selection": [[None, None, None, 5, None]]},
     "invalid query JSON: invalid type: integer `5`, expected a string"),
    ({**D, "selection": [[None] * 6]},
     "invalid query JSON: invalid length 6, expected fewer elements in array"),
    ({**D, "selection": [[None, None, 0, None, None]]},
     "validation: selection[0].step must be >= 1, got 0"),
    # every entry is read before any entry is checked
    ({**D, "selection": [{"step": 0}, {"start": "x"}]},
     'invalid query JSON: invalid type: string "x", expected u64'),
    ({**D, "selection": [{}] * 8 + [{"start": "x"}]},
     'invalid query JSON: invalid type: string "x", expected u64'),
    ({**D, "selection": [{}] * 9 + [1]},
     "invalid query JSON: invalid type: integer `1`, expected struct AxisSlice"),
    ({**D, "selection": [{"step": 0}] * 9}, "validation: selection rank 9 exceeds maximum 8"),
    # keys are read in sorted order
    ({**D, "selection": [{"stop": "x", "start": "y"}]},
     'invalid query JSON: invalid type: string "y", expected u64'),
    ({**D, "selection": [{"step": "x", "start_label": 1}]},
     "invalid query JSON: invalid type: integer `1`, expected a string"),
    ({**D, "selection": [{"start": "x", "bogus": 1}]},
     "invalid query JSON: unknown field `bogus`, expected one of `start`, `stop`, `step`, "
     "`start_label`, `stop_label`"),
    # the box form (our sugar) reads its arrays the same way
    ({**D, "selection": {"start": 1}},
     "invalid query JSON: invalid type: integer `1`, expected a sequence"),
    ({**D, "selection": {"stop": [1], "start": ["y"]}},
     'invalid query JSON: invalid type: string "y", expected u64'),
    ({**D, "selection": {"zz": [1], "aa": [1]}},
     "invalid query JSON: unknown field `aa` in box selection, expected `start`, `stop` or "
     "`step` arrays"),
]


@pytest.mark.parametrize(("doc", "message"), SELECTION_TEXTS,
                         ids=[repr(d)[:60] for d, _ in SELECTION_TEXTS])
def test_selection_texts(doc: Any, message: str) -> None:
    assert _refused(doc) == message


def test_positional_axis_objects() -> None:
    assert parse_selection([[1, 2, 1, None, None], (None, None, None, "a1", None)]) == [
        {"start": 1, "stop": 2, "step": 1}, {"start_label": "a1"}]


@pytest.mark.parametrize(("value", "text"), [
    (1.0, "1.0"), (-0.0, "-0.0"), (0.0, "0.0"), (100.0, "100.0"), (1e15, "1000000000000000.0"),
    (1e16, "1e+16"), (1.5e16, "1.5e+16"), (123456.5, "123456.5"), (0.001, "0.001"),
    (1e-5, "0.00001"), (2.5e-5, "0.000025"), (1e-7, "1e-7"), (1.25e-10, "1.25e-10"),
    (5e-324, "5e-324"), (-1e20, "-1e+20"), (1.7976931348623157e308, "1.7976931348623157e+308"),
    (float("nan"), "NaN"), (float("inf"), "inf"), (float("-inf"), "-inf"),
])
def test_float_text(value: float, text: str) -> None:
    assert format_float(value) == text


@pytest.mark.parametrize(("value", "text"), [
    ("\u0301", '"\\u{301}"'), ("a\u0301", '"a\\u{301}"'), ("\u200b", '"\\u{200b}"'),
    ("\x7f", '"\\u{7f}"'), ("\\", '"\\\\"'), ("'", "\"'\""), ("\xa0", '"\\u{a0}"'),
    ("\U0001F600", '"\U0001F600"'), ("\t\r\n\0", '"\\t\\r\\n\\0"'), (" ", '" "'),
    ("\ud800", '"\\u{d800}"'),
])
def test_string_quoting(value: str, text: str) -> None:
    assert quote(value) == text


# ---------------------------------------------------------------------------
# the order of checks inside one block

ORDER: list[tuple[Any, str]] = [
    ({**D, "zz": 1, "aa": 1}, "validation: unknown field `aa`"),
    ({**D, "execution": {"zz": 1, "aa": 1}}, "validation: unknown field `execution.aa`"),
    ({**T, "write": {"zz": 1, "aa": 1}}, "validation: unknown field `write.aa`"),
    ({**D, "execution": {"memory_budget_percent": 5, "memory_budget_percent_bps": 70000}},
     "validation: `execution.memory_budget_percent_bps` exceeds u16"),
    ({**D, "execution": {"memory_budget_percent": 5, "memory_budget_percent_bps": 10001}},
     "validation: `execution.memory_budget_percent_bps` must be <= 10000 (100%)"),
    ({**D, "execution": {"memory_budget_percent": 5, "memory_budget_percent_bps": -1}},
     "validation: `execution.memory_budget_percent_bps` must be a non-negative integer"),
    ({**D, "execution": {"memory_budget_percent": 500, "memory_budget_percent_bps": 7}},
     NOT_BOTH),
    ({**D, "execution": {"memory_budget_percent_bps": "x", "memory_budget_bytes": "y"}},
     "validation: `execution.memory_budget_bytes` must be a number"),
    ({**D, "execution": {"device": 1, "fold_parallel": 1}},
     "validation: `execution.fold_parallel` must be a boolean"),
    ({**D, "execution": {"memory_budget_bytes": "1"}},
     "validation: `execution.memory_budget_bytes` must be a number"),
    ({**D, "execution": {"memory_budget_bytes": []}},
     "validation: `execution.memory_budget_bytes` must be a number"),
    ({**D, "execution": {"memory_budget_percent_bps": True}},
     "validation: `execution.memory_budget_percent_bps` must be a number"),
    ({**T, "write": {"timestamp": 1, "target": "x"}},
     "validation: unknown write target `x` (expected switch, spill, sidecar, or ram)"),
    ({**T, "write": {"path": "", "target": "x"}},
     "validation: unknown write target `x` (expected switch, spill, sidecar, or ram)"),
    ({**T, "write": {"timestamp": 1, "path": 1}}, "validation: `write.path` must be a string"),
    ({**T, "write": {"target": "spill", "path": ""}}, "validation: `write.path` must not be empty"),
    ({**D, "mean": {"axis": {}}}, "validation: axis object must include `axis` or `axes`"),
    ({**D, "mean": {"axis": {"axes": [0], "x": 1}}}, "validation: unknown field `mean.axis.x`"),
]


@pytest.mark.parametrize(("doc", "message"), ORDER, ids=[m[:60] for _, m in ORDER])
def test_first_error_in_a_block(doc: Any, message: str) -> None:
    assert _refused(doc) == message


def test_hostile_numbers_never_escape() -> None:
    assert _refused({**D, "quantile": {"q": 10**400}}) == (
        "validation: quantile q must be in [0.0, 1.0], got inf")
    assert _refused({**D, "histogram": {"bins": 2, "min": 0, "max": 10**400}}) == (
        "validation: histogram min/max must be finite")


# ---------------------------------------------------------------------------
# fold-time axis checks (query.md §4) run only after every token resolved


def test_every_axis_resolves_before_fold_checks() -> None:
    with pytest.raises(tet.QueryError) as info:
        resolve_axes(("0", "0", "9"), 3, None)
    assert str(info.value) == "validation: operation axis index 9 out of range for rank 3"
    with pytest.raises(tet.QueryError) as info:
        resolve_axes(("0", "0", "t"), 3, None)
    assert str(info.value) == ("validation: dimension name `t` requires footer metadata "
                               "`dim_names` for this dataset")
    with pytest.raises(tet.QueryError) as info:
        resolve_axes(("3", "1", "3", "1"), 5, None)
    assert str(info.value) == "validation: duplicate operation axis index 3"
    assert resolve_axes(("3", "1", "3", "1"), 5, None, fold_checks=False) == (1, 1, 3, 3)
    # parsing alone never applies them: they need the rank
    assert parse_value({**D, "mean": [0, 0]}).operation == Operation("mean", ("0", "0"))


# ---------------------------------------------------------------------------
# labels resolve before numeric bounds (query.md §3)

SHAPE = (2, 3, 4)
LABELS = {0: ("a0", "a1"), 2: ("c0", "c1", "c2", "c3")}

LABEL_ORDER: list[tuple[list[dict[str, Any]], str]] = [
    ([{"start": 2}, {}, {"stop_label": "c0"}],
     "validation: selection[2]: require start < stop (got 0 >= 0)"),
    ([{"start": 2}, {}, {"start_label": "zz"}],
     'validation: unknown coordinate label "zz" (axis has 4 labels)'),
    ([{"start": 2}, {"start_label": "zz"}, {}],
     "validation: selection[1] coordinate labels require `coords` for this axis in footer "
     "metadata"),
    ([{"start": 2}, {}, {"start": 9, "stop_label": "c3"}],
     "validation: selection[2].start must be < shape[2] (4), got 9"),
    ([{"start": 2}, {}, {"start_label": "c3", "stop": 9}],
     "validation: selection[2].stop must be <= shape[2] (4), got 9"),
    ([{"start": 2}, {}, {"start_label": "c2", "stop_label": "c1"}],
     "validation: selection[2]: require start < stop (got 2 >= 1)"),
    ([{"start_label": "a1", "stop": 9}, {}, {"start_label": "zz"}],
     "validation: selection[0].stop must be <= shape[0] (2), got 9"),
    ([{"start_label": "a1"}, {"start": 1, "stop": 5}, {"start_label": "zz"}],
     'validation: unknown coordinate label "zz" (axis has 4 labels)'),
    ([{"start_label": "a1"}, {"start": 5}, {"stop_label": "c0"}],
     "validation: selection[2]: require start < stop (got 0 >= 0)"),
    ([{"start": 2}, {}, {"start_label": "c3"}],
     "validation: selection[0].start must be < shape[0] (2), got 2"),
    ([{"start": 5, "stop_label": "a1"}, {}, {}],
     "validation: selection[0].start must be < shape[0] (2), got 5"),
]


@pytest.mark.parametrize(("selection", "message"), LABEL_ORDER,
                         ids=[m[:60] for _, m in LABEL_ORDER])
def test_labels_resolve_before_numeric_bounds(selection: list[dict[str, Any]],
                                              message: str) -> None:
    with pytest.raises(tet.SelectionError) as info:
        resolve_selection(selection, SHAPE, LABELS.get)
    assert str(info.value) == message


def test_label_resolution_results_and_metadata_rule() -> None:
    assert resolve_selection([{"start_label": "a1", "step": 5}, {}, {"stop_label": "c2"}],
                             SHAPE, LABELS.get) == Box((1, 0, 0), (2, 3, 2), (5, 1, 1))
    with pytest.raises(tet.SelectionError) as info:
        resolve_selection([{"start": 9}, {}, {"start_label": "c0"}], SHAPE, LABELS.get,
                          has_metadata=False)
    assert str(info.value) == ("validation: selection coordinate labels require footer "
                               "metadata for this dataset")


def test_label_order_through_a_file(tmp_path: Path) -> None:
    path = tet.write_dataset(tmp_path / "lab.tet", "a",
                             np.arange(24, dtype=np.float32).reshape(SHAPE),
                             coords={"0": ["a0", "a1"], "2": ["c0", "c1", "c2", "c3"]})
    with tet.open(path) as f:
        for selection, message in LABEL_ORDER[:3]:
            with pytest.raises(tet.TetError) as info:
                f.plan_only({"dataset": "a", "selection": selection})
            assert str(info.value) == message
        plan = f.plan_only({"dataset": "a", "selection": [{"start_label": "a1"}, {},
                                                          {"start_label": "c1"}]})
        assert plan["read_plan"]["selection_box_start"] == [1, 0, 1]
