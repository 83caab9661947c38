"""Response fields and Python results that must match the reference engine's documents
(query.md §9–§14, python-api.md §2–§5), found by comparing the two on random inputs."""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tet
from tet import dtypes
from tet.query.transform import METHODS

ALL_DTYPES = [d.name for d in dtypes.DTYPES]


def _file(tmp_path: Path, a: np.ndarray[Any, Any], name: str = "t.tet", **kw: Any) -> Path:
    return tet.write_dataset(tmp_path / name, "a", a, **kw)


# -- previews ---------------------------------------------------------------------------

@pytest.mark.parametrize("limit", [None, 0, 3, 6, 7])
def test_preview_truncated_follows_the_count_even_at_limit_zero(tmp_path: Path,
                                                               limit: int | None) -> None:
    path = _file(tmp_path, np.arange(6, dtype="<i2").reshape(2, 3))
    with tet.open(path) as f:
        ex = f.query({"dataset": "a", "sum": []}, preview=limit)["execution"]
    n = limit or 0
    assert ex["i16_preview"] == list(range(min(n, 6)))
    assert ex["i16_preview_truncated"] is (n < 6)
    others = [k for k in ex if k.endswith("_preview_truncated") and not k.startswith("i16")]
    assert len(others) == 9 and not any(ex[k] for k in others)


def test_f32_previews_are_the_shortest_decimal_of_the_f32(tmp_path: Path) -> None:
    a = np.array([0.1, 3.455842, 1e-45, np.inf, 16777217], dtype=np.float32)
    with tet.open(_file(tmp_path, a)) as f:
        text = json.dumps(f.query({"dataset": "a", "mean": []}, preview=5)["execution"])
        got = f.execute({"dataset": "a", "mean": []}, preview=5).preview
    assert '"f32_preview": [0.1, 3.455842, 1e-45, null, 16777216.0]' in text
    assert got is not None and got.dtype == np.float32
    np.testing.assert_array_equal(got, a)


# -- catalog and execution keys ---------------------------------------------------------

@pytest.mark.parametrize("name", ALL_DTYPES)
def test_catalog_dtype_is_the_wire_tag(tmp_path: Path, name: str) -> None:
    dt = dtypes.by_name(name)
    with tet.open(_file(tmp_path, np.zeros((2, 3), dt.numpy))) as f:
        r = f.query({"dataset": "a", "count": []})
    cat, ex = r["catalog"], r["execution"]
    assert cat["dtype"] == dt.tag
    sized = [k for k in cat if k.startswith("dataset_") and k.endswith("_bytes")]
    assert sized == ([] if name in ("u32", "u64", "f16") else [f"dataset_{name}_bytes"])
    assert ("logical_selection_f32_bytes" in ex) is (name == "f32")
    assert ex["logical_selection_bytes"] == 6 * dt.size
    assert ex["operation_element_count"] == 6


def test_a_preview_without_operation_has_no_element_count(tmp_path: Path) -> None:
    with tet.open(_file(tmp_path, np.arange(6.0).reshape(2, 3))) as f:
        ex = f.query({"dataset": "a"}, preview=2)["execution"]
    assert "operation_element_count" not in ex and ex["memory_strategy"] == "capped_in_memory"


# -- null_count fill, fold-time checks ---------------------------------------------------

def test_null_count_fill_minus_zero_matches_bits_not_value(tmp_path: Path) -> None:
    with tet.open(_file(tmp_path, np.array([0.0, -0.0, 1.0, 0.0], np.float32))) as f:
        assert f.null_count("a", fill=-0.0) == 1.0
        assert f.null_count("a", fill=0.0) == 2.0
    with tet.open(_file(tmp_path, np.array([0, 1, 0, 2], np.uint8), "u.tet")) as f:
        assert f.null_count("a", fill=-0.0) == 0.0
        assert f.null_count("a", fill=0.0) == 2.0


