"""`"execution": {"mask_fill": true}`: a dataset's `_FillValue` / `missing_value` values
read as missing (NaN) by every operation, preview and spill (tet.query.mask).

Matrix: f32 / f64 / f16 / i16 / i32 / i64 / u8 / u16 datasets × `_FillValue`,
`missing_value`, both, several values, a NaN fill, values the dtype cannot hold × every
tier A/B op (scalar, partial axes, strided selections), median / quantile / histogram /
covariance / correlation, transforms, previews and spills: each answer equals NumPy on the
array with its fills replaced by NaN (integers as float64), and the same query without
the mask on a file holding that decoded array; `nan_mean` / `nan_count` / `nan_std` also
equal xarray's ``skipna`` reductions.  Documents without `mask_fill` (or with it false)
answer as before; bad values are the exact validation texts; the Python helpers and the
CLI flag set it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tet
import tet.query.execute as execute_mod
from tests.conftest import REPO
from tet.query.document import parse_text, parse_value
from tet.query.mask import fill_values, parse_fill_text
from tet.writer import TetWriter

Arr = np.ndarray[Any, Any]
SHAPE = (6, 7, 5)
CHUNKS = (4, 3, 2)
MASK = {"execution": {"mask_fill": True}}
BOOLEAN = "validation: `execution.mask_fill` must be a boolean"
REFERENCE_REJECTION = "validation: unknown field `execution.mask_fill`"

# name -> (dtype, attrs, the values a mask must hide, codec)
CASES: dict[str, tuple[str, dict[str, str], list[Any], str]] = {
    "f32_fill": ("f4", {"_FillValue": "100000002004087734272"}, [1e20], "zstd"),
    "f64_missing": ("f8", {"missing_value": "-9999"}, [-9999.0], "raw"),
    "f32_both": ("f4", {"_FillValue": "1e20", "missing_value": "-9999"}, [1e20, -9999.0],
                 "raw"),
    "f64_several": ("f8", {"missing_value": "[-1, -2.5]", "_FillValue": "-1"}, [-1.0, -2.5],
                    "zstd"),
    "f32_nan_fill": ("f4", {"_FillValue": "NaN"}, [], "raw"),
    "f16_fill": ("f2", {"_FillValue": "-9999"}, [-9999.0], "raw"),
    "i16_fill": ("i2", {"_FillValue": "-32767"}, [-32767], "zstd"),
    "i32_both": ("i4", {"_FillValue": "-9999", "missing_value": "1 2"}, [-9999, 1, 2], "raw"),
    "i64_exact": ("i8", {"_FillValue": str(2**62 + 1)}, [2**62 + 1], "raw"),
    "u8_fill": ("u1", {"_FillValue": "255"}, [255], "zstd"),
    "u16_cdl": ("u2", {"missing_value": "65535US"}, [65535], "raw"),
}
FLOAT_EXPECTED = {"f32_fill": [1e20], "f32_both": [1e20, -9999.0], "f16_fill": [-10000.0]}


def _data(name: str, dtype: str, fills: list[Any], rng: np.random.Generator) -> Arr:
    dt = np.dtype(dtype)
    n = math.prod(SHAPE)
    if dt.kind == "f":
        a = (rng.standard_normal(n) * 10).astype(dt)
    else:
        info = np.iinfo(dt)
        lo, hi = max(info.min, -1000), min(info.max, 1000)
        a = rng.integers(lo, hi, n).astype(dt)
    if name == "i64_exact":
        a[::7] = 2**62  # equal to the fill in float64, never in int64: must stay
    if name == "f32_nan_fill":
        a[::11] = np.nan
    for k, v in enumerate(fills):
        a[rng.choice(n, 12, replace=False) if k == 0 else slice(k, None, 13)] = v
    a[3] = fills[0] if fills else a[3]
    return a.reshape(SHAPE)


def _decoded(a: Arr, fills: list[Any]) -> Arr:
    """What xarray decodes: fills -> NaN, integers as float64, floats in their dtype."""
    hit = np.isin(a, np.asarray(fills, dtype=a.dtype)) if fills else np.zeros(a.shape, bool)
    if a.dtype.kind == "f":
        out = a.copy()
        out[hit] = np.nan
        return out
    if not fills:
        return a.copy()
    out64 = a.astype(np.float64)
    out64[hit] = np.nan
    return out64


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """masked.tet: every case with its fill attrs; decoded.tet: the same names holding
    the decoded arrays (no fill attrs), for the same queries without the mask."""
    where = tmp_path_factory.mktemp("mask")
    rng = np.random.default_rng(13)
    arrays: dict[str, Arr] = {}
    with TetWriter.create(where / "masked.tet") as w, \
            TetWriter.create(where / "decoded.tet") as d:
        for name, (dtype, attrs, fills, codec) in CASES.items():
            a = _data(name, dtype, fills, rng)
            arrays[name] = a
            w.write_dataset(name, a, chunk_shape=CHUNKS, attrs=attrs, codec=codec,
                            dim_names=["t", "y", "x"])
            d.write_dataset(name, _decoded(a, fills), chunk_shape=CHUNKS, codec=codec,
                            dim_names=["t", "y", "x"])
        m = rng.standard_normal((40, 4)).astype(np.float64)
        m[5, 1] = m[17, 3] = -9999.0
        arrays["matrix"] = m
        w.write_dataset("matrix", m, chunk_shape=(16, 3), attrs={"_FillValue": "-9999"})
        d.write_dataset("matrix", _decoded(m, [-9999.0]), chunk_shape=(16, 3))
        plain = rng.standard_normal(SHAPE).astype(np.float32)
        arrays["plain"] = plain
        w.write_dataset("plain", plain, chunk_shape=CHUNKS, attrs={"units": "K"})
        d.write_dataset("plain", plain, chunk_shape=CHUNKS)
    return {"dir": where, "arrays": arrays, "masked": tet.open(where / "masked.tet"),
            "decoded": tet.open(where / "decoded.tet")}


def _x(files: dict[str, Any], name: str) -> Arr:
    fills = CASES[name][2] if name in CASES else ([-9999.0] if name == "matrix" else [])
    out: Arr = _decoded(files["arrays"][name], fills).astype(np.float64)
    return out


def _ex(f: tet.TetFile, doc: dict[str, Any], preview: int = 0) -> dict[str, Any]:
    sink: dict[str, Any] = {}
    f.execute(doc, preview=preview, raw=True)  # the wire form must build too
    result = f.execute(doc, preview=preview)
    sink.update(result.exact or {})
    return sink


def _ops(ex: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in ex.items() if k.startswith(("operation_", "transform_"))}


def _same(got: Any, want: Any) -> None:
    if isinstance(want, (list, np.ndarray)) or isinstance(got, (list, np.ndarray)):
        g, w = np.asarray(got), np.asarray(want)
        assert g.shape == w.shape
        if w.dtype.kind in "fc" or g.dtype.kind in "fc":
            np.testing.assert_allclose(g.astype(float), w.astype(float), rtol=1e-9,
                                       atol=1e-12, equal_nan=True)
        else:
            assert np.array_equal(g, w)
    elif isinstance(want, float) or isinstance(got, float):
        if math.isnan(float(want)):
            assert math.isnan(float(got)), got
        else:
            assert float(got) == pytest.approx(float(want), rel=1e-9, abs=1e-12)
    else:
        assert got == want


FOLD_OPS = ("sum", "mean", "min", "max", "count", "var", "std", "product", "norm_l1",
            "norm_l2", "all_finite", "any_nan", "any_inf", "arg_min", "arg_max", "nan_count",
            "inf_count", "nan_mean", "nan_std")


def _numpy(op: str, x: Arr, axes: tuple[int, ...] | None) -> Any:
    """NumPy's answer (the engine's documented semantics) on the decoded float64 array."""
    ax = axes if axes else None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        table: dict[str, Callable[[], Any]] = {
            "sum": lambda: np.sum(x, axis=ax), "mean": lambda: np.mean(x, axis=ax),
            "min": lambda: np.min(x, axis=ax), "max": lambda: np.max(x, axis=ax),
            "var": lambda: np.var(x, axis=ax), "std": lambda: np.std(x, axis=ax),
            "product": lambda: np.prod(x, axis=ax),
            "norm_l1": lambda: np.sum(np.abs(x), axis=ax),
            "norm_l2": lambda: np.sqrt(np.sum(x * x, axis=ax)),
            "all_finite": lambda: np.all(np.isfinite(x), axis=ax),
            "any_nan": lambda: np.any(np.isnan(x), axis=ax),
            "any_inf": lambda: np.any(np.isinf(x), axis=ax),
            "nan_count": lambda: np.sum(np.isnan(x), axis=ax).astype(float),
            "inf_count": lambda: np.sum(np.isinf(x), axis=ax).astype(float),
            "nan_mean": lambda: np.nanmean(x, axis=ax), "nan_std": lambda: np.nanstd(x, axis=ax),
            "median": lambda: np.median(x, axis=ax),
            "quantile": lambda: np.quantile(x, 0.3, axis=ax),
        }
        return table[op]()


SCALAR_FIELD = {"count": "operation_element_count", "arg_min": "operation_argmin_index",
                "arg_max": "operation_argmax_index"}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("op", FOLD_OPS)
def test_scalar_folds_equal_numpy_on_the_decoded_array(files: dict[str, Any], name: str,
                                                       op: str) -> None:
    ex = _ex(files["masked"], {"dataset": name, op: [], **MASK})
    x = _x(files, name)
    field = SCALAR_FIELD.get(op, f"operation_{op}")
    if op == "count":
        assert ex[field] == x.size
    elif op in ("arg_min", "arg_max"):
        assert ex[field] == int(getattr(np, op.replace("_", ""))(x))  # first NaN, as NumPy
    else:
        _same(ex[field], _numpy(op, x, None))


PARTIAL = [(0,), (2,), (0, 2), (1, 2)]


@pytest.mark.parametrize("name", ["f32_both", "f64_several", "i16_fill", "i64_exact", "u8_fill"])
@pytest.mark.parametrize("axes", PARTIAL, ids=str)
@pytest.mark.parametrize("op", ["sum", "mean", "min", "nan_mean", "nan_std", "nan_count",
                                "var", "arg_max"])
def test_partial_folds_equal_numpy(files: dict[str, Any], name: str, axes: tuple[int, ...],
                                   op: str) -> None:
    ex = _ex(files["masked"], {"dataset": name, op: list(axes), **MASK})
    x = _x(files, name)
    kept = [n for d, n in enumerate(SHAPE) if d not in axes]
    assert ex["operation_reduced_shape"] == kept
    field = {"arg_max": "operation_reduced_argmax"}.get(op, f"operation_reduced_{op}")
    if op == "arg_max":
        kept_axes = [d for d in range(3) if d not in axes]
        fibers = np.transpose(x, kept_axes + list(axes)).reshape(math.prod(kept), -1)
        _same(ex[field], np.argmax(fibers, axis=1))
    else:
        _same(ex[field], np.asarray(_numpy(op, x, axes)).ravel())


STRIDED = [{"start": 1, "step": 2}, {"step": 3}, {"start": 1, "stop": 5, "step": 2}]


@pytest.mark.parametrize("name", ["f32_fill", "f64_missing", "i32_both", "f16_fill"])
@pytest.mark.parametrize("op", ["nan_mean", "nan_count", "mean", "max", "nan_std"])
def test_strided_selections(files: dict[str, Any], name: str, op: str) -> None:
    x = _x(files, name)[1::2, ::3, 1:5:2]
    ex = _ex(files["masked"], {"dataset": name, op: [], "selection": STRIDED, **MASK})
    _same(ex[f"operation_{op}"], _numpy(op, x, None))
    ex = _ex(files["masked"], {"dataset": name, op: [1], "selection": STRIDED, **MASK})
    _same(ex[f"operation_reduced_{op}"], np.asarray(_numpy(op, x, (1,))).ravel())


@pytest.mark.parametrize("name", list(CASES))
def test_xarray_skipna_reductions_agree(files: dict[str, Any], name: str) -> None:
    xr = pytest.importorskip("xarray")
    attrs = CASES[name][1]
    a = files["arrays"][name]
    # xarray's own CF decoding of the stored values and attrs (as a netCDF reader hands them)
    encoded = {k: np.asarray(parse_fill_text(v), dtype=a.dtype) for k, v in attrs.items()}
    encoded = {k: (v[0] if v.size == 1 else v) for k, v in encoded.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        decoded = xr.decode_cf(xr.Dataset({"v": (("t", "y", "x"), a, encoded)}))["v"]
    # which values xarray hides is the point; its float16/float32 arithmetic is not
    decoded = decoded.astype(np.float64)
    f = files["masked"]
    if name == "i64_exact":
        # xarray converts int64 to float64 before comparing, so it also hides 2**62 (equal
        # to the fill 2**62 + 1 in float64); tet compares the stored integers
        neighbours = int((a == 2**62).sum())
        assert a.size - int(decoded.count()) == f.nan_count(name, mask_fill=True) + neighbours
        decoded = decoded.where(a != 2**62, float(2**62))
    assert f.nan_mean(name, mask_fill=True) == pytest.approx(
        float(decoded.mean(skipna=True)), rel=1e-12)
    assert f.nan_std(name, mask_fill=True) == pytest.approx(
        float(decoded.std(skipna=True)), rel=1e-9)
    assert f.nan_count(name, mask_fill=True) == a.size - int(decoded.count())
    by_t = f.nan_mean(name, axis="t", mask_fill=True).reduced
    np.testing.assert_allclose(by_t, decoded.mean("t", skipna=True).values, rtol=1e-12)
    # and the `where` form: the fills as missing, the values untouched
    hide = np.isin(a, np.asarray(CASES[name][2], dtype=a.dtype))
    da = xr.DataArray(a.astype(np.float64)).where(~hide)
    assert f.nan_mean(name, mask_fill=True) == pytest.approx(float(da.mean(skipna=True)),
                                                              rel=1e-12)
    assert f.nan_std(name, mask_fill=True) == pytest.approx(float(da.std(skipna=True)),
                                                             rel=1e-9)
    assert f.nan_count(name, mask_fill=True) == float(int(da.isnull().sum()))


@pytest.mark.parametrize("name", [*CASES, "matrix", "plain"])
@pytest.mark.parametrize("doc", [
    {"median": []}, {"quantile": {"q": 0.3}}, {"quantile": {"q": 0.7, "axis": 1}},
    {"median": [0, 2]}, {"histogram": {"bins": 5}}, {"histogram": {"bins": 3, "axis": 0}},
    {"histogram": {"bins": 4, "min": -5, "max": 5}}, {"nan_mean": [1]}, {"sum": [0]},
    {"null_count": {"fill": 0}}, {"transform": {"method": "minmax"}, "write": "ram"},
    {"transform": {"method": "center", "axis": 0}, "write": "ram"}, {}],
    ids=lambda d: next(iter(d), "preview"))
def test_every_op_equals_the_same_query_on_the_decoded_file(
        files: dict[str, Any], name: str, doc: dict[str, Any]) -> None:
    """The masked answer is the unmasked answer on xarray's decoding of the data."""
    if name == "matrix" and any(isinstance(v, dict) and "axis" in v for v in doc.values()):
        doc = {k: ({**v, "axis": 0} if isinstance(v, dict) else v) for k, v in doc.items()}
    if name == "matrix" and ("median" in doc and doc["median"] == [0, 2]):
        doc = {"median": [0]}
    try:
        want = _ex(files["decoded"], {"dataset": name, **doc}, preview=20)
    except tet.TetError as exc:  # e.g. bins NumPy cannot make of a column of 2**62
        with pytest.raises(type(exc)) as err:
            _ex(files["masked"], {"dataset": name, **doc, **MASK}, preview=20)
        assert str(err.value) == str(exc)
        return
    got = _ex(files["masked"], {"dataset": name, **doc, **MASK}, preview=20)
    assert _ops(got).keys() == _ops(want).keys()
    for key, value in _ops(want).items():
        _same(got[key], value)
    for key in (k for k in want if k.endswith("_preview")):
        _same(got[key], want[key])


