"""The producer-style sources of tests/producers.py have the properties they claim.

Each source is written, read back with xarray and with the producer's own library
(netCDF4 without auto-masking, zarr-python, h5py) and checked: the missing-value counts,
on-disk dtypes, fills, packing, filters, chunks, unlimited dimensions, typed attributes
and the xarray behaviours the module docstring records. Then the oracle helpers
(`expected`, `assert_same_as_source`, `nan_stats`) are checked to catch what they must.
Tests of convert, export and the xarray backend build on these guarantees.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from pathlib import Path
from typing import Any

import cftime
import h5py  # type: ignore[import-untyped]
import netCDF4
import numpy as np
import pytest
import xarray as xr
import zarr

from tests import producers as P

# ---------------------------------------------------------------------------
# every source


def test_all_sources_are_small_and_distinct(real_sources: dict[str, Path]) -> None:
    assert set(real_sources) == set(P.PRODUCERS) | set(P.EXTRA_PRODUCERS)
    assert len({p.name for p in real_sources.values()}) == len(real_sources)
    for kind, path in real_sources.items():
        size = (sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
                if path.is_dir() else path.stat().st_size)
        assert 0 < size < 2 * 1024 * 1024, (kind, size)


def test_sources_are_deterministic(tmp_path: Path, real_sources: dict[str, Path]) -> None:
    again = P.all_sources(tmp_path, extra=True)
    for kind in real_sources:
        a, b = P.expected(real_sources[kind]), P.expected(again[kind])
        xr.testing.assert_identical(a, b)
        P.assert_same_as_source(a, b)


def test_producer_refuses_unknown_name_kind(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="names must be 'vlen' or 'char', not 'utf8'"):
        P.stations_nc(tmp_path, names="utf8")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# 1. CMIP


def test_cmip_raw_file(real_sources: dict[str, Path]) -> None:
    with netCDF4.Dataset(real_sources["cmip"]) as nc:
        assert nc.file_format == "NETCDF4"
        assert nc.dimensions["time"].isunlimited()
        assert {d: len(n) for d, n in nc.dimensions.items()} == {
            "time": 12, "lat": 32, "lon": 96, "bnds": 2}
        tas = nc["tas"]
        assert tas.dtype == np.float32
        assert tas.filters()["zlib"] and tas.filters()["shuffle"]
        assert tas.chunking() == list(P.CMIP_CHUNKS)
        assert type(tas.getncattr("_FillValue")) is np.float32
        assert type(tas.getncattr("missing_value")) is np.float32
        assert tas.getncattr("_FillValue") == tas.getncattr("missing_value") == P.CMIP_FILL
        assert tas.grid_mapping == "crs"
        tas.set_auto_mask(False)
        raw = tas[...]
        assert int((raw == np.float32(1e20)).sum()) == P.CMIP_TAS_MISSING
        assert int((raw > 350).sum()) == P.CMIP_TAS_MISSING + P.CMIP_TAS_OUT_OF_RANGE
        tas.set_auto_mask(True)  # netCDF4's own mask also applies valid_range
        assert int(np.ma.count_masked(tas[...])) == (P.CMIP_TAS_MISSING
                                                     + P.CMIP_TAS_OUT_OF_RANGE)
        assert nc["crs"].shape == () and nc["crs"].dtype == np.int32
        assert nc["height"].shape == ()
        assert nc["time"].calendar == "noleap"
        assert nc["time"].bounds == "time_bnds"
        assert nc["time_bnds"].dimensions == ("time", "bnds")
        assert type(nc.getncattr("realization_index")) is np.int32
        assert type(nc.getncattr("branch_time_in_parent")) is np.float64


def test_cmip_as_xarray_reads_it(real_sources: dict[str, Path]) -> None:
    ds = P.expected(real_sources["cmip"])
    tas = ds["tas"]
    assert tas.dtype == np.float32 and tas.dims == ("time", "lat", "lon")
    assert int(tas.isnull().sum()) == P.CMIP_TAS_MISSING
    # valid_range is kept, not applied: the two outliers are values
    assert int((tas > 350).sum()) == P.CMIP_TAS_OUT_OF_RANGE
    assert float(tas.max()) == pytest.approx(360.5)
    vr = tas.attrs["valid_range"]
    assert isinstance(vr, np.ndarray) and vr.dtype == np.float32
    assert vr.tolist() == [150.0, 350.0]
    assert type(tas.attrs["level_index"]) is np.int16
    assert "_FillValue" not in tas.attrs and "missing_value" not in tas.attrs
    assert type(tas.encoding["_FillValue"]) is np.float32
    assert type(tas.encoding["missing_value"]) is np.float32
    assert tas.encoding["chunksizes"] == P.CMIP_CHUNKS
    assert tas.encoding["zlib"] and tas.encoding["shuffle"]
    assert set(ds.coords) == {"time", "lat", "lon", "height"}
    assert set(ds.data_vars) == {"tas", "crs", "time_bnds", "lat_bnds", "lon_bnds"}
    assert ds["crs"].shape == () and ds["crs"].dtype == np.int32
    assert ds["crs"].attrs["grid_mapping_name"] == "latitude_longitude"
    assert type(ds["crs"].attrs["semi_major_axis"]) is np.float64
    assert ds.sizes["lon"] == 96 > 64 > ds.sizes["lat"] == 32
    assert ds["time"].dtype == object
    assert isinstance(ds["time"].values[0], cftime.DatetimeNoLeap)
    assert ds["time"].encoding["calendar"] == "noleap"
    assert ds["time"].encoding["units"] == "days since 1850-01-01"
    assert isinstance(ds["time_bnds"].values[0, 0], cftime.DatetimeNoLeap)
    assert ds["time_bnds"].values[1, 0] == cftime.DatetimeNoLeap(1850, 2, 1)
    assert ds.attrs["Conventions"] == "CF-1.7 CMIP-6.2"
    for key in ("title", "history", "institution"):
        assert isinstance(ds.attrs[key], str) and ds.attrs[key]
    assert type(ds.attrs["realization_index"]) is np.int32
    assert type(ds.attrs["branch_time_in_parent"]) is np.float64
    assert ds.attrs["grid_shape"].dtype == np.int32
    assert ds.attrs["nominal_resolution_km"].dtype == np.float64


def test_cmip_decode_times_false_keeps_units_in_attrs(real_sources: dict[str, Path]) -> None:
    ds = P.expected(real_sources["cmip"], decode_times=False)
    assert ds["time"].dtype == np.float64
    assert ds["time"].attrs["units"] == "days since 1850-01-01"
    assert ds["time"].attrs["calendar"] == "noleap"
    assert ds["time"].values[0] == 15.5


# ---------------------------------------------------------------------------
# 2. ERA5


def test_era5_raw_and_decoded(real_sources: dict[str, Path]) -> None:
    path = real_sources["era5"]
    with netCDF4.Dataset(path) as nc:
        nc.set_auto_maskandscale(False)
        raw = {name: nc[name][...] for name in ("t2m", "sst")}
        attrs = {name: nc[name].__dict__ for name in ("t2m", "sst")}
        assert nc["t2m"].filters()["zlib"]
        assert nc["t2m"].chunking() == list(P.ERA5_CHUNKS)
    ds = P.expected(path)
    for name, missing in (("t2m", P.ERA5_T2M_MISSING), ("sst", P.ERA5_SST_MISSING)):
        a = attrs[name]
        assert raw[name].dtype == np.int16
        assert type(a["scale_factor"]) is np.float64 and type(a["add_offset"]) is np.float64
        assert type(a["_FillValue"]) is np.int16 and a["_FillValue"] == -32767
        assert type(a["missing_value"]) is np.int16 and a["missing_value"] == -32767
        assert int((raw[name] == -32767).sum()) == missing
        v = ds[name]
        assert v.dtype == np.float64  # int16 with float64 scale and offset
        assert int(v.isnull().sum()) == missing
        want = raw[name] * a["scale_factor"] + a["add_offset"]
        want[raw[name] == -32767] = np.nan
        np.testing.assert_array_equal(v.values, want)
        assert v.encoding["dtype"] == np.int16
        assert type(v.encoding["scale_factor"]) is np.float64
        assert type(v.attrs["GRIB_paramId"]) is np.int32
    assert np.all(np.diff(ds["latitude"].values) < 0)  # descending, as ERA5
    assert ds["latitude"].dtype == np.float32
    assert ds["time"].dtype == np.dtype("datetime64[ns]")
    assert ds["time"].encoding["dtype"] == np.int32
    assert ds.attrs["Conventions"] == "CF-1.6"


# ---------------------------------------------------------------------------
# 3. NetCDF-3 classic


def test_nc3_raw_file(real_sources: dict[str, Path]) -> None:
    with netCDF4.Dataset(real_sources["nc3"]) as nc:
        assert nc.file_format == "NETCDF3_CLASSIC"
        assert nc.dimensions["time"].isunlimited()
        assert "_FillValue" not in nc["wind"].ncattrs()
        assert "_FillValue" not in nc["rain"].ncattrs()
        assert not {"_FillValue", "missing_value"} & set(nc["partial"].ncattrs())
        assert nc["rain"].missing_value.tolist() == [-1.0, -2.0]
        assert nc["count"].dtype == np.int16
        partial = nc["partial"][...]  # netCDF4's auto-mask masks the default fill
        assert int(np.ma.count_masked(partial)) == (6 - P.NC3_PARTIAL_ROWS) * 8
        nc.set_auto_mask(False)
        raw = nc["partial"][...]
        assert np.all(raw[P.NC3_PARTIAL_ROWS:] == np.float32(netCDF4.default_fillvals["f4"]))
        assert int((nc["temp"][...] == -999.0).sum()) == P.NC3_TEMP_MISSING
        assert int((nc["wind"][...] == np.float32(-1e30)).sum()) == P.NC3_WIND_MISSING
        assert int((nc["count"][...] == -1).sum()) == P.NC3_COUNT_MISSING


def test_nc3_as_xarray_reads_it(real_sources: dict[str, Path]) -> None:
    ds = P.expected(real_sources["nc3"])
    for name, missing in (("temp", P.NC3_TEMP_MISSING), ("wind", P.NC3_WIND_MISSING),
                          ("rain", sum(P.NC3_RAIN_MISSING)), ("count", P.NC3_COUNT_MISSING)):
        assert ds[name].dtype == np.float32, name
        assert int(ds[name].isnull().sum()) == missing, name
    assert ds["count"].encoding["dtype"] == np.int16
    assert type(ds["count"].encoding["_FillValue"]) is np.int16
    assert ds["wind"].encoding["missing_value"] == np.float32(-1e30)
    assert ds["rain"].encoding["missing_value"].tolist() == [-1.0, -2.0]
    # no fill attribute: xarray leaves netCDF's default fill as a value
    partial = ds["partial"].values
    assert partial.dtype == np.float32 and not np.isnan(partial).any()
    assert np.all(partial[P.NC3_PARTIAL_ROWS:] == np.float32(9.969209968386869e36))
    assert ds["time"].dtype == np.dtype("datetime64[ns]")
    assert type(ds.attrs["version"]) is np.float64
    assert type(ds.attrs["station_count"]) is np.int32
    assert type(ds.attrs["sample_rate"]) is np.int16


def test_several_missing_values_warn_in_xarray(real_sources: dict[str, Path]) -> None:
    with pytest.warns(xr.SerializationWarning, match="'rain' has multiple fill values"), \
            xr.open_dataset(real_sources["nc3"], engine="netcdf4") as ds:
        assert int(ds["rain"].isnull().sum()) == sum(P.NC3_RAIN_MISSING)


# ---------------------------------------------------------------------------
# 4. stations


@pytest.mark.parametrize(("names", "fmt", "dtype"), [
    ("vlen", None, "<U19"), ("char", None, "|S20"), ("char", "NETCDF3_CLASSIC", "|S20")])
def test_stations(tmp_path: Path, names: Any, fmt: str | None, dtype: str) -> None:
    path = P.stations_nc(tmp_path, names=names, format=fmt)
    with netCDF4.Dataset(path) as nc:
        assert nc.file_format == fmt or (
            nc.file_format == ("NETCDF4" if names == "vlen" else "NETCDF4_CLASSIC"))
        assert nc.dimensions["time"].isunlimited()
        assert len(nc.dimensions["time"]) == P.STATION_STEPS
        name_var = nc["station_name"]
        if names == "vlen":
            assert name_var.dtype is str and name_var.dimensions == ("station",)
        else:
            assert name_var.dtype == np.dtype("S1")
            assert name_var.dimensions == ("station", "name_strlen")
            assert "_Encoding" not in name_var.ncattrs()
        if fmt is None:
            assert nc["temperature"].chunking() == list(P.STATION_CHUNKS)
        nc.set_auto_mask(False)
        assert int((nc["temperature"][...] == -9999.0).sum()) == P.STATION_TEMP_MISSING
    ds = P.expected(path)
    assert ds.attrs["featureType"] == "timeSeries"
    assert ds.sizes == {"station": P.STATIONS, "time": P.STATION_STEPS}
    assert set(ds.coords) == {"station_name", "lat", "lon", "time"}
    sn = ds["station_name"]
    assert sn.dims == ("station",) and sn.dtype == np.dtype(dtype)
    got = [v.decode() if isinstance(v, bytes) else v for v in sn.values.tolist()]
    assert got == P.station_names() and len(set(got)) == P.STATIONS
    assert max(map(len, got)) == 19 < P.STATION_STRLEN
    t = ds["temperature"]
    assert t.dtype == np.float32 and t.dims == ("time", "station")
    assert int(t.isnull().sum()) == P.STATION_TEMP_MISSING
    assert type(t.encoding["_FillValue"]) is np.float32


# ---------------------------------------------------------------------------
# 5. Zarr v3 written by xarray


def _zarr_json(path: Path) -> Any:
    return json.loads((path / "zarr.json").read_text())


def test_zarr_v3_metadata(real_sources: dict[str, Path]) -> None:
    path = real_sources["zarr_v3"]
    root = _zarr_json(path)
    assert root["zarr_format"] == 3 and root["node_type"] == "group"
    assert root["attributes"] == {"title": "written by xarray", "version": 3,
                                  "resolution": 0.5, "levels": [1, 2, 3]}
    assert set(root["consolidated_metadata"]["metadata"]) == {
        "packed", "t2m", "sst", "time", "lat", "lon"}
    sst = _zarr_json(path / "sst")
    assert sst["data_type"] == "float32" and sst["fill_value"] == "NaN"
    assert sst["attributes"]["_FillValue"] == P.ZARR_SST_FILL_BASE64
    assert struct.unpack("<d", base64.b64decode(P.ZARR_SST_FILL_BASE64)) == (-9999.0,)
    assert sst["dimension_names"] == ["time", "lat", "lon"]
    assert sst["chunk_grid"]["configuration"]["chunk_shape"] == list(P.ZARR_CHUNKS)
    packed = _zarr_json(path / "packed")
    assert packed["data_type"] == "int16" and packed["fill_value"] == 0
    assert packed["attributes"] == {"units": "1", "long_name": "cloud fraction",
                                    "scale_factor": 0.01, "_FillValue": -1}
    t2m = _zarr_json(path / "t2m")
    assert t2m["attributes"]["add_offset"] == 280.0
    assert t2m["attributes"]["_FillValue"] == -32767
    lat = _zarr_json(path / "lat")
    assert lat["attributes"]["_FillValue"] == P.ZARR_NAN_FILL_BASE64
    assert math.isnan(struct.unpack("<d", base64.b64decode(P.ZARR_NAN_FILL_BASE64))[0])
    time = _zarr_json(path / "time")
    assert time["data_type"] == "int64"
    assert time["attributes"] == {"units": "days since 2000-01-01 00:00:00",
                                  "calendar": "proleptic_gregorian"}


def test_zarr_v3_stored_and_decoded(real_sources: dict[str, Path]) -> None:
    path = real_sources["zarr_v3"]
    with P.quiet_consolidated():
        group = zarr.open_group(path, mode="r")
        raw = {name: np.asarray(group[name][...]) for name in ("packed", "t2m", "sst")}
    assert raw["packed"].dtype == np.int16 and raw["t2m"].dtype == np.int16
    assert int((raw["packed"] == -1).sum()) == P.ZARR_PACKED_MISSING
    assert int((raw["t2m"] == -32767).sum()) == P.ZARR_T2M_MISSING
    assert raw["sst"].dtype == np.float32 and not np.isnan(raw["sst"]).any()
    assert int((raw["sst"] == -9999.0).sum()) == P.ZARR_SST_MISSING
    ds = P.expected(path)
    for name, dtype, missing in (("packed", np.float64, P.ZARR_PACKED_MISSING),
                                 ("t2m", np.float64, P.ZARR_T2M_MISSING),
                                 ("sst", np.float32, P.ZARR_SST_MISSING)):
        assert ds[name].dtype == dtype, name
        assert int(ds[name].isnull().sum()) == missing, name
        assert ds[name].encoding["chunks"] == P.ZARR_CHUNKS
        assert "_FillValue" not in ds[name].attrs
    np.testing.assert_array_equal(ds["packed"].values,
                                  np.where(raw["packed"] == -1, np.nan, raw["packed"] * 0.01))
    assert ds["sst"].encoding["_FillValue"] == -9999.0
    assert ds["packed"].encoding["scale_factor"] == 0.01
    assert abs(float(ds["t2m"].mean()) - 280.0) < 1.0
    assert ds["time"].dtype == np.dtype("datetime64[ns]")
    assert {k: type(v) for k, v in ds.attrs.items()} == {
        "title": str, "version": int, "resolution": float, "levels": list}


def test_zarr_v2_twin(real_sources: dict[str, Path]) -> None:
    path = real_sources["zarr_v2"]
    meta = {name: json.loads((path / name / ".zarray").read_text())
            for name in ("packed", "t2m", "sst", "lat")}
    attrs = {name: json.loads((path / name / ".zattrs").read_text()) for name in meta}
    assert (path / ".zmetadata").is_file()
    assert meta["sst"]["fill_value"] == -9999.0 and meta["sst"]["dtype"] == "<f4"
    assert meta["packed"]["fill_value"] == -1 and meta["packed"]["dtype"] == "<i2"
    assert meta["t2m"]["fill_value"] == -32767
    assert meta["lat"]["fill_value"] == "NaN"
    assert meta["sst"]["chunks"] == list(P.ZARR_CHUNKS)
    assert all("_FillValue" not in a for a in attrs.values())
    assert attrs["packed"]["scale_factor"] == 0.01
    assert attrs["sst"]["_ARRAY_DIMENSIONS"] == ["time", "lat", "lon"]
    # the same decoded Dataset as the v3 store, and the same attribute types
    v2, v3 = P.expected(path), P.expected(real_sources["zarr_v3"])
    P.assert_same_as_source(v2, v3)
    assert v2["sst"].encoding["_FillValue"] == -9999.0


def test_zarr_v3_plain_fill_is_not_masked(real_sources: dict[str, Path]) -> None:
    path = real_sources["zarr_v3_plain"]
    field = _zarr_json(path / "field")
    assert field["fill_value"] == -9999.0 and "_FillValue" not in field["attributes"]
    assert field["dimension_names"] == ["y", "x"]
    assert not (path / "field" / "c" / "1" / "1").exists()  # never written
    assert (path / "field" / "c" / "1" / "0").is_file()
    ds = P.expected(path)
    values = ds["field"].values
    assert values.dtype == np.float32 and not np.isnan(values).any()
    assert int((values == -9999.0).sum()) == 2 + 2 * 3
    assert ds["level"].dtype == np.int16 and int((ds["level"] == 7).sum()) == 1
    assert ds.attrs == {"source": "zarr", "count": 2}
    assert ds["field"].encoding["fill_value"] == np.float32(-9999.0)


# ---------------------------------------------------------------------------
# 6. HDF5


def test_hdf5_raw_file(real_sources: dict[str, Path]) -> None:
    with h5py.File(real_sources["hdf5"], "r") as h:
        assert "_NCProperties" not in h.attrs
        for key, want in P.HDF5_ROOT_ATTRS.items():
            got = h.attrs[key]
            if isinstance(want, list):
                assert got.dtype == object and got.tolist() == want, key
                continue
            assert type(got) is type(want), key
            assert P.same_attr(got, want), key
        assert h.attrs.get_id("bytes_value").dtype == np.dtype("S18")
        gz, lzf, sg = h["filters/gzip"], h["filters/lzf"], h["filters/shuffle_gzip"]
        assert (gz.compression, gz.compression_opts, gz.shuffle) == ("gzip", 4, False)
        assert (lzf.compression, lzf.shuffle) == ("lzf", False)
        assert (sg.compression, sg.shuffle) == ("gzip", True)
        assert (gz.chunks, lzf.chunks, sg.chunks) == ((4, 5), (4, 10), (8, 5))
        assert h["groups/a/counts"].compression is None
        for name in ("filters/gzip", "filters/lzf", "filters/shuffle_gzip", "groups/a/counts"):
            assert [d[0].name for d in h[name].dims] == ["/y", "/x"], name
        assert [len(d) for d in h["groups/a/b/deep"].dims] == [0, 0]
        assert type(gz.attrs["_FillValue"]) is np.float32
        assert type(gz.attrs["source"]) is np.bytes_
        assert int((gz[...] == -999.0).sum()) == P.HDF5_GZIP_MISSING
        assert int((h["groups/a/counts"][...] == -1).sum()) == P.HDF5_COUNTS_MISSING
        assert type(h["groups/a/b/deep"].attrs["calibrated"]) is np.bool_


def test_hdf5_oracle_is_h5py_cf_decoded(real_sources: dict[str, Path]) -> None:
    path = real_sources["hdf5"]
    ds = P.expected(path)
    assert set(ds.variables) == {"x", "y", "filters/gzip", "filters/lzf",
                                 "filters/shuffle_gzip", "groups/a/counts", "groups/a/b/deep"}
    assert set(ds.coords) == {"x", "y"}
    with h5py.File(path, "r") as h:
        for name in ds.variables:
            raw = h[str(name)][...]
            fill = h[str(name)].attrs.get("_FillValue")
            want = raw if fill is None else np.where(raw == fill, np.nan, raw).astype(np.float32)
            np.testing.assert_array_equal(ds[name].values, want, err_msg=str(name))
            assert ds[name].dtype == want.dtype, name
    assert ds["filters/gzip"].dims == ("y", "x")
    assert all(d.startswith("phony_dim_") for d in ds["groups/a/b/deep"].dims)
    assert int(ds["filters/gzip"].isnull().sum()) == P.HDF5_GZIP_MISSING
    assert ds["groups/a/counts"].dtype == np.float32
    assert int(ds["groups/a/counts"].isnull().sum()) == P.HDF5_COUNTS_MISSING
    assert ds["filters/shuffle_gzip"].dtype == np.uint16
    # h5netcdf's typing of attributes: numbers keep NumPy types, bytes become str
    a = ds.attrs
    assert type(a["int16_scalar"]) is np.int16 and type(a["flag"]) is np.bool_
    assert a["float64_array"].dtype == np.float64 and a["int64_array"].dtype == np.int64
    assert type(a["float32_scalar"]) is np.float32
    assert a["bytes_value"] == "fixed-length ASCII" and type(a["bytes_value"]) is str
    assert a["text"] == P.HDF5_ROOT_ATTRS["text"]
    assert a["string_array"] == ["alpha", "beta"]
    assert type(ds["filters/gzip"].attrs["valid_max"]) is np.float32
    assert ds["filters/gzip"].attrs["flag_values"].dtype == np.int32
    assert ds["filters/gzip"].attrs["source"] == "sensor-7"
    assert type(ds["groups/a/b/deep"].attrs["calibrated"]) is np.bool_


# ---------------------------------------------------------------------------
# the comparison helpers


def test_same_as_source_accepts_itself(real_sources: dict[str, Path]) -> None:
    for path in real_sources.values():
        ds = P.expected(path)
        P.assert_same_as_source(ds.copy(deep=True), ds)


def _fails(actual: xr.Dataset, expected: xr.Dataset, text: str, **kw: Any) -> None:
    with pytest.raises(AssertionError, match="not the same as the source") as err:
        P.assert_same_as_source(actual, expected, **kw)
    assert text in str(err.value), str(err.value)


def test_same_as_source_catches_differences(real_sources: dict[str, Path]) -> None:
    src = P.expected(real_sources["cmip"])
    bad = src.copy(deep=True)
    bad["tas"].values[np.isnan(bad["tas"].values)] = np.float32(1e20)  # fills kept
    _fails(bad, src, "variable 'tas': 35 of 36864 values differ")
    bad = src.copy(deep=True)
    bad["tas"] = bad["tas"].astype(np.float64)
    _fails(bad, src, "variable 'tas': dtype float64, expected float32")
    bad = src.copy(deep=True)
    bad["tas"].attrs["valid_range"] = bad["tas"].attrs["valid_range"].astype(np.float64)
    _fails(bad, src, "attr 'valid_range' is ndarray[float64]")
    bad = src.copy(deep=True)
    bad["tas"].attrs["valid_range"] = "[150, 350]"
    _fails(bad, src, "attr 'valid_range' is str '[150, 350]'")
    bad = src.copy(deep=True)
    bad.attrs["branch_time_in_parent"] = 0.0  # a Python float is not np.float64
    _fails(bad, src, "file: attr 'branch_time_in_parent' is float 0.0, expected float64")
    bad = src.copy(deep=True)
    del bad.attrs["Conventions"]
    _fails(bad, src, "file: attr 'Conventions' missing")
    _fails(src.drop_vars("crs"), src, "variable 'crs' missing")
    _fails(src.reset_coords("height"), src, "coordinates")
    _fails(src.rename_dims(lon="x"), src, "variable 'tas': dims ('time', 'lat', 'x')")
    bad = src.copy(deep=True)
    bad["tas"].values[0, 0, 0] = np.nan  # one more NaN than the source
    _fails(bad, src, "variable 'tas': 1 of 36864 values differ")
    bad = src.copy(deep=True)
    bad["tas"].attrs["_FillValue"] = np.float32(1e20)  # encoding left in attrs
    _fails(bad, src, "attr '_FillValue' not in the source")
    # restricted to some variables: the rest is not looked at
    P.assert_same_as_source(src.drop_vars("crs"), src, variables=["tas", "time"])


def test_same_as_source_text_and_phony_dims(real_sources: dict[str, Path]) -> None:
    src = P.expected(real_sources["stations"])
    wide = src.assign_coords(station_name=src["station_name"].astype("<U40"))
    P.assert_same_as_source(wide, src)  # text width is not compared
    objs = src.assign_coords(station_name=src["station_name"].astype(object))
    P.assert_same_as_source(objs, src)
    as_bytes = src.assign_coords(station_name=src["station_name"].astype("S20"))
    _fails(as_bytes, src, "variable 'station_name': dtype |S20, expected <U19")
    h5 = P.expected(real_sources["hdf5"])
    renamed = h5.rename_dims({d: f"dim_{i}" for i, d in
                              enumerate(h5["groups/a/b/deep"].dims)})
    P.assert_same_as_source(renamed, h5)  # any name where the oracle says phony_dim_*


def test_same_attr_types() -> None:
    assert P.same_attr(np.float32(1e20), np.float32(1e20))
    assert not P.same_attr(np.float32(1e20), 1e20)
    assert not P.same_attr(np.int32(1), 1)
    assert not P.same_attr(np.array([1, 2], np.int32), np.array([1, 2], np.int64))
    assert not P.same_attr(np.array([1, 2]), [1, 2])
    assert P.same_attr([1, "a"], [1, "a"]) and not P.same_attr([1], [1.0])
    assert P.same_attr(float("nan"), float("nan"))
    assert P.same_attr(np.array([np.nan, 1.0]), np.array([np.nan, 1.0]))
    assert not P.same_attr(True, 1) and not P.same_attr(np.bool_(True), True)


def test_nan_stats_are_xarrays_skipna(real_sources: dict[str, Path]) -> None:
    ds = P.expected(real_sources["cmip"])
    stats = P.nan_stats(ds, "tas")
    values = ds["tas"].values.astype(np.float64)
    assert stats["nan_count"] == P.CMIP_TAS_MISSING
    assert stats["count"] == values.size - P.CMIP_TAS_MISSING
    assert stats["nan_mean"] == pytest.approx(np.nanmean(values), rel=1e-6)
    assert stats["nan_std"] == pytest.approx(np.nanstd(values), rel=1e-5)
    assert stats["nan_min"] == np.nanmin(values) and stats["nan_max"] == 360.5
    assert stats["nan_sum"] == pytest.approx(np.nansum(values), rel=1e-6)
    era5 = P.nan_stats(P.expected(real_sources["era5"]), "sst")
    assert era5["nan_count"] == P.ERA5_SST_MISSING
    with pytest.raises(TypeError, match="'crs' is int32, not a float variable"):
        P.nan_stats(ds, "crs")
