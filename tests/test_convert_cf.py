"""`tet convert` decodes CF data as xarray does and keeps metadata with its types.

Each source is written at test time the way its producer writes it (netCDF4 for CMIP /
ERA5 / NetCDF-3 / station files, xarray for the Zarr v3 store, h5py for plain HDF5).
The oracle is xarray's own reading of the source (`decode_times=False`, as a .tet file
keeps times as numbers with their `units` / `calendar`, and `decode_coords=False`, so
`coordinates` stays an attribute as it does in the .tet file).  For every variable:
decoded values, dtype and NaN positions of `read_numpy` (text through
`tet.text.decode_text`, 0-d back to shape ()), dims, typed attributes (`typed_attrs`
less the keys that moved to `extra["encoding"]`), the encoding itself, the chunk grid;
for the file, `TetFile.file_attrs`; for every float variable, the engine's `nan_mean` /
`nan_count` against xarray's `skipna` reductions.  `--keep-packed` against xarray with
`mask_and_scale=False`.
"""

from __future__ import annotations

import importlib
import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py  # type: ignore[import-untyped]
import netCDF4
import numpy as np
import pytest
import xarray as xr
import zarr

import tet
from tests.conftest import CliRun
from tet.convert import ConvertWarning, convert
from tet.text import decode_text

Arr = np.ndarray[Any, Any]
CliFn = Callable[..., CliRun]
ENCODING = ("_FillValue", "missing_value", "scale_factor", "add_offset", "_Unsigned",
            "_Encoding")
RNG_SEED = 13


# ---------------------------------------------------------------------------
# Sources, written as their producers write them


def cmip_nc(path: Path) -> Path:
    """CMOR-like tas: NetCDF-4, zlib + shuffle, `_FillValue = missing_value = 1e20`
    with 35 missing, noleap time with bounds, a `height` scalar coordinate and a `crs`
    grid mapping, numeric global attributes."""
    rng = np.random.default_rng(RNG_SEED)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as d:
        d.Conventions = "CF-1.7 CMIP-6.2"
        d.title = "tas from a test model"
        d.institution = "tet tests"
        d.history = "2024-01-01T00:00:00Z ; CMOR rewrote data to be consistent with CF"
        d.realization_index = np.int32(1)
        d.branch_time_in_parent = np.float64(0.0)
        d.nominal_resolution = "250 km"
        d.version_numbers = np.array([6, 2, 57], np.int32)
        d.createDimension("time", None)
        d.createDimension("lat", 16)
        d.createDimension("lon", 24)
        d.createDimension("bnds", 2)
        t = d.createVariable("time", "f8", ("time",))
        t.units = "days since 1850-01-01"
        t.calendar = "noleap"
        t.bounds = "time_bnds"
        t.axis = "T"
        t.standard_name = "time"
        t[:] = np.arange(12) * 30.0 + 15.0
        tb = d.createVariable("time_bnds", "f8", ("time", "bnds"))
        tb[:] = np.stack([np.arange(12) * 30.0, np.arange(12) * 30.0 + 30.0], axis=1)
        lat = d.createVariable("lat", "f8", ("lat",))
        lat.units = "degrees_north"
        lat.bounds = "lat_bnds"
        lat[:] = np.linspace(-82.5, 82.5, 16)
        lb = d.createVariable("lat_bnds", "f8", ("lat", "bnds"))
        lb[:] = np.stack([np.linspace(-90, 79, 16), np.linspace(-79, 90, 16)], axis=1)
        lon = d.createVariable("lon", "f8", ("lon",))
        lon.units = "degrees_east"
        lon[:] = np.arange(24) * 15.0
        h = d.createVariable("height", "f8", ())
        h.units = "m"
        h.axis = "Z"
        h[...] = 2.0
        crs = d.createVariable("crs", "i4", ())
        crs.grid_mapping_name = "latitude_longitude"
        crs.semi_major_axis = 6371000.0
        crs.inverse_flattening = np.float64(0.0)
        tas = d.createVariable("tas", "f4", ("time", "lat", "lon"), zlib=True, shuffle=True,
                               complevel=4, chunksizes=(1, 16, 24), fill_value=np.float32(1e20))
        tas.missing_value = np.float32(1e20)
        tas.standard_name = "air_temperature"
        tas.units = "K"
        tas.cell_methods = "area: time: mean"
        tas.coordinates = "height"
        tas.grid_mapping = "crs"
        tas.valid_range = np.array([150.0, 350.0], np.float32)
        values = (rng.normal(280.0, 10.0, (12, 16, 24))).astype(np.float32)
        holes = rng.choice(values.size, 35, replace=False)
        values.reshape(-1)[holes] = np.float32(1e20)
        values[0, 0, 0] = np.float32(400.0)  # outside valid_range: kept, not masked
        tas[:] = values
    return path


CMIP_MISSING = 35


def era5_nc(path: Path) -> Path:
    """ERA5-like: int16 packed with float64 scale/offset, `_FillValue` and
    `missing_value` -32767, chunked and compressed."""
    rng = np.random.default_rng(RNG_SEED + 1)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as d:
        d.Conventions = "CF-1.6"
        d.history = "2024-02-02 grib_to_netcdf"
        d.createDimension("time", 6)
        d.createDimension("latitude", 10)
        d.createDimension("longitude", 20)
        t = d.createVariable("time", "i4", ("time",))
        t.units = "hours since 1900-01-01 00:00:00.0"
        t.calendar = "gregorian"
        t[:] = 1_000_000 + np.arange(6)
        lat = d.createVariable("latitude", "f4", ("latitude",))
        lat[:] = np.linspace(90, 0, 10)
        lon = d.createVariable("longitude", "f4", ("longitude",))
        lon[:] = np.linspace(0, 19, 20)
        sst = d.createVariable("sst", "i2", ("time", "latitude", "longitude"), zlib=True,
                               chunksizes=(2, 5, 20), fill_value=np.int16(-32767))
        sst.scale_factor = np.float64(0.000573)
        sst.add_offset = np.float64(289.46)
        sst.missing_value = np.int16(-32767)
        sst.units = "K"
        sst.long_name = "Sea surface temperature"
        sst.set_auto_maskandscale(False)
        packed = rng.integers(-30000, 30000, (6, 10, 20), dtype=np.int16)
        packed[:, :3, :4] = -32767  # land
        sst[:] = packed
        # packed with float32 scale only, and an int8 with only a fill
        tcc = d.createVariable("tcc", "i2", ("time", "latitude", "longitude"),
                               fill_value=np.int16(-1))
        tcc.scale_factor = np.float32(0.01)
        tcc.set_auto_maskandscale(False)
        tcc[:] = rng.integers(-1, 100, (6, 10, 20), dtype=np.int16)
        flag = d.createVariable("flag", "i1", ("latitude",), fill_value=np.int8(-1))
        flag.set_auto_maskandscale(False)
        flag[:] = np.array([-1, 0, 1, 2, -1, 3, 4, 5, 6, 7], np.int8)
    return path