def test_duplicate_axes_are_a_fold_time_error(tmp_path: Path) -> None:
    with tet.open(_file(tmp_path, np.zeros((2, 3, 4), np.float32))) as f:
        bad_sel = {"dataset": "a", "mean": [0, 0], "selection": [{"start": 9}, {}, {}]}
        with pytest.raises(tet.TetError, match=r"selection\[0\]\.start must be < shape\[0\]"):
            f.query(bad_sel)
        with pytest.raises(tet.TetError, match="null_count requires `fill`"):
            f.query({"dataset": "a", "null_count": [0, 1, 2]})
        plan = f.plan_only({"dataset": "a", "mean": [1, 1]})
        assert plan["read_plan"]["chunk_count"] == 1
        with pytest.raises(tet.TetError, match="duplicate operation axis index 1"):
            f.query({"dataset": "a", "mean": [1, 1]})


# -- Python results keep non-finite values ------------------------------------------------

def test_non_finite_results_reach_python_as_inf_not_nan(tmp_path: Path) -> None:
    a = np.array([[1.0, np.inf], [2.0, -np.inf]])
    with tet.open(_file(tmp_path, a)) as f:
        assert f.max("a") == np.max(a) == math.inf
        assert f.min("a") == -math.inf
        assert math.isnan(f.sum("a"))
        np.testing.assert_array_equal(f.max("a", axis=0).reduced, np.max(a, axis=0))
        r = f.execute({"dataset": "a", "min": []}, preview=4)
        assert r.scalar == -math.inf and r.raw["execution"]["operation_min"] is None
        np.testing.assert_array_equal(r.preview, a.ravel())
        assert f.query({"dataset": "a", "max": []})["execution"]["operation_max"] is None


def test_scalar_is_only_read_for_list_ops_and_quantile(tmp_path: Path) -> None:
    a = np.arange(12.0).reshape(4, 3)
    with tet.open(_file(tmp_path, a)) as f:
        h = f.histogram("a", 3)
        assert h.scalar is None and h.reduced is None
        assert h.histogram_counts is not None and h.histogram_counts.tolist() == [4, 4, 4]
        with pytest.raises(tet.TetError, match="query result has no scalar or reduced value"):
            _ = h.value
        c = f.covariance("a", 0)
        assert c.scalar is None and c.matrix_order == 3
        assert f.quantile("a", 0.5) == 5.5
        ph = f.histogram("a", 2, axis=0)
        assert ph.reduced is not None and ph.reduced.shape == (3, 2)


def test_from_response_reads_the_echoed_op_and_requires_acceptance(tmp_path: Path) -> None:
    with tet.open(_file(tmp_path, np.arange(6.0))) as f:
        raw = f.query({"dataset": "a", "mean": []})
    assert tet.QueryResult.from_response(raw).scalar == 2.5
    with pytest.raises(tet.TetError, match="query not accepted"):
        tet.QueryResult.from_response({"dataset": "a", "accepted": False})


# -- Python argument checks ------------------------------------------------------------

@pytest.mark.parametrize("bad", [-1, 2.5, True, "3"])
def test_preview_must_be_a_non_negative_integer(tmp_path: Path, bad: Any) -> None:
    with tet.open(_file(tmp_path, np.arange(6.0))) as f:
        with pytest.raises(tet.QueryError, match="preview must be a non-negative integer"):
            f.query({"dataset": "a", "mean": []}, preview=bad)
        assert f.query({"dataset": "a"}, preview=np.int64(2))["execution"]["f64_preview"] == [
            0.0, 1.0]


def test_matrix_helpers_need_one_axis(tmp_path: Path) -> None:
    with tet.open(_file(tmp_path, np.arange(6.0).reshape(2, 3))) as f:
        for helper in (f.covariance, f.correlation):
            with pytest.raises(tet.QueryError, match="requires axis="):
                helper("a", None)  # type: ignore[arg-type]


def test_unknown_dataset_is_reported_before_document_rules(tmp_path: Path) -> None:
    with tet.open(_file(tmp_path, np.arange(6.0))) as f:
        for doc in ({"dataset": "nope", "mean": "!!"}, '{"dataset": "", "mean": []}'):
            with pytest.raises(tet.UnknownDatasetError):
                f.query(doc)