@pytest.mark.parametrize("op", ["covariance", "correlation"])
def test_covariance_and_correlation(files: dict[str, Any], op: str) -> None:
    x = _x(files, "matrix")
    f = files["masked"]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        want = np.cov(x, rowvar=False, bias=True) if op == "covariance" else np.corrcoef(
            x, rowvar=False)
        clean = x[~np.isnan(x).any(axis=1)]
        want_clean = (np.cov(clean, rowvar=False, bias=True) if op == "covariance"
                      else np.corrcoef(clean, rowvar=False))
    r = getattr(f, op)("matrix", axis=0, mask_fill=True)
    assert r.matrix_order == 4
    _same(np.asarray(r.exact[f"operation_{op}"]).reshape(4, 4), want)
    assert np.isnan(np.asarray(r.exact[f"operation_{op}"]).reshape(4, 4)[1]).all()
    rows = [{"start": 18, "stop": 40}, {}]  # no fill among these observations
    r = getattr(f, op)("matrix", axis=0, selection=rows, mask_fill=True)
    unmasked = getattr(f, op)("matrix", axis=0, selection=rows)
    _same(r.exact[f"operation_{op}"], unmasked.exact[f"operation_{op}"])
    whole = _ex(files["decoded"], {"dataset": "matrix", op: 0})
    _same(getattr(f, op)("matrix", axis=0, mask_fill=True).exact[f"operation_{op}"],
          whole[f"operation_{op}"])
    assert clean.shape[0] > 0 and np.isfinite(want_clean).all()


