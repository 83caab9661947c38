"""`tet query` (cli.md §4): every output format on the upstream fixtures, the quiet line of
every operation kind against NumPy, every input form and flag, usage errors (exit 2),
command failures (exit 1, one `error:` line, no traceback), the not-found hint, history
recording, and `run_query` called the way `tet qhist run` calls it.

Matrix: formats full/json/stats/plan/quiet/table × modes validate-only / plan / execute
(scalar op, partial op, preview, spill, transform, unknown dataset).  Host RAM is pinned
(`fixed_ram`) so budgets in tables are exact.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tet
import tet.query.execute as execute_mod
from tests.conftest import UPSTREAM
from tet.cli import formats
from tet.cli.common import CommandFailed
from tet.cli.query import VALIDATED, run_query

Q = UPSTREAM / "queries"
SAMPLE = UPSTREAM / "tet" / "sample.tet"
U8 = UPSTREAM / "tet" / "multichunk_u8.tet"
RAM = 8 << 30
BUDGET = RAM // 4  # the default 25 % of available RAM
DENSE = "dense_half_open_intervals_per_axis_json_step_ignored_for_chunk_touch_list"
MATCHED = "query accepted; dataset matched; read_plan lists mmap payload regions f…"
MEAN_Q = '{"dataset": "temperature", "mean": []}'


@pytest.fixture(autouse=True)
def fixed_ram(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every query sees 8 GiB available: the budget (2 GiB) and io_regime are fixed."""
    monkeypatch.setattr(execute_mod, "host_available_ram", lambda: RAM)


def history_rows() -> list[dict[str, Any]]:
    path = Path(os.environ["TET_QUERY_HISTORY_FILE"])
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def f6(x: float) -> str:
    """The spec's float rule, written out independently of `tet.cli.formats`."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.6f}".rstrip("0").rstrip(".")


def f6_list(values: Any) -> str:
    return "[" + ",".join(f6(float(v)) for v in np.ravel(values)) + "]"


# ---------------------------------------------------------------------------
# quiet on the upstream fixtures


@pytest.mark.parametrize("name", ["mean_temperature.toml", "mean_temperature.json"])
def test_quiet_mean_temperature_exact(cli: Any, name: str) -> None:
    r = cli("query", Q / name, "-t", SAMPLE, "-x", "-q")
    assert (r.rc, r.err) == (0, "")
    assert r.out == ("dataset=temperature status=ok op=mean mean=3.5 elements=6 "
                     "memory_strategy=streaming_fold\n")


@pytest.mark.parametrize(("stem", "line"), [
    ("mean_a", "op=mean mean=3.5 elements=6 memory_strategy=streaming_fold"),
    ("sum_a", "op=sum sum=21 elements=6 memory_strategy=streaming_fold"),
    ("var_a", "op=var var=2.916667 elements=6 memory_strategy=streaming_fold"),
    ("sum_axis0_a", "op=sum axes=[0] reduced_shape=3 values=[5,7,9] elements=6 "
                    "memory_strategy=streaming_fold"),
    ("quantile_axis0_a", "op=quantile axes=[0] q=0.5 reduced_shape=3 values=[2.5,3.5,4.5] "
                         "elements=6 memory_strategy=in_memory_materialize"),
])
@pytest.mark.parametrize("ext", ["json", "toml"])
def test_quiet_u8_fixture_queries(cli: Any, stem: str, line: str, ext: str) -> None:
    r = cli("query", Q / f"{stem}.{ext}", "-t", U8, "-x", "--format", "quiet")
    assert (r.rc, r.err) == (0, "")
    assert r.out == f"dataset=a status=ok {line}\n"


def test_quiet_plan_only(cli: Any) -> None:
    r = cli("query", Q / "mean_temperature.toml", "-t", SAMPLE, "-q")
    assert (r.rc, r.err) == (0, "")
    assert r.out == ("dataset=temperature status=planned chunks=2 elements=6 stored_bytes=24 "
                     f"logical_shape=2×3 touch_policy={DENSE}\n")


def test_quiet_validate_only(cli: Any) -> None:
    r = cli("query", Q / "mean_strided_temperature.json", "-q")
    assert r.out == ("dataset=temperature validated selection_rank=2 "
                     "hint=pass --tet PATH for catalog and read_plan\n")
    r = cli("query", Q / "mean_temperature.json", "-q")
    assert r.out == "dataset=temperature validated hint=pass --tet PATH for catalog and read_plan\n"


def test_quiet_preview_slice(cli: Any) -> None:
    r = cli("query", Q / "slice_2x2_temperature.toml", "-t", SAMPLE, "-x", "-q", "--preview", "3")
    assert (r.rc, r.err) == (0, "")
    assert r.out == ("dataset=temperature status=preview read_bytes=16 "
                     "memory_strategy=capped_in_memory preview=3 f32 truncated=true "
                     "sample=[1,2,4]\n")
    r = cli("query", Q / "slice_full_temperature.json", "-t", SAMPLE, "-x", "-q",
            "--preview-f32", "64")
    assert r.out == ("dataset=temperature status=preview read_bytes=24 "
                     "memory_strategy=capped_in_memory preview=6 f32 sample=[1,2,3,4,5,6]\n")


# ---------------------------------------------------------------------------
# table on the upstream fixtures

TABLE_HEAD = """\
query:
  dataset    {ds}
  status     planned
  accepted   true
  operation  {op}
  tet_file   {tet}
  message    {msg}

read_plan:
  chunk_touch_policy  {dense}
  chunk_count         2
  total_stored_bytes  {stored}
  logical_shape       2×3
  logical_elements    6

"""


def test_table_scalar_mean(cli: Any) -> None:
    r = cli("query", Q / "mean_temperature.json", "-t", SAMPLE, "-x", "--format", "table")
    assert (r.rc, r.err) == (0, "")
    assert r.out == TABLE_HEAD.format(
        ds="temperature", op="mean (scalar)", tet=SAMPLE, msg=MATCHED, dense=DENSE,
        stored=24) + f"""\
execution:
  bytes_read           24
  memory_strategy      streaming_fold
  memory_budget_bytes  {BUDGET}
  io_regime            in_core

