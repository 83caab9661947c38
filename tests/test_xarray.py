"""The xarray backend (`tet.xarray_backend`) and `tet.xarray_write.from_xarray`.

Covers:

- every interop file (except plan.tet, whose footer is broken on purpose) opens,
  each variable equals ``read_numpy``; dims, coords and attrs are the footer's
  (``dim_i`` without ``dim_names``, prefixed where lengths clash; axis-index coords
  keys; labels padded with ``""``);
- CF decoding from footer text attrs: ``_FillValue`` masking, ``scale_factor`` /
  ``add_offset`` unpacking, and ``mask_and_scale=False`` leaving the raw values;
- laziness: opening reads nothing; every index key (ints, negative ints, slices,
  steps, arrays, empty arrays, vectorised pointwise keys) is one read of exactly the
  elements it names (one C call: a box read, or the orthogonal gather for arrays) and
  equals NumPy, and ``isel``/``sel`` with lists equal xarray's answer on the same data
  in memory and from NetCDF; ``chunks={}`` gives dask arrays on the file's chunks;
- ``drop_variables``, ``group=``, dimension-length clashes, ``guess_can_open``
  by magic, ``engine="tet"`` through the entry point;
- ``from_xarray`` → ``open_dataset`` identical: several variables, shared dims,
  numeric/string/datetime64 index coordinates (footer labels, usable in tet label
  selections), non-index and long coordinates (datasets of their own), typed attrs
  and Dataset attrs, scalars, booleans, NaN data, dask-backed input written block by
  block, ``chunks=``, zstd, ``group=`` and ``mode="a"``; refusals for what tet
  cannot hold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest
import xarray as xr

import tet
from tet.kernels import TileTable
from tet.reader import Reader
from tet.selection import KeySelection
from tet.xarray_backend import TetBackendEntrypoint
from tet.xarray_write import from_xarray

from .conftest import INTEROP

ENGINE = TetBackendEntrypoint
INTEROP_FILES = sorted(p.name for p in INTEROP.glob("*.tet") if p.name != "plan.tet")


pytestmark = pytest.mark.usefixtures("fresh_cache")


class ReadCounter:
    """Every read the backend makes: ``(dataset name, kind, indices per axis)`` for each
    `Reader.read_key` (kind ``"box"`` for a box read, ``"index"`` for the orthogonal
    gather; the indices are the sorted distinct ones read), and the C calls
    (`TileTable.read`, `TileTable.read_index`) behind them, which must be one each."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, str, list[list[int]]]] = []
        self.kernel_calls: list[str] = []
        read_key, box_read, index_read = Reader.read_key, TileTable.read, TileTable.read_index

        def counting(r: Reader, dataset_id: int, sel: KeySelection, **kw: Any) -> Any:
            before = len(self.kernel_calls)
            kind = "box" if sel.box is not None else "index"
            axes = [[int(i) for i in a] for a in sel.axes]
            out = read_key(r, dataset_id, sel, **kw)
            assert self.kernel_calls[before:] == [kind]  # exactly one C call per read
            self.calls.append((r.catalog.datasets[dataset_id].name, kind, axes))
            return out

        def box(t: TileTable, *a: Any, **kw: Any) -> Any:
            self.kernel_calls.append("box")
            return box_read(t, *a, **kw)

        def index(t: TileTable, *a: Any, **kw: Any) -> Any:
            self.kernel_calls.append("index")
            return index_read(t, *a, **kw)

        monkeypatch.setattr(Reader, "read_key", counting)
        monkeypatch.setattr(TileTable, "read", box)
        monkeypatch.setattr(TileTable, "read_index", index)


# ---------------------------------------------------------------------------
# reading the interop corpus


def test_corpus_is_all_there() -> None:
    assert len(INTEROP_FILES) == 18


@pytest.mark.parametrize("name", INTEROP_FILES)
def test_interop_variables_equal_read_numpy(name: str) -> None:
    path = INTEROP / name
    ds = xr.open_dataset(path, engine=ENGINE, mask_and_scale=False)
    with tet.open(path) as f:
        assert sorted(map(str, ds.data_vars)) == sorted(f.datasets())
        for dsname in f.datasets():
            want = f.read_numpy(dsname)
            got = ds[dsname].values
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
            with np.errstate(invalid="ignore"):
                np.testing.assert_array_equal(ds[dsname].sum().values, want.sum())