@pytest.mark.parametrize("name", ["f32_both", "i16_fill", "u8_fill", "f16_fill"])
def test_quantiles_and_histograms(files: dict[str, Any], name: str) -> None:
    f = files["masked"]
    x = _x(files, name)
    # a fill in the selection: NaN, as np.quantile / np.median say
    assert math.isnan(f.quantile(name, 0.3, mask_fill=True))
    assert math.isnan(f.median(name, mask_fill=True))
    inside = f.quantile(name, 0.4, axis=2, mask_fill=True).reduced
    _same(inside, np.quantile(x, 0.4, axis=2))
    h = f.histogram(name, 6, mask_fill=True)
    finite = x[~np.isnan(x)]
    counts, edges = np.histogram(finite, 6)
    _same(h.histogram_counts, counts.astype(float))
    _same(h.histogram_edges, edges)
    assert sum(h.histogram_counts) == finite.size < x.size
    h = f.histogram(name, 4, min=-3, max=3, mask_fill=True)
    _same(h.histogram_counts, np.histogram(finite, 4, range=(-3, 3))[0].astype(float))
    part = f.histogram(name, 3, axes=[0, 1], mask_fill=True).reduced
    for j in range(SHAPE[2]):
        col = x[:, :, j][~np.isnan(x[:, :, j])]
        assert np.array_equal(part[j], np.histogram(col, 3)[0])