result:
  mean      3.5
  elements  6

"""


def test_table_partial_sum_axis0(cli: Any) -> None:
    r = cli("query", Q / "sum_axis0_a.toml", "-t", U8, "-x", "--format", "table")
    assert (r.rc, r.err) == (0, "")
    assert r.out == TABLE_HEAD.format(
        ds="a", op="sum axes=[0]", tet=U8, msg=MATCHED, dense=DENSE, stored=6) + f"""\
execution:
  bytes_read           6
  memory_strategy      streaming_fold
  memory_budget_bytes  {BUDGET}
  io_regime            in_core

result (reduced_shape=3):
       #  value
       0  5
       1  7
       2  9
  elements  6

"""


def test_table_slice_preview_grid(cli: Any) -> None:
    r = cli("query", Q / "slice_2x2_temperature.json", "-t", SAMPLE, "-x", "--format", "table",
            "--preview", "64")
    assert (r.rc, r.err) == (0, "")
    assert r.out == f"""\
query:
  dataset         temperature
  status          planned
  accepted        true
  selection_axes  2
  tet_file        {SAMPLE}
  message         {MATCHED}

read_plan:
  chunk_touch_policy  {DENSE}
  chunk_count         1
  total_stored_bytes  16
  logical_shape       2×2
  logical_elements    4

execution:
  bytes_read           16
  memory_strategy      capped_in_memory
  memory_budget_bytes  {BUDGET}

slice (f32, shape=2×2):
                c0        c1
     r0          1         2
     r1          4         5

"""


def test_table_truncated_grid_marks_missing_cells(cli: Any) -> None:
    r = cli("query", Q / "slice_full_temperature.json", "-t", SAMPLE, "-x", "--format", "table",
            "--preview", "4")
    assert r.out.endswith("""\
slice (f32, shape=2×3, truncated):
                c0        c1        c2
     r0          1         2         3
     r1          4         —         —
  … logical tensor continues beyond preview cap

""")


def test_table_plan(cli: Any) -> None:
    r = cli("query", Q / "mean_temperature.toml", "-t", SAMPLE, "--format", "table")
    assert (r.rc, r.err) == (0, "")
    assert r.out == TABLE_HEAD.format(ds="temperature", op="mean (scalar)", tet=SAMPLE,
                                      msg=MATCHED, dense=DENSE, stored=24)


def test_table_validate_only(cli: Any) -> None:
    r = cli("query", Q / "mean_strided_temperature.toml", "--format", "table")
    assert r.out == """\
query:
  dataset         temperature
  status          planned
  accepted        true
  selection_axes  2
  operation       mean (scalar)
  message         query accepted and validated; pass `--tet PATH` for catalog + read_plan…

