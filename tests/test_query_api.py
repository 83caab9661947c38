"""The Python query API: documents as dicts / JSON / TOML, responses, `QueryResult`,
helpers' return types, previews, plan-only, device routing and budget fields.

Matrix: sample.tet / multichunk_{u8,f16} / f32_2d_edge from the corpus and small files
written here × query / query_execute / execute / plan_only / helper methods.
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest

import tet
from tests.conftest import INTEROP, UPSTREAM

SAMPLE = INTEROP / "sample.tet"


@pytest.fixture
def sample() -> tet.TetFile:
    return tet.open(SAMPLE)


def test_helpers_return_bare_scalars_of_the_right_type(sample: tet.TetFile) -> None:
    assert sample.mean("temperature") == 3.5 and isinstance(sample.mean("temperature"), float)
    assert sample.sum("temperature") == 21.0
    assert sample.count("temperature") == 6 and isinstance(sample.count("temperature"), int)
    assert sample.numel("temperature") == 6
    assert sample.arg_max("temperature") == 5 and isinstance(sample.arg_min("temperature"), int)
    assert sample.all_finite("temperature") is True
    assert sample.any_nan("temperature") is False
    assert sample.nan_count("temperature") == 0.0
    assert sample.var("temperature") == pytest.approx(2.9166666666666665, rel=1e-12)


def test_partial_helpers_return_query_results(sample: tet.TetFile) -> None:
    r = sample.sum("temperature", axis=0)
    assert isinstance(r, tet.QueryResult)
    assert r.reduced_shape == [3]
    assert np.array_equal(r.reduced, [5.0, 7.0, 9.0])
    assert np.array_equal(sample.arg_max("temperature", axis=-1).reduced, [2, 2])
    with pytest.raises(TypeError, match="pass only one of axes= or axis="):
        sample.sum("temperature", axes=[0], axis=0)
    with pytest.raises(tet.UnknownAxisError):
        sample.sum("temperature", axis=5)


def test_query_accepts_dicts_json_and_toml(sample: tet.TetFile) -> None:
    doc = {"dataset": "temperature", "mean": [1]}
    as_dict = sample.query(doc)["execution"]["operation_reduced_mean"]
    as_json = sample.query(json.dumps(doc))["execution"]["operation_reduced_mean"]
    as_toml = sample.query('dataset = "temperature"\nmean = [1]\n')
    assert as_dict == as_json == as_toml["execution"]["operation_reduced_mean"] == [2.0, 5.0]
    with pytest.raises(TypeError, match="query must be a dict or JSON string"):
        sample.query(42)
    with pytest.raises(tet.QueryError, match="query string is not valid JSON: "):
        sample.query("{not json")


def test_response_shape_and_order(sample: tet.TetFile) -> None:
    r = sample.query({"dataset": "temperature", "max": []})
    assert list(r)[:7] == ["status", "accepted", "layout_version", "dataset",
                           "selection_axes", "operation", "message"]
    assert r["operation"] == {"max": {"axes": []}}
    ex = r["execution"]
    keys = list(ex)
    assert keys[0] == "total_bytes_read_from_disk"
    assert sum(k.endswith("_preview") for k in keys) == 10
    assert ex["operation_max"] == 6.0 and ex["operation_element_count"] == 6
    assert ex["memory_strategy"] == "streaming_fold"
    assert ex["device_used"] == "cpu" and "device_requested" not in ex
    assert r["read_plan"]["logical_element_count"] == r["read_plan"]["logical_f32_element_count"]


def test_nonfinite_results_are_null(tmp_path: Path) -> None:
    p = tet.write_dataset(tmp_path / "n.tet", "x", np.array([1.0, np.nan, 3.0]))
    with tet.open(p) as f:
        assert f.query({"dataset": "x", "mean": []})["execution"]["operation_mean"] is None
        assert math.isnan(f.mean("x"))
        assert f.nan_mean("x") == 2.0


def test_preview_in_the_dtype_field_and_f16_decoded() -> None:
    with tet.open(INTEROP / "multichunk_f16.tet") as f:
        r = f.execute({"dataset": "a", "sum": []}, preview=4)
        assert r.raw["execution"]["f16_preview"] == [15360, 16384, 16896, 17408]
        assert r.preview.dtype == np.float16 and r.preview.tolist() == [1.0, 2.0, 3.0, 4.0]
        assert r.preview_truncated is True
    with tet.open(INTEROP / "multichunk_u8.tet") as f:
        r = f.execute({"dataset": "a", "selection": [{"start": 1}, {"step": 2}]}, preview=10)
        assert r.preview.dtype == np.uint8 and r.preview.tolist() == [4, 6]
        assert r.preview_truncated is False
        assert r.raw["execution"]["memory_strategy"] == "capped_in_memory"


def test_preview_zero_without_op_is_refused(sample: tet.TetFile) -> None:
    with pytest.raises(tet.QueryError, match="preview limit 0 without `operation`"):
        sample.query({"dataset": "temperature"})


def test_plan_only_has_no_execution_and_allows_an_op(sample: tet.TetFile) -> None:
    r = sample.plan_only({"dataset": "temperature", "mean": [],
                          "selection": [{}, {"step": 2}]})
    assert "execution" not in r
    assert r["read_plan"]["chunk_touch_policy"].startswith("strided_half_open")
    assert r["read_plan"]["logical_selection_shape"] == [2, 2]
    assert r["operation"] == {"mean": {"axes": []}}
    res = sample.execute({"dataset": "temperature", "mean": []}, plan=True)
    assert res.plan is not None and res.execution is None


def test_unknown_dataset_raises(sample: tet.TetFile) -> None:
    with pytest.raises(tet.UnknownDatasetError, match="did you mean: 'temperature'"):
        sample.query({"dataset": "temperatur", "mean": []})


def test_device_tokens_fall_back_to_cpu_with_a_reason(sample: tet.TetFile,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tet.query.api._WARNED_FALLBACKS", set())
    ex = sample.query_execute({"dataset": "temperature", "mean": []}, device="auto")["execution"]
    assert ex["device_requested"] == "auto"
    assert ex["device_fallback_reason"] == "auto_below_size_threshold"
    with pytest.warns(RuntimeWarning, match=r"^device `cuda` requested; ran on the CPU: .*"
                                            r"\(gpu_unsupported_op\)$"):
        ex = sample.query({"dataset": "temperature", "mean": [0],
                           "execution": {"device": "cuda:0"}})["execution"]
    assert ex["device_requested"] == "cuda" and ex["device_fallback_reason"] == "gpu_unsupported_op"
    with pytest.raises(tet.QueryError, match="unknown device `tpu`"):
        sample.query({"dataset": "temperature", "mean": [], "execution": {"device": "tpu"}})
    # the keyword goes through the same token rules as the document field
    ex = sample.query_execute({"dataset": "temperature", "mean": [0]}, device=" CUDA:0 ")
    assert ex["execution"]["device_requested"] == "cuda"
    with pytest.raises(tet.QueryError, match="unknown device `gpu9`"):
        sample.mean("temperature", device="gpu9")


def test_budget_and_parallel_fields(sample: tet.TetFile) -> None:
    doc = {"dataset": "temperature", "sum": [],
           "execution": {"memory_budget_bytes": 0, "fold_parallel": False}}
    ex = sample.query(doc)["execution"]
    assert ex["memory_budget_bytes"] == 1  # a budget of 0 is clamped to 1 byte
    assert ex["fold_parallel"] is False and ex["fold_workers"] == 1
    assert ex["io_regime"] in ("in_core", "out_of_core", "unknown")


def test_null_count_fill_echo_and_attr(tmp_path: Path) -> None:
    a = np.array([[1.0, -9999.0], [-9999.0, 4.0]])
    p = tet.write_dataset(tmp_path / "f.tet", "x", a, attrs={"_FillValue": "-9999"})
    with tet.open(p) as f:
        r = f.query({"dataset": "x", "null_count": []})
        assert r["operation"] == {"null_count": {"axes": [], "fill": -9999.0}}
        assert r["execution"]["operation_null_count"] == 2.0
        assert f.null_count("x", fill=4.0) == 1.0
        assert np.array_equal(f.null_count("x", axis=0).reduced, [1.0, 1.0])
    p2 = tet.write_dataset(tmp_path / "g.tet", "x", a)
    with tet.open(p2) as f, pytest.raises(tet.QueryError, match="null_count requires `fill`"):
        f.null_count("x")


def test_upstream_query_profiles_run() -> None:
    queries = UPSTREAM / "queries"
    expected = {"mean_temperature": 3.5, "sum_a": 21.0, "mean_a": 3.5}
    for stem, want in expected.items():
        doc = json.loads((queries / f"{stem}.json").read_text())
        assert doc == tomllib.loads((queries / f"{stem}.toml").read_text())
        target = "sample.tet" if "temperature" in stem else "multichunk_u8.tet"
        with tet.open(INTEROP / target) as f:
            op = next(k for k in doc if k not in ("dataset", "selection"))
            got = f.query(doc)["execution"][f"operation_{op}"]
            assert got == want
    with tet.open(INTEROP / "multichunk_u8.tet") as f:
        doc = json.loads((queries / "sum_axis0_a.json").read_text())
        assert f.query(doc)["execution"]["operation_reduced_sum"] == [5.0, 7.0, 9.0]
        doc = json.loads((queries / "quantile_axis0_a.json").read_text())
        assert doc == tomllib.loads((queries / "quantile_axis0_a.toml").read_text())
        assert f.query(doc)["execution"]["operation_reduced_quantile"] == [2.5, 3.5, 4.5]


def test_query_result_value_and_errors(sample: tet.TetFile) -> None:
    r = sample.execute({"dataset": "temperature", "min": [0]})
    assert np.array_equal(r.value, [1.0, 2.0, 3.0])
    empty = tet.QueryResult.from_response({"accepted": True, "message": "m"})
    with pytest.raises(tet.TetError, match="query result has no scalar or reduced value"):
        _ = empty.value


def test_out_of_core_full_scan_is_a_linear_scan(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend the host has 1 KiB free: a full, raw, contiguous selection is scanned front
    to back (one worker, reading ahead); anything else stays a parallel fold."""
    import tet.query.execute as execute

    monkeypatch.setattr(execute, "host_available_ram", lambda: 1024)
    rng = np.random.default_rng(3)
    a = rng.standard_normal((64, 96)) * 1e3
    raw = tet.write_dataset(tmp_path / "raw.tet", "a", a, chunk_shape=(8, 32))
    packed = tet.write_dataset(tmp_path / "z.tet", "a", a, chunk_shape=(8, 32), codec="zstd")
    cases = [
        (raw, {}, True),
        (raw, {"selection": [{"start": 1}, {}]}, False),
        (raw, {"execution": {"fold_parallel": True}}, False),
        (packed, {}, False),
    ]
    for path, extra, linear in cases:
        with tet.open(path) as f:
            for op, axes, want in (("mean", [], a.mean()), ("var", [1], a.var(axis=1)),
                                   ("max", [0], a.max(axis=0))):
                doc = {"dataset": "a", op: axes, **extra}
                ex = f.query(doc)["execution"]
                assert ex["io_regime"] == "out_of_core"
                assert ex["fold_linear_scan"] is linear, (path.name, extra)
                if linear:
                    assert ex["fold_parallel"] is False and ex["fold_workers"] == 1
                if not extra:
                    got = getattr(f, op)("a", axes)
                    np.testing.assert_allclose(got.reduced if axes else got, want, rtol=1e-12)
