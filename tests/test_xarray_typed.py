"""The xarray backend and `from_xarray` on the footer's typed metadata (``metadata.tet``).

Covers:

- ``from_xarray`` → ``open_dataset`` identical for typed attrs of every kind, file
  attrs, 100 string station names, byte strings (also one byte wide), int8, 0-d
  variables (numbers, strings, bytes), NaN, datetimes, timedeltas, times kept numeric
  (``decode_times=False``, units/calendar kept), cftime noleap times, long and
  non-index coordinates; the footer holds them as the design says (text as ``u8``
  with a char axis, int8 as i16 marked, 0-d as ``shape: []``, no ``_tet_*`` keys);
- DataArray input (named, unnamed, named like a coordinate) read back by
  ``xr.open_dataarray``;
- ``extra["encoding"]`` keys are ``Variable.encoding``, not attrs, and never decoded
  again; reference-convert look-alikes (float data with ``scale_factor`` text, no typed
  metadata) are not scaled twice, other writers' are; legacy files with the reserved
  ``_tet_*`` attrs still read;
- each variable's encoding (``original_shape``, ``chunksizes``, ``dtype``, ``source``)
  lets ``open_mfdataset(...).to_netcdf(...)`` work;
- ``open_datatree`` / ``open_groups``: the group hierarchy, root attrs the file attrs;
- text read lazily, hostile text/0-d markers as `CatalogError`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest
import xarray as xr

import tet
from tests.producers import EXTRA_PRODUCERS, PRODUCERS, expected
from tests.test_xarray import ReadCounter
from tet.errors import CatalogError
from tet.text import encode_text
from tet.xarray_write import DATAARRAY_VARIABLE, from_xarray

ENGINE = "tet"
NUMERIC = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
           "float16", "float32", "float64"]


pytestmark = pytest.mark.usefixtures("fresh_cache")


def typed_attrs() -> dict[str, Any]:
    attrs: dict[str, Any] = {f"scalar_{t}": np.dtype(t).type(3) for t in NUMERIC}
    attrs.update({f"array_{t}": np.arange(4).astype(t) for t in NUMERIC})
    attrs.update({
        "flag": True, "np_flag": np.bool_(False), "flags": np.array([True, False]),
        "raw": b"\x00\xffab", "np_raw": np.bytes_(b"xy"), "word": "kelvin", "empty": "",
        "numbers": [1, 2, 3], "words": ["a", "b"], "pair": (1, "a"), "nested": {"k": [1, None]},
        "nothing": [], "py_nan": float("nan"), "f32_nan": np.float32(np.nan),
        "inf": np.float64(-np.inf), "big": 2**63 - 1, "ratio": 0.1, "count": 7,
        "names": np.array(["ab", "c"]), "matrix": np.arange(6.0).reshape(2, 3),
        "long": "y" * 3000, "valid_range": np.array([150.0, 350.0], dtype=np.float32),
    })
    return attrs


STATIONS = [f"station-{i:03d}" for i in range(100)]


def rich_dataset() -> xr.Dataset:
    rng = np.random.default_rng(5)
    time = pd.date_range("2024-01-01", periods=70, freq="h")
    v = rng.standard_normal((70, 100)).astype(np.float32)
    v[3, 7] = np.nan
    return xr.Dataset(
        {
            "v": (("time", "station"), v, typed_attrs()),
            "code": (("station",), np.array([s.encode() for s in STATIONS])),
            "letter": (("k",), np.array([b"a", b"b", b"c"])),
            "small": (("station",), (np.arange(100) - 50).astype(np.int8), {"units": "1"}),
            "crs": ((), np.int32(0), {"grid_mapping_name": "latitude_longitude",
                                      "semi_major_axis": 6378137.0}),
            "label": ((), np.array("hello wörld")),
            "tag": ((), np.array(b"bytes")),
            "elapsed": (("time",), (time - time[0]).values),
            "prose": (("k",), np.array(["x" * 2000, "", "é"])),
            "lag": (("lag",), pd.to_timedelta([0, 30, 90], unit="min").values),
        },
        coords={
            "time": time, "station": STATIONS, "k": [1, 2, 3],
            "lat": (("station",), np.linspace(-90.0, 90.0, 100), {"units": "degrees_north"}),
            "alias": (("station",), np.array([s.upper() for s in STATIONS], dtype=object)),
        },
        attrs={"title": "typed", "realization": np.int32(1), "Conventions": "CF-1.8",
               "levels": np.array([1.5, 2.5]), "history": ["made", "checked"]},
    )


def test_round_trip_identical_typed(tmp_path: Path) -> None:
    ds = rich_dataset()
    path = from_xarray(ds, tmp_path / "rich.tet")
    back = xr.open_dataset(path, engine=ENGINE)
    xr.testing.assert_identical(back.load(), ds)
    for name, dtype in [("code", "S11"), ("letter", "S1"), ("small", "int8"), ("crs", "int32"),
                        ("label", "U12"), ("tag", "S5"), ("prose", "U2000"),
                        ("station", "U11"), ("alias", "U11")]:
        assert back[name].dtype == np.dtype(dtype), name
    assert back["crs"].shape == () and back["label"].values.item() == "hello wörld"
    assert back["v"].attrs["scalar_uint64"].dtype == np.uint64
    assert back["v"].attrs["matrix"].shape == (2, 3)
    assert back["v"].attrs["pair"] == (1, "a") and back["v"].attrs["raw"] == b"\x00\xffab"
    assert isinstance(back.attrs["realization"], np.int32)
    assert set(back.dims) == {"time", "station", "k", "lag"}  # no char axes
    chunked = xr.open_dataset(path, engine=ENGINE, chunks={})
    xr.testing.assert_identical(chunked.compute(), ds)


def test_footer_layout_of_typed_round_trip(tmp_path: Path) -> None:
    path = from_xarray(rich_dataset(), tmp_path / "rich.tet")
    with tet.open(path) as f:
        assert f.file_attrs["realization"] == 1 and f.file_attrs["title"] == "typed"
        station = f.dataset("station")
        assert (station.numpy_dtype, station.shape) == (np.uint8, (100, 11))
        assert station.dim_names == ("station", "station_strlen")
        assert station.extra == {"text": {"width": 11, "kind": "str"}}
        assert f.dataset("code").extra == {"text": {"width": 11, "kind": "bytes"}}
        small = f.dataset("small")
        assert small.numpy_dtype == np.int16 and small.extra == {"encoding": {"dtype": "int8"}}
        np.testing.assert_array_equal(f.read_numpy("small"), np.arange(100) - 50)
        crs = f.dataset("crs")
        assert crs.shape == (1,) and crs.extra == {"shape": []} and crs.dim_names is None
        assert f.dataset("label").shape == (12,)  # 0-d text: just the char axis
        v = f.dataset("v")
        assert v.attrs["valid_range"] == "[150, 350]"  # display text for other readers
        assert v.typed_attrs["valid_range"].dtype == np.float32
        assert v.coords == {}  # 100 stations and 70 hours: datasets, not labels
        assert f.dataset("lag").coords == {} and "k" not in f.datasets()
        assert f.dataset("letter").coords == {"k": ("1", "2", "3")}
        assert f.catalog.metadata["tet"]["coords"] == {"k": {"dtype": "int64"}}
        every = [k for d in f.iter_datasets() for k in d.attrs]
        assert not any(k.startswith("_tet_") for k in every)
        assert "_tet_" not in json.dumps(f.catalog.metadata)


def test_text_reads_lazily_and_equals_numpy(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = from_xarray(rich_dataset(), tmp_path / "rich.tet", chunks={"station": 30})
    reads = ReadCounter(monkeypatch)
    code = xr.open_dataset(path, engine=ENGINE)["code"]
    assert code.encoding["chunksizes"] == (30,) and code.encoding["original_shape"] == (100,)
    n = len(reads.calls)  # the index coordinates (station, time) are read at open
    want = np.array([s.encode() for s in STATIONS])
    np.testing.assert_array_equal(code[5:60:7].values, want[5:60:7])
    np.testing.assert_array_equal(code[[3, 1, 99]].values, want[[3, 1, 99]])
    assert code[17].values.item() == b"station-017"
    assert len(reads.calls) == n + 3
    assert reads.calls[n] == ("code", "box", [list(range(5, 60, 7)), list(range(11))])
    assert reads.calls[n + 1] == ("code", "index", [[1, 3, 99], list(range(11))])


def test_utf8_encoded_bytes_read_as_strings(tmp_path: Path) -> None:
    raw, entry = encode_text(np.array(["Zürich".encode(), b"Oslo"]))
    path = tmp_path / "enc.tet"
    with tet.TetWriter.create(path) as w:
        w.write_dataset("city", raw, dim_names=["n", "n_strlen"], attrs={"_Encoding": "utf-8"},
                        extra={"text": entry})
    city = xr.open_dataset(path, engine=ENGINE)["city"]
    assert city.values.tolist() == ["Zürich", "Oslo"] and city.dtype.kind == "U"
    assert city.attrs == {} and city.encoding["_Encoding"] == "utf-8"


def test_decode_times_false_keeps_units_and_calendar(tmp_path: Path) -> None:
    time = xr.date_range("2001-01-01", periods=80, freq="D", calendar="noleap", use_cftime=True)
    src = xr.Dataset({"tas": (("time",), np.linspace(250.0, 300.0, 80).astype(np.float32))},
                     coords={"time": time})
    src["time"].encoding = {"units": "days since 2000-01-01", "calendar": "noleap"}
    src.to_netcdf(tmp_path / "src.nc")
    raw = xr.open_dataset(tmp_path / "src.nc", decode_times=False).load()
    assert raw["time"].attrs == {"units": "days since 2000-01-01", "calendar": "noleap"}
    path = from_xarray(raw, tmp_path / "raw.tet")
    back = xr.open_dataset(path, engine=ENGINE, decode_times=False).load()
    xr.testing.assert_identical(back, raw)
    decoded = xr.open_dataset(path, engine=ENGINE).load()
    xr.testing.assert_identical(decoded, xr.open_dataset(tmp_path / "src.nc").load())
    assert type(decoded["time"].values[0]).__name__ == "DatetimeNoLeap"


@pytest.mark.parametrize("periods", [12, 80], ids=["labels-length", "dataset-length"])
def test_cftime_noleap_round_trip(tmp_path: Path, periods: int) -> None:
    time = xr.date_range("2000-02-27", periods=periods, freq="D", calendar="noleap",
                         use_cftime=True)
    ds = xr.Dataset({"pr": (("time",), np.arange(periods, dtype=np.float64))},
                    coords={"time": time, "time_bnds": (("time", "nb"), np.zeros((periods, 2)))})
    path = from_xarray(ds, tmp_path / "cf.tet")
    xr.testing.assert_identical(xr.open_dataset(path, engine=ENGINE).load(), ds)


def test_dask_int8_and_text_input(tmp_path: Path) -> None:
    ds = xr.Dataset({"i": (("n",), np.arange(-60, 60, dtype=np.int8)),
                     "s": (("n",), np.array([f"v{i}" for i in range(120)]))}).chunk({"n": 50})
    path = from_xarray(ds, tmp_path / "d.tet")
    with tet.open(path) as f:
        assert f.dataset("i").chunk_shape == (50,) and f.dataset("s").chunk_shape == (50, 4)
    back = xr.open_dataset(path, engine=ENGINE).load()
    xr.testing.assert_identical(back, ds.compute())
    assert back["i"].dtype == np.int8 and back["i"].encoding["dtype"] == np.int8


# ---------------------------------------------------------------------------
# DataArray input


@pytest.mark.parametrize("name", [None, "temperature", "x"], ids=["unnamed", "named", "coord"])
def test_dataarray_round_trip(tmp_path: Path, name: str | None) -> None:
    da = xr.DataArray(np.arange(6.0).reshape(2, 3), dims=("y", "x"),
                      coords={"x": [10, 20, 30]}, name=name, attrs={"units": "m"})
    path = from_xarray(da, tmp_path / "da.tet")
    with tet.open(path) as f:
        assert f.datasets() == [DATAARRAY_VARIABLE if name in (None, "x") else name]
    back = xr.open_dataarray(path, engine=ENGINE).load()
    xr.testing.assert_identical(back, da)
    assert back.name == name


# ---------------------------------------------------------------------------
# encoding and the reference's convert


def _decoded_era5(path: Path, *, tool: str, extra: dict[str, Any] | None,
                  attrs: dict[str, Any], odd: float = 250.0) -> np.ndarray[Any, Any]:
    """A float32 field as convert leaves a packed int16 source: decoded, NaN where
    missing, the encoding listed in its attrs."""
    data = np.array([[273.15, 280.5, np.nan], [odd, 290.25, 300.0]], dtype=np.float32)
    with tet.TetWriter.create(path, tool=tool) as w:
        w.write_dataset("t2m", data, dim_names=["lat", "lon"], attrs=attrs, extra=extra)
    return data


CF_TEXT = {"units": "K", "scale_factor": "0.01", "add_offset": "273.15", "_FillValue": "-32767"}


def test_encoding_keys_go_to_encoding_not_attrs(tmp_path: Path) -> None:
    enc = {"scale_factor": np.float64(0.01), "add_offset": np.float64(273.15),
           "_FillValue": np.int16(-32767), "dtype": "int16"}
    data = _decoded_era5(tmp_path / "e.tet", tool="tet convert", extra={"encoding": enc},
                         attrs=CF_TEXT)
    for mask in (True, False):
        t2m = xr.open_dataset(tmp_path / "e.tet", engine=ENGINE, mask_and_scale=mask)["t2m"]
        np.testing.assert_array_equal(t2m.values, data)  # decoded once, by convert
        assert t2m.attrs == {"units": "K"}
        assert t2m.encoding["scale_factor"] == 0.01 and t2m.encoding["add_offset"] == 273.15
        assert t2m.encoding["_FillValue"] == -32767
        assert t2m.encoding["dtype"] == np.int16 and t2m.dtype == np.float32
    # written out, xarray packs it again as the source was
    ds = xr.open_dataset(tmp_path / "e.tet", engine=ENGINE)
    ds.to_netcdf(tmp_path / "e.nc")
    stored = xr.open_dataset(tmp_path / "e.nc", mask_and_scale=False)["t2m"]
    assert stored.dtype == np.int16 and stored.attrs["scale_factor"] == 0.01
    np.testing.assert_allclose(xr.open_dataset(tmp_path / "e.nc")["t2m"].values, data,
                               atol=0.006)


def test_reference_convert_output_is_not_scaled_twice(tmp_path: Path) -> None:
    data = _decoded_era5(tmp_path / "ref.tet", tool="tet convert", extra=None, attrs=CF_TEXT,
                         odd=-32767.0)
    t2m = xr.open_dataset(tmp_path / "ref.tet", engine=ENGINE)["t2m"]
    np.testing.assert_array_equal(t2m.values, data)  # -32767.0 is a value, not a fill here
    assert t2m.attrs == {"units": "K"}
    assert t2m.encoding["scale_factor"] == np.float32(0.01)
    assert t2m.encoding["_FillValue"] == -32767
    # another writer's float data with the same text: CF-encoded, xarray decodes it
    _decoded_era5(tmp_path / "other.tet", tool="tet-py", extra=None, attrs=CF_TEXT,
                  odd=-32767.0)
    other = xr.open_dataset(tmp_path / "other.tet", engine=ENGINE)["t2m"].values
    want = np.where(data == -32767.0, np.nan, data * np.float32(0.01) + np.float32(273.15))
    np.testing.assert_allclose(other, want, rtol=1e-6)


def test_legacy_reserved_attrs_still_read(tmp_path: Path) -> None:
    """A file as from_xarray wrote them before the typed metadata: reserved attrs."""
    path = tmp_path / "legacy.tet"
    with tet.TetWriter.create(path) as w:
        w.write_dataset(
            "temperature", np.array([[1.0, np.nan], [3.0, 4.0]]), dim_names=["time", "level"],
            coords={"level": ["1000.0", "850.5"]},
            attrs={"units": "K", "_FillValue": "NaN", "valid_range": "[150.0, 350.0]",
                   "n_sensors": "3", "pair": "[1, \"a\"]",
                   "_tet_types": json.dumps({"valid_range": "float32[]", "n_sensors": "json",
                                             "pair": "tuple", "_tet_global:version": "int32"}),
                   "_tet_global:title": "old", "_tet_global:version": "2",
                   "_tet_coord:level": json.dumps({"dtype": "float64",
                                                   "attrs": {"units": "hPa", "n": "1"},
                                                   "types": {"n": "json"}})})
        w.write_dataset("ensemble", np.array([12], dtype=np.int32),
                        attrs={"_tet_scalar": "true"})
    back = xr.open_dataset(path, engine=ENGINE).load()
    want = xr.Dataset(
        {"temperature": (("time", "level"), np.array([[1.0, np.nan], [3.0, 4.0]]),
                         {"units": "K", "valid_range": np.array([150, 350], np.float32),
                          "n_sensors": 3, "pair": (1, "a")}),
         "ensemble": ((), np.int32(12))},
        coords={"level": ("level", [1000.0, 850.5], {"units": "hPa", "n": 1})},
        attrs={"title": "old", "version": np.int32(2)})
    xr.testing.assert_identical(back, want)
    assert isinstance(back.attrs["version"], np.int32)
    assert back["temperature"].encoding["_FillValue"] != back["temperature"].encoding[
        "_FillValue"]  # NaN, decoded by xarray from the text


# ---------------------------------------------------------------------------
# open_mfdataset → to_netcdf


def test_open_mfdataset_to_netcdf(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    time = pd.date_range("2024-03-01", periods=10, freq="D")
    full = xr.Dataset(
        {"v": (("time", "station"), rng.random((10, 100)).astype(np.float32), {"units": "K"}),
         "height": (("station",), rng.random(100)),
         "name": (("station",), np.array([s.encode() for s in STATIONS]))},
        coords={"time": time, "station": STATIONS}, attrs={"title": "parts"})
    paths = [from_xarray(full.isel(time=slice(0, 4)), tmp_path / "a.tet", chunks={"time": 2}),
             from_xarray(full.isel(time=slice(4, None)), tmp_path / "b.tet")]
    one = xr.open_dataset(paths[0], engine=ENGINE)
    enc = one["v"].encoding
    assert enc["original_shape"] == (4, 100) and enc["chunksizes"] == (2, 100)
    assert enc["dtype"] == np.float32 and enc["source"] == str(paths[0])
    assert one["name"].encoding["original_shape"] == (100,)
    merged = xr.open_mfdataset(paths, engine=ENGINE, combine="by_coords", data_vars="all",
                               coords="minimal", compat="override", join="outer")
    assert merged["height"].dims == ("time", "station")  # grown: its chunksizes no longer fit
    merged.to_netcdf(tmp_path / "all.nc")
    back = xr.open_dataset(tmp_path / "all.nc").load()
    xr.testing.assert_identical(back, merged.load())
    xr.testing.assert_identical(back[["v"]], full[["v"]])


# ---------------------------------------------------------------------------
# groups: open_datatree, open_groups


def _tree_file(path: Path) -> dict[str, xr.Dataset]:
    parts = {
        "/": xr.Dataset({"mask": (("y",), np.array([1, 0, 1], dtype=np.uint8))},
                        attrs={"title": "tree", "version": np.int16(3)}),
        "/model/run1": xr.Dataset({"t": (("time",), np.arange(4.0))},
                                  coords={"time": np.arange(4)}, attrs={"member": 1}),
        "/model/run2": xr.Dataset({"t": (("time",), np.arange(5.0)),
                                   "name": ((), np.array("second"))},
                                  coords={"time": np.arange(5)}, attrs={"member": 2}),
        "/obs": xr.Dataset({"station": (("s",), np.array(STATIONS))}),
    }
    from_xarray(parts["/"], path)
    for group, ds in parts.items():
        if group != "/":
            from_xarray(ds, path, group=group, mode="a")
    return parts


def test_open_datatree_gives_the_groups(tmp_path: Path) -> None:
    path = tmp_path / "tree.tet"
    parts = _tree_file(path)
    with tet.open(path) as f:
        assert f.datasets() == ["mask", "model/run1/t", "model/run2/t", "model/run2/name",
                                "obs/station"]
        assert f.file_attrs == {"title": "tree", "version": 3}
    tree = xr.open_datatree(path, engine=ENGINE)
    assert sorted(node.path for node in tree.subtree) == [
        "/", "/model", "/model/run1", "/model/run2", "/obs"]
    assert tree.attrs == {"title": "tree", "version": 3}
    assert isinstance(tree.attrs["version"], np.int16)
    assert tree["model"].to_dataset().variables == {} and tree["model"].attrs == {}
    for group, ds in parts.items():
        xr.testing.assert_identical(tree[group].to_dataset(inherit=False).load(), ds)
    groups = xr.open_groups(path, engine=ENGINE)
    assert sorted(groups) == ["/", "/model", "/model/run1", "/model/run2", "/obs"]
    xr.testing.assert_identical(groups["/model/run2"].load(), parts["/model/run2"])
    sub = xr.open_datatree(path, engine=ENGINE, group="model")
    assert sorted(node.path for node in sub.subtree) == ["/", "/run1", "/run2"]
    assert list(sub["run1"].data_vars) == ["t"]
    dropped = xr.open_datatree(path, engine=ENGINE, drop_variables=["name"])
    assert list(dropped["model/run2"].data_vars) == ["t"]
    with pytest.raises(OSError, match=r"group 'nope' not found in .*tree\.tet \(groups: "
                                      r"'model', 'model/run1', 'model/run2', 'obs'\)"):
        xr.open_datatree(path, engine=ENGINE, group="nope")
    empty = xr.open_dataset(path, engine=ENGINE, group="model")
    assert empty.variables == {} and empty.attrs == {}


def test_appended_labels_that_would_read_wrong_become_datasets(tmp_path: Path) -> None:
    path = tmp_path / "mix.tet"
    one = xr.Dataset({"a": (("x",), np.arange(3.0))}, coords={"x": [10, 20, 30]})
    two = xr.Dataset({"a": (("x",), np.arange(2.0))}, coords={"x": [0.5, 1.5]})
    three = xr.Dataset({"a": (("x",), np.arange(2.0))}, coords={"x": [7, 8]})
    from_xarray(one, path, group="one")
    from_xarray(two, path, group="two", mode="a")
    from_xarray(three, path, group="three", mode="a")
    with tet.open(path) as f:
        assert f.datasets() == ["one/a", "two/a", "two/x", "three/a"]
        assert f.dataset("three/a").coords == {"x": ("7", "8")}  # int64, as the file says
    for group, ds in (("one", one), ("two", two), ("three", three)):
        xr.testing.assert_identical(xr.open_dataset(path, engine=ENGINE, group=group).load(), ds)


# ---------------------------------------------------------------------------
# hostile markers


def test_hostile_text_and_scalar_markers(tmp_path: Path) -> None:
    wide = tmp_path / "wide.tet"
    with tet.TetWriter.create(wide) as w:
        w.write_dataset("s", np.zeros((2, 4), np.uint8), extra={"text": {"width": 5,
                                                                          "kind": "str"}})
    with pytest.raises(CatalogError, match=r"wide\.tet: dataset 's' is marked as text 5 bytes "
                                           r"wide but holds uint8 values of shape \[2, 4\]"):
        xr.open_dataset(wide, engine=ENGINE)
    many = tmp_path / "many.tet"
    with tet.TetWriter.create(many) as w:
        w.write_dataset("c", np.zeros(3, np.int32), extra={"shape": []})
    with pytest.raises(CatalogError, match=r"many\.tet: dataset 'c' is marked 0-d but holds "
                                           r"shape \[3\]"):
        xr.open_dataset(many, engine=ENGINE)
    # dropped, the variable's markers are not looked at
    assert list(xr.open_dataset(many, engine=ENGINE, drop_variables="c").variables) == []
    wrapped = tmp_path / "wrapped.tet"
    with tet.TetWriter.create(wrapped) as w:
        w.write_dataset("i", np.array([1, 300], np.int16), extra={"encoding": {"dtype": "int8"}})
    var = xr.open_dataset(wrapped, engine=ENGINE)["i"]
    assert var.dtype == np.int8 and var[:1].values.tolist() == [1]
    with pytest.raises(CatalogError, match=r"wrapped\.tet: dataset 'i' is marked as int8 but "
                                           r"holds values from 1 to 300"):
        var.values  # noqa: B018


def test_writer_keeps_coord_types_and_group_attrs_when_appending(tmp_path: Path) -> None:
    path = tmp_path / "hooks.tet"
    with tet.TetWriter.create(path) as w:
        w.write_dataset("g/a", np.arange(2.0), dim_names=["x"], coords={"x": ["1", "2"]})
        w.set_coord_types({"x": {"dtype": "int16", "attrs": {"scale": np.float32(0.5)}},
                           "y": {}})
        w.set_group_attrs("/g/", {"n": np.uint8(4), "name": "gee"})
    with tet.TetWriter.open_append(path) as w:
        w.write_dataset("b", np.arange(3.0))
    with tet.open(path) as f:
        ext = f.catalog.metadata["tet"]
        assert ext["coords"] == {"x": {"dtype": "int16",
                                       "attrs": {"scale": {"dtype": "float32", "value": 0.5}}}}
        assert ext["groups"] == {"g": {"attrs": {"n": {"dtype": "uint8", "value": 4},
                                                 "name": "gee"}}}
    g = xr.open_dataset(path, engine=ENGINE, group="g")
    assert g.attrs == {"n": 4, "name": "gee"} and isinstance(g.attrs["n"], np.uint8)
    assert g["x"].dtype == np.int16 and g["x"].attrs == {"scale": 0.5}
    w = tet.TetWriter.create(tmp_path / "bad.tet")
    with pytest.raises(TypeError, match=r"group 'g' attribute 'when': cannot store"):
        w.set_group_attrs("g", {"when": pd.Timestamp(0)})
    w.abort()
    from tet.attrs import validate_ext
    with pytest.raises(CatalogError, match=r"footer metadata tet: groups 'g' must be an object "
                                           r"with attrs"):
        validate_ext({"groups": {"g": {"dims": []}}})


def test_datatree_refuses_names_with_empty_groups(tmp_path: Path) -> None:
    path = tmp_path / "odd.tet"
    with tet.TetWriter.create(path) as w:
        w.write_dataset("a//b", np.arange(2.0))
    with pytest.raises(ValueError, match=r"odd\.tet: dataset 'a//b' has an empty group name "
                                         r"in its path, which a tree of groups cannot hold"):
        xr.open_datatree(path, engine=ENGINE)
    assert list(xr.open_dataset(path, engine=ENGINE).data_vars) == ["a//b"]


# ---------------------------------------------------------------------------
# producer-style sources (tests/producers.py), as xarray reads them


@pytest.mark.parametrize("kind", sorted({**PRODUCERS, **EXTRA_PRODUCERS}))
@pytest.mark.parametrize("how", [{}, {"decode_times": False}, {"mask_and_scale": False}],
                         ids=["decoded", "times-raw", "packed"])
def test_producer_sources_round_trip(tmp_path: Path, real_sources: dict[str, Path],
                                     kind: str, how: dict[str, bool]) -> None:
    source = expected(real_sources[kind], **how)
    path = from_xarray(source, tmp_path / f"{kind}.tet")
    back = xr.open_dataset(path, engine=ENGINE, **how).load()
    xr.testing.assert_identical(back, source)
    for name, var in source.variables.items():  # the text stays the kind xarray gave
        assert back[name].dtype.kind == var.dtype.kind or var.dtype.kind == "O", name
    if how:
        return
    with tet.open(path) as f:  # decoded data: tet's own statistics see xarray's NaN
        for name, var in source.data_vars.items():
            if var.dtype.kind == "f" and var.ndim:
                stored = f.read_numpy(str(name))
                assert int(np.isnan(stored).sum()) == int(var.isnull().sum()), name


def test_cmip_source_is_stored_decoded_with_its_encoding(tmp_path: Path,
                                                         real_sources: dict[str, Path]) -> None:
    source = expected(real_sources["cmip"])
    path = from_xarray(source, tmp_path / "cmip.tet")
    with tet.open(path) as f:
        tas = f.dataset("tas")
        assert tas.numpy_dtype == np.float32
        assert tas.extra["encoding"]["_FillValue"] == np.float32(1e20)
        assert tas.extra["encoding"]["missing_value"] == np.float32(1e20)
        assert tas.attrs["_FillValue"] == "100000000000000000000"  # its text, for tet info
        assert f.nan_count("tas") == int(source["tas"].isnull().sum()) > 0
        np.testing.assert_allclose(f.nan_mean("tas"), float(source["tas"].mean()), rtol=1e-6)
    back = xr.open_dataset(path, engine=ENGINE)["tas"]
    assert "_FillValue" not in back.attrs and back.encoding["_FillValue"] == np.float32(1e20)