"""


# ---------------------------------------------------------------------------
# full, json, stats, plan

PREVIEW_KEYS = {f"{d}_preview{s}" for d in ("f32", "f64", "i32", "i64", "u8", "u16", "i16",
                                              "u32", "u64", "f16") for s in ("", "_truncated")}
MEAN_EXECUTION_STATS = [
    "total_bytes_read_from_disk", "operation_element_count", "operation_mean", "memory_strategy",
    "memory_budget_bytes", "host_available_ram_bytes", "logical_selection_f32_bytes",
    "logical_selection_bytes", "fold_parallel", "fold_workers", "io_regime", "fold_linear_scan",
    "device_used", "device_gpu_reduce", "device_gpu_pipeline", "device_gpu_multi",
]


def test_full_equals_python_api(cli: Any) -> None:
    doc = json.loads((Q / "sum_axis0_a.json").read_text())
    r = cli("query", Q / "sum_axis0_a.json", "-t", U8, "-x")
    assert (r.rc, r.err) == (0, "")
    assert r.out.startswith('{\n  "status": "planned",\n  "accepted": true,\n')
    assert r.out.endswith("}\n")
    api = tet.open(U8).query_execute(doc, preview=64)
    assert json.loads(r.out) == api
    assert json.loads(r.out)["execution"]["u8_preview"] == [1, 2, 3, 4, 5, 6]


def test_json_is_one_line_equal_to_full(cli: Any) -> None:
    full = cli("query", Q / "mean_temperature.json", "-t", SAMPLE, "-x", "--format", "full")
    one = cli("query", Q / "mean_temperature.json", "-t", SAMPLE, "-x", "--format", "json")
    assert one.rc == 0 and one.out.count("\n") == 1 and one.out.endswith("}\n")
    assert ", " not in one.out and ": " not in one.out
    assert json.loads(one.out) == json.loads(full.out)
    assert list(json.loads(one.out)) == ["status", "accepted", "layout_version", "dataset",
                                         "selection_axes", "operation", "message", "tet_file",
                                         "catalog", "read_plan", "execution"]
    api = tet.open(SAMPLE).query_execute(json.loads(MEAN_Q), preview=64)
    assert json.loads(one.out) == api


def test_full_default_preview_is_64_and_explicit_cap(cli: Any) -> None:
    full = json.loads(cli("query", Q / "slice_full_temperature.json", "-t", SAMPLE, "-x").out)
    assert full["execution"]["f32_preview"] == [1, 2, 3, 4, 5, 6]
    capped = json.loads(cli("query", Q / "slice_full_temperature.json", "-t", SAMPLE, "-x",
                            "--preview", "2").out)
    assert capped["execution"]["f32_preview"] == [1, 2]
    assert capped["execution"]["f32_preview_truncated"] is True


def test_stats_key_sets_after_execute(cli: Any) -> None:
    r = cli("query", Q / "mean_temperature.json", "-t", SAMPLE, "-x", "--format", "stats")
    assert (r.rc, r.err) == (0, "")
    assert r.out.startswith('{\n  "status": "planned",')
    s = json.loads(r.out)
    assert list(s) == ["status", "accepted", "dataset", "operation", "message", "tet_file",
                       "catalog", "read_plan", "execution"]
    assert s["catalog"] == {"matched": True, "dataset_index": 0, "dtype": 1, "shape": [2, 3]}
    assert s["read_plan"] == {"chunk_touch_policy": DENSE, "chunk_count": 2,
                              "total_stored_bytes": 24, "logical_selection_shape": [2, 3],
                              "logical_f32_element_count": 6}
    assert list(s["execution"]) == MEAN_EXECUTION_STATS
    assert s["execution"]["operation_mean"] == 3.5
    assert not PREVIEW_KEYS & set(s["execution"])


def test_stats_echo_keys_and_partial_fields(cli: Any) -> None:
    r = cli("query", Q / "mean_strided_temperature.json", "--format", "stats")
    assert json.loads(r.out) == {"status": "planned", "accepted": True, "dataset": "temperature",
                                 "layout_version": 1, "selection_axes": 2,
                                 "operation": {"mean": {"axes": []}}, "message": VALIDATED}
    s = json.loads(cli("query", Q / "sum_axis0_a.json", "-t", U8, "-x", "--format", "stats").out)
    assert s["execution"]["operation_reduced_shape"] == [3]
    assert s["execution"]["operation_reduced_sum"] == [5.0, 7.0, 9.0]


@pytest.mark.parametrize("execute", [True, False])
def test_plan_format_never_has_execution(cli: Any, execute: bool) -> None:
    args = ["query", Q / "mean_temperature.json", "-t", SAMPLE, "--format", "plan"]
    r = cli(*args, *(["-x"] if execute else []))
    assert (r.rc, r.err) == (0, "")
    p = json.loads(r.out)
    assert list(p) == ["status", "accepted", "dataset", "operation", "message", "tet_file",
                       "catalog", "read_plan"]
    assert list(p["read_plan"]) == ["chunk_touch_policy", "chunk_count", "total_stored_bytes",
                                    "logical_selection_shape", "logical_f32_element_count"]
    assert ("operation executed" in p["message"]) is execute


def test_validate_only_full_response(cli: Any) -> None:
    r = cli("query", Q / "mean_strided_temperature.json")
    assert (r.rc, r.err) == (0, "")
    assert json.loads(r.out) == {
        "status": "planned", "accepted": True, "layout_version": 1, "dataset": "temperature",
        "selection_axes": 2, "operation": {"mean": {"axes": []}}, "message": VALIDATED}


def test_plan_only_with_operation_has_no_execution(cli: Any) -> None:
    p = json.loads(cli("query", Q / "quantile_axis0_a.json", "-t", U8).out)
    assert p == tet.open(U8).plan_only(json.loads((Q / "quantile_axis0_a.json").read_text()))
    assert "execution" not in p and p["operation"] == {"quantile": {"axes": ["0"], "q": 0.5}}


# ---------------------------------------------------------------------------
# the quiet line of every operation, against NumPy

A = np.array([[3.0, -1.0, 4.0, 1.5], [5.0, 9.0, -2.0, 6.0], [5.0, 3.0, 5.0, 8.0]])


@pytest.fixture
def grid(tmp_path: Path) -> Path:
    return tet.write_dataset(tmp_path / "g.tet", "x", A, chunk_shape=(2, 3))


def quiet(cli: Any, path: Path, body: Any, *extra: str) -> str:
    r = cli("query", json.dumps({"dataset": "x", **body}), "-t", path, "-x", "-q", *extra)
    assert (r.rc, r.err) == (0, ""), r.err
    assert r.out.endswith("\n") and r.out.count("\n") == 1
    return str(r.out[:-1])


FLOAT_OPS: dict[str, Callable[..., Any]] = {
    "sum": np.sum, "mean": np.mean, "min": np.min, "max": np.max, "var": np.var,
    "std": np.std, "nan_mean": np.nanmean, "nan_std": np.nanstd, "product": np.prod,
    "norm_l1": lambda a, **k: np.sum(np.abs(a), **k),
    "norm_l2": lambda a, **k: np.sqrt(np.sum(a * a, **k)),
    "nan_count": lambda a, **k: np.sum(np.isnan(a), **k),
    "inf_count": lambda a, **k: np.sum(np.isinf(a), **k),
    "median": np.median,
}
TIER_C = {"median", "quantile", "covariance", "correlation"}


def strategy(key: str, scalar: bool = False) -> str:
    if key in TIER_C:  # a scalar median or quantile streams (no copy)
        return "streaming_select" if scalar else "in_memory_materialize"
    return "streaming_fold"


@pytest.mark.parametrize("key", sorted(FLOAT_OPS))
def test_quiet_float_ops_scalar_and_partial(cli: Any, grid: Path, key: str) -> None:
    fn = FLOAT_OPS[key]
    tail = f"elements=12 memory_strategy={strategy(key)}"
    assert quiet(cli, grid, {key: []}) == (
        f"dataset=x status=ok op={key} {key}={f6(float(fn(A)))} "
        f"elements=12 memory_strategy={strategy(key, scalar=True)}")
    assert quiet(cli, grid, {key: 0}) == (
        f"dataset=x status=ok op={key} axes=[0] reduced_shape=4 values={f6_list(fn(A, axis=0))} "
        f"{tail}")
    assert quiet(cli, grid, {key: [1]}) == (
        f"dataset=x status=ok op={key} axes=[1] reduced_shape=3 values={f6_list(fn(A, axis=1))} "
        f"{tail}")


def test_quiet_count_bool_and_arg_ops(cli: Any, grid: Path) -> None:
    head = "dataset=x status=ok"
    tail = "elements=12 memory_strategy=streaming_fold"
    assert quiet(cli, grid, {"count": []}) == f"{head} op=count count=12 {tail}"
    assert quiet(cli, grid, {"count": 1}) == (
        f"{head} op=count axes=[1] reduced_shape=3 values=[4,4,4] {tail}")
    assert quiet(cli, grid, {"all_finite": []}) == f"{head} op=all_finite all_finite=true {tail}"
    assert quiet(cli, grid, {"any_nan": []}) == f"{head} op=any_nan any_nan=false {tail}"
    assert quiet(cli, grid, {"any_inf": 0}) == (
        f"{head} op=any_inf axes=[0] reduced_shape=4 values=[false,false,false,false] {tail}")
    assert quiet(cli, grid, {"arg_min": []}) == (
        f"{head} op=arg_min argmin_index={int(np.argmin(A))} {tail}")
    assert quiet(cli, grid, {"arg_max": []}) == (
        f"{head} op=arg_max argmax_index={int(np.argmax(A))} {tail}")
    expect = ",".join(str(i) for i in np.argmax(A, axis=1))
    assert quiet(cli, grid, {"arg_max": 1}) == (
        f"{head} op=arg_max axes=[1] reduced_shape=3 values=[{expect}] {tail}")


def test_quiet_nonfinite_data(cli: Any, tmp_path: Path) -> None:
    b = np.array([[1.0, np.nan, 3.0], [np.inf, 2.0, 2.0]])
    p = tet.write_dataset(tmp_path / "n.tet", "x", b)
    tail = "elements=6 memory_strategy=streaming_fold"
    assert quiet(cli, p, {"sum": []}) == f"dataset=x status=ok op=sum sum=NaN {tail}"
    assert quiet(cli, p, {"nan_count": []}) == (
        f"dataset=x status=ok op=nan_count nan_count=1 {tail}")
    assert quiet(cli, p, {"any_nan": 1}) == (
        f"dataset=x status=ok op=any_nan axes=[1] reduced_shape=2 values=[true,false] {tail}")
    assert quiet(cli, p, {"all_finite": []}) == (
        f"dataset=x status=ok op=all_finite all_finite=false {tail}")
    assert quiet(cli, p, {"null_count": {"fill": 2}}) == (
        f"dataset=x status=ok op=null_count fill=2 null_count=2 {tail}")
    assert quiet(cli, p, {"null_count": {"fill": 2, "axis": 1}}) == (
        f"dataset=x status=ok op=null_count axes=[1] fill=2 reduced_shape=2 values=[0,2] {tail}")


def test_quiet_null_count_fill_from_attrs(cli: Any, tmp_path: Path) -> None:
    p = tet.write_dataset(tmp_path / "f.tet", "x", A, attrs={"_FillValue": "5"})
    assert quiet(cli, p, {"null_count": []}) == (
        "dataset=x status=ok op=null_count fill=5 null_count=3 elements=12 "
        "memory_strategy=streaming_fold")


def test_quiet_quantile_and_histogram(cli: Any, grid: Path) -> None:
    tail = "elements=12"
    assert quiet(cli, grid, {"quantile": {"q": 0.25}}) == (
        f"dataset=x status=ok op=quantile q=0.25 quantile={f6(np.quantile(A, 0.25))} {tail} "
        "memory_strategy=streaming_select")
    assert quiet(cli, grid, {"quantile": {"q": 0.9, "axis": 1}}) == (
        "dataset=x status=ok op=quantile axes=[1] q=0.9 reduced_shape=3 "
        f"values={f6_list(np.quantile(A, 0.9, axis=1))} {tail} "
        "memory_strategy=in_memory_materialize")
    counts, _ = np.histogram(A, bins=4)
    assert quiet(cli, grid, {"histogram": {"bins": 4}}) == (
        f"dataset=x status=ok op=histogram bins=4 histogram=bins=4 counts={f6_list(counts)} "
        f"{tail} memory_strategy=streaming_fold")
    ranged, _ = np.histogram(A, bins=2, range=(0, 5))
    assert quiet(cli, grid, {"histogram": {"bins": 2, "min": 0, "max": 5}}) == (
        f"dataset=x status=ok op=histogram bins=2 min=0 max=5 histogram=bins=2 "
        f"counts={f6_list(ranged)} {tail} memory_strategy=streaming_fold")
    per_row = np.stack([np.histogram(row, bins=2)[0] for row in A])
    assert quiet(cli, grid, {"histogram": {"bins": 2, "axis": 1}}) == (
        "dataset=x status=ok op=histogram axes=[1] bins=2 reduced_shape=3 "
        f"values={f6_list(per_row)} {tail} memory_strategy=streaming_fold")


def test_quiet_covariance_and_correlation(cli: Any, grid: Path) -> None:
    cov = np.cov(A, rowvar=False, bias=True)  # observations along axis 0
    assert quiet(cli, grid, {"covariance": 0}) == (
        "dataset=x status=ok op=covariance covariance=order=4 "
        f"matrix={f6_list(cov.ravel()[:12])[:-1]},…+4] elements=12 "
        "memory_strategy=in_memory_materialize")
    corr = np.corrcoef(A)  # observations along axis 1: the rows are the variables
    assert quiet(cli, grid, {"correlation": {"axis": 1}}) == (
        f"dataset=x status=ok op=correlation correlation=order=3 matrix={f6_list(corr)} "
        "elements=12 memory_strategy=in_memory_materialize")


TRANSFORM_STATS = {
    "zscore": ("mean", "std"), "minmax": ("min", "max"), "center": ("mean",),
    "scale": ("std",), "l1": ("norm_l1",), "l2": ("norm_l2",), "log1p": ("min",),
    "sqrt": ("min",), "softmax": ("max",),
}
STAT_FN: dict[str, Callable[..., Any]] = {
    "mean": np.mean, "std": np.std, "min": np.min, "max": np.max,
    "norm_l1": FLOAT_OPS["norm_l1"], "norm_l2": FLOAT_OPS["norm_l2"]}


@pytest.mark.parametrize("method", sorted(TRANSFORM_STATS))
def test_quiet_transform_stats(cli: Any, grid: Path, method: str) -> None:
    stats = TRANSFORM_STATS[method]
    scalar = " ".join(f"{s}={f6(float(STAT_FN[s](A)))}" for s in stats)
    tail = "elements=12 memory_strategy=transform_ram"
    assert quiet(cli, grid, {"transform": {"method": method}}) == (
        f"dataset=x status=ok op=transform transform={scalar} {tail}")
    partial = " ".join(f"{s}={f6_list(STAT_FN[s](A, axis=1))}" for s in stats)
    assert quiet(cli, grid, {"transform": {"method": method, "axis": 1}}) == (
        f"dataset=x status=ok op=transform axes=[1] reduced_shape=3 values={partial} {tail}")


def test_quiet_transform_div_by_zero_tags(cli: Any, tmp_path: Path) -> None:
    p = tet.write_dataset(tmp_path / "c.tet", "x", np.full((2, 3), 7.0))
    assert quiet(cli, p, {"transform": {"method": "zscore"}}) == (
        "dataset=x status=ok op=transform transform=mean=7 std=0 elements=6 "
        "memory_strategy=transform_ram transform_div_by_zero_count=6 "
        "transform_div_by_zero_indices=[0,1,2,3,4,5]")


def test_quiet_long_lists_are_capped(cli: Any, tmp_path: Path) -> None:
    wide = np.arange(40.0).reshape(2, 20)
    p = tet.write_dataset(tmp_path / "w.tet", "x", wide)
    sums = ",".join(f6(v) for v in wide.sum(axis=0)[:12])
    assert quiet(cli, p, {"sum": 0}) == (
        f"dataset=x status=ok op=sum axes=[0] reduced_shape=20 values=[{sums},…+8] "
        "elements=40 memory_strategy=streaming_fold")


@pytest.mark.parametrize(("dtype", "numpy"), [
    ("f32", "<f4"), ("f64", "<f8"), ("i32", "<i4"), ("i64", "<i8"), ("u8", "u1"),
    ("u16", "<u2"), ("i16", "<i2"), ("u32", "<u4"), ("u64", "<u8"), ("f16", "<f2"),
])
def test_quiet_preview_every_dtype(cli: Any, tmp_path: Path, dtype: str, numpy: str) -> None:
    base = np.arange(1, 9) if "u" in numpy else np.arange(1, 9) * 3 - 4
    values = (base / 2 if "f" in numpy else base).astype(numpy)
    p = tet.write_dataset(tmp_path / "d.tet", "x", values.reshape(2, 4))
    sample = "[" + ",".join(f6(float(v)) for v in values[:6]) + "]"
    assert quiet(cli, p, {}, "--preview", "8") == (
        f"dataset=x status=preview read_bytes={values.nbytes} "
        f"memory_strategy=capped_in_memory preview=8 {dtype} sample={sample}")


# ---------------------------------------------------------------------------
# table: other shapes and refusals


def test_table_scalar_results_and_matrix(cli: Any, grid: Path) -> None:
    def result(body: Any) -> str:
        r = cli("query", json.dumps({"dataset": "x", **body}), "-t", grid, "-x", "--format",
                "table")
        assert (r.rc, r.err) == (0, "")
        return str(r.out.split("result:\n", 1)[1])

    assert result({"any_nan": []}) == "  any_nan   false\n  elements  12\n\n"
    assert result({"arg_max": []}) == "  argmax_index  5\n  elements      12\n\n"
    assert result({"transform": {"method": "minmax"}}) == (
        "  transform  min=-2 max=9\n  elements   12\n\n")
    assert result({"correlation": 1}) == (
        f"  correlation  order=3 matrix={f6_list(np.corrcoef(A))}\n  elements     12\n\n")


@pytest.mark.parametrize(("body", "message"), [
    ({"any_nan": 0}, "table format: boolean partial reductions use --format quiet or stats"),
    ({"all_finite": [1]}, "table format: boolean partial reductions use --format quiet or stats"),
    ({"arg_min": 1}, "table format: arg_min partial values use --format quiet or stats"),
    ({"arg_max": 1}, "table format: arg_max partial values use --format quiet or stats"),
    ({"transform": {"method": "zscore", "axis": 0}},
     "table format: partial transform statistics use --format quiet or stats"),
])
def test_table_rejects_partial_results_it_cannot_show(cli: Any, grid: Path, body: Any,
                                                      message: str) -> None:
    r = cli("query", json.dumps({"dataset": "x", **body}), "-t", grid, "-x", "--format", "table")
    assert (r.rc, r.out, r.err) == (1, "", f"error: {message}\n")
    assert history_rows() == []


def test_table_partial_result_then_preview_grid(cli: Any, grid: Path) -> None:
    r = cli("query", '{"dataset": "x", "median": 1}', "-t", grid, "-x", "--format", "table",
            "--preview", "20")
    assert r.rc == 0
    med = np.median(A, axis=1)
    assert r.out.split(f"memory_budget_bytes  {BUDGET}\n\n", 1)[1] == f"""\
