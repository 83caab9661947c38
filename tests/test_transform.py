"""Transforms (ops.md §6) and their sinks, against a NumPy model of the spec's formulas.

Matrix: 9 methods × scalar / one axis / two axes × f32 and f64 with NaN, ±inf and a
constant fold cell (zero denominators) × selections; integers promoted to f64; the
response's stats and div-by-zero report; ram / spill / switch / sidecar targets,
the reference sidecar reproduced, budgets, and no temp file left behind.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tet
from tests.conftest import INTEROP

Arr = np.ndarray[Any, Any]
pytestmark = pytest.mark.usefixtures("private_cache")
METHODS = ("zscore", "minmax", "l1", "l2", "center", "scale", "log1p", "sqrt", "softmax")


def model(x: Arr, method: str, axes: tuple[int, ...]) -> tuple[Arr, Arr]:
    """(output, bad mask) from the spec's table, in float64."""
    red = axes or tuple(range(x.ndim))
    fin = np.isfinite(x)
    with np.errstate(all="ignore"):
        mean = x.mean(axis=red, keepdims=True)
        std = x.std(axis=red, keepdims=True)
        mn = np.fmin.reduce(x, axis=red, keepdims=True)
        mx = np.fmax.reduce(x, axis=red, keepdims=True)
        fmin = np.where(fin, x, np.inf).min(axis=red, keepdims=True)
        fmin = np.where(np.isfinite(fmin), fmin, 0.0)
        invalid = np.zeros(x.shape, bool)

        def div(num: Arr, den: Arr) -> Arr:
            nonlocal invalid
            invalid = invalid | np.broadcast_to((den == 0) | ~np.isfinite(den), x.shape)
            return num / den

        if method == "zscore":
            y = div(x - mean, std)
        elif method == "center":
            y = x - mean
        elif method == "scale":
            y = div(x, std)
        elif method == "minmax":
            y = div(x - mn, mx - mn)
        elif method == "l1":
            y = div(x, np.abs(x).sum(axis=red, keepdims=True))
        elif method == "l2":
            y = div(x, np.sqrt((x * x).sum(axis=red, keepdims=True)))
        elif method == "log1p":
            y = np.log1p(x - fmin)
            invalid = np.isnan(y)
        elif method == "sqrt":
            y = np.sqrt(x - fmin)
            invalid = np.isnan(y)
        else:
            e = np.where(fin, np.exp(x - mx), 0.0)
            y = div(np.exp(x - mx), e.sum(axis=red, keepdims=True))
    bad = invalid & fin
    out = np.where(fin, np.where(bad, np.nan, y), x)
    return out, bad


def data(dtype: str) -> Arr:
    rng = np.random.default_rng(11)
    a = rng.standard_normal((6, 5, 7)) * 10 + 3
    a[0, 1, 2] = np.nan
    a[2, 2, 3] = np.inf
    a[4, 0, 0] = -np.inf
    a[5] = 1.5  # a constant slab: zero spread for cells that only see it
    return a.astype(dtype)