@pytest.mark.parametrize("name", INTEROP_FILES)
def test_interop_dims_coords_attrs_from_footer(name: str) -> None:
    path = INTEROP / name
    ds = xr.open_dataset(path, engine=ENGINE, mask_and_scale=False)
    with tet.open(path) as f:
        for d in f.iter_datasets():
            var = ds[d.name]
            if d.dim_names is not None:
                assert var.dims == d.dim_names
            attrs = {k: (float(v) if k == "_FillValue" else v) for k, v in d.attrs.items()}
            assert var.attrs == attrs
            for axis, labels in d.coords.items():
                dim = var.dims[int(axis)] if axis.isdigit() else axis
                n = var.sizes[dim]
                assert ds[dim].values.tolist() == list(labels) + [""] * (n - len(labels))


def test_interop_dimension_naming() -> None:
    ds = xr.open_dataset(INTEROP / "multi_dataset.tet", engine=ENGINE)
    assert ds["temperature"].dims == ("y", "x")
    assert ds["counts"].dims == ("dim_0", "dim_1")
    assert ds["flags"].dims == ("flags_dim_0", "flags_dim_1")  # dim_0 is 10 long already
    assert ds["weights"].dims == ("weights_dim_0",)
    assert ds["weights_dim_0"].values.tolist() == ["w0", "w1", "w2", "w3", "w4"]
    assert ds.attrs == {}
    conv = xr.open_dataset(INTEROP / "converted_zarr_tensor_3d.tet", engine=ENGINE)
    assert all(conv[v].dims == ("dim_0", "dim_1", "dim_2") for v in conv.data_vars)
    assert conv.attrs == {}


def test_interop_labels_and_fill_decoding() -> None:
    ds = xr.open_dataset(INTEROP / "f64_3d_fill.tet", engine=ENGINE)
    raw = np.load(INTEROP / "f64_3d_fill.field.npy")
    assert (raw == -999.0).any()
    np.testing.assert_array_equal(ds["field"].values, np.where(raw == -999.0, np.nan, raw))
    assert "_FillValue" not in ds["field"].attrs
    assert ds["field"].encoding["_FillValue"] == -999.0
    assert ds["time"].values.tolist()[:2] == ["2024-01-01", "2024-01-02"]
    assert ds["field"].sel(time="2024-01-03").shape == (5, 6)
    obs = xr.open_dataset(INTEROP / "nan_inf_f32.tet", engine=ENGINE)["obs"]
    raw = np.load(INTEROP / "nan_inf_f32.obs.npy")
    assert obs.dtype == np.float32
    np.testing.assert_array_equal(obs.values, np.where(raw == -1.0, np.nan, raw))


def test_scale_offset_and_fill_from_text_attrs(tmp_path: Path) -> None:
    packed = np.array([[0, 10, -32768], [5, 7, 100]], dtype=np.int16)
    path = tet.write_dataset(tmp_path / "p.tet", "temp", packed, dim_names=["y", "x"],
                             attrs={"_FillValue": "-32768", "scale_factor": "0.5",
                                    "add_offset": "273.15", "units": "K"})
    ds = xr.open_dataset(path, engine=ENGINE)
    want = np.where(packed == -32768, np.nan, packed * 0.5 + 273.15)
    np.testing.assert_allclose(ds["temp"].values, want, rtol=0, atol=1e-12)
    assert ds["temp"].attrs == {"units": "K"}
    raw = xr.open_dataset(path, engine=ENGINE, mask_and_scale=False)["temp"]
    assert raw.dtype == np.int16
    np.testing.assert_array_equal(raw.values, packed)
    assert raw.attrs["_FillValue"] == -32768 and raw.attrs["scale_factor"] == 0.5


# ---------------------------------------------------------------------------
# laziness and indexing