result (reduced_shape=3):
       #  value
       0  {f6(med[0])}
       1  {f6(med[1])}
       2  {f6(med[2])}
  elements  12

slice (f64, shape=3×4):
                c0        c1        c2        c3
     r0          3        -1         4       1.5
     r1          5         9        -2         6
     r2          5         3         5         8

"""


def test_table_slice_1d_rank3_and_f16(cli: Any, tmp_path: Path) -> None:
    one = tet.write_dataset(tmp_path / "one.tet", "x", np.array([7, 8, 9], dtype="u1"))
    r = cli("query", '{"dataset": "x"}', "-t", one, "-x", "--format", "table", "--preview", "9")
    assert r.out.endswith("""\
slice (u8, shape=3):
                c0        c1        c2
     r0          7         8         9

""")
    cube = tet.write_dataset(tmp_path / "cube.tet", "x", np.arange(60, dtype="i2").reshape(3, 4, 5))
    r = cli("query", '{"dataset": "x"}', "-t", cube, "-x", "--format", "table", "--preview", "40")
    rows = "".join(f"  {i:>6}  {i}\n" for i in range(16))
    assert r.out.endswith(
        "slice (i16, shape=3×4×5, truncated):\n"
        "  (rank 3 — linear index; use --preview to raise cap)\n"
        f"       #  value\n{rows}"
        "  … logical tensor continues beyond preview cap\n\n")
    half = tet.write_dataset(tmp_path / "h.tet", "x", np.array([[0.5, -2], [1e4, 3]], "f2"))
    r = cli("query", '{"dataset": "x"}', "-t", half, "-x", "--format", "table", "--preview", "9")
    assert r.out.endswith("""\