ERA5_LAND = 6 * 3 * 4


def nc3_classic(path: Path) -> Path:
    """NetCDF-3 classic: a record dimension, `_FillValue` on floats and ints, several
    `missing_value`s, a signed byte marked `_Unsigned`, a char array of names, and a
    variable with no fill attribute whose unwritten cells hold the default fill."""
    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as d:
        d.title = "classic"
        d.version = np.int32(3)
        d.weights = np.array([1.5, 2.5])
        d.createDimension("time", None)
        d.createDimension("station", 5)
        d.createDimension("name_strlen", 8)
        temp = d.createVariable("temperature", "f4", ("time", "station"),
                                fill_value=np.float32(-9999))
        temp.units = "degC"
        temp.valid_min = np.float32(-80.0)
        temp[:] = np.array([[1, 2, -9999, 4, 5], [6, -9999, 8, 9, -100]], np.float32)
        pr = d.createVariable("precip", "f8", ("time", "station"))
        pr.missing_value = np.array([-1.0, -2.0])
        pr[:] = np.array([[0.5, -1.0, -2.0, 3.0, 0.0], [1.0, 2.0, -1.0, 0.25, 9.0]])
        cnt = d.createVariable("count", "i2", ("station",), fill_value=np.int16(-99))
        cnt[:] = np.array([1, -99, 3, 4, -99], np.int16)
        big = d.createVariable("big", "i4", ("station",), fill_value=np.int32(-1))
        big[:] = np.array([10, 20, -1, 40, 50], np.int32)
        q = d.createVariable("quality", "i1", ("station",))
        q._Unsigned = "true"
        q[:] = np.array([-1, 0, 1, -128, 127], np.int8)
        nm = d.createVariable("station_name", "S1", ("station", "name_strlen"))
        nm[:] = netCDF4.stringtochar(np.array([b"alpha", b"beta", b"gamma", b"", b"epsilon"],
                                              "S8"))
        nofill = d.createVariable("nofill", "f4", ("time",))
        nofill[0] = 1.0  # the second record stays the default fill 9.96921e36
    return path


def stations_nc(path: Path) -> Path:
    """A DSG station file: 100 vlen string names, a char array of codes, an unlimited
    time dimension, observations with a fill."""
    rng = np.random.default_rng(RNG_SEED + 2)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as d:
        d.featureType = "timeSeries"
        d.Conventions = "CF-1.8"
        d.createDimension("station", 100)
        d.createDimension("time", None)
        d.createDimension("code_strlen", 6)
        name = d.createVariable("station_name", str, ("station",))
        name.cf_role = "timeseries_id"
        name.long_name = "station name"
        names = np.array([f"Station {i:03d} – Ålesund" if i % 7 == 0 else f"st{i}"
                          for i in range(100)], dtype=object)
        name[:] = names
        code = d.createVariable("station_code", "S1", ("station", "code_strlen"))
        code[:] = netCDF4.stringtochar(np.array([f"C{i:04d}".encode() for i in range(100)],
                                                "S6"))
        lat = d.createVariable("lat", "f4", ("station",))
        lat[:] = rng.uniform(-60, 60, 100).astype(np.float32)
        t = d.createVariable("time", "f8", ("time",))
        t.units = "hours since 2020-01-01"
        t[:] = np.arange(30.0)
        obs = d.createVariable("obs", "f4", ("time", "station"), fill_value=np.float32(-999.9),
                               chunksizes=(10, 50))
        obs.coordinates = "lat station_name"
        values = rng.normal(10, 3, (30, 100)).astype(np.float32)
        values[rng.random((30, 100)) < 0.1] = np.float32(-999.9)
        obs[:] = values
    return path


def xarray_zarr(path: Path, zarr_format: int = 3) -> Path:
    """An xarray-written Zarr v3 store: packed int16 (`scale_factor` 0.01, `_FillValue`
    -1), floats with NaN (fill NaN) and with a -9999 fill (base64 in the attribute), a
    string coordinate, a 0-d grid mapping, numeric and list global attributes.  (In a
    v2 store xarray writes the fills as the arrays' `fill_value`.)"""
    rng = np.random.default_rng(RNG_SEED + 3)
    sst = rng.uniform(0, 3, (8, 6)).astype(np.float32)
    sst[0, 0] = np.nan
    sst[3, 2:4] = np.nan
    temp = rng.normal(15, 5, (8, 6))
    temp[1, :2] = np.nan
    ds = xr.Dataset(
        {"packed": (("time", "x"), sst, {"units": "degC", "valid_range": [0.0, 3.0]}),
         "temp": (("time", "x"), temp, {"long_name": "temperature"}),
         "nanfill": (("time", "x"), rng.normal(0, 1, (8, 6)).astype(np.float32)),
         "level": (("x",), np.array([-128, -1, 0, 1, 2, 127], np.int8)),
         "ok": (("x",), np.array([True, False, True, True, False, True])),
         "crs": ((), np.int32(0), {"grid_mapping_name": "latitude_longitude"})},
        coords={"time": np.arange(8.0), "x": np.arange(6) * 0.5,
                "site": (("x",), np.array(["a", "bb", "ccc", "dddd", "é", "f"]))},
        attrs={"title": "xarray store", "n_members": 3, "weights": [0.25, 0.75],
               "ok": True})
    ds["nanfill"][2, 2] = np.nan
    ds["time"].attrs = {"units": "days since 2000-01-01", "calendar": "noleap"}
    ds["packed"].encoding = {"dtype": "int16", "scale_factor": np.float32(0.01),
                             "_FillValue": -1, "chunks": (4, 3)}
    ds["temp"].encoding = {"_FillValue": -9999.0, "chunks": (2, 6)}
    with warnings.catch_warnings():  # zarr: fixed-width UTF-32 has no v3 spec yet
        warnings.simplefilter("ignore", zarr.errors.UnstableSpecificationWarning)
        ds.to_zarr(path, zarr_format=zarr_format, consolidated=False)
    return path