def test_int64_fills_compare_exactly_not_in_float64(files: dict[str, Any]) -> None:
    a = files["arrays"]["i64_exact"]
    f = files["masked"]
    hidden = int((a == 2**62 + 1).sum())
    assert (a == 2**62).sum() > 0 and float(2**62) == float(2**62 + 1)
    assert f.nan_count("i64_exact", mask_fill=True) == hidden
    assert f.count("i64_exact", mask_fill=True) == a.size
    ex = _ex(f, {"dataset": "i64_exact", **MASK}, preview=10)
    assert ex["mask_fill_values"] == [2**62 + 1]
    assert ex["f64_preview"][3] is None or math.isnan(ex["f64_preview"][3])


@pytest.mark.parametrize("name", list(CASES))
def test_response_says_what_was_masked(files: dict[str, Any], name: str) -> None:
    dtype, _, fills, _ = CASES[name]
    f = files["masked"]
    raw = f.query({"dataset": name, "nan_mean": [], **MASK}, preview=4)
    ex = raw["execution"]
    assert list(ex)[-3:] == ["mask_fill", "mask_fill_values", "mask_fill_dtype"]
    assert ex["mask_fill"] is True
    assert ex["mask_fill_values"] == FLOAT_EXPECTED.get(name, fills)
    stored = tet.dtypes.for_numpy(np.dtype(dtype)).name
    shown = stored if np.dtype(dtype).kind == "f" or not fills else "f64"
    assert ex["mask_fill_dtype"] == shown
    assert len(ex[f"{shown}_preview"]) == 4 and ex["f32_preview" if shown != "f32"
                                                 else "f64_preview"] == []
    assert json.loads(json.dumps(raw, allow_nan=False)) == raw  # still plain JSON