slice (f16, shape=2×2):
                c0        c1
     r0        0.5        -2
     r1      10000         3

""")


def test_table_and_quiet_spill(cli: Any, tmp_path: Path) -> None:
    p = tet.write_dataset(tmp_path / "s.tet", "x", A)
    target = tmp_path / "out.bin"
    r = cli("query", json.dumps({"dataset": "x", "spill": "out.bin"}), "-t", p, "-x", "-q")
    assert (r.rc, r.err) == (0, "")
    assert r.out == (f"dataset=x status=preview read_bytes=96 spill={target} spill_bytes=96 "
                     "memory_strategy=mmap_spill preview=empty\n")
    assert np.array_equal(np.fromfile(target, "<f8").reshape(3, 4), A)
    r = cli("query", json.dumps({"dataset": "x", "spill": "out.bin"}), "-t", p, "-x",
            "--format", "table", "--preview", "2")
    assert f"""\
execution:
  bytes_read           96
  memory_strategy      mmap_spill
  memory_budget_bytes  {BUDGET}
  spill_path           {target}
  spill_bytes          96

slice (f64, shape=3×4, truncated):
                c0        c1
     r0          3        -1
  … logical tensor continues beyond preview cap

""" in r.out


# ---------------------------------------------------------------------------
# unknown dataset (decision 33)

HINT = """\
hint: dataset "nope" not found in this .tet
available datasets:
  temperature