def xarray_zarr_v2(path: Path) -> Path:
    return xarray_zarr(path, zarr_format=2)


def plain_h5(path: Path) -> Path:
    """h5py with dimension scales: gzip, lzf and shuffle filters, typed attributes, a
    packed int16 with a fill, fixed and variable-length strings, a scalar."""
    rng = np.random.default_rng(RNG_SEED + 4)
    with h5py.File(path, "w") as h:
        h.attrs["title"] = "plain hdf5"
        h.attrs["fixed_text"] = np.bytes_(b"fixed bytes")
        h.attrs["count"] = np.int64(42)
        h.attrs["ratios"] = np.array([0.5, 1.5], np.float32)
        h.attrs["one"] = np.array([7], np.int16)
        h.attrs["flag"] = np.bool_(True)
        h.attrs.create("names", ["x", "yz"], dtype=h5py.string_dtype())
        x = h.create_dataset("x", data=np.arange(40, dtype=np.float64))
        x.make_scale("x")
        y = h.create_dataset("y", data=np.arange(6, dtype=np.int32))
        y.make_scale("y")
        g = h.create_dataset("gz", data=rng.normal(0, 1, (6, 40)).astype(np.float32),
                             chunks=(3, 20), compression="gzip", shuffle=True)
        g.attrs["units"] = "m"
        g.attrs["valid_max"] = np.float32(3.0)
        g.attrs["_FillValue"] = np.float32(-999.0)
        g[0, :5] = -999.0
        lz = h.create_dataset("lzf", data=rng.integers(0, 1000, (6, 40)).astype(np.int16),
                              chunks=(2, 40), compression="lzf", shuffle=True)
        lz.attrs["scale_factor"] = np.float32(0.5)
        lz.attrs["add_offset"] = np.float32(10.0)
        lz.attrs["_FillValue"] = np.int16(999)
        lz.attrs["comment"] = np.bytes_(b"packed")
        lz[1, 3:9] = 999
        sh = h.create_dataset("shuf", data=np.arange(240, dtype=np.int32).reshape(6, 40),
                              chunks=(6, 8), shuffle=True, compression="gzip")
        sh.attrs["levels"] = np.array([1, 2, 3], np.int32)
        for ds in (g, lz, sh):
            ds.dims[0].attach_scale(y)
            ds.dims[1].attach_scale(x)
        fs = h.create_dataset("fixed_names", data=np.array([b"ab", b"cde", b"", b"f", b"gh",
                                                            b"ijk"], "S3"))
        vs = h.create_dataset("vlen_names", data=[f"name-{i}" for i in range(6)],
                              dtype=h5py.string_dtype())
        for ds in (fs, vs):
            ds.dims[0].attach_scale(y)
        s = h.create_dataset("scalar", data=np.float32(2.5))
        s.attrs["grid_mapping_name"] = "latitude_longitude"
    return path


SOURCES: dict[str, tuple[Callable[[Path], Path], str, dict[str, Any]]] = {
    "cmip": (cmip_nc, "tas.nc", {}),
    "era5": (era5_nc, "era5.nc", {}),
    "nc3": (nc3_classic, "classic.nc", {}),
    "stations": (stations_nc, "stations.nc", {}),
    "zarr": (xarray_zarr, "store.zarr", {"engine": "zarr", "consolidated": False}),
    "zarr2": (xarray_zarr_v2, "store2.zarr", {"engine": "zarr", "consolidated": False}),
    "h5": (plain_h5, "plain.h5", {"engine": "h5netcdf"}),
}


# ---------------------------------------------------------------------------
# Comparison helpers


def oracle(src: Path, **kw: Any) -> xr.Dataset:
    """xarray's reading of the source, loaded (times and coordinates left alone)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "variable .* has multiple fill values")
        ds = xr.open_dataset(src, decode_times=False, decode_coords=False,
                             decode_timedelta=False, **kw)
        ds.load()
    return ds


def values_of(f: tet.TetFile, name: str) -> Arr:
    """A dataset's logical values: text decoded, 0-d back to shape ()."""
    ds = f.dataset(name)
    data = f.read_numpy(name)
    if "text" in ds.extra:
        data = decode_text(data, ds.extra["text"]["kind"])
    if ds.extra.get("shape") == []:
        data = data.reshape(())
    return data


def stored_dtype(dt: np.dtype[Any]) -> np.dtype[Any]:
    """The .tet type of a NumPy type (the format has no int8 and no bool)."""
    return {np.dtype("int8"): np.dtype("int16"),
            np.dtype("bool"): np.dtype("uint8")}.get(np.dtype(dt), np.dtype(dt))


def same_value(a: Any, b: Any) -> bool:
    """Equal with the same type (NumPy scalars and arrays: same dtype; NaN == NaN)."""
    if type(b) is float and isinstance(a, float) and math.isnan(b):
        # a NaN Python float is kept as np.float64 (JSON has no NaN literal)
        return math.isnan(a)
    if isinstance(b, np.ndarray) or isinstance(a, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=a.dtype.kind
                                                               in "fc")))
    if isinstance(b, np.generic) or isinstance(a, np.generic):
        if type(a) is not type(b):
            return False
        return bool(a == b) or bool(np.isnan(a) and np.isnan(b)) if a.dtype.kind == "f" \
            else bool(a == b)
    return type(a) is type(b) and bool(a == b)