def test_previews_and_spills_hold_nan_integers_as_float64(files: dict[str, Any],
                                                          tmp_path: Path) -> None:
    f = tet.open(files["dir"] / "masked.tet", spill_allow=[tmp_path])
    for name in ("i16_fill", "f32_both", "f16_fill", "u8_fill"):
        x = _decoded(files["arrays"][name], CASES[name][2])
        r = f.execute({"dataset": name, **MASK}, preview=40)
        _same(r.preview, x.ravel()[:40])
        assert r.preview.dtype == x.dtype
        spill = f.read_spill(name, tmp_path / f"{name}.bin", mask_fill=True)
        got = spill.to_numpy()
        assert got.dtype == x.dtype and got.shape == SHAPE
        assert np.array_equal(got, x, equal_nan=True)
        assert spill.byte_len == x.nbytes
        plain = f.read_spill(name, tmp_path / f"{name}.raw.bin").to_numpy()
        assert np.array_equal(plain, files["arrays"][name])  # unmasked: the stored values
    for name in ("i16_fill", "f32_fill", "u16_cdl"):  # zstd and raw tiles, strided boxes
        x = _decoded(files["arrays"][name], CASES[name][2])[1::2, ::3, 1:5:2]
        got = f.read_spill(name, tmp_path / f"{name}.sel.bin", selection=STRIDED,
                           mask_fill=True).to_numpy()
        assert got.dtype == x.dtype and np.array_equal(got, x, equal_nan=True)
    sel = [{"start": 1, "step": 2}, {"step": 3}, {"start": 1, "stop": 5, "step": 2}]
    r = f.execute({"dataset": "i32_both", "selection": sel, **MASK}, preview=100)
    _same(r.preview, _decoded(files["arrays"]["i32_both"], [-9999, 1, 2])[1::2, ::3, 1:5:2]
          .ravel())


def test_transforms_see_the_mask(files: dict[str, Any]) -> None:
    f = files["masked"]
    for name in ("f32_both", "i16_fill", "f64_several"):
        x = _decoded(files["arrays"][name], CASES[name][2])
        got = f.transform.to_numpy.minmax(name, mask_fill=True)
        xf = x.astype(np.float64)
        want = (xf - np.nanmin(xf)) / (np.nanmax(xf) - np.nanmin(xf))
        assert got.dtype == (x.dtype if x.dtype.kind == "f" else np.float64)
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=1e-6, equal_nan=True)
        assert np.array_equal(np.isnan(got), np.isnan(x))