def test_transform_sinks_take_only_their_own_keywords(tmp_path: Path) -> None:
    with tet.open(_file(tmp_path, np.arange(6.0))) as f:
        with pytest.raises(TypeError):
            f.transform.to_numpy.zscore("a", path="x.bin")  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            f.transform.to_spill.zscore("a", timestamp=False)  # type: ignore[call-arg]


# -- outputs: relative paths, allowlist wording, NUL bytes ---------------------------------

def test_relative_output_paths_land_beside_a_relatively_opened_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sub").mkdir()
    _file(tmp_path, np.arange(6.0), "sub/src.tet")
    monkeypatch.chdir(tmp_path)
    with tet.open("sub/src.tet") as f:
        spill = f.read_spill("a", "out.bin")
        moved = f.transform.to_spill.center("a", path="c.bin")
        side = f.transform.to_sidecar.zscore("a", path="z.tet")
    assert spill.path == tmp_path / "sub" / "out.bin"
    assert moved.path == tmp_path / "sub" / "c.bin"
    assert (tmp_path / "sub" / "z.tet").is_file() and side.path is not None
    assert not (tmp_path / "sub" / "sub").exists()
    np.testing.assert_array_equal(spill.to_numpy(), np.arange(6.0))


@pytest.mark.parametrize("write", [{"target": "spill", "path": "../x.bin"},
                                   {"target": "sidecar", "path": "../x.tet"}])
def test_every_output_kind_is_refused_in_the_same_words(tmp_path: Path,
                                                        write: dict[str, Any]) -> None:
    (tmp_path / "d").mkdir()
    with tet.open(_file(tmp_path, np.arange(6.0), "d/t.tet")) as f:
        doc = {"dataset": "a", "transform": {"method": "zscore"}, "write": write}
        with pytest.raises(tet.QueryError, match=(
                rf"^validation: spill path {write['path']} is not under an allowed root")):
            f.query(doc)


def test_a_nul_byte_in_an_output_path_is_a_clean_error(tmp_path: Path) -> None:
    with tet.open(_file(tmp_path, np.arange(6.0))) as f:
        for doc in ({"dataset": "a", "spill": "x\x00y"},
                    {"dataset": "a", "transform": {"method": "l2"},
                     "write": {"target": "spill", "path": "x\x00y"}}):
            with pytest.raises(tet.QueryError, match=(
                    r"^validation: spill open failed: file name contained an unexpected NUL")):
                f.query(doc, preview=1)
    assert sorted(os.listdir(tmp_path)) == ["t.tet"]


# -- transforms: bytes counted, no stray warnings ------------------------------------------

@pytest.mark.parametrize("method", list(METHODS))
def test_transform_bytes_read_count_each_pass(tmp_path: Path, method: str) -> None:
    with tet.open(_file(tmp_path, np.arange(1.0, 7.0, dtype=np.float32))) as f:
        ex = f.query({"dataset": "a", "transform": {"method": method}, "write": "ram"})[
            "execution"]
    passes = {"zscore": 3, "minmax": 3, "softmax": 3}.get(method, 2)
    assert ex["total_bytes_read_from_disk"] == 24 * passes


def test_degenerate_statistics_raise_no_python_warnings(tmp_path: Path) -> None:
    a = np.array([[1.0, np.inf, 3.0]])
    b = np.array([[1.0, -np.inf], [np.inf, 2.0]])
    with tet.open(_file(tmp_path, a)) as f, warnings.catch_warnings():
        warnings.simplefilter("error")
        m = f.correlation("a", 0).matrix
        assert m is not None and m.shape == (3, 3) and np.isnan(m).all()
    with tet.open(_file(tmp_path, b, "b.tet")) as f, warnings.catch_warnings():
        warnings.simplefilter("error")
        out = f.transform.to_numpy.minmax("a")
    assert out.shape == (2, 2) and np.isinf(out[0, 1]) and np.isinf(out[1, 0])


# -- the operation echo ----------------------------------------------------------------