def assert_same_attrs(got: dict[str, Any], want: dict[str, Any], where: str) -> None:
    assert list(got) == list(want) or set(got) == set(want), (where, set(got) ^ set(want))
    for key in want:
        assert same_value(got[key], want[key]), (where, key, got[key], want[key])


def assert_matches(f: tet.TetFile, want: xr.Dataset) -> None:
    """Every variable of xarray's reading is a dataset of `f` with the same decoded
    values, dtype, NaN positions, dims, typed attributes and encoding."""
    assert sorted(f.dataset_names()) == sorted(str(n) for n in want.variables)
    assert_same_attrs(f.file_attrs, dict(want.attrs), "file")
    for name in want.variables:
        xv = want[name].variable
        ds = f.dataset(str(name))
        got = values_of(f, str(name))
        assert got.shape == xv.shape, name
        if xv.dtype.kind in "SUO":
            kind = ds.extra["text"]["kind"]
            assert kind == ("bytes" if xv.dtype.kind == "S" else "str"), name
            assert got.reshape(-1).tolist() == xv.values.reshape(-1).tolist(), name
            dims = ds.dim_names[:-1] if ds.dim_names else ()
        else:
            assert "text" not in ds.extra, name
            assert got.dtype == stored_dtype(xv.dtype), (name, got.dtype, xv.dtype)
            np.testing.assert_array_equal(got, xv.values, err_msg=str(name), strict=False)
            assert np.array_equal(np.isnan(got), np.isnan(xv.values)) \
                if got.dtype.kind == "f" else True, name
            if got.dtype.kind == "f":  # bit for bit, as xarray computes
                assert got.tobytes() == xv.values.astype(got.dtype).tobytes(), name
            dims = ds.dim_names or ()
        assert tuple(dims) == xv.dims, (name, dims, xv.dims)
        encoding = dict(ds.extra.get("encoding", {}))
        attrs = {k: v for k, v in ds.typed_attrs.items() if k not in encoding}
        if xv.dtype == bool:  # stored as u8 marked the way xarray marks stored bools
            assert attrs.pop("dtype") == "bool", name
        assert_same_attrs(attrs, dict(xv.attrs), f"variable {name}")
        moved = {k: v for k, v in xv.encoding.items() if k in ENCODING}
        assert set(encoding) - {"dtype"} == set(moved), (name, encoding, moved)
        for key, value in moved.items():
            assert same_value(encoding[key], value), (name, key, encoding[key], value)
        if encoding:
            assert encoding["dtype"] == np.dtype(xv.encoding["dtype"]).name \
                or encoding["dtype"] in ("str", "S1"), (name, encoding)


def assert_stats(f: tet.TetFile, want: xr.Dataset) -> int:
    """nan_mean / nan_count of every float variable against xarray's skipna view;
    returns how many variables were checked."""
    checked = 0
    for name in want.variables:
        xv = want[name]
        if xv.dtype.kind != "f":
            continue
        mean = f.query({"dataset": str(name), "nan_mean": []})["execution"]
        count = f.query({"dataset": str(name), "nan_count": []})["execution"]
        assert count["operation_nan_count"] == xv.size - int(xv.count()), name
        want_mean = float(xv.mean(skipna=True))
        got_mean = mean["operation_nan_mean"]
        if math.isnan(want_mean):
            assert got_mean is None or math.isnan(got_mean), name
        else:
            assert got_mean == pytest.approx(want_mean, rel=1e-6), name
        checked += 1
    return checked


def make(kind: str, tmp_path: Path, **kw: Any) -> tuple[Path, Path, xr.Dataset]:
    producer, filename, open_kw = SOURCES[kind]
    src = producer(tmp_path / filename)
    out = tmp_path / f"{kind}.tet"
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvertWarning)
        convert(src, out, **kw)
    return src, out, oracle(src, **open_kw)


# ---------------------------------------------------------------------------
# Decoded values and typed metadata equal xarray's reading


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_matches_xarray(kind: str, tmp_path: Path) -> None:
    _, out, want = make(kind, tmp_path, jobs=2)
    with tet.open(out) as f:
        assert_matches(f, want)
        assert assert_stats(f, want) >= 1


def source_chunks(kind: str, src: Path) -> dict[str, tuple[int, ...] | None]:
    """Each variable's chunk shape as the source's own library reports it."""
    out: dict[str, tuple[int, ...] | None] = {}
    if kind in ("zarr", "zarr2"):
        group = zarr.open_group(src, mode="r", zarr_format=3 if kind == "zarr" else 2)
        for name, node in group.members():
            assert isinstance(node, zarr.Array)
            out[name] = tuple(node.chunks) if node.ndim else None
    elif kind == "h5":
        with h5py.File(src, "r") as h:
            for name in h:
                out[name] = h[name].chunks
    else:
        with netCDF4.Dataset(src) as d:
            for name, var in d.variables.items():
                chunking = var.chunking()
                out[name] = tuple(chunking) if isinstance(chunking, list) else None
    return out


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_chunk_grid_is_the_sources(kind: str, tmp_path: Path) -> None:
    """Decoded variables keep the source's chunk grid (clipped to the array); text keeps
    it on its value axes; 0-d variables are one tile; unchunked ones the default."""
    src, out, _ = make(kind, tmp_path)
    chunked = 0
    with tet.open(out) as f:
        for name, chunks in source_chunks(kind, src).items():
            ds = f.dataset(name)
            if ds.extra.get("shape") == []:
                assert ds.chunk_shape == ds.shape[:1] + ds.shape[1:], name
                continue
            logical = ds.shape[:-1] if "text" in ds.extra else ds.shape
            tile = ds.chunk_shape[:-1] if "text" in ds.extra else ds.chunk_shape
            if chunks is None:
                assert tile == logical, name  # small: the default tiling is one tile
                continue
            want = tuple(min(c, n) for c, n in zip(chunks[:len(logical)], logical))
            assert tile == want, (name, tile, want)
            chunked += 1
    assert (chunked == 0) == (kind == "nc3")  # NetCDF-3 has no chunking


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_keep_packed_keeps_stored_values_and_attributes(kind: str, tmp_path: Path) -> None:
    """`keep_packed=True`: the values as stored and every attribute a real, typed
    attribute (no encoding but the type of int8 values), as xarray shows them with
    `mask_and_scale=False`."""
    src, out, _ = make(kind, tmp_path, keep_packed=True)
    want = oracle(src, mask_and_scale=False, **SOURCES[kind][2])
    with tet.open(out) as f:
        assert_same_attrs(f.file_attrs, dict(want.attrs), "file")
        for name in want.variables:
            ds = f.dataset(str(name))
            xv = want[name].variable
            narrow = {"encoding": {"dtype": "int8"}}  # int8 kept as i16
            assert "encoding" not in ds.extra or (
                dict(ds.extra) == narrow and xv.dtype.name == "int8"), name
            got = values_of(f, str(name))
            if xv.dtype.kind in "SUO":
                assert got.reshape(-1).tolist() == xv.values.reshape(-1).tolist(), name
            else:
                assert got.dtype == stored_dtype(xv.dtype), name
                np.testing.assert_array_equal(got, xv.values, err_msg=str(name))
            attrs = dict(ds.typed_attrs)
            if xv.dtype == bool:
                assert attrs.pop("dtype") == "bool", name
            assert_same_attrs(attrs, dict(xv.attrs), f"variable {name}")