@pytest.fixture
def cube(tmp_path: Path) -> tuple[Path, np.ndarray[Any, Any]]:
    a = np.arange(7 * 9 * 11, dtype=np.float64).reshape(7, 9, 11) * 1.5
    path = tet.write_dataset(tmp_path / "cube.tet", "v", a, chunk_shape=(3, 4, 5),
                             dim_names=["a", "b", "c"])
    return path, a


def _outer(a: np.ndarray[Any, Any], key: tuple[Any, ...]) -> np.ndarray[Any, Any]:
    """NumPy's answer to an orthogonal (xarray) key."""
    axes, keep = [], []
    for k, n in zip(key, a.shape):
        if isinstance(k, int):
            axes.append(np.array([k]))
        else:
            axes.append(np.arange(n)[k] if isinstance(k, slice) else np.asarray(k))
            keep.append(len(axes[-1]))
    out: np.ndarray[Any, Any] = a[np.ix_(*axes)].reshape(keep)
    return out


KEYS = [
    (1, slice(None), -1),
    (slice(1, 6, 2), slice(None, None, 3), [0, 4, 8]),
    ([5, 1, 1], 2, slice(-4, None)),
    (slice(None, None, -2), slice(2, 3), [10, 0, 5]),
    ([0, 2, 4, 6], [1, 7], [3]),
    (slice(4, 4), 0, slice(None)),
    (-7, -1, slice(None, None, 4)),
]