def test_echo_keeps_the_documents_axis_order(tmp_path: Path) -> None:
    path = _file(tmp_path, np.zeros((2, 3, 4), np.float32), dim_names=["t", "y", "x"])
    with tet.open(path) as f:
        plan = f.plan_only({"dataset": "a", "mean": ["x", 0]})
        run = f.query({"dataset": "a", "sum": [2, 0]})
        dup = f.plan_only({"dataset": "a", "mean": [1, "y"]})
    assert plan["operation"] == {"mean": {"axes": ["2", "0"]}}
    assert run["operation"] == {"sum": {"axes": ["2", "0"]}}
    assert run["execution"]["operation_reduced_shape"] == [3]
    assert dup["operation"] == {"mean": {"axes": ["1", "1"]}}


def test_cli_device_does_not_hide_a_null_execution(cli: Any, tmp_path: Path) -> None:
    path = _file(tmp_path, np.arange(6.0))
    r = cli("query", '{"dataset": "a", "mean": [], "execution": null}', "-t", str(path), "-x",
            "--device", "cpu")
    assert r.rc == 1 and r.err == "error: validation: `execution` must be a JSON object\n"
    ok = cli("query", '{"dataset": "a", "mean": []}', "-t", str(path), "-x", "--device", "cpu",
             "-q")
    assert ok.rc == 0 and "mean=2.5" in ok.out


# -- hand-made responses and arguments ------------------------------------------------------

def test_from_response_keeps_wire_nulls_and_tolerates_damage() -> None:
    wire = {"accepted": True, "execution": {"operation_mean": None}}
    assert tet.QueryResult.from_response(wire, op="mean").scalar is None
    with pytest.raises(tet.TetError, match=r"^m$"):
        tet.QueryResult.from_response({"message": "m", "execution": {}}, op="mean")
    for damaged in ({"accepted": True, "catalog": 1.5}, {"accepted": True, "execution": 1.5}):
        r = tet.QueryResult.from_response(damaged, op="mean")
        assert r.scalar is None and r.execution is None


@pytest.mark.parametrize("device", [1, 1.5, True, None])
def test_device_must_be_a_string(tmp_path: Path, device: Any) -> None:
    with tet.open(_file(tmp_path, np.arange(6.0))) as f:
        if device is None:
            with pytest.raises(tet.QueryError, match="must be a string"):
                f.query({"dataset": "a", "mean": [], "execution": {"device": None}})
            return
        with pytest.raises(tet.QueryError, match=r"^validation: `execution\.device` must be"):
            f.mean("a", device=device)


def test_json_error_positions_count_from_the_text_given(tmp_path: Path) -> None:
    text = '  {"dataset": '
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        want = str(exc)
    with tet.open(_file(tmp_path, np.arange(6.0))) as f, pytest.raises(tet.QueryError) as info:
        f.query(text)
    assert str(info.value) == f"query string is not valid JSON: {want}"


def test_combined_query_echoes_like_a_single_file(tmp_path: Path) -> None:
    a = np.arange(24.0).reshape(2, 3, 4)
    paths = [str(_file(tmp_path, a + k, f"f{k}.tet")) for k in range(2)]
    doc = {"dataset": "a", "sum": [2, 0]}
    combined = tet.query_many(paths, doc, combine=True)
    with tet.open(paths[0]) as f:
        single = f.query(doc)
    assert combined["operation"] == single["operation"] == {"sum": {"axes": ["2", "0"]}}
    np.testing.assert_allclose(combined["execution"]["operation_reduced_sum"],
                               (a.sum(axis=(0, 2)) + (a + 1).sum(axis=(0, 2))).tolist())


def test_build_query_keeps_array_form_selection_entries() -> None:
    sel = [[0, 2, None, None, None], {"step": 2}]
    doc = tet.build_query("v", sum=[], selection=sel)
    assert doc == {"dataset": "v", "sum": [], "selection": [[0, 2, None, None, None],
                                                           {"step": 2}]}
    assert doc["selection"][1] is not sel[1]