# ---------------------------------------------------------------------------
# What each source is about


def nan_count(f: tet.TetFile, name: str) -> float:
    result: float = f.query({"dataset": name, "nan_count": []})["execution"][
        "operation_nan_count"]
    return result


def test_cmip_fill_and_metadata(tmp_path: Path) -> None:
    _, out, want = make("cmip", tmp_path)
    with tet.open(out) as f:
        tas = f.read_numpy("tas")
        assert tas.dtype == np.float32
        assert int(np.isnan(tas).sum()) == CMIP_MISSING == nan_count(f, "tas")
        assert tas[0, 0, 0] == np.float32(400.0)  # valid_range is not applied
        assert not (tas == np.float32(1e20)).any()
        mean = f.query({"dataset": "tas", "nan_mean": []})["execution"]["operation_nan_mean"]
        assert mean == pytest.approx(float(want["tas"].mean()), rel=1e-6)
        assert 270 < mean < 290  # 1e20 left in would put it near 1e17
        ds = f.dataset("tas")
        assert dict(ds.extra) == {"encoding": {"_FillValue": np.float32(1e20),
                                               "missing_value": np.float32(1e20),
                                               "dtype": "float32"}}
        assert ds.attrs["_FillValue"] == ds.attrs["missing_value"] == "100000000000000000000"
        assert ds.attrs["valid_range"] == "[150, 350]"  # v1 text as cli.md §6 says
        valid = ds.typed_attrs["valid_range"]
        assert valid.dtype == np.float32 and valid.tolist() == [150.0, 350.0]
        assert ds.chunk_shape == (1, 16, 24)
        crs = f.dataset("crs")
        assert (crs.shape, dict(crs.extra), crs.dim_names) == ((1,), {"shape": []}, None)
        assert values_of(f, "crs").shape == ()
        assert crs.typed_attrs["semi_major_axis"] == np.float64(6371000.0)
        assert f.file_attrs["realization_index"] == np.int32(1)
        assert type(f.file_attrs["realization_index"]) is np.int32
        assert f.file_attrs["version_numbers"].tolist() == [6, 2, 57]
        assert f.file_attrs["Conventions"] == "CF-1.7 CMIP-6.2"
        assert f.dataset("time").typed_attrs["calendar"] == "noleap"
        assert f.read_numpy("time_bnds").shape == (12, 2)


def test_era5_packing_is_bit_identical(tmp_path: Path) -> None:
    """int16 with f64 scale and offset → f64, computed as xarray computes it (cast,
    mask, ×= scale, += offset); int16 with an f32 scale → f32; int8 with a fill → f32."""
    src, out, want = make("era5", tmp_path)
    with netCDF4.Dataset(src) as d:
        d.set_auto_maskandscale(False)
        raw = d["sst"][...]
        tcc_raw = d["tcc"][...]
    expect = raw.astype(np.float64)
    expect[expect == np.int16(-32767)] = np.nan
    expect *= np.float64(0.000573)
    expect += np.float64(289.46)
    with tet.open(out) as f:
        sst = f.read_numpy("sst")
        assert sst.dtype == np.float64
        assert sst.tobytes() == expect.tobytes() == want["sst"].values.tobytes()
        assert int(np.isnan(sst).sum()) == ERA5_LAND == nan_count(f, "sst")
        assert f.dataset("sst").chunk_shape == (2, 5, 20)
        tcc = f.read_numpy("tcc")
        assert tcc.dtype == np.float32
        assert int(np.isnan(tcc).sum()) == int((tcc_raw == -1).sum()) > 0
        flag = f.read_numpy("flag")
        assert flag.dtype == np.float32
        np.testing.assert_array_equal(flag, [np.nan, 0, 1, 2, np.nan, 3, 4, 5, 6, 7])
        assert dict(f.dataset("sst").extra)["encoding"] == {
            "_FillValue": np.int16(-32767), "missing_value": np.int16(-32767),
            "scale_factor": np.float64(0.000573), "add_offset": np.float64(289.46),
            "dtype": "int16"}
        assert f.read_numpy("time").dtype == np.int32  # times stay numbers


def test_nc3_classic_fills(tmp_path: Path) -> None:
    _, out, _ = make("nc3", tmp_path)
    with tet.open(out) as f:
        np.testing.assert_array_equal(f.read_numpy("temperature"),
                                      [[1, 2, np.nan, 4, 5], [6, np.nan, 8, 9, -100]])
        np.testing.assert_array_equal(f.read_numpy("precip"),
                                      [[0.5, np.nan, np.nan, 3, 0], [1, 2, np.nan, 0.25, 9]])
        assert f.read_numpy("count").dtype == np.float32
        np.testing.assert_array_equal(f.read_numpy("count"), [1, np.nan, 3, 4, np.nan])
        assert f.read_numpy("big").dtype == np.float64
        assert f.read_numpy("quality").tolist() == [255, 0, 1, 128, 127]
        assert f.read_numpy("quality").dtype == np.uint8
        assert values_of(f, "station_name").tolist() == [b"alpha", b"beta", b"gamma", b"",
                                                         b"epsilon"]
        nofill = f.read_numpy("nofill")  # no fill attribute: the default fill is a value
        assert nofill[0] == 1.0 and nofill[1] == np.float32(netCDF4.default_fillvals["f4"])
        assert dict(f.dataset("precip").extra)["encoding"]["missing_value"].tolist() == [-1, -2]
        assert f.file_attrs["weights"].tolist() == [1.5, 2.5]