def test_without_mask_fill_nothing_changes(files: dict[str, Any],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(execute_mod, "host_available_ram", lambda: 8 << 30)
    f = files["masked"]
    a = files["arrays"]["f32_both"].astype(np.float64)
    for doc in ({"nan_mean": []}, {"sum": [0]}, {"median": []}, {"histogram": {"bins": 3}},
                {}, {"null_count": []}):
        base = {"dataset": "f32_both", **doc}
        absent = f.query(base, preview=5)
        off = f.query({**base, "execution": {"mask_fill": False}}, preview=5)
        assert json.dumps(absent) == json.dumps(off)
        assert not any(k.startswith("mask_fill") for k in absent["execution"])
    assert f.nan_mean("f32_both") == pytest.approx(np.nanmean(a), rel=1e-12)  # fills counted
    assert f.nan_count("f32_both") == 0.0
    assert f.max("f32_both") == pytest.approx(float(np.float32(1e20)))
    stored = files["arrays"]["f64_missing"]
    assert f.null_count("f64_missing") == float((stored == -9999).sum()) > 0


def test_no_fill_attrs_or_only_unusable_ones_is_a_no_op(files: dict[str, Any],
                                                         tmp_path: Path) -> None:
    f = files["masked"]
    for name in ("plain", "f32_nan_fill"):
        ex = _ex(f, {"dataset": name, "nan_mean": [0], **MASK}, preview=3)
        base = _ex(f, {"dataset": name, "nan_mean": [0]}, preview=3)
        assert ex["mask_fill_values"] == [] and _ops(ex).keys() == _ops(base).keys()
        for key in (*_ops(base), "f32_preview"):
            _same(ex[key], base[key])
    path = tmp_path / "odd.tet"
    with TetWriter.create(path) as w:  # values no stored element of the dtype can equal
        w.write_dataset("u8", np.arange(12, dtype=np.uint8), attrs={"_FillValue": "-1"})
        w.write_dataset("i32", np.arange(12, dtype=np.int32),
                        attrs={"_FillValue": "2.5", "missing_value": "1e20"})
        w.write_dataset("f32", np.arange(12, dtype=np.float32), attrs={"_FillValue": "1e300"})
        w.write_dataset("i16", np.arange(12, dtype=np.int16), attrs={"missing_value": "3.0"})
    with tet.open(path) as g:
        for name in ("u8", "i32", "f32"):
            raw = g.query({"dataset": name, "sum": [], **MASK}, preview=2)["execution"]
            assert raw["mask_fill_values"] == [] and raw["operation_sum"] == 66.0
            stored = g.dataset(name).dtype_name
            assert raw["mask_fill_dtype"] == stored and raw[f"{stored}_preview"] == [0, 1]
        raw = g.query({"dataset": "i16", "nan_count": [], **MASK}, preview=0)["execution"]
        assert raw["mask_fill_values"] == [3] and raw["operation_nan_count"] == 1.0


def test_fill_text_forms() -> None:
    assert parse_fill_text("1e20") == [1e20]
    assert parse_fill_text("  -9999 ") == [-9999]
    assert parse_fill_text("[1, 2]") == [1, 2]
    assert parse_fill_text("1 2") == [1, 2]
    assert parse_fill_text("(1,2, 3)") == [1, 2, 3]
    assert parse_fill_text("[-1.5 2e3]") == [-1.5, 2000.0]
    assert parse_fill_text("[]") == []
    assert parse_fill_text("1.e+20f") == [1e20]
    assert parse_fill_text("-9999s") == [-9999]
    assert parse_fill_text("255UB") == [255]
    assert math.isnan(parse_fill_text("NaN")[0])  # type: ignore[index]
    assert parse_fill_text("-inf") == [-math.inf]
    assert parse_fill_text("AAAAAICHw8A=") == [-9999.0]  # xarray's base64 float64 fill
    assert parse_fill_text(str(2**63 + 5)) == [2**63 + 5]  # exact, not via float
    for bad in ("abc", "", "  ", "1,,x", "0x10", "[1, two]", "AAAA", "1e"):
        assert parse_fill_text(bad) is None, bad


def test_typed_metadata_is_preferred_over_the_text(tmp_path: Path) -> None:
    path = tmp_path / "typed.tet"
    a = np.array([1.0, -9999.0, 2.0, 1e20, 3.0], dtype=np.float32)
    with TetWriter.create(path) as w:
        w.write_dataset("v", a, attrs={"_FillValue": "not a number", "missing_value": "2"})
    with tet.open(path) as f:
        with pytest.raises(tet.TetError) as err:
            f.nan_mean("v", mask_fill=True)
        assert str(err.value) == (
            "validation: `execution.mask_fill`: dataset `v` attr `_FillValue` is not a "
            'number or a list of numbers: "not a number"')
        f.catalog.metadata["tet"] = {"datasets": {"v": {"attrs": {
            "_FillValue": {"dtype": "float32", "value": [1e20, -9999.0]},
            "missing_value": {"dtype": "str", "value": ["x"]}}}}}  # not numbers: the text
        assert fill_values(f, 0) == [np.float32(1e20), np.float32(-9999.0), np.float32(2.0)]
        assert f.nan_mean("v", mask_fill=True) == pytest.approx(2.0)
        f.catalog.metadata["tet"]["datasets"]["v"]["attrs"]["missing_value"] = {
            "dtype": "float32", "value": "NaN"}
        assert f.nan_mean("v", mask_fill=True) == pytest.approx(2.0)
        assert f.nan_count("v", mask_fill=True) == 2.0
        f.catalog.metadata["tet"] = {"datasets": {"v": {"attrs": {"missing_value": {
            "json": [1, 3]}, "_FillValue": {"dtype": "float32", "value": [1e20, -9999.0]}}}}}
        assert f.nan_mean("v", mask_fill=True) == pytest.approx(2.0)
        f.catalog.metadata["tet"] = "damaged"  # a hostile extension is ignored
        with pytest.raises(tet.TetError, match="is not a number or a list"):
            f.nan_mean("v", mask_fill=True)


def test_typed_attrs_written_by_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "written.tet"
    a = np.array([[1, -32767, 3], [7, 5, -1]], dtype=np.int16)
    with TetWriter.create(path) as w:
        w.write_dataset("v", a, attrs={"_FillValue": np.int16(-32767),
                                       "missing_value": np.array([-1, 7], dtype=np.int16)})
        w.write_dataset("big", np.array([2**62, 2**62 + 1, 5], dtype=np.int64),
                        attrs={"_FillValue": np.int64(2**62 + 1)})
    with tet.open(path) as f:
        typed = f.catalog.metadata["tet"]["datasets"]["v"]["attrs"]
        assert typed["missing_value"] == {"dtype": "int16", "value": [-1, 7]}
        assert [int(v) for v in fill_values(f, 0)] == [-32767, -1, 7]
        ex = f.query({"dataset": "v", "nan_mean": [], **MASK}, preview=6)["execution"]
        assert ex["operation_nan_mean"] == 3.0
        assert ex["f64_preview"] == [1.0, None, 3.0, None, 5.0, None]
        assert ex["mask_fill_values"] == [-32767, -1, 7]
        assert f.nan_count("big", mask_fill=True) == 1.0
        assert f.max("big", mask_fill=True, raw=True)["execution"]["mask_fill_values"] == [
            2**62 + 1]


def test_too_many_fill_values(tmp_path: Path) -> None:
    path = tmp_path / "many.tet"
    with TetWriter.create(path) as w:
        w.write_dataset("v", np.arange(100, dtype=np.int32),
                        attrs={"missing_value": str(list(range(65)))})
        w.write_dataset("ok", np.arange(100, dtype=np.int32),
                        attrs={"missing_value": str(list(range(64)))})
    with tet.open(path) as f:
        with pytest.raises(tet.QueryError) as err:
            f.sum("v", mask_fill=True)
        assert str(err.value) == (
            "validation: `execution.mask_fill`: dataset `v` has 65 distinct fill values "
            "(_FillValue, missing_value); at most 64 are supported")
        assert f.nan_count("ok", mask_fill=True) == 64.0
        assert f.sum("ok", mask_fill=True) != f.sum("ok", mask_fill=True)  # NaN
        assert f.nan_mean("ok", mask_fill=True) == pytest.approx(np.arange(64, 100).mean())


@pytest.mark.parametrize("value", [1, 0, "true", None, [], {}, 1.0])
def test_mask_fill_must_be_a_boolean(files: dict[str, Any], value: Any) -> None:
    with pytest.raises(tet.QueryError) as err:
        parse_value({"dataset": "x", "mean": [], "execution": {"mask_fill": value}})
    assert str(err.value) == BOOLEAN
    with pytest.raises(tet.QueryError) as err:
        files["masked"].mean("f32_fill", mask_fill=value)
    assert str(err.value) == BOOLEAN


def test_documents_round_trip_and_toml(files: dict[str, Any]) -> None:
    doc = parse_text('dataset = "f32_fill"\nnan_count = []\n[execution]\nmask_fill = true\n')
    assert doc.execution is not None and doc.execution.mask_fill is True
    assert doc.to_dict()["execution"] == {"mask_fill": True}
    assert parse_value(doc.to_dict()) == doc
    off = parse_value({"dataset": "a", "execution": {"mask_fill": False, "fold_parallel": True}})
    assert off.to_dict()["execution"] == {"fold_parallel": True, "mask_fill": False}
    assert parse_value({"dataset": "a"}).execution is None
    with pytest.raises(tet.QueryError) as err:  # unknown keys still name the first one
        parse_value({"dataset": "a", "execution": {"mask_fill": True, "mask": 1}})
    assert str(err.value) == "validation: unknown field `execution.mask`"
    r = files["masked"].query('dataset = "f32_fill"\nnan_count = []\n[execution]\n'
                              "mask_fill = true\n")
    hidden = (files["arrays"]["f32_fill"] == np.float32(1e20)).sum()
    assert r["execution"]["operation_nan_count"] == float(hidden) > 0


def test_budget_counts_the_promoted_copy(files: dict[str, Any], private_cache: Path) -> None:
    f = tet.open(files["dir"] / "masked.tet")  # the cache of this test is its temp root
    n = math.prod(SHAPE)
    budget = {"memory_budget_bytes": 4 * n}  # the i16 selection fits, its float64 copy not
    plain = f.query({"dataset": "i16_fill", "median": [0], "execution": budget})
    masked = f.query({"dataset": "i16_fill", "median": [0],
                      "execution": {**budget, "mask_fill": True}})
    assert plain["execution"]["memory_strategy"] == "in_memory_materialize"
    assert masked["execution"]["memory_strategy"] == "temp_spill_materialize"
    x = _x(files, "i16_fill")
    ex = _ex(f, {"dataset": "i16_fill", "median": [0, 1], "execution": {**budget,
                                                                       "mask_fill": True}})
    _same(ex["operation_reduced_median"], np.median(x, axis=(0, 1)))


def test_every_helper_takes_mask_fill(files: dict[str, Any], tmp_path: Path) -> None:
    f = tet.open(files["dir"] / "masked.tet", spill_allow=[tmp_path])
    x = _x(files, "i32_both")
    with np.errstate(all="ignore"):
        assert math.isnan(f.mean("i32_both", mask_fill=True))
        assert f.nan_mean("i32_both", mask_fill=True) == pytest.approx(np.nanmean(x))
        assert f.numel("i32_both", mask_fill=True) == x.size
        assert f.any_nan("i32_both", mask_fill=True) is True
        assert f.any_nan("i32_both") is False
        assert f.all_finite("i32_both", mask_fill=True) is False
        assert f.arg_min("i32_both", mask_fill=True) == int(np.argmin(x))
        assert f.null_count("i32_both", fill=5, mask_fill=True) == float((x == 5).sum())
        assert f.null_count("i32_both", mask_fill=True) == 0.0  # the fills are NaN now
        assert f.null_count("i32_both") == float(
            (files["arrays"]["i32_both"] == -9999).sum())
        r = f.nan_std("i32_both", axis="x", mask_fill=True)
        _same(r.reduced, np.nanstd(x, axis=2))
        assert math.isnan(f.quantile("i32_both", 0.5, mask_fill=True))
        counts = f.histogram("i32_both", 2, mask_fill=True).histogram_counts
        assert counts is not None and counts.tolist() == [
            int(c) for c in np.histogram(x[~np.isnan(x)], 2)[0]]
        spill = f.transform.to_spill.center("i32_both", path=tmp_path / "c.bin", mask_fill=True)
        assert np.isnan(spill.to_numpy()).all()  # the mean of data holding NaN is NaN
        side = f.transform.to_sidecar.minmax("i32_both", path=tmp_path / "m.tet",
                                             mask_fill=True)
        assert np.array_equal(np.isnan(side.to_numpy(f)), np.isnan(x))
        raw = f.sum("i32_both", mask_fill=True, raw=True)
        assert raw["execution"]["mask_fill"] is True


def test_query_many_combines_masked_partials(files: dict[str, Any], tmp_path: Path) -> None:
    a = files["arrays"]["i16_fill"]
    paths = []
    for i, part in enumerate((a[:3], a[3:])):
        p = tmp_path / f"part{i}.tet"
        tet.write_dataset(p, "v", part, attrs={"_FillValue": "-32767"})
        paths.append(p)
    x = _x(files, "i16_fill")
    for combine in (True, False):
        out = tet.query_many(paths, {"dataset": "v", "nan_mean": [0], **MASK},
                             combine=combine)
        if combine:
            _same(out["execution"]["operation_reduced_nan_mean"], np.nanmean(x, axis=0).ravel())
            assert out["execution"]["mask_fill"] is True
        else:
            for r, piece in zip(out, (x[:3], x[3:])):
                _same(r["execution"]["operation_reduced_nan_mean"],
                      np.nanmean(piece, axis=0).ravel())


def test_cli_flag_sets_it_and_history_keeps_it(files: dict[str, Any], cli: Any) -> None:
    path = files["dir"] / "masked.tet"
    x = _x(files, "f32_both")
    r = cli("query", '{"dataset": "f32_both", "nan_mean": []}', "-t", path, "-x",
            "--mask-fill", "--format", "json")
    assert r.rc == 0, r.err
    ex = json.loads(r.out)["execution"]
    assert ex["operation_nan_mean"] == pytest.approx(np.nanmean(x), rel=1e-9)
    assert ex["mask_fill"] is True and ex["mask_fill_values"] == [1e20, -9999.0]
    r = cli("query", '{"dataset": "f32_both", "nan_count": []}', "-t", path, "-x",
            "--mask-fill", "-q")
    assert r.rc == 0 and r.out == (
        f"dataset=f32_both status=ok op=nan_count nan_count={int(np.isnan(x).sum())} "
        "elements=210 memory_strategy=streaming_fold mask_fill=[100000000000000000000,-9999]\n")
    rows = Path(os.environ["TET_QUERY_HISTORY_FILE"]).read_text().splitlines()
    assert json.loads(rows[-1])["query"] == {"dataset": "f32_both", "nan_count": [],
                                             "execution": {"mask_fill": True}}
    r = cli("query", '{"dataset": "f32_both", "nan_count": [], "execution": {"device": "cpu"}}',
            "-t", path, "-x", "--mask-fill", "-q")
    assert "mask_fill=[" in r.out
    r = cli("query", '{"dataset": "f32_both", "nan_count": []}', "-t", path, "-x", "-q")
    assert r.rc == 0 and "mask_fill" not in r.out
    r = cli("query", '{"dataset": "f32_both", "execution": 3}', "--mask-fill")
    assert r.rc == 1 and r.err == "error: validation: `execution` must be a JSON object\n"
    r = cli("query", '{"dataset": "f32_both", "execution": {"mask_fill": 1}}')
    assert r.rc == 1 and r.err == f"error: {BOOLEAN}\n"


def test_the_reference_engine_refuses_the_extension(tmp_path: Path) -> None:
    """Our documents with `mask_fill` are ours: tet-py 0.8.3 refuses the key (probed once
    more here when its environment is installed)."""
    with pytest.raises(tet.QueryError) as err:  # the rule the reference applies to the key
        parse_value({"dataset": "a", "execution": {"mask_fills": True}})
    # the reference's text, then our did-you-mean (which it lacks) for the near miss
    assert str(err.value) == (REFERENCE_REJECTION.replace("mask_fill", "mask_fills")
                              + " (did you mean `execution.mask_fill`?)")
    ref = REPO / ".venv-ref" / "bin" / "python"
    if not ref.exists():
        pytest.skip("the reference tet-py 0.8.3 is not installed in .venv-ref "
                    "(`make interop` installs it)")
    script = textwrap.dedent("""
        import numpy as np, tet
        p = tet.write_dataset("r.tet", "a", np.arange(6, dtype="f4"), attrs={"_FillValue": "3"})
        try:
            tet.open(p).query({"dataset": "a", "mean": [], "execution": {"mask_fill": True}})
        except Exception as exc:
            print(exc)
    """)
    out = subprocess.run([str(ref), "-I", "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, check=True)
    assert out.stdout.strip() == REFERENCE_REJECTION