tip: run `tet info {tet}` to list catalog datasets
"""


@pytest.mark.parametrize("execute", [["-x"], []])
def test_unknown_dataset_quiet_hint_and_exit_1(cli: Any, execute: list[str]) -> None:
    r = cli("query", '{"dataset": "nope", "mean": []}', "-t", SAMPLE, *execute, "-q")
    assert r.rc == 1
    assert r.out == "dataset=nope status=not_found available=[temperature]\n"
    assert r.err == HINT.format(tet=SAMPLE)
    assert history_rows() == []


def test_unknown_dataset_table_and_stats(cli: Any) -> None:
    r = cli("query", '{"dataset": "nope"}', "-t", SAMPLE, "-x", "--format", "table")
    assert r.rc == 1 and r.err == HINT.format(tet=SAMPLE)
    assert r.out == f"""\
query:
  dataset   nope
  status    planned
  accepted  true
  tet_file  {SAMPLE}
  message   query accepted; dataset name not found in this file (see catalog.availa…

catalog:
  matched  false

datasets:
    #  name
    0  temperature

"""
    s = json.loads(cli("query", '{"dataset": "nope"}', "-t", SAMPLE, "-x", "--format",
                       "stats").out)
    assert s["catalog"] == {"matched": False, "available_datasets": ["temperature"]}
    assert "read_plan" not in s and "execution" not in s


def test_unknown_dataset_many_names(cli: Any, tmp_path: Path) -> None:
    w = tet.TetWriter.create(tmp_path / "m.tet")
    for i in range(10):
        w.write_dataset(f"d{i}", np.zeros(2, "f4"))
    path = w.commit()
    r = cli("query", '{"dataset": "zz"}', "-t", path, "-x", "-q")
    assert r.out == "dataset=zz status=not_found available=[d0,d1,d2,d3,d4,d5,d6,d7,…+2]\n"
    assert r.err.splitlines()[2:12] == [f"  d{i}" for i in range(10)]


# ---------------------------------------------------------------------------
# input forms


def test_inline_json_and_toml(cli: Any) -> None:
    expect = "dataset=temperature status=ok op=mean mean=3.5"
    assert cli("query", MEAN_Q, "-t", SAMPLE, "-x", "-q").out.startswith(expect)
    toml = 'dataset = "temperature"\nmean = []\n'
    assert cli("query", toml, "-t", SAMPLE, "-x", "-q").out.startswith(expect)
    assert cli("query", f"  {MEAN_Q}\n", "-t", SAMPLE, "-x", "-q").out.startswith(expect)


@pytest.mark.parametrize("dash", [["-"], []])
@pytest.mark.parametrize("text", [MEAN_Q, 'dataset = "temperature"\nmean = []\n'])
def test_stdin(cli: Any, dash: list[str], text: str) -> None:
    r = cli("query", *dash, "-t", SAMPLE, "-x", "-q", stdin=text)
    assert (r.rc, r.err) == (0, "")
    assert r.out.startswith("dataset=temperature status=ok op=mean mean=3.5 ")


def test_no_query_on_a_terminal(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Tty(""))
    r = cli("query", "-t", SAMPLE)
    assert (r.rc, r.out) == (1, "")
    assert r.err == ("error: no query given: pass QUERY (a file or inline JSON/TOML) or pipe "
                     "one on stdin\n")


def test_file_extension_decides_format(cli: Any, tmp_path: Path) -> None:
    odd = tmp_path / "q.json"
    odd.write_text('dataset = "temperature"\n')  # TOML text in a .json file: JSON parser runs
    r = cli("query", odd)
    assert r.rc == 1 and r.err.startswith("error: invalid query JSON: ")
    txt = tmp_path / "q.txt"
    txt.write_text('dataset = "temperature"\n')  # no extension rule: TOML by content
    assert cli("query", txt, "-q").out.startswith("dataset=temperature validated")


def test_missing_query_file(cli: Any, tmp_path: Path) -> None:
    r = cli("query", tmp_path / "none.toml")
    assert (r.rc, r.out) == (1, "")
    assert r.err == f"error: query file {tmp_path / 'none.toml'} not found\n"


# ---------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(("text", "prefix"), [
    ('{"dataset": }', "error: invalid query JSON: "),
    ("dataset = = 1", "error: invalid query TOML: "),
    ('{"dataset": "temperature", "bogus": 1}', "error: validation: unknown field `bogus`\n"),
    ('{"dataset": "temperature", "mean": [], "sum": []}',
     "error: validation: query document must include at most one reduction key\n"),
    ("[1, 2]", "error: invalid query TOML: "),
    ('{"dataset": "temperature", "selection": [{"stop": 9}, {}]}',
     "error: validation: selection[0].stop must be <= shape[0] (2), got 9\n"),
])
def test_document_errors(cli: Any, text: str, prefix: str) -> None:
    r = cli("query", text, "-t", SAMPLE, "-x", "-q", "--preview", "1")
    assert (r.rc, r.out) == (1, "")
    assert r.err.startswith(prefix) and r.err.count("\n") == 1
    assert "Traceback" not in r.err
    assert history_rows() == []


def test_preview_without_execute_is_a_failure(cli: Any) -> None:
    for extra in ([], ["-t", str(SAMPLE)]):
        r = cli("query", MEAN_Q, *extra, "--preview", "5")
        assert (r.rc, r.out, r.err) == (1, "", "error: --preview requires -x / --execute\n")
    r = cli("query", MEAN_Q, "--preview-f32", "0")
    assert (r.rc, r.err) == (1, "error: --preview requires -x / --execute\n")


@pytest.mark.parametrize(("args", "needle"), [
    (["-x"], "-x / --execute requires -t / --tet"),
    (["-t", "f.tet", "--device", "cpu"], "--device requires -x / --execute"),
    (["--device", "cuda"], "--device requires -x / --execute"),
    (["-t", "f.tet", "--spill-allow", "d"], "--spill-allow requires -x / --execute and -t"),
    (["--spill-allow", "d"], "--spill-allow requires -x / --execute and -t"),
    (["--format", "quiet", "-q"], "not allowed with argument"),
    (["-q", "--format", "json"], "not allowed with argument"),
    (["--format", "yaml"], "invalid choice: 'yaml'"),
    (["-t", "f.tet", "-x", "--preview", "-1"], "must be >= 0, got -1"),
    (["-t", "f.tet", "-x", "--preview", "many"], "invalid count 'many'"),
])
def test_usage_errors_exit_2(cli: Any, args: list[str], needle: str) -> None:
    r = cli("query", MEAN_Q, *args)
    assert r.rc == 2 and r.out == ""
    assert needle in r.err and "usage: tet query" in r.err


def test_unknown_flag_exit_2(cli: Any) -> None:
    r = cli("query", MEAN_Q, "--bogus")
    assert (r.rc, r.out) == (2, "")
    assert "unrecognized arguments: --bogus" in r.err


def test_alias_q(cli: Any) -> None:
    r = cli("q", MEAN_Q, "-t", SAMPLE, "-x", "-q")
    assert r.out.startswith("dataset=temperature status=ok op=mean mean=3.5 ")


def test_missing_tet_file(cli: Any, tmp_path: Path) -> None:
    r = cli("query", MEAN_Q, "-t", tmp_path / "none.tet", "-x")
    assert (r.rc, r.out) == (1, "")
    assert r.err == f"error: cannot open {tmp_path / 'none.tet'}: No such file or directory\n"


# ---------------------------------------------------------------------------
# --device, --spill-allow, relative -t


def test_device_override_and_fallback_reason(cli: Any) -> None:
    def ex(*args: str, doc: str = '{"dataset": "a", "mean": []}', err: str = ""
           ) -> dict[str, Any]:
        r = cli("query", doc, "-t", U8, "-x", "--format", "stats", *args)
        assert (r.rc, r.err) == (0, err), r.err
        return dict(json.loads(r.out)["execution"])

    e = ex("--device", "CUDA:0", err="warning: device `cuda` requested; ran on the CPU: the "
           "GPU route takes f32 and f16 datasets only (gpu_unsupported_dtype)\n")
    assert (e["device_requested"], e["device_used"]) == ("cuda", "cpu")
    assert e["device_fallback_reason"] == "gpu_unsupported_dtype"
    doc = '{"dataset": "a", "median": [], "execution": {"device": "cpu"}}'
    assert ex(doc=doc)["device_requested"] == "cpu"
    e = ex("--device", "auto", doc=doc)
    assert (e["device_requested"], e["device_fallback_reason"]) == ("auto", "tier_c_materialize")
    assert ex("--device", "cpu")["device_requested"] == "cpu"
    assert "device_fallback_reason" not in ex("--device", "cpu")


def test_bad_device_token(cli: Any) -> None:
    r = cli("query", MEAN_Q, "-t", SAMPLE, "-x", "--device", "tpu")
    assert (r.rc, r.out) == (1, "")
    assert r.err == ("error: validation: unknown device `tpu` (expected cpu, auto, metal, "
                     "cuda[:N| :multi], or rocm[:N| :multi])\n")


def test_spill_allow(cli: Any, tmp_path: Path, private_cache: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    p = tet.write_dataset(data / "s.tet", "x", A)
    outside = tmp_path / "elsewhere"
    target = outside / "sub" / "x.bin"
    doc = json.dumps({"dataset": "x", "spill": str(target)})
    refused = cli("query", doc, "-t", p, "-x", "-q")
    assert (refused.rc, refused.out) == (1, "")
    assert refused.err.startswith(f"error: validation: spill path {target} is not under an "
                                  "allowed root (.tet directory, platform cache, or "
                                  "--spill-allow)")
    assert not target.exists()
    ok = cli("query", doc, "-t", p, "-x", "-q", "--spill-allow", outside, "--preview", "2")
    assert (ok.rc, ok.err) == (0, "")
    assert ok.out == (f"dataset=x status=preview read_bytes=96 spill={target} spill_bytes=96 "
                      "memory_strategy=mmap_spill preview=2 f64 truncated=true sample=[3,-1]\n")
    assert np.array_equal(np.fromfile(target, "<f8").reshape(3, 4), A)


def test_relative_tet_path(cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           private_cache: Path) -> None:
    tet.write_dataset(tmp_path / "data.tet", "x", A)
    monkeypatch.chdir(tmp_path)
    r = cli("query", '{"dataset": "x", "median": []}', "-t", "data.tet", "-x", "-q")
    assert (r.rc, r.err) == (0, "")
    assert r.out == (f"dataset=x status=ok op=median median={f6(float(np.median(A)))} "
                     "elements=12 memory_strategy=streaming_select\n")
    full = json.loads(cli("query", '{"dataset": "x", "spill": "o.bin"}', "-t", "data.tet",
                          "-x").out)
    assert full["tet_file"] == "data.tet"
    assert full["execution"]["spill_f32_path"] == str((tmp_path / "o.bin").resolve())
    assert history_rows()[-1]["tet"] == str(tmp_path / "data.tet")


# ---------------------------------------------------------------------------
# history and run_query (the `tet qhist run` entry point)


def test_history_recorded_for_each_mode(cli: Any) -> None:
    cli("query", MEAN_Q)
    cli("query", MEAN_Q, "-t", SAMPLE)
    cli("query", MEAN_Q, "-t", SAMPLE, "-x", "--device", "Auto")
    rows = history_rows()
    assert [(r["tet"], r["execute"]) for r in rows] == [
        (None, False), (str(SAMPLE), False), (str(SAMPLE), True)]
    assert rows[0]["query"] == {"dataset": "temperature", "mean": []}
    assert rows[2]["query"] == {"dataset": "temperature", "mean": [],
                                "execution": {"device": "auto"}}


def test_run_query_with_a_dict(capsys: pytest.CaptureFixture[str]) -> None:
    query = {"dataset": "temperature", "mean": []}
    assert run_query(query, tet=str(SAMPLE), execute=True, fmt="quiet", preview=None,
                     device=None, spill_allow=()) == 0
    assert capsys.readouterr().out == ("dataset=temperature status=ok op=mean mean=3.5 "
                                       "elements=6 memory_strategy=streaming_fold\n")
    assert run_query(query, tet=str(SAMPLE), execute=False, fmt="json", preview=None,
                     device=None, spill_allow=()) == 0
    assert "execution" not in json.loads(capsys.readouterr().out)
    assert run_query({"dataset": "nope"}, tet=str(SAMPLE), execute=True, fmt="quiet",
                     preview=1, device=None, spill_allow=()) == 1
    out, err = capsys.readouterr()
    assert (out, err) == ("dataset=nope status=not_found available=[temperature]\n",
                          HINT.format(tet=SAMPLE))
    assert [r["execute"] for r in history_rows()] == [True, False]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"execute": True, "tet": None}, "-x / --execute requires -t / --tet"),
    ({"preview": 3}, "--preview requires -x / --execute"),
    ({"device": "cpu"}, "--device requires -x / --execute"),
    ({"spill_allow": ["d"]}, "--spill-allow requires -x / --execute and -t / --tet"),
    ({"fmt": "yaml"}, "unknown output format 'yaml' (expected one of full, json, stats, plan, "
                      "quiet, table)"),
])
def test_run_query_refusals(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"tet": str(SAMPLE), "execute": False, "fmt": "quiet",
                            "preview": None, "device": None, "spill_allow": ()}
    with pytest.raises(CommandFailed) as info:
        run_query({"dataset": "temperature"}, **{**args, **kwargs})
    assert str(info.value) == message


# ---------------------------------------------------------------------------
# formats as pure functions


def test_float_rule() -> None:
    cases = [(3.5, "3.5"), (2.9166666666666665, "2.916667"), (21.0, "21"), (0.0, "0"),
             (-0.25, "-0.25"), (1e-9, "0"), (1234567.0, "1234567"), (math.nan, "NaN"),
             (math.inf, "inf"), (-math.inf, "-inf"), (None, "NaN"), (7, "7")]
    for value, text in cases:
        assert formats.fmt_float(value) == text
    assert formats.fmt_list(list(range(12))) == "[0,1,2,3,4,5,6,7,8,9,10,11]"
    assert formats.fmt_list(list(range(15))) == "[0,1,2,3,4,5,6,7,8,9,10,11,…+3]"
    assert formats.fmt_list([True, 1.5, None]) == "[true,1.5,NaN]"
    assert formats.fmt_list([]) == "[]"
    assert formats.fmt_shape([2, 3, 4]) == "2×3×4"


def executed(**execution: Any) -> dict[str, Any]:
    return {"status": "planned", "accepted": True, "layout_version": None, "dataset": "d",
            "selection_axes": None, "operation": {"max": {"axes": []}}, "message": "m",
            "execution": {"total_bytes_read_from_disk": 8, **execution}}


def test_nonfinite_floats_in_a_response() -> None:
    resp = executed(operation_element_count=2, operation_max=math.inf, memory_strategy="s")
    assert formats.quiet_line(resp) == "dataset=d status=ok op=max max=inf elements=2 " \
                                       "memory_strategy=s\n"
    assert "  max       inf\n" in formats.table_text(resp)
    assert json.loads(formats.json_text(resp))["execution"]["operation_max"] is None


def test_missing_field_errors() -> None:
    text = "table/quiet output: missing execution.operation_max after --execute"
    for render in (formats.quiet_line, formats.table_text):
        with pytest.raises(CommandFailed) as info:
            render(executed(memory_strategy="s"))
        assert str(info.value) == text
    partial = executed()
    partial["operation"] = {"sum": {"axes": ["0"]}}
    with pytest.raises(CommandFailed, match=r"missing execution\.operation_reduced_sum "):
        formats.quiet_line(partial)


def test_render_dispatch() -> None:
    resp = executed(operation_max=1.0, f32_preview=[1.0], f32_preview_truncated=False)
    assert formats.render(resp, "full") == formats.full_text(resp)
    assert formats.render(resp, "stats") == json.dumps(formats.stats_view(resp), indent=2) + "\n"
    assert "f32_preview" not in formats.stats_view(resp)["execution"]
    assert "execution" not in formats.plan_view(resp)
    assert formats.not_found_hint(resp) is None
    with pytest.raises(ValueError, match="unknown output format 'xml'"):
        formats.render(resp, "xml")


def test_quiet_and_table_print_infinities_the_wire_sends_as_null(cli: Any,
                                                                  tmp_path: Path) -> None:
    a = np.array([[1.0, np.inf], [-np.inf, 2.0]], dtype=np.float64)
    path = tet.write_dataset(tmp_path / "inf.tet", "a", a)
    for op, want in (("max", "max=inf"), ("min", "min=-inf"), ("sum", "sum=NaN")):
        r = cli("query", json.dumps({"dataset": "a", op: []}), "-t", path, "-x", "-q")
        assert (r.rc, r.err) == (0, "")
        assert f" op={op} {want} elements=4 " in r.out
        full = json.loads(cli("query", json.dumps({"dataset": "a", op: []}), "-t", path,
                              "-x", "--format", "json").out)
        assert full["execution"][f"operation_{op}"] is None  # the wire keeps JSON null
    table = cli("query", json.dumps({"dataset": "a", "max": [0]}), "-t", path, "-x",
                "--format", "table").out
    assert "inf" in table and "-inf" not in table
    r = cli("query", json.dumps({"dataset": "a", "min": [1]}), "-t", path, "-x", "-q")
    assert " values=[1,-inf] " in r.out