def test_stations_strings_and_unlimited_time(tmp_path: Path) -> None:
    _, out, want = make("stations", tmp_path)
    with tet.open(out) as f:
        names = values_of(f, "station_name")
        assert names.shape == (100,)
        assert names.tolist() == want["station_name"].values.tolist()
        assert names[7] == "Station 007 – Ålesund"
        ds = f.dataset("station_name")
        assert ds.extra["text"] == {"width": len("Station 000 – Ålesund".encode()), "kind": "str"}
        assert ds.dim_names == ("station", "station_name_strlen")
        assert ds.typed_attrs["cf_role"] == "timeseries_id"
        assert values_of(f, "station_code")[42] == b"C0042"
        assert f.dataset("obs").shape == (30, 100)
        assert f.dataset("obs").chunk_shape == (10, 50)
        assert f.dataset("obs").typed_attrs["coordinates"] == "lat station_name"
        assert "coords" not in f.metadata["datasets"].get("obs", {}) or \
            "station" not in f.metadata["datasets"]["obs"]["coords"]  # 100 labels > 64


def test_xarray_zarr_packed_and_base64_fill(tmp_path: Path) -> None:
    src, out, want = make("zarr", tmp_path)
    meta = json.loads((src / "temp" / "zarr.json").read_text())
    assert meta["attributes"]["_FillValue"] == "AAAAAICHw8A="  # -9999 as xarray writes it
    with tet.open(out) as f:
        packed = f.read_numpy("packed")
        assert packed.dtype == np.float64  # a JSON-float scale is a Python float: f64
        mean = f.query({"dataset": "packed", "nan_mean": []})["execution"]["operation_nan_mean"]
        assert mean == pytest.approx(float(want["packed"].mean()), rel=1e-9)
        assert mean < 3  # the packed integers left in would read 100 times larger
        assert nan_count(f, "packed") == 3
        temp = f.dataset("temp")
        assert temp.extra["encoding"] == {"_FillValue": -9999.0, "dtype": "float64"}
        assert temp.attrs["_FillValue"] == "-9999"
        assert nan_count(f, "temp") == 2
        assert f.file_attrs == {"title": "xarray store", "n_members": 3,
                                "weights": [0.25, 0.75], "ok": True}
        assert f.dataset("packed").typed_attrs["valid_range"] == [0.0, 3.0]
        assert values_of(f, "site").tolist() == ["a", "bb", "ccc", "dddd", "é", "f"]
        # no int8 or bool in the format: i16 marked in the encoding, u8 marked as xarray
        # marks stored bools
        assert f.read_numpy("level").tolist() == [-128, -1, 0, 1, 2, 127]
        assert dict(f.dataset("level").extra) == {"encoding": {"dtype": "int8"}}
        assert f.read_numpy("ok").tolist() == [1, 0, 1, 1, 0, 1]
        assert dict(f.dataset("ok").extra) == {}  # bool: u8 with xarray's dtype attribute
        assert f.dataset("ok").typed_attrs["dtype"] == "bool"
        assert dict(f.dataset("crs").extra) == {"shape": []}


def test_hdf5_filters_and_typed_attrs(tmp_path: Path) -> None:
    src, out, _ = make("h5", tmp_path)
    with h5py.File(src, "r") as h:
        assert h["lzf"].compression == "lzf" and h["lzf"].shuffle
        assert h["gz"].compression == "gzip"
        raw = h["lzf"][...]
        gz = h["gz"][...]
    with tet.open(out) as f:
        lz = f.read_numpy("lzf")
        expect = raw.astype(np.float32)
        expect[expect == np.int16(999)] = np.nan
        expect *= np.float32(0.5)
        expect += np.float32(10.0)
        assert lz.dtype == np.float32 and lz.tobytes() == expect.tobytes()
        np.testing.assert_array_equal(f.read_numpy("gz"), np.where(gz == -999, np.nan, gz))
        np.testing.assert_array_equal(f.read_numpy("shuf"), np.arange(240).reshape(6, 40))
        assert f.dataset("lzf").chunk_shape == (2, 40)
        assert f.dataset("lzf").typed_attrs["comment"] == "packed"
        assert f.dataset("shuf").typed_attrs["levels"].dtype == np.int32
        assert f.file_attrs["one"] == np.int16(7)
        assert f.file_attrs["fixed_text"] == "fixed bytes"
        assert f.file_attrs["names"] == ["x", "yz"]
        assert values_of(f, "fixed_names").tolist() == [b"ab", b"cde", b"", b"f", b"gh", b"ijk"]
        assert values_of(f, "vlen_names").tolist() == [f"name-{i}" for i in range(6)]
        assert values_of(f, "scalar").item() == np.float32(2.5)


# ---------------------------------------------------------------------------
# Limits, warnings, streaming, the command line