@pytest.mark.parametrize("dtype", ["f4", "f8"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("axes", [(), (0,), (1, 2)])
def test_methods_follow_the_spec_formulas(dtype: str, method: str, axes: tuple[int, ...],
                                         tmp_path: Path) -> None:
    a = data(dtype)
    path = tet.write_dataset(tmp_path / "t.tet", "a", a, chunk_shape=(4, 3, 2))
    for sel, view in ((None, a), ([{"start": 1}, {"step": 2}, {"stop": 6}], a[1:, ::2, :6])):
        x = view.astype(np.float64)
        want, bad = model(x, method, axes)
        op: dict[str, Any] = {"method": method}
        if axes:
            op["axes"] = list(axes)
        doc: dict[str, Any] = {"dataset": "a", "transform": op, "write": "ram"}
        if sel:
            doc["selection"] = sel
        with tet.open(path) as f:
            sink: dict[str, Any] = {}
            raw = f.query_api.run(doc, device=None, preview=3, plan=False, sink=sink)[1]
        got = sink["array"]
        assert got.dtype == np.dtype(dtype) and got.shape == x.shape
        rtol = 1e-6 if dtype == "f4" else 1e-12
        np.testing.assert_allclose(got.astype(np.float64), want.astype(dtype).astype(np.float64),
                                   rtol=rtol, atol=1e-30, equal_nan=True)
        ex = raw["execution"]
        assert ex["transform_method"] == method and ex["memory_strategy"] == "transform_ram"
        n_bad = int(bad.sum())
        if n_bad:
            assert ex["transform_div_by_zero_count"] == n_bad
            assert ex["transform_div_by_zero_indices"] == np.flatnonzero(bad)[:256].tolist()
        else:
            assert "transform_div_by_zero_count" not in ex
        preview = ex[f"{'f32' if dtype == 'f4' else 'f64'}_preview"]
        head = got.reshape(-1)[:3]
        wire = np.array([np.nan if v is None else v for v in preview]).astype(head.dtype)
        np.testing.assert_array_equal(wire, np.where(np.isfinite(head), head, np.nan))
        check_stats(ex, method, x, axes)


def check_stats(ex: dict[str, Any], method: str, x: Arr, axes: tuple[int, ...]) -> None:
    red = axes or tuple(range(x.ndim))
    with np.errstate(all="ignore"):
        fmin = np.where(np.isfinite(x), x, np.inf).min(axis=red)
        stats = {"mean": x.mean(axis=red), "std": x.std(axis=red),
                 "min": np.fmin.reduce(x, axis=red), "max": np.fmax.reduce(x, axis=red),
                 "norm_l1": np.abs(x).sum(axis=red), "norm_l2": np.sqrt((x * x).sum(axis=red))}
    if method in ("log1p", "sqrt"):
        stats["min"] = np.where(np.isfinite(fmin), fmin, 0.0)
    reported = {"zscore": ["mean", "std"], "center": ["mean"], "scale": ["std"],
                "minmax": ["min", "max"], "l1": ["norm_l1"], "l2": ["norm_l2"],
                "log1p": ["min"], "sqrt": ["min"], "softmax": ["max"]}[method]
    if axes:
        assert ex["operation_reduced_shape"] == list(stats["mean"].shape)
        for name in ("mean", "std", "min", "max", "norm_l1", "norm_l2"):
            got = ex[f"operation_reduced_{name}"]
            if name in reported:
                wire = np.where(np.isfinite(stats[name]), stats[name], np.nan)  # inf -> null
                np.testing.assert_allclose([np.nan if v is None else v for v in got],
                                           np.ravel(wire), rtol=1e-12, equal_nan=True)
            else:
                assert got == []
    else:
        keys = {k for k in ex if k.startswith("operation_") and k != "operation_element_count"}
        assert keys == {f"operation_{n}" for n in reported}


def test_integers_are_promoted_to_float64(tmp_path: Path) -> None:
    a = np.arange(24, dtype=np.int16).reshape(4, 6) - 7
    path = tet.write_dataset(tmp_path / "i.tet", "a", a, chunk_shape=(3, 4))
    with tet.open(path) as f:
        got = f.transform.to_numpy.zscore("a", axis=0)
        x = a.astype(np.float64)
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, (x - x.mean(0)) / x.std(0), rtol=1e-12)
        spill = f.transform.to_spill.minmax("a")
        np.testing.assert_allclose(spill.to_numpy(), (x - x.min()) / (x.max() - x.min()))


def test_sample_reference_values(tmp_path: Path) -> None:
    shutil.copy(INTEROP / "sample.tet", tmp_path)
    with tet.open(tmp_path / "sample.tet") as f:
        doc = {"dataset": "temperature", "transform": {"method": "zscore"}, "write": "ram"}
        ex = f.query_execute(doc, preview=6)["execution"]
        assert ex["total_bytes_read_from_disk"] == 72
        assert ex["operation_mean"] == 3.5
        assert ex["operation_std"] == pytest.approx(1.7078251276599330, rel=1e-15)
        np.testing.assert_allclose(ex["f32_preview"], [-1.46385, -0.87831, -0.29277, 0.29277,
                                                       0.87831, 1.46385], atol=1e-5)
        part = f.query_execute({**doc, "transform": {"method": "zscore", "axis": 1}})["execution"]
        assert part["operation_reduced_mean"] == [2.0, 5.0]
        np.testing.assert_allclose(part["operation_reduced_std"], [0.8165, 0.8165], atol=1e-4)
        log = f.transform.to_numpy.log1p("temperature").ravel()
        np.testing.assert_allclose(log[:3], [0, 0.6931, 1.0986], atol=1e-4)


def test_budgets_route_ram_switch_and_spill(tmp_path: Path, private_cache: Path) -> None:
    a = np.arange(40.0).reshape(5, 8)
    path = tet.write_dataset(tmp_path / "b.tet", "a", a)
    small = {"memory_budget_bytes": 64}
    with tet.open(path) as f:
        with pytest.raises(tet.QueryError, match=re.escape(
                "validation: logical selection (40 elements, 320 bytes) exceeds "
                "memory_budget_bytes (64); use `write`: `switch` or `spill`, or raise "
                "execution.memory_budget_bytes")):
            f.query({"dataset": "a", "transform": {"method": "center"}, "write": "ram",
                     "execution": small})
        ex = f.query({"dataset": "a", "transform": {"method": "center"},
                      "execution": small}, preview=2)["execution"]
        assert ex["memory_strategy"] == "transform_spill"  # switch, over budget
        spilled = Path(ex["spill_f32_path"])
        assert spilled.parent.parent == private_cache and spilled.name.startswith("spill-")
        np.testing.assert_array_equal(np.fromfile(spilled).reshape(5, 8), a - a.mean())
        assert ex["f64_preview"] == (a - a.mean()).ravel()[:2].tolist()
        ex = f.query({"dataset": "a", "transform": {"method": "center"}}, preview=0)["execution"]
        assert ex["memory_strategy"] == "transform_ram"  # switch, under budget
        res = f.transform.to_spill.scale("a", axis=1, path="sub/scaled.bin")
        assert res.path == (tmp_path / "sub" / "scaled.bin").resolve()
        assert res.byte_len == a.nbytes and res.memory_strategy == "transform_spill"
        np.testing.assert_allclose(res.to_numpy(), a / a.std(axis=1, keepdims=True))
        with pytest.raises(tet.QueryError, match="is not under an allowed root"):
            f.transform.to_spill.scale("a", path="/proc/nope.bin")


def test_reference_sidecar_is_reproduced(tmp_path: Path, private_cache: Path) -> None:
    shutil.copy(INTEROP / "sidecar_src.tet", tmp_path)
    src = tmp_path / "sidecar_src.tet"
    with tet.open(INTEROP / "sidecar_src.zscore.tet") as ref:
        want = ref.read_numpy("x-zscore")
        ref_meta = ref.metadata["datasets"]["x-zscore"]
        ref_hist = ref.history[0]
        ref_ds = ref["x-zscore"]
    with tet.open(src) as f:
        res = f.transform.to_sidecar.zscore("x", timestamp=False)
        assert res.path == (tmp_path / "sidecar_src.zscore.tet").resolve()
        assert res.memory_strategy == "transform_sidecar"
        stamped = f.transform.to_sidecar.zscore("x")
        assert stamped.path is not None
        assert re.fullmatch(r"sidecar_src\.zscore\.\d{8}T\d{6}Z\.tet", stamped.path.name)
        with res.open(f) as side:
            assert side.datasets() == ["x-zscore"]
            ds = side["x-zscore"]
            assert (ds.shape, ds.chunk_shape, ds.dtype) == (ref_ds.shape, ref_ds.chunk_shape,
                                                            ref_ds.dtype)
            np.testing.assert_allclose(side.read_numpy("x-zscore"), want, rtol=1e-12)
            assert side.metadata["datasets"]["x-zscore"] == ref_meta
            assert side.metadata["file"]["tool"] == "tet query transform"
            row = side.history[0]
            assert {k: row[k] for k in ("op", "params")} == {k: ref_hist[k]
                                                             for k in ("op", "params")}
            assert row["source"] == str(src) and row["parents"] == [str(src)]
        np.testing.assert_allclose(res.to_numpy(f), want, rtol=1e-12)
        part = f.transform.to_sidecar.minmax("x", selection=[{"start": 1}, {"step": 2}],
                                             path="part.tet")
        with part.open(src) as side:
            params = side.history[0]["params"]
            assert params["selection_box_start"] == "1x0"
            assert params["selection_box_stop_exclusive"] == "6x5"
            assert params["selection_step"] == "1x2"
            assert params["logical_selection_shape"] == "5x3"
    drafts = [p for p in private_cache.rglob("*") if p.is_file()]
    assert drafts == []


def test_transform_validation(tmp_path: Path) -> None:
    path = tet.write_dataset(tmp_path / "v.tet", "a", np.ones((2, 3)))
    with tet.open(path) as f:
        with pytest.raises(tet.QueryError, match="unknown transform method `cube`"):
            f.query({"dataset": "a", "transform": {"method": "cube"}})
        with pytest.raises(AttributeError, match="unknown transform method 'cube'"):
            f.transform.to_numpy.cube("a")
        with pytest.raises(tet.QueryError, match="transform operations use top-level `write`"):
            f.query({"dataset": "a", "transform": {"method": "l2"}, "spill": "x.bin"})
        assert sorted(dir(f.transform.to_sidecar)) == sorted(METHODS)