@pytest.mark.parametrize("key", KEYS)
def test_indexing_equals_numpy_with_one_read(cube: tuple[Path, np.ndarray[Any, Any]],
                                             key: tuple[Any, ...],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path, a = cube
    reads = ReadCounter(monkeypatch)
    var = xr.open_dataset(path, engine=ENGINE)["v"]
    assert reads.calls == []
    got = var[key].values
    want = _outer(a, key)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert len(reads.calls) == (0 if want.size == 0 else 1)
    if want.size:  # the read names exactly the elements of the key, axis by axis
        ((_, _, axes),) = reads.calls
        for d, (k, n) in enumerate(zip(key, a.shape)):
            named = sorted(set(np.arange(n)[[k] if isinstance(k, int) else k].tolist()))
            assert axes[d] == named, (d, axes[d], named)


def test_array_keys_read_only_their_elements(cube: tuple[Path, np.ndarray[Any, Any]],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """An index array reaches the C gather as the indices themselves (sorted by xarray),
    never as the bounding box they span; slices alone stay one box read."""
    path, a = cube
    reads = ReadCounter(monkeypatch)
    var = xr.open_dataset(path, engine=ENGINE)["v"]
    np.testing.assert_array_equal(var[[6, 0, 5], 3, 1:8:3].values, a[[6, 0, 5], 3, 1:8:3])
    assert reads.calls == [("v", "index", [[0, 5, 6], [3], [1, 4, 7]])]
    np.testing.assert_array_equal(var[[2, 4, 6], 3, 1:8:3].values, a[[2, 4, 6], 3, 1:8:3])
    assert reads.calls[1:] == [("v", "box", [[2, 4, 6], [3], [1, 4, 7]])]  # evenly spaced
    np.testing.assert_array_equal(var[1:3, ::-2, 4].values, a[1:3, ::-2, 4])
    assert reads.calls[2:] == [("v", "box", [[1, 2], [0, 2, 4, 6, 8], [4]])]
    np.testing.assert_array_equal(var[[0, 6, 0], :, [10, 0, 3]].values,
                                  a[np.ix_([0, 6, 0], range(9), [10, 0, 3])])
    assert reads.calls[3:] == [("v", "index", [[0, 6], list(range(9)), [0, 3, 10]])]


def _grid() -> xr.Dataset:
    rng = np.random.default_rng(15)
    return xr.Dataset(
        {"t": (("time", "x", "y"), rng.normal(size=(6, 40, 9))),
         "n": (("x",), np.arange(40, dtype=np.int32) * 3)},
        coords={"x": np.arange(40) * 0.5, "y": [f"y{i}" for i in range(9)]})


@pytest.mark.parametrize("pick", [
    lambda d: d.isel(x=[5, 1, 3]),
    lambda d: d.isel(x=[39, 0, 20, 20], y=[8, 2]),
    lambda d: d.isel(time=[4, 1], x=slice(None, None, -7), y=3),
    lambda d: d.sel(x=[2.5, 0.5, 19.5], y=["y7", "y0"]),
    lambda d: d.sel(x=slice(3.0, 12.0), y=["y4"]).isel(time=[-1, 0]),
    lambda d: d.isel(x=np.arange(40) % 3 == 0),
    lambda d: d.isel(x=xr.DataArray([3, 30, 7], dims="p"), y=xr.DataArray([1, 1, 8], dims="p")),
])
def test_isel_and_sel_with_lists_equal_xarray_on_the_same_data(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pick: Any) -> None:
    """The same selections on the same data in memory, from NetCDF and from tet: equal, and
    the tet backend reads each variable once, the arrays as index arrays (no box)."""
    mem = _grid()
    nc = tmp_path / "grid.nc"
    mem.to_netcdf(nc, engine="h5netcdf")
    path = from_xarray(mem, tmp_path / "grid.tet", chunks={"time": 2, "x": 8, "y": 4})
    want = pick(mem)
    with xr.open_dataset(nc, engine="h5netcdf") as from_nc:
        xr.testing.assert_identical(pick(from_nc).load(), want)
    ds = xr.open_dataset(path, engine=ENGINE)
    reads = ReadCounter(monkeypatch)
    got = pick(ds).load()
    xr.testing.assert_equal(got, want)
    for name in ("t", "n"):
        np.testing.assert_array_equal(got[name].values, want[name].values)
        assert got[name].dtype == want[name].dtype
    data = {name: axes for name, _, axes in reads.calls if name in ("t", "n")}
    assert sorted(name for name, _, _ in reads.calls if name in data) == ["n", "t"]
    # the positions each dim's selection names, as xarray picks them in memory
    where = pick(mem.assign({f"i_{dim}": (dim, np.arange(n)) for dim, n in mem.sizes.items()}))
    named = {dim: sorted(set(np.ravel(where[f"i_{dim}"].values).tolist())) for dim in mem.sizes}
    assert data["t"] == [named["time"], named["x"], named["y"]]  # those elements, not a box
    assert data["n"] == [named["x"]]


def test_vectorised_and_label_indexing(cube: tuple[Path, np.ndarray[Any, Any]]) -> None:
    path, a = cube
    var = xr.open_dataset(path, engine=ENGINE)["v"]
    pts = var.isel(a=xr.DataArray([0, 3, 6], dims="p"), c=xr.DataArray([10, 2, 2], dims="p"))
    np.testing.assert_array_equal(pts.values, a[[0, 3, 6], :, [10, 2, 2]])
    np.testing.assert_array_equal(var.isel(b=slice(2, None, 3)).mean("a").values,
                                  a[:, 2::3].mean(axis=0))


def test_chunks_follow_the_file(cube: tuple[Path, np.ndarray[Any, Any]]) -> None:
    path, a = cube
    ds = xr.open_dataset(path, engine=ENGINE, chunks={})
    var = ds["v"]
    assert var.chunks == ((3, 3, 1), (4, 4, 1), (5, 5, 1))
    assert var.encoding["preferred_chunks"] == {"a": 3, "b": 4, "c": 5}
    np.testing.assert_allclose(float(var.mean().compute()), a.mean(), rtol=1e-13)
    np.testing.assert_array_equal(var.max("b").compute().values, a.max(axis=1))
    wide = xr.open_dataset(path, engine=ENGINE, chunks={"a": 6})["v"]
    assert wide.chunks is not None and wide.chunks[0] == (6, 1)


def test_drop_variables_and_groups(tmp_path: Path) -> None:
    path = tmp_path / "g.tet"
    with tet.TetWriter.create(path) as w:
        w.write_dataset("top", np.arange(3.0), dim_names=["x"])
        w.write_dataset("a/c", np.arange(4.0), dim_names=["x"])  # x is 4 long here
        w.write_dataset("a/b/u", np.ones((2, 3)), dim_names=["y", "x"])
        w.write_dataset("a/b/w", np.zeros(3, np.int32), dim_names=["x"],
                        attrs={"units": "m"})
    sub = xr.open_dataset(path, engine=ENGINE, group="a/b")
    assert sorted(map(str, sub.data_vars)) == ["u", "w"]
    assert sub["w"].attrs == {"units": "m"}
    np.testing.assert_array_equal(sub["u"].values, np.ones((2, 3)))
    assert list(xr.open_dataset(path, engine=ENGINE, group="/a/").data_vars) == ["c"]
    assert list(xr.open_dataset(path, engine=ENGINE, group="").data_vars) == ["top"]
    with pytest.raises(ValueError, match=r"dimension 'x' has length 3 in 'top' but 4 in 'a/c'; "
                                         r"open them apart with drop_variables"):
        xr.open_dataset(path, engine=ENGINE)
    every = xr.open_dataset(path, engine=ENGINE, drop_variables="a/c")
    assert sorted(map(str, every.data_vars)) == ["a/b/u", "a/b/w", "top"]
    assert list(xr.open_dataset(path, engine=ENGINE, group="a/b",
                                drop_variables=["u"]).data_vars) == ["w"]
    with pytest.raises(OSError, match=r"group 'nope' not found in .*g\.tet "
                                      r"\(groups: 'a', 'a/b'\)"):
        xr.open_dataset(path, engine=ENGINE, group="nope")


def test_guess_can_open_by_magic(tmp_path: Path) -> None:
    entry = TetBackendEntrypoint()
    real = tet.write_dataset(tmp_path / "r.tet", "a", np.zeros(2))
    renamed = real.rename(tmp_path / "r.data")
    fake = tmp_path / "fake.tet"
    fake.write_text("not a tet file")
    assert entry.guess_can_open(renamed)
    assert entry.guess_can_open(str(renamed))
    assert not entry.guess_can_open(fake)
    assert entry.guess_can_open(tmp_path / "not-yet.tet")
    assert not entry.guess_can_open(tmp_path / "not-yet.nc")
    assert not entry.guess_can_open(b"TETR")
    ds = xr.open_dataset(renamed, engine=ENGINE)
    assert list(ds.data_vars) == ["a"]


def test_engine_name_tet_opens_via_entry_point(cube: tuple[Path, np.ndarray[Any, Any]]) -> None:
    # Needs the `xarray.backends` entry point of an installed tet-arrays.
    path, a = cube
    ds = xr.open_dataset(path, engine="tet")
    np.testing.assert_array_equal(ds["v"].values, a)
    assert xr.open_dataset(path)["v"].dims == ("a", "b", "c")  # found by guess_can_open


def test_open_refuses_file_objects(cube: tuple[Path, np.ndarray[Any, Any]]) -> None:
    path, _ = cube
    with path.open("rb") as fh, pytest.raises(TypeError, match="opens files by path"):
        xr.open_dataset(fh, engine=ENGINE)


# ---------------------------------------------------------------------------
# from_xarray round trips


def sample_dataset() -> xr.Dataset:
    rng = np.random.default_rng(3)
    time = pd.date_range("2024-01-01", periods=5, freq="6h")
    temp = rng.standard_normal((5, 4, 3)).astype(np.float32)
    temp[1, 2, 0] = np.nan
    ds = xr.Dataset(
        {
            "temperature": (("time", "station", "level"), temp,
                            {"units": "K", "long_name": "air temperature",
                             "valid_range": np.array([150.0, 350.0], dtype=np.float32),
                             "n_sensors": 3, "calibrated": True, "gain": 1.25,
                             "history": ["made", "checked"], "comment": ""}),
            "pressure": (("time", "level"), rng.random((5, 3)) * 1000, {"units": "hPa"}),
            "count": (("station",), np.array([3, 0, 7, 2], dtype=np.int64)),
            "flag": (("time", "station"), rng.random((5, 4)) > 0.5),
            "observed": (("time",), time + pd.Timedelta("15min")),
            "elapsed": (("time",), (time - time[0]).values),
            "ensemble": ((), np.int32(12)),
        },
        coords={
            "time": time,
            "station": ["oslo", "bergen", "tromsø", "stavanger"],
            "level": [1000.0, 850.5, 500.25],
            "elevation": (("station",), np.array([23.0, 12.0, 100.0, 9.5]),
                          {"units": "m"}),
        },
        attrs={"title": "round trip", "version": 2, "ratio": 0.5,
               "sources": ["a", "b"]},
    )
    ds["level"].attrs = {"units": "hPa", "positive": "down"}
    return ds


def test_round_trip_identical(tmp_path: Path) -> None:
    ds = sample_dataset()
    path = from_xarray(ds, tmp_path / "rt.tet")
    back = xr.open_dataset(path, engine=ENGINE)
    xr.testing.assert_identical(back.load(), ds)
    chunked = xr.open_dataset(path, engine=ENGINE, chunks={})
    assert chunked["temperature"].chunks is not None
    xr.testing.assert_identical(chunked.compute(), ds)


def test_round_trip_footer_layout(tmp_path: Path) -> None:
    path = from_xarray(sample_dataset(), tmp_path / "rt.tet")
    with tet.open(path) as f:
        names = f.datasets()
        # index coordinates are labels, not datasets; the others are datasets
        assert "time" not in names and "station" not in names and "level" not in names
        assert "elevation" in names
        t = f.dataset("temperature")
        assert t.dim_names == ("time", "station", "level")
        assert t.coords["station"] == ("oslo", "bergen", "tromsø", "stavanger")
        assert t.coords["level"] == ("1000.0", "850.5", "500.25")
        assert t.coords["time"][:2] == ("2024-01-01T00:00", "2024-01-01T06:00")
        assert t.attrs["units"] == "K" and t.attrs["_FillValue"] == "NaN"
        assert t.extra["encoding"] == {"_FillValue": t.extra["encoding"]["_FillValue"]}
        assert np.isnan(t.extra["encoding"]["_FillValue"])  # encoding: not an attr in xarray
        # typed metadata in metadata.tet, never the reserved _tet_* attrs of old
        ext = f.catalog.metadata["tet"]
        assert ext["coords"]["level"] == {"dtype": "float64",
                                          "attrs": {"units": "hPa", "positive": "down"}}
        assert "station" not in ext["coords"]  # plain strings need no entry
        assert f.file_attrs["title"] == "round trip" and f.file_attrs["version"] == 2
        assert t.typed_attrs["n_sensors"] == 3 and t.attrs["n_sensors"] == "3"
        assert t.typed_attrs["valid_range"].dtype == np.float32
        assert f.dataset("ensemble").extra == {"shape": []}
        assert f.dataset("ensemble").shape == (1,)
        assert not any(k.startswith("_tet_") for d in f.iter_datasets() for k in d.attrs)
        assert f.dataset("flag").numpy_dtype == np.uint8
        # labels drive tet's own label selections and null_count finds the NaN fill
        got = f.read_numpy("temperature", [{"start_label": "2024-01-01T06:00"},
                                           {"start_label": "bergen", "stop_label": "stavanger"},
                                           {}])
        np.testing.assert_array_equal(got, sample_dataset()["temperature"].values[1:, 1:3])
        assert f.null_count("temperature") == 1.0


def test_round_trip_dask_input_chunks_and_codec(tmp_path: Path) -> None:
    ds = sample_dataset().chunk({"time": 2, "station": 3})
    path = from_xarray(ds, tmp_path / "d.tet", codec="zstd", chunks={"level": 1})
    with tet.open(path) as f:
        assert f.dataset("temperature").chunk_shape == (2, 3, 1)
        assert f.dataset("pressure").chunk_shape == (2, 1)
        assert f.dataset("elevation").chunk_shape == (3,)
        assert {c["codec"] for c in f.summary()["chunks"]} == {1}  # zstd
    xr.testing.assert_identical(xr.open_dataset(path, engine=ENGINE).load(), ds.compute())


def test_round_trip_reopened_dataset_keeps_chunking(tmp_path: Path) -> None:
    first = from_xarray(sample_dataset(), tmp_path / "a.tet", chunks={"time": 2})
    again = from_xarray(xr.open_dataset(first, engine=ENGINE), tmp_path / "b.tet")
    with tet.open(again) as f:
        assert f.dataset("temperature").chunk_shape == (2, 4, 3)
    xr.testing.assert_identical(xr.open_dataset(again, engine=ENGINE).load(), sample_dataset())


def test_long_coordinates_are_datasets(tmp_path: Path) -> None:
    x = np.linspace(0.0, 1.0, 100)
    ds = xr.Dataset({"v": (("x", "t"), np.ones((100, 2)))},
                    coords={"x": x, "t": [1, 2]})
    path = from_xarray(ds, tmp_path / "long.tet")
    with tet.open(path) as f:
        assert sorted(f.datasets()) == ["v", "x"]
        assert f.dataset("v").coords == {"t": ("1", "2")}
    back = xr.open_dataset(path, engine=ENGINE)
    xr.testing.assert_identical(back.load(), ds)
    assert back.indexes["x"].equals(ds.indexes["x"])


@pytest.mark.parametrize("ds", [
    # a coordinate no data variable uses (listed in the Dataset's `coordinates` attr)
    xr.Dataset({"v": (("x",), np.arange(3.0))},
               coords={"extra": (("z",), [1, 2]), "x": ["a", "b", "c"]}),
    # coordinates only
    xr.Dataset(coords={"t": np.arange(3)}),
    # nanosecond dates with NaT as labels, unsigned data
    xr.Dataset({"n": (("k",), np.array([1, 2], dtype=np.uint32))},
               coords={"k": np.array(["2024-01-01T00:00:00.000000001", "NaT"],
                                     dtype="M8[ns]")}),
], ids=["orphan-coordinate", "coords-only", "nat-labels"])
def test_round_trip_edge_cases(tmp_path: Path, ds: xr.Dataset) -> None:
    path = from_xarray(ds, tmp_path / "edge.tet")
    xr.testing.assert_identical(xr.open_dataset(path, engine=ENGINE).load(), ds)


def test_groups_and_append(tmp_path: Path) -> None:
    path = tmp_path / "groups.tet"
    one = xr.Dataset({"a": (("x",), np.arange(3.0))}, coords={"x": [10, 20, 30]},
                     attrs={"name": "one"})
    two = xr.Dataset({"a": (("x",), np.arange(5, dtype=np.int32))}, attrs={"name": "two"})
    from_xarray(one, path, group="runs/one")
    from_xarray(two, path, group="runs/two", mode="a")
    with tet.open(path) as f:
        assert f.datasets() == ["runs/one/a", "runs/two/a"]
    xr.testing.assert_identical(
        xr.open_dataset(path, engine=ENGINE, group="runs/one").load(), one)
    xr.testing.assert_identical(
        xr.open_dataset(path, engine=ENGINE, group="runs/two").load(), two)


def test_from_xarray_refusals(tmp_path: Path) -> None:
    mixed = xr.Dataset({"w": (("n",), np.array(["a", 1], dtype=object))})
    with pytest.raises(TypeError, match=r"variable 'w' has dtype object with values that are "
                                        r"neither all strings nor all bytes, which tet cannot "
                                        r"store"):
        from_xarray(mixed, tmp_path / "w.tet")
    wavy = xr.Dataset({"c": (("n",), np.array([1 + 2j, 3j]))})
    with pytest.raises(TypeError, match=r"complex128"):
        from_xarray(wavy, tmp_path / "c.tet")
    odd = xr.Dataset({"v": (("n",), np.zeros(2), {"when": pd.Timestamp("2024-01-01")})})
    with pytest.raises(TypeError, match=r"variable 'v': attribute 'when': cannot store"):
        from_xarray(odd, tmp_path / "o.tet")
    with pytest.raises(TypeError, match=r"Dataset attrs: attribute 'when': cannot store"):
        from_xarray(xr.Dataset({"v": ("n", [1.0])}, attrs={"when": pd.Timestamp(0)}),
                    tmp_path / "g.tet")
    with pytest.raises(TypeError, match=r"from_xarray writes an xarray Dataset or DataArray, "
                                        r"not ndarray"):
        from_xarray(np.zeros(2), tmp_path / "n.tet")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode must be 'w' or 'a'"):
        from_xarray(mixed, tmp_path / "x.tet", mode="r")
    assert not any(tmp_path.glob("*.tet"))  # nothing half-written