def test_attributes_past_the_v1_limits_keep_their_types(tmp_path: Path) -> None:
    """v1 holds 64 short string attrs; every attribute is kept typed beside them, and
    only a key that is not 1..1024 bytes is left out (with a warning)."""
    src = tmp_path / "attrs.h5"
    with h5py.File(src, "w") as h:
        ds = h.create_dataset("x", data=np.arange(4, dtype=np.float32))
        for i in range(80):
            ds.attrs[f"a{i:02d}"] = np.int64(i)
        ds.attrs["huge"] = "v" * 5000
        ds.attrs["k" * 1025] = "too long a key"
        ds.attrs["empty"] = ""
        ds.attrs["vec"] = np.array([1.5, 2.0])
        ds.attrs["nan"] = np.float64(np.nan)
        h.attrs["history"] = "h" * 3000
    with pytest.warns(ConvertWarning) as caught:
        convert(src, tmp_path / "o.tet")
    assert [str(w.message) for w in caught] == [
        "attribute of `x` left out: its name is not 1..1024 bytes of UTF-8"]
    with tet.open(tmp_path / "o.tet") as f:
        ds = f.dataset("x")
        assert len(ds.attrs) == 64
        typed = ds.typed_attrs
        assert [typed[f"a{i:02d}"] for i in range(80)] == list(range(80))
        assert type(typed["a79"]) is np.int64
        assert typed["huge"] == "v" * 5000 and typed["empty"] == ""
        assert typed["vec"].dtype == np.float64 and math.isnan(typed["nan"])
        assert f.file_attrs == {"history": "h" * 3000}


def test_cf_warnings_as_xarray_warns(tmp_path: Path) -> None:
    """A NaN fill on an integer variable is dropped; `_Unsigned` on a float is ignored;
    a Zarr `_FillValue` that is not what xarray writes stays an attribute."""
    src = tmp_path / "w.h5"
    with h5py.File(src, "w") as h:
        h["ints"] = np.array([1, 2, 3], np.int16)
        h["ints"].attrs["_FillValue"] = np.float32(np.nan)
        h["floats"] = np.array([1.5, -1.0], np.float32)
        h["floats"].attrs["_Unsigned"] = "true"
    with pytest.warns(ConvertWarning) as caught:
        convert(src, tmp_path / "w.tet")
    assert sorted(str(w.message) for w in caught) == [
        "variable `floats`: _Unsigned on a non-integer variable is ignored",
        "variable `ints`: _FillValue np.float32(nan) is NaN on an integer variable; "
        "dropped (as xarray drops it)"]
    with tet.open(tmp_path / "w.tet") as f:
        assert f.read_numpy("ints").dtype == np.int16
        assert dict(f.dataset("ints").typed_attrs) == {}
        assert dict(f.dataset("floats").extra) == {"encoding": {"_Unsigned": "true",
                                                                "dtype": "float32"}}
    store = tmp_path / "odd.zarr"
    g = zarr.open_group(store, mode="w", zarr_format=3)
    a = g.create_array("v", shape=(3,), dtype="i2", attributes={"_FillValue": "AAA="})
    a[:] = [1, 2, 3]
    with pytest.warns(ConvertWarning) as caught:
        convert(store, tmp_path / "z.tet")
    assert [str(w.message) for w in caught] == [
        "variable `v`: _FillValue 'AAA=' is not a int16 fill as xarray writes it; kept as "
        "an attribute, not applied"]
    with tet.open(tmp_path / "z.tet") as f:
        assert f.read_numpy("v").tolist() == [1, 2, 3]
        assert f.dataset("v").typed_attrs == {"_FillValue": "AAA="}


def test_decoding_streams_block_by_block(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A packed variable larger than one read block (1 MiB here) is read, decoded and
    written in chunk-aligned blocks, never as a whole, and keeps its chunk grid."""
    write = importlib.import_module("tet.convert.write")  # tet.convert is also a function
    src = tmp_path / "big.nc"
    rng = np.random.default_rng(RNG_SEED + 5)
    with netCDF4.Dataset(src, "w") as d:
        d.createDimension("y", 1200)
        d.createDimension("x", 1000)
        v = d.createVariable("v", "i2", ("y", "x"), chunksizes=(100, 1000),
                             fill_value=np.int16(-1))
        v.scale_factor = np.float64(0.25)
        v.set_auto_maskandscale(False)
        v[:] = rng.integers(-1, 30000, (1200, 1000), dtype=np.int16)
    boxes: list[tuple[slice, ...]] = []
    load = write._load

    def spy(var: Any, box: tuple[slice, ...]) -> Arr:
        boxes.append(box)
        return load(var, box)

    monkeypatch.setattr(write, "_load", spy)
    monkeypatch.setattr(write, "block_bytes", lambda jobs: 1 << 20)  # 1 MiB blocks
    convert(src, tmp_path / "big.tet", jobs=1)
    assert len(boxes) > 1
    assert all(b[0].start % 100 == 0 and (b[0].stop - b[0].start) < 1200 for b in boxes)
    want = oracle(src)
    with tet.open(tmp_path / "big.tet") as f:
        assert f.dataset("v").chunk_shape == (100, 1000)
        assert f.read_numpy("v").tobytes() == want["v"].values.tobytes()


def test_cli_keep_packed_and_report(cli: CliFn, tmp_path: Path) -> None:
    src = cmip_nc(tmp_path / "tas.nc")
    r = cli("convert", src, tmp_path / "d.tet")
    assert r.rc == 0, r.err
    doc = json.loads(r.out)
    assert list(doc) == ["input", "output", "dataset_count", "dataset_names", "datasets",
                         "history", "elapsed_secs"]
    assert {"name": "crs", "ndim": 1, "dims": [1]} in doc["datasets"]
    assert {"name": "tas", "ndim": 3, "dims": [12, 16, 24]} in doc["datasets"]
    r = cli("convert", src, tmp_path / "k.tet", "--keep-packed")
    assert r.rc == 0, r.err
    with tet.open(tmp_path / "d.tet") as d, tet.open(tmp_path / "k.tet") as k:
        assert int(np.isnan(d.read_numpy("tas")).sum()) == CMIP_MISSING
        raw = k.read_numpy("tas")
        assert int((raw == np.float32(1e20)).sum()) == CMIP_MISSING
        assert not np.isnan(raw).any()
        assert k.dataset("tas").typed_attrs["_FillValue"] == np.float32(1e20)
        assert "encoding" not in k.dataset("tas").extra
        assert k.query({"dataset": "tas", "nan_count": []})["execution"][
            "operation_nan_count"] == 0
    r = cli("info", tmp_path / "d.tet")
    assert r.rc == 0 and "tas" in r.out


def test_xarray_zarr_v2_fill_value_is_the_fill(tmp_path: Path) -> None:
    """A v2 store: xarray's reading takes the array's `fill_value` as `_FillValue` and
    `_ARRAY_DIMENSIONS` as the dims; so does convert."""
    src, out, _ = make("zarr2", tmp_path)
    meta = json.loads((src / "temp" / ".zarray").read_text())
    assert meta["fill_value"] == -9999.0
    with tet.open(out) as f:
        assert nan_count(f, "temp") == 2
        assert f.dataset("temp").extra["encoding"]["_FillValue"] == -9999.0
        assert f.dataset("temp").dim_names == ("time", "x")
        assert "_ARRAY_DIMENSIONS" not in f.dataset("temp").typed_attrs
        assert f.read_numpy("packed").dtype == np.float64


# ---------------------------------------------------------------------------
# The rule end to end: the converted file through the xarray backend is the source


@pytest.mark.parametrize("keep_packed", [False, True], ids=["decoded", "keep-packed"])
def test_engine_tet_reads_the_source(real_sources: dict[str, Path], tmp_path: Path,
                                     keep_packed: bool) -> None:
    """For every producer-style source (tests/producers.py), `xr.open_dataset(converted,
    engine="tet")` equals `xr.open_dataset(source)`: values, dtypes, dims, coordinates,
    typed variable and file attributes.  Decoded, the engine's nan_count / nan_mean /
    nan_std of every float variable are xarray's skipna reductions (in float64)."""
    from tests.producers import assert_same_as_source, expected, nan_stats

    checked = 0
    for kind, src in sorted(real_sources.items()):
        out = tmp_path / f"{kind}.tet"
        convert(src, out, keep_packed=keep_packed)
        want = expected(src)
        try:
            assert_same_as_source(expected(out, engine="tet"), want)
        except AssertionError as exc:
            raise AssertionError(f"{kind}: {exc}") from None
        if keep_packed:
            continue
        with tet.open(out) as f:
            for name in want.variables:
                if want[name].dtype.kind != "f" or str(name) not in f.dataset_names():
                    continue
                # in float64, as the engine reduces (xarray's float32 std of the
                # NetCDF-3 default fills, 9.97e36, overflows to inf)
                stats = nan_stats(want[[name]].astype(np.float64), name)
                for op in ("nan_count", "nan_mean", "nan_std"):
                    got = f.query({"dataset": str(name), op: []})["execution"][f"operation_{op}"]
                    if math.isnan(stats[op]):
                        assert got is None, (kind, name, op)
                    else:
                        assert got == pytest.approx(stats[op], rel=1e-5, abs=1e-12), \
                            (kind, name, op, got, stats[op])
                checked += 1
    assert checked >= 10 or keep_packed


def test_group_attributes_are_kept(tmp_path: Path) -> None:
    """Sub-group attributes (NetCDF-4 groups, HDF5 groups, Zarr groups) are the group's
    typed attributes of the file (`metadata.tet.groups`), as the backend's `group=`
    shows them."""
    nc = tmp_path / "g.nc"
    with netCDF4.Dataset(nc, "w") as d:
        d.createDimension("n", 3)
        g = d.createGroup("forecast")
        g.source = "model run 7"
        g.member = np.int32(4)
        g.createVariable("t", "f4", ("n",))[:] = [1, 2, 3]
    h5 = tmp_path / "g.h5"
    with h5py.File(h5, "w") as h:
        grp = h.create_group("forecast")
        grp.attrs["source"] = "model run 7"
        grp.attrs["member"] = np.int32(4)
        grp["t"] = np.array([1, 2, 3], np.float32)
    store = tmp_path / "g.zarr"
    root = zarr.open_group(store, mode="w", zarr_format=3)
    sub = root.create_group("forecast", attributes={"source": "model run 7", "member": 4})
    sub.create_array("t", shape=(3,), dtype="f4")[:] = [1, 2, 3]
    for src, member in ((nc, np.int32(4)), (h5, np.int32(4)), (store, 4)):
        out = tmp_path / f"{src.suffix[1:]}.tet"
        convert(src, out)
        with tet.open(out) as f:
            groups = f.metadata["tet"]["groups"]
            assert list(groups) == ["forecast"], src
        with xr.open_dataset(out, engine="tet", group="forecast") as ds:
            assert ds.attrs == {"source": "model run 7", "member": member}, src
            assert type(ds.attrs["member"]) is type(member), src
            assert ds["t"].values.tolist() == [1, 2, 3]


def test_many_missing_values(tmp_path: Path) -> None:
    """A `missing_value` list of 100 values masks every one of them (one pass over the
    block), as xarray does."""
    src = tmp_path / "many.nc"
    with netCDF4.Dataset(src, "w") as d:
        d.createDimension("n", 300)
        v = d.createVariable("v", "f4", ("n",))
        v.missing_value = np.arange(0, 200, 2, dtype=np.float32)
        i = d.createVariable("i", "i4", ("n",))
        i.missing_value = np.arange(0, 200, 2, dtype=np.int32)
        v.set_auto_maskandscale(False)
        i.set_auto_maskandscale(False)
        v[:] = np.arange(300, dtype=np.float32)
        i[:] = np.arange(300, dtype=np.int32)
    convert(src, tmp_path / "many.tet")
    want = oracle(src)
    with tet.open(tmp_path / "many.tet") as f:
        for name in ("v", "i"):
            got = f.read_numpy(name)
            assert got.dtype == want[name].dtype
            np.testing.assert_array_equal(got, want[name].values)
            assert int(np.isnan(got).sum()) == 100


@pytest.mark.parametrize("keep_packed", [False, True], ids=["decoded", "keep-packed"])
@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_engine_tet_reads_these_sources(kind: str, keep_packed: bool, tmp_path: Path) -> None:
    """The same rule for the sources of this module (int8 and bool variables, `_Unsigned`,
    several `missing_value`s, char arrays, a v2 store)."""
    from tests.producers import assert_same_as_source, expected

    producer, filename, _ = SOURCES[kind]
    src = producer(tmp_path / filename)
    out = tmp_path / "out.tet"
    convert(src, out, keep_packed=keep_packed)
    assert_same_as_source(expected(out, engine="tet"), expected(src))
