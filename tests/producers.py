"""Test inputs written the way real producers write them, plus xarray's reading of them.

Every producer writes one small, deterministic (seeded) source into a given directory with
the library a real pipeline would use (netCDF4 for CMOR/ERA5/NetCDF-3/station files, xarray
for the Zarr v3 and v2 stores, zarr-python for a plain v3 store, h5py for the plain HDF5
file) and returns its path. Nothing binary is committed; all of them together take well
under a second to write. `all_sources(dir)` writes the kinds issue 13 names
(`PRODUCERS`), `all_sources(dir, extra=True)` the `EXTRA_PRODUCERS` too; the
`real_sources` fixture (tests/conftest.py) is the latter, written once per session.

The oracle side:

- `expected(path, **open_kwargs)` is xarray's reading of a source, loaded into memory
  (`xr.open_dataset` with the engine a user would pick; see its docstring for HDF5).
- `assert_same_as_source(actual, expected)` compares two Datasets the way issue 13 asks:
  decoded values (NaN-aware, exact dtype), dims, coordinates and typed attributes.
- `nan_stats(ds, var)` is xarray's `skipna` view of a float variable (count, mean, std…),
  keyed like the engine's ops so a test can compare `nan_count`/`nan_mean`/`nan_std`.

The module-level constants (`CMIP_TAS_MISSING`, `ERA5_SST_MISSING`, …) are the properties
each source claims; `tests/test_producers.py` checks every one of them against xarray,
netCDF4, h5py and zarr, so other tests can rely on them.

What xarray 2026.9 does with these sources (checked by tests/test_producers.py; a reading
of a converted file must match it):

- `_FillValue` and `missing_value` are both masked, `missing_value` may hold several
  values (every one is masked); `valid_range`/`valid_min`/`valid_max` are NOT applied and
  stay in attrs (netCDF4-python's own auto-mask does apply them: the CMIP file holds
  `CMIP_TAS_OUT_OF_RANGE` values outside `valid_range` to tell the two apart).
- The decoded float type follows `xarray.coding.variables._choose_float_dtype`: int16 with
  float64 `scale_factor` and `add_offset` (ERA5) → float64; int16 with only `_FillValue`
  → float32; int16 with a JSON-float `scale_factor` (Zarr attributes are Python floats)
  → float64; float32 stays float32 whatever its fill's type.
- The encoding attributes (`_FillValue`, `missing_value`, `scale_factor`, `add_offset`,
  `dtype`, time `units`/`calendar`) move from attrs to `Variable.encoding`.
- A variable WITHOUT `_FillValue`/`missing_value` is not masked at all: netCDF's default
  fill (9.96921e36 for float, never written) is read back as that number (see
  `nc3_classic`).
- A `noleap` time axis decodes to `cftime.DatetimeNoLeap` objects (dtype object); its
  `bounds` variable (`time_bnds`) is decoded with the time's units and calendar too. A
  standard-calendar time axis decodes to `datetime64[ns]`.
- `decode_coords=True` (the default) makes the variables named in a `coordinates`
  attribute coordinates (`height` in CMIP, `lat`/`lon`/`station_name` in the stations
  file); `crs` (named by `grid_mapping`) and the `*_bnds` variables stay data variables.
- A `char station_name(station, name_strlen)` variable decodes to fixed-width bytes `|S20`
  (no `_Encoding` attribute, as DSG producers write it), dims `(station,)` (the strlen
  dim is gone); a NetCDF-4 vlen string variable decodes to fixed-width unicode as wide as
  its longest value (`<U19` here), not to `object`.
- `missing_value` with several values warns (SerializationWarning "has multiple fill
  values … decoding all values to NaN"); `expected()` silences that one warning.
- Attributes read through netCDF4 keep their NumPy type (`np.float32(1e20)`, `np.int32(1)`,
  float32 arrays); Python-native `str` for text. Attributes read from Zarr are JSON
  values: Python `int`/`float`/`str`/`list`.
- h5netcdf (xarray's only way into plain HDF5) reads fixed-length byte-string attributes
  as `str`, string-array attributes as `list[str]`, bools as `np.bool`.
- Zarr v3 (xarray-written): the missing marker is the `_FillValue` ATTRIBUTE (a JSON
  number for ints, base64 text of a float64 for floats); the array's `fill_value` is not
  a missing marker (xarray writes 0 for the int16 arrays) and a store without the
  attribute is not masked at all, even in never-written chunks (`zarr_v3_plain`).
- Zarr v2: the array's `.zarray` `fill_value` IS the `_FillValue` (`xarray_zarr_v2`).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Hashable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr

# ---------------------------------------------------------------------------
# the properties the sources claim (checked in tests/test_producers.py)

CMIP_SHAPE = (12, 32, 96)  # time, lat, lon
CMIP_FILL = np.float32(1e20)
CMIP_TAS_MISSING = 35
CMIP_TAS_OUT_OF_RANGE = 2  # values outside valid_range, NOT missing for xarray
CMIP_CHUNKS = (4, 16, 48)

ERA5_SHAPE = (8, 21, 40)  # time, latitude (descending), longitude
ERA5_FILL = np.int16(-32767)
ERA5_T2M_MISSING = 17
ERA5_SST_MISSING = 8 * 5 * 8  # every step over a 5 x 8 "land" block
ERA5_CHUNKS = (4, 21, 20)

NC3_SHAPE = (5, 6, 8)  # time (record dimension), y, x
NC3_TEMP_MISSING = 11  # _FillValue = -999.0
NC3_WIND_MISSING = 7  # missing_value = -1e30 only
NC3_RAIN_MISSING = (4, 3)  # missing_value = [-1.0, -2.0]: 4 of the first, 3 of the second
NC3_COUNT_MISSING = 5  # int16, _FillValue = -1
NC3_PARTIAL_ROWS = 3  # rows of `partial` written; the rest holds netCDF's default fill

STATIONS = 100
STATION_STEPS = 24
STATION_STRLEN = 20
STATION_FILL = np.float32(-9999.0)
STATION_TEMP_MISSING = 40
STATION_CHUNKS = (6, 50)  # temperature's chunks (NetCDF-4 formats)

ZARR_SHAPE = (6, 16, 24)  # time, lat, lon
ZARR_CHUNKS = (3, 8, 12)
ZARR_PACKED_MISSING = 9  # int16, scale_factor 0.01, _FillValue -1
ZARR_T2M_MISSING = 6  # int16, scale_factor 0.05, add_offset 280.0, _FillValue -32767
ZARR_SST_MISSING = 14  # float32 NaN, _FillValue -9999.0 (base64 text in attributes)
ZARR_SST_FILL_BASE64 = "AAAAAICHw8A="  # float64 -9999.0, little-endian, base64
ZARR_NAN_FILL_BASE64 = "AAAAAAAA+H8="  # float64 NaN: what xarray gives float coordinates

HDF5_SHAPE = (8, 10)  # y, x (dimension scales at the root)
HDF5_GZIP_MISSING = 6  # float32 "filters/gzip", _FillValue = -999.0
HDF5_COUNTS_MISSING = 3  # int16 "groups/a/counts", _FillValue = -1
HDF5_ROOT_ATTRS: dict[str, Any] = {
    "int16_scalar": np.int16(-7),
    "float64_array": np.array([0.5, 1.5, 2.5]),
    "bytes_value": np.bytes_(b"fixed-length ASCII"),
    "text": "variable-length UTF-8 \u2713",
    "flag": np.bool_(True),
    "float32_scalar": np.float32(0.1),
    "int64_array": np.array([1, -2, 3], dtype=np.int64),
    "string_array": ["alpha", "beta"],  # h5py: a vlen str array, read back as object
}


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _holes(rng: np.random.Generator, shape: tuple[int, ...], n: int,
           taken: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
    """A boolean mask of `shape` with exactly `n` True cells (none where `taken`)."""
    free = np.flatnonzero(~taken.ravel()) if taken is not None else np.arange(math.prod(shape))
    mask = np.zeros(math.prod(shape), dtype=bool)
    mask[rng.choice(free, size=n, replace=False)] = True
    return mask.reshape(shape)


# ---------------------------------------------------------------------------
# 1. CMIP (CMOR-style NetCDF-4)


def cmip_nc4(dir: Path) -> Path:
    """`tas_Amon_…nc`: a CMOR-style NetCDF-4 file.

    - dims `time` (UNLIMITED, 12, as CMOR writes it), `lat` 32, `lon` 96, `bnds` 2;
    - `tas(time, lat, lon)` float32, zlib level 1 + shuffle, chunks `CMIP_CHUNKS`,
      `_FillValue = missing_value = np.float32(1e20)` at exactly `CMIP_TAS_MISSING`
      cells, `valid_range` float32 [150, 350] with `CMIP_TAS_OUT_OF_RANGE` (unmasked)
      values outside it, `grid_mapping = "crs"`, `coordinates = "height"`,
      `cell_methods`, `cell_measures`, and typed numeric attrs;
    - `time` float64 mid-month days, `units = "days since 1850-01-01"`,
      `calendar = "noleap"`, `bounds = "time_bnds"`; `time_bnds(time, bnds)`;
    - `lat`/`lon` float64 with `units`, `standard_name`, `axis`, `bounds`;
      `lat_bnds(lat, bnds)`, `lon_bnds(lon, bnds)`;
    - `height` scalar float64 (2 m; a coordinate of `tas` through `coordinates`);
    - `crs` scalar int32 with `grid_mapping_name = "latitude_longitude"` and float64
      ellipsoid attributes;
    - global attrs: strings (`Conventions`, `title`, `history`, `institution`, …), int32
      indices (`realization_index = np.int32(1)` …), float64 `branch_time_in_parent`, a
      float64 array and an int32 array attribute.
    """
    import netCDF4

    rng = _rng(13)
    nt, ny, nx = CMIP_SHAPE
    path = Path(dir) / "tas_Amon_TET-ESM_historical_r1i1p1f1_gn_185001-185012.nc"
    days = np.cumsum([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]).astype(np.float64)
    lat_edges = np.linspace(-90.0, 90.0, ny + 1)
    lon_edges = np.linspace(0.0, 360.0, nx + 1)
    base = 288.0 - 40.0 * np.cos(np.deg2rad(0.5 * (lat_edges[:-1] + lat_edges[1:])))[:, None] ** 2
    tas = (base[None] + rng.normal(0.0, 3.0, (nt, ny, nx))).astype(np.float32)
    missing = _holes(rng, CMIP_SHAPE, CMIP_TAS_MISSING)
    outliers = _holes(rng, CMIP_SHAPE, CMIP_TAS_OUT_OF_RANGE, taken=missing)
    tas[outliers] = np.float32(360.5)  # above valid_range[1]
    tas[missing] = CMIP_FILL
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.createDimension("time", None)
        nc.createDimension("lat", ny)
        nc.createDimension("lon", nx)
        nc.createDimension("bnds", 2)
        t = nc.createVariable("time", "f8", ("time",))
        t.setncatts({"bounds": "time_bnds", "units": "days since 1850-01-01",
                     "calendar": "noleap", "axis": "T", "long_name": "time",
                     "standard_name": "time"})
        t[:] = 0.5 * (days[:-1] + days[1:])
        tb = nc.createVariable("time_bnds", "f8", ("time", "bnds"))
        tb[:] = np.stack([days[:-1], days[1:]], axis=1)
        for name, edges, units, std, axis in (
                ("lat", lat_edges, "degrees_north", "latitude", "Y"),
                ("lon", lon_edges, "degrees_east", "longitude", "X")):
            v = nc.createVariable(name, "f8", (name,))
            v.setncatts({"bounds": f"{name}_bnds", "units": units, "axis": axis,
                         "long_name": std.capitalize(), "standard_name": std})
            v[:] = 0.5 * (edges[:-1] + edges[1:])
            b = nc.createVariable(f"{name}_bnds", "f8", (name, "bnds"))
            b[:] = np.stack([edges[:-1], edges[1:]], axis=1)
        h = nc.createVariable("height", "f8", ())
        h.setncatts({"units": "m", "axis": "Z", "positive": "up", "long_name": "height",
                     "standard_name": "height"})
        h.assignValue(2.0)
        crs = nc.createVariable("crs", "i4", ())
        crs.setncatts({"grid_mapping_name": "latitude_longitude",
                       "longitude_of_prime_meridian": 0.0,
                       "semi_major_axis": 6378137.0,
                       "inverse_flattening": 298.257223563})
        crs.assignValue(0)
        v = nc.createVariable("tas", "f4", ("time", "lat", "lon"), zlib=True, complevel=1,
                              shuffle=True, chunksizes=CMIP_CHUNKS, fill_value=CMIP_FILL)
        v.setncatts({"standard_name": "air_temperature",
                     "long_name": "Near-Surface Air Temperature",
                     "comment": "near-surface (usually, 2 meter) air temperature",
                     "units": "K", "cell_methods": "area: time: mean",
                     "cell_measures": "area: areacella", "history": "none",
                     "missing_value": CMIP_FILL, "grid_mapping": "crs",
                     "coordinates": "height",
                     "valid_range": np.array([150.0, 350.0], dtype=np.float32),
                     "original_name": "TREFHT",
                     "scale_check": np.float64(1.0),
                     "level_index": np.int16(0)})
        v[:] = tas
        nc.setncatts({
            "Conventions": "CF-1.7 CMIP-6.2",
            "activity_id": "CMIP",
            "title": "TET-ESM output prepared for CMIP6",
            "history": "2019-04-01T00:00:00Z ; CMOR rewrote data to be consistent with "
                       "CMIP6, CF-1.7 CMIP-6.2 and CF standards.",
            "institution": "Tet Institute for Array Studies, Nowhere",
            "source_id": "TET-ESM",
            "experiment_id": "historical",
            "frequency": "mon",
            "table_id": "Amon",
            "variable_id": "tas",
            "variant_label": "r1i1p1f1",
            "realization_index": np.int32(1),
            "initialization_index": np.int32(1),
            "physics_index": np.int32(1),
            "forcing_index": np.int32(1),
            "branch_time_in_parent": 0.0,
            "branch_time_in_child": 0.0,
            "nominal_resolution_km": np.array([625.0, 417.0]),
            "grid_shape": np.array([ny, nx], dtype=np.int32),
        })
    return path


# ---------------------------------------------------------------------------
# 2. ERA5 (packed int16, NetCDF-4)


def _pack(values: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], float, float]:
    """ERA5's packing: the value range on -32766..32766, scale and offset float64."""
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    scale = (hi - lo) / 65532.0
    offset = (hi + lo) / 2.0
    packed = np.nan_to_num(np.round((values - offset) / scale), nan=0.0)
    return np.clip(packed, -32766, 32766).astype(np.int16), scale, offset


def era5_nc(dir: Path) -> Path:
    """`era5_t2m_sst.nc`: an ERA5-style NetCDF-4 file (CDS `grib_to_netcdf` layout).

    - dims `time` 8 (int32 "hours since 1900-01-01 00:00:00.0", `calendar = "gregorian"`),
      `latitude` 21 float32 DESCENDING (60 → 55), `longitude` 40 float32;
    - `t2m(time, latitude, longitude)` int16, zlib, chunks `ERA5_CHUNKS`,
      `scale_factor`/`add_offset` float64, `_FillValue = missing_value = np.int16(-32767)`
      at `ERA5_T2M_MISSING` cells; `GRIB_paramId` int32 attr;
    - `sst(…)` the same packing, missing over a 5 x 8 "land" block at every step
      (`ERA5_SST_MISSING` cells);
    - global `Conventions = "CF-1.6"`, `history`, `institution`.

    xarray decodes both to float64 (float64 scale and offset on int16).
    """
    import netCDF4

    rng = _rng(5)
    nt, ny, nx = ERA5_SHAPE
    path = Path(dir) / "era5_t2m_sst.nc"
    t2m = 275.0 + 8.0 * rng.standard_normal(ERA5_SHAPE)
    t2m_missing = _holes(rng, ERA5_SHAPE, ERA5_T2M_MISSING)
    sst = 283.0 + rng.uniform(-2.0, 2.0, ERA5_SHAPE)
    land = np.zeros(ERA5_SHAPE, dtype=bool)
    land[:, 5:10, 10:18] = True
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.createDimension("longitude", nx)
        nc.createDimension("latitude", ny)
        nc.createDimension("time", nt)
        lon = nc.createVariable("longitude", "f4", ("longitude",))
        lon.setncatts({"units": "degrees_east", "long_name": "longitude"})
        lon[:] = np.arange(nx, dtype=np.float32) * np.float32(0.25)
        lat = nc.createVariable("latitude", "f4", ("latitude",))
        lat.setncatts({"units": "degrees_north", "long_name": "latitude"})
        lat[:] = np.float32(60.0) - np.arange(ny, dtype=np.float32) * np.float32(0.25)
        time = nc.createVariable("time", "i4", ("time",))
        time.setncatts({"units": "hours since 1900-01-01 00:00:00.0", "long_name": "time",
                        "calendar": "gregorian"})
        time[:] = 1078800 + np.arange(nt, dtype=np.int32)  # 2023-01-26 …
        for name, values, missing, attrs in (
                ("t2m", t2m, t2m_missing, {"units": "K", "long_name": "2 metre temperature",
                                           "GRIB_paramId": np.int32(167)}),
                ("sst", sst, land, {"units": "K", "long_name": "Sea surface temperature",
                                    "GRIB_paramId": np.int32(34)})):
            packed, scale, offset = _pack(np.where(missing, np.nan, values))
            packed[missing] = ERA5_FILL
            v = nc.createVariable(name, "i2", ("time", "latitude", "longitude"), zlib=True,
                                  complevel=1, chunksizes=ERA5_CHUNKS, fill_value=ERA5_FILL)
            v.set_auto_maskandscale(False)
            v.setncatts({"scale_factor": np.float64(scale), "add_offset": np.float64(offset),
                         "missing_value": ERA5_FILL, **attrs})
            v[:] = packed
        nc.setncatts({"Conventions": "CF-1.6",
                      "history": "2023-02-01 10:00:00 GMT by grib_to_netcdf-2.25.1: "
                                 "/opt/ecmwf/mars-client/bin/grib_to_netcdf.bin -S param "
                                 "-o /cache/data/adaptor.mars.internal.nc /cache/tmp/x.grib",
                      "institution": "European Centre for Medium-Range Weather Forecasts"})
    return path


# ---------------------------------------------------------------------------
# 3. NetCDF-3 classic


def nc3_classic(dir: Path) -> Path:
    """`classic.nc`: a NetCDF-3 classic file (`format="NETCDF3_CLASSIC"`).

    - dims `time` (the record dimension, 5 records), `y` 6, `x` 8;
    - `temp(time, y, x)` float32 `_FillValue = -999.0` at `NC3_TEMP_MISSING` cells;
    - `wind(time, y, x)` float32 with only `missing_value = -1e30` (no `_FillValue`) at
      `NC3_WIND_MISSING` cells;
    - `rain(time, y, x)` float32 with `missing_value = [-1.0, -2.0]` (two values, no
      `_FillValue`): `NC3_RAIN_MISSING` cells of each;
    - `count(time, y, x)` int16 (`short`) `_FillValue = -1` at `NC3_COUNT_MISSING` cells:
      xarray decodes it to float32 with NaN;
    - `partial(y, x)` float32 with no fill attribute at all, only its first
      `NC3_PARTIAL_ROWS` rows written: the rest holds netCDF's default float fill
      (`netCDF4.default_fillvals["f4"]` = 9.969209968386869e36).

    Observed: xarray (netcdf4 engine, default `mask_and_scale=True`) does NOT mask the
    default fill of `partial`: its unwritten cells read back as 9.96921e36 (float32) and
    `partial` has no NaN. netCDF4-python's own auto-mask does mask them.
    - coordinates `time` float64 "days since 2000-01-01" (standard calendar), `y`/`x`
      float32 with `units`; global attrs with a float64, an int32 and an int16 value.
    """
    import netCDF4

    rng = _rng(3)
    nt, ny, nx = NC3_SHAPE
    path = Path(dir) / "classic.nc"
    temp_missing = _holes(rng, NC3_SHAPE, NC3_TEMP_MISSING)
    wind_missing = _holes(rng, NC3_SHAPE, NC3_WIND_MISSING)
    rain_a = _holes(rng, NC3_SHAPE, NC3_RAIN_MISSING[0])
    rain_b = _holes(rng, NC3_SHAPE, NC3_RAIN_MISSING[1], taken=rain_a)
    count_missing = _holes(rng, NC3_SHAPE, NC3_COUNT_MISSING)
    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as nc:
        nc.createDimension("time", None)
        nc.createDimension("y", ny)
        nc.createDimension("x", nx)
        t = nc.createVariable("time", "f8", ("time",))
        t.setncatts({"units": "days since 2000-01-01", "calendar": "standard",
                     "standard_name": "time"})
        t[:] = np.arange(nt, dtype=np.float64)
        for name, n in (("y", ny), ("x", nx)):
            c = nc.createVariable(name, "f4", (name,))
            c.setncatts({"units": "km", "long_name": f"{name} coordinate"})
            c[:] = np.arange(n, dtype=np.float32) * np.float32(2.5)
        dims = ("time", "y", "x")
        v = nc.createVariable("temp", "f4", dims, fill_value=np.float32(-999.0))
        v.setncatts({"units": "degC", "long_name": "air temperature"})
        v[:] = np.where(temp_missing, np.float32(-999.0),
                        rng.normal(12.0, 4.0, NC3_SHAPE).astype(np.float32))
        v = nc.createVariable("wind", "f4", dims)
        v.setncatts({"units": "m s-1", "missing_value": np.float32(-1e30)})
        v.set_auto_maskandscale(False)
        v[:] = np.where(wind_missing, np.float32(-1e30),
                        rng.gamma(2.0, 2.0, NC3_SHAPE).astype(np.float32))
        v = nc.createVariable("rain", "f4", dims)
        v.setncatts({"units": "mm", "missing_value": np.array([-1.0, -2.0], np.float32)})
        v.set_auto_maskandscale(False)
        rain = rng.exponential(1.5, NC3_SHAPE).astype(np.float32)
        rain[rain_a] = -1.0
        rain[rain_b] = -2.0
        v[:] = rain
        v = nc.createVariable("count", "i2", dims, fill_value=np.int16(-1))
        v.setncatts({"units": "1", "long_name": "number of observations"})
        v.set_auto_maskandscale(False)
        v[:] = np.where(count_missing, np.int16(-1),
                        rng.integers(0, 500, NC3_SHAPE).astype(np.int16))
        v = nc.createVariable("partial", "f4", ("y", "x"))
        v.setncatts({"units": "1", "comment": "rows past the first three are never written"})
        v[:NC3_PARTIAL_ROWS, :] = rng.uniform(0.0, 1.0, (NC3_PARTIAL_ROWS, nx))
        nc.setncatts({"Conventions": "CF-1.6", "title": "NetCDF-3 classic test file",
                      "history": "written by tests/producers.py",
                      "version": np.float64(2.0), "station_count": np.int32(48),
                      "sample_rate": np.int16(4)})
    return path


# ---------------------------------------------------------------------------
# 4. station time series (CF DSG timeSeries)


def station_names() -> list[str]:
    """The 100 station names of `stations_nc`, at most `STATION_STRLEN` bytes of ASCII."""
    return [f"STATION-{i:03d}-{'ABCDEFGHIJ'[i % 10] * (1 + i % 7)}" for i in range(STATIONS)]


def stations_nc(dir: Path, names: Literal["vlen", "char"] = "vlen",
                format: str | None = None) -> Path:
    """`stations_<names>[_<format>].nc`: a CF DSG `featureType = "timeSeries"` station file.

    - dims `station` 100, `time` UNLIMITED (24 hourly steps), and for `names="char"`
      `name_strlen` `STATION_STRLEN`;
    - `station_name(station)`: `names="vlen"` a NetCDF-4 vlen `str` variable (format
      NETCDF4), `names="char"` a classic `char station_name(station, name_strlen)` array
      with no `_Encoding` (format NETCDF4_CLASSIC unless `format` says e.g.
      "NETCDF3_CLASSIC"); `cf_role = "timeseries_id"`;
    - `lat(station)`, `lon(station)` float64, `alt(station)` float32;
    - `time` float64 "hours since 2020-01-01 00:00:00" (standard calendar);
    - `temperature(time, station)` float32 `_FillValue = -9999.0` at
      `STATION_TEMP_MISSING` cells, `coordinates = "lat lon station_name"`;
    - global `featureType = "timeSeries"`, `Conventions = "CF-1.8"`, `title`.

    xarray: `station_name`, `lat`, `lon` become (non-index) coordinates on `station`; the
    vlen variant decodes to `<U19` (its longest name), the char variant to `|S20` bytes.
    `temperature` is chunked `STATION_CHUNKS` in the NetCDF-4 formats; `time` gets
    netCDF4's default chunk of 512 along the unlimited dimension.
    """
    import netCDF4

    if names not in ("vlen", "char"):
        raise ValueError(f"names must be 'vlen' or 'char', not {names!r}")
    fmt: Any = format or ("NETCDF4" if names == "vlen" else "NETCDF4_CLASSIC")
    rng = _rng(100)
    path = Path(dir) / f"stations_{names}{'_' + fmt.lower() if format else ''}.nc"
    labels = station_names()
    temp = rng.normal(10.0, 6.0, (STATION_STEPS, STATIONS)).astype(np.float32)
    temp[_holes(rng, temp.shape, STATION_TEMP_MISSING)] = STATION_FILL
    with netCDF4.Dataset(path, "w", format=fmt) as nc:
        nc.createDimension("station", STATIONS)
        nc.createDimension("time", None)
        if names == "vlen":
            s = nc.createVariable("station_name", str, ("station",))
            s[:] = np.array(labels, dtype=object)
        else:
            nc.createDimension("name_strlen", STATION_STRLEN)
            s = nc.createVariable("station_name", "S1", ("station", "name_strlen"))
            s[:] = netCDF4.stringtochar(np.array(labels, dtype=f"S{STATION_STRLEN}"))
        s.setncatts({"long_name": "station name", "cf_role": "timeseries_id"})
        for name, values, units in (("lat", rng.uniform(35.0, 70.0, STATIONS), "degrees_north"),
                                    ("lon", rng.uniform(-10.0, 30.0, STATIONS), "degrees_east")):
            c = nc.createVariable(name, "f8", ("station",))
            c.setncatts({"units": units, "standard_name":
                         "latitude" if name == "lat" else "longitude"})
            c[:] = values
        a = nc.createVariable("alt", "f4", ("station",))
        a.setncatts({"units": "m", "standard_name": "surface_altitude", "positive": "up"})
        a[:] = rng.uniform(0.0, 1500.0, STATIONS).astype(np.float32)
        t = nc.createVariable("time", "f8", ("time",))
        t.setncatts({"units": "hours since 2020-01-01 00:00:00", "standard_name": "time",
                     "calendar": "standard"})
        t[:] = np.arange(STATION_STEPS, dtype=np.float64)
        v = nc.createVariable("temperature", "f4", ("time", "station"), fill_value=STATION_FILL,
                              chunksizes=STATION_CHUNKS if fmt.startswith("NETCDF4") else None)
        v.setncatts({"units": "degC", "standard_name": "air_temperature",
                     "coordinates": "lat lon station_name"})
        v.set_auto_maskandscale(False)
        v[:] = temp
        nc.setncatts({"featureType": "timeSeries", "Conventions": "CF-1.8",
                      "title": "hourly station temperatures"})
    return path


# ---------------------------------------------------------------------------
# 5. Zarr v3 written by xarray


def _xarray_dataset() -> tuple[xr.Dataset, dict[str, dict[str, Any]]]:
    """The Dataset and encoding `xarray_zarr_v3` / `xarray_zarr_v2` write."""
    import pandas as pd  # type: ignore[import-untyped]

    rng = _rng(33)
    nt, ny, nx = ZARR_SHAPE
    packed = np.round(rng.uniform(0.0, 0.4, ZARR_SHAPE), 2)
    packed[_holes(rng, ZARR_SHAPE, ZARR_PACKED_MISSING)] = np.nan
    t2m = np.round((280.0 + rng.normal(0.0, 5.0, ZARR_SHAPE)) / 0.05) * 0.05
    t2m[_holes(rng, ZARR_SHAPE, ZARR_T2M_MISSING)] = np.nan
    sst = (290.0 + rng.normal(0.0, 2.0, ZARR_SHAPE)).astype(np.float32)
    sst[_holes(rng, ZARR_SHAPE, ZARR_SST_MISSING)] = np.nan
    dims = ("time", "lat", "lon")
    ds = xr.Dataset(
        {"packed": (dims, packed, {"units": "1", "long_name": "cloud fraction"}),
         "t2m": (dims, t2m, {"units": "K", "long_name": "2 metre temperature"}),
         "sst": (dims, sst, {"units": "K", "standard_name": "sea_surface_temperature"})},
        coords={"time": pd.date_range("2000-01-01", periods=nt, freq="D"),
                "lat": ("lat", np.linspace(-37.5, 37.5, ny), {"units": "degrees_north"}),
                "lon": ("lon", np.linspace(0.0, 345.0, nx), {"units": "degrees_east"})},
        attrs={"title": "written by xarray", "version": 3, "resolution": 0.5,
               "levels": [1, 2, 3]})
    encoding = {
        "packed": {"dtype": "int16", "scale_factor": 0.01, "_FillValue": -1,
                   "chunks": ZARR_CHUNKS},
        "t2m": {"dtype": "int16", "scale_factor": 0.05, "add_offset": 280.0,
                "_FillValue": -32767, "chunks": ZARR_CHUNKS},
        "sst": {"_FillValue": -9999.0, "chunks": ZARR_CHUNKS},
    }
    return ds, encoding


def xarray_zarr_v3(dir: Path) -> Path:
    """`xarray_v3.zarr`: `Dataset.to_zarr(path, zarr_format=3)` (consolidated, as xarray
    writes by default), chunks `ZARR_CHUNKS` on every data variable.

    - coords `time` (6 days from 2000-01-01; xarray stores int64 "days since 2000-01-01
      00:00:00", `calendar = "proleptic_gregorian"`), `lat` 16, `lon` 24 float64;
    - `packed(time, lat, lon)`: float64 data in [0, 0.4] with NaN, encoding
      `{"dtype": "int16", "scale_factor": 0.01, "_FillValue": -1}` → stored int16 with
      attributes `scale_factor: 0.01`, `_FillValue: -1` (JSON numbers), Zarr
      `fill_value: 0`; `ZARR_PACKED_MISSING` NaN;
    - `t2m(…)`: encoding int16, `scale_factor: 0.05`, `add_offset: 280.0`,
      `_FillValue: -32767`; `ZARR_T2M_MISSING` NaN;
    - `sst(…)` float32 with `ZARR_SST_MISSING` NaN and encoding `_FillValue = -9999.0`:
      xarray stores the chunks with -9999.0 where NaN, Zarr `fill_value: "NaN"`, and the
      attribute `_FillValue: "AAAAAICHw8A="` (the float64 -9999.0 as base64 text,
      `ZARR_SST_FILL_BASE64`); the float coordinates get `_FillValue: "AAAAAAAA+H8="`
      (NaN, `ZARR_NAN_FILL_BASE64`);
    - every array has `dimension_names`; global attrs `title` (str), `version` (int 3),
      `resolution` (float 0.5), `levels` (list [1, 2, 3]).

    xarray decodes `packed` and `t2m` to float64 (JSON-float scale/offset), `sst` stays
    float32; global attrs come back as Python `str`/`int`/`float`/`list`.
    """
    path = Path(dir) / "xarray_v3.zarr"
    ds, encoding = _xarray_dataset()
    with quiet_consolidated():
        ds.to_zarr(path, zarr_format=3, encoding=encoding, mode="w-")
    return path


def xarray_zarr_v2(dir: Path) -> Path:
    """`xarray_v2.zarr`: the same Dataset and encoding as `xarray_zarr_v3`, written with
    `zarr_format=2` (consolidated `.zmetadata`, `_ARRAY_DIMENSIONS` attributes).

    In v2 xarray keeps the fill in the array metadata, not in attributes: `.zarray`
    `fill_value` is -9999.0 for `sst`, -1 for `packed`, -32767 for `t2m` (and NaN for the
    float coordinates), and `.zattrs` holds no `_FillValue`. On reading, xarray takes a v2
    array's `fill_value` as its `_FillValue`: any v2 array with a non-null fill is masked.
    """
    path = Path(dir) / "xarray_v2.zarr"
    ds, encoding = _xarray_dataset()
    ds.to_zarr(path, zarr_format=2, encoding=encoding, mode="w-")
    return path


def zarr_v3_plain(dir: Path) -> Path:
    """`plain_v3.zarr`: a Zarr v3 group written by zarr-python alone (no xarray
    attributes), `dimension_names` on every array, group attributes `{"source": "zarr",
    "count": 2}`.

    - `field` float32 (4, 6), chunks (2, 3), `fill_value = -9999.0`: cells `(0, 0)` and
      `(1, 4)` hold -9999.0 written explicitly; the chunk `[2:4, 3:6]` is never written;
    - `level` int16 (4, 6), chunks (2, 6), `fill_value = 7`: one cell holds 7.

    Observed: xarray does NOT mask a v3 array's `fill_value` (only an `_FillValue`
    attribute masks): `field` reads back with no NaN, -9999.0 at the written cells AND
    in the never-written chunk; `level` stays int16 with its 7.
    """
    import zarr

    path = Path(dir) / "plain_v3.zarr"
    group = zarr.open_group(path, mode="w-", zarr_format=3)
    group.attrs.update({"source": "zarr", "count": 2})
    field = group.create_array("field", shape=(4, 6), chunks=(2, 3), dtype="float32",
                               fill_value=-9999.0, dimension_names=["y", "x"])
    values = np.arange(24, dtype=np.float32).reshape(4, 6) / np.float32(4.0)
    values[0, 0] = values[1, 4] = -9999.0
    field[0:2, :] = values[0:2]
    field[2:4, 0:3] = values[2:4, 0:3]
    level = group.create_array("level", shape=(4, 6), chunks=(2, 6), dtype="int16",
                               fill_value=7, dimension_names=["y", "x"])
    counts = np.arange(24, dtype=np.int16).reshape(4, 6) * np.int16(3)
    counts[3, 5] = 7
    level[...] = counts
    return path


# ---------------------------------------------------------------------------
# 6. plain HDF5 with typed attributes and filters


def hdf5_typed(dir: Path) -> Path:
    """`typed.h5`: an HDF5 file written with h5py (not NetCDF-4: no `_NCProperties`).

    - root attrs `HDF5_ROOT_ATTRS`: np.int16 scalar, float64 array, fixed-length bytes
      (`np.bytes_`, HDF5 `|S18`), variable-length UTF-8 `str`, `np.bool_` (HDF5 enum),
      float32 scalar, int64 array, an array of two vlen strings;
    - dimension scales `/y` (8, float64, `units = "m"`) and `/x` (10, float64);
    - `/filters/gzip` float32 (y, x) gzip level 4, chunks (4, 5), `_FillValue =
      np.float32(-999)` at `HDF5_GZIP_MISSING` cells, `units`, float32 `valid_max`,
      int32 array `flag_values`, bytes `source`;
    - `/filters/lzf` int32 (y, x) lzf, chunks (4, 10); `/filters/shuffle_gzip` uint16
      (y, x) shuffle + gzip, chunks (8, 5);
    - `/groups/a/counts` int16 (y, x) `_FillValue = np.int16(-1)` at
      `HDF5_COUNTS_MISSING` cells (xarray: float32 with NaN), no compression;
    - `/groups/a/b/deep` float64 (3, 4) with no dimension scales (h5netcdf names its axes
      `phony_dim_*`) and a bool attribute.
    Every 2-D dataset except `deep` has `y`, `x` attached.
    """
    import h5py  # type: ignore[import-untyped]

    rng = _rng(7)
    ny, nx = HDF5_SHAPE
    path = Path(dir) / "typed.h5"
    gzip = rng.normal(5.0, 1.0, HDF5_SHAPE).astype(np.float32)
    gzip[_holes(rng, HDF5_SHAPE, HDF5_GZIP_MISSING)] = -999.0
    counts = rng.integers(0, 1000, HDF5_SHAPE).astype(np.int16)
    counts[_holes(rng, HDF5_SHAPE, HDF5_COUNTS_MISSING)] = -1
    with h5py.File(path, "w") as h:
        for key, value in HDF5_ROOT_ATTRS.items():
            h.attrs[key] = value
        y = h.create_dataset("y", data=np.arange(ny, dtype=np.float64) * 100.0)
        y.make_scale("y")
        y.attrs["units"] = "m"
        x = h.create_dataset("x", data=np.linspace(0.0, 1.0, nx))
        x.make_scale("x")
        made = [
            h.create_dataset("filters/gzip", data=gzip, compression="gzip",
                             compression_opts=4, chunks=(4, 5)),
            h.create_dataset("filters/lzf", compression="lzf", chunks=(4, 10),
                             data=rng.integers(-10**6, 10**6, HDF5_SHAPE).astype(np.int32)),
            h.create_dataset("filters/shuffle_gzip", shuffle=True, compression="gzip",
                             chunks=(8, 5),
                             data=rng.integers(0, 60000, HDF5_SHAPE).astype(np.uint16)),
            h.create_dataset("groups/a/counts", data=counts),
        ]
        for ds in made:
            ds.dims[0].attach_scale(y)
            ds.dims[1].attach_scale(x)
        g = made[0]
        g.attrs["_FillValue"] = np.float32(-999.0)
        g.attrs["units"] = "K"
        g.attrs["valid_max"] = np.float32(100.0)
        g.attrs["flag_values"] = np.array([0, 1, 2], dtype=np.int32)
        g.attrs["source"] = np.bytes_(b"sensor-7")
        made[3].attrs["_FillValue"] = np.int16(-1)
        made[3].attrs["long_name"] = "hits per cell"
        deep = h.create_dataset("groups/a/b/deep", data=rng.normal(size=(3, 4)))
        deep.attrs["calibrated"] = np.bool_(False)
    return path


# ---------------------------------------------------------------------------
# all of them


PRODUCERS: dict[str, Callable[[Path], Path]] = {
    "cmip": cmip_nc4,
    "era5": era5_nc,
    "nc3": nc3_classic,
    "stations": stations_nc,
    "stations_char": lambda d: stations_nc(d, names="char"),
    "zarr_v3": xarray_zarr_v3,
    "hdf5": hdf5_typed,
}

# More sources, beyond the kinds issue 13 names: the Zarr v2 twin of the v3 store, a
# v3 store with no xarray attributes, and the station file as NetCDF-3 char arrays.
EXTRA_PRODUCERS: dict[str, Callable[[Path], Path]] = {
    "zarr_v2": xarray_zarr_v2,
    "zarr_v3_plain": zarr_v3_plain,
    "stations_char_nc3": lambda d: stations_nc(d, names="char", format="NETCDF3_CLASSIC"),
}


def all_sources(dir: Path, *, extra: bool = False) -> dict[str, Path]:
    """Write every source into `dir`; {kind: path} with the `PRODUCERS` keys (and the
    `EXTRA_PRODUCERS` keys too with `extra=True`)."""
    makers = {**PRODUCERS, **(EXTRA_PRODUCERS if extra else {})}
    return {kind: make(Path(dir)) for kind, make in makers.items()}


# ---------------------------------------------------------------------------
# the oracle: xarray's reading of a source


def _is_zarr(path: Path) -> bool:
    return path.is_dir() or path.suffix == ".zarr"


def _is_plain_hdf5(path: Path) -> bool:
    return path.suffix in (".h5", ".hdf5", ".he5")


def expected(path: Path, **open_kwargs: Any) -> xr.Dataset:
    """xarray's reading of `path`, loaded into memory (`open_kwargs` go to xarray).

    - `.nc` (NetCDF-3 and NetCDF-4): `xr.open_dataset(path, engine="netcdf4")`;
    - a Zarr store (a directory or `*.zarr`): `xr.open_dataset(path, engine="zarr")`;
    - plain HDF5 (`.h5`): xarray reads it only through h5netcdf with `phony_dims="sort"`
      (axes without dimension scales become `phony_dim_N`), one group at a time. This
      returns every group's variables in ONE Dataset, each named by its path without the
      leading "/" ("filters/gzip", "groups/a/b/deep"; root variables keep their name),
      with the root group's attributes; group attributes are not carried (the sources
      here have none). `assert_same_as_source` accepts any dim name where this oracle
      says `phony_dim_*`. The values and attributes are h5netcdf's (CF-decoded by
      xarray); `tests/test_producers.py` checks them against h5py directly.

    An `engine=` in `open_kwargs` overrides the choice (e.g. "h5netcdf" for NetCDF-4, or
    "tet" to load a converted file the same way: `expected(out_tet, engine="tet")`).
    """
    path = Path(path)
    if _is_plain_hdf5(path) and open_kwargs.get("engine", "h5netcdf") == "h5netcdf":
        return _expected_hdf5(path, **open_kwargs)
    kwargs = dict(open_kwargs)
    kwargs.setdefault("engine", "zarr" if _is_zarr(path) else "netcdf4")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Consolidated metadata", UserWarning)
        warnings.filterwarnings("ignore", ".*has multiple fill values", xr.SerializationWarning)
        warnings.filterwarnings("ignore", "Failed to open Zarr store with consolidated",
                                RuntimeWarning)  # a store zarr-python wrote unconsolidated
        with xr.open_dataset(path, **kwargs) as ds:
            return ds.load()


def _expected_hdf5(path: Path, **open_kwargs: Any) -> xr.Dataset:
    kwargs = {"engine": "h5netcdf", "phony_dims": "sort", **open_kwargs}
    groups = xr.open_groups(path, **kwargs)
    try:
        out = xr.Dataset(attrs=dict(groups["/"].attrs))
        for group, ds in groups.items():
            prefix = group.strip("/")
            for name, var in ds.variables.items():
                key = f"{prefix}/{name}" if prefix else str(name)
                if prefix and name in ds.dims and name in out.variables:
                    continue  # a root scale seen again from a child group
                out[key] = var.load()
        return out
    finally:
        for ds in groups.values():
            ds.close()


# ---------------------------------------------------------------------------
# comparing


def _is_phony(dim: Hashable) -> bool:
    return str(dim).startswith("phony_dim_")


def _type_name(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"ndarray[{value.dtype}]"
    return type(value).__name__


def same_attr(a: Any, b: Any) -> bool:
    """Attribute values equal with their types: np.float32(1e20) is not 1e20 (float), an
    int32 array is not an int64 array, NaN equals NaN, a list equals a list."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and bool(
            np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_attr(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_attr(a[k], b[k]) for k in a)
    if isinstance(a, (float, np.floating)) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def attr_differences(actual: Mapping[Any, Any], expected: Mapping[Any, Any],
                     where: str) -> list[str]:
    """One line per attribute missing, extra or different in value or type."""
    out = []
    for key in sorted(set(actual) | set(expected), key=str):
        if key not in actual:
            out.append(f"{where}: attr {key!r} missing (expected "
                       f"{_type_name(expected[key])} {expected[key]!r})")
        elif key not in expected:
            out.append(f"{where}: attr {key!r} not in the source ({actual[key]!r})")
        elif not same_attr(actual[key], expected[key]):
            out.append(f"{where}: attr {key!r} is {_type_name(actual[key])} "
                       f"{actual[key]!r}, expected {_type_name(expected[key])} "
                       f"{expected[key]!r}")
    return out


def _values_equal(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> bool:
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "fc" and b.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    if a.dtype.kind == "M" and b.dtype.kind == "M":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def _text_kind(dtype: np.dtype[Any], values: Any) -> str | None:
    """'str' or 'bytes' for text arrays (fixed-width or object holding text), else None."""
    if dtype.kind == "U":
        return "str"
    if dtype.kind == "S":
        return "bytes"
    if dtype.kind == "O":
        flat = np.asarray(values).ravel()
        if flat.size and all(isinstance(v, str) for v in flat):
            return "str"
        if flat.size and all(isinstance(v, bytes) for v in flat):
            return "bytes"
    return None


def _same_dtype(actual: xr.Variable, expected: xr.Variable) -> bool:
    """Exact dtype, except text: `str` matches `str` and `bytes` matches `bytes` whatever
    the width (xarray sizes `<U…` by the longest value) or object-ness."""
    if actual.dtype == expected.dtype:
        return True
    kind = _text_kind(expected.dtype, expected.values)
    return kind is not None and kind == _text_kind(actual.dtype, actual.values)


def variable_differences(name: Hashable, actual: xr.Variable, expected: xr.Variable, *,
                         check_dtype: bool = True, check_attrs: bool = True) -> list[str]:
    """What differs between two variables: dims (any name matches a `phony_dim_*`),
    shape, dtype, values (NaN equals NaN) and typed attrs."""
    where = f"variable {name!r}"
    out = []
    if len(actual.dims) != len(expected.dims) or any(
            d != e and not _is_phony(e) for d, e in zip(actual.dims, expected.dims)):
        out.append(f"{where}: dims {actual.dims}, expected {expected.dims}")
    if actual.shape != expected.shape:
        return [*out, f"{where}: shape {actual.shape}, expected {expected.shape}"]
    if check_dtype and not _same_dtype(actual, expected):
        out.append(f"{where}: dtype {actual.dtype}, expected {expected.dtype}")
    a, e = np.asarray(actual.values), np.asarray(expected.values)
    if not _values_equal(a, e):
        try:
            bad = np.flatnonzero(~((a == e) | (np.isnan(a) & np.isnan(e))
                                   if a.dtype.kind in "fc" and e.dtype.kind in "fc"
                                   else a == e).ravel())
            first = int(bad[0]) if bad.size else 0
            detail = (f"{bad.size} of {e.size} values differ, first at flat index {first}: "
                      f"{a.ravel()[first]!r} vs {e.ravel()[first]!r}")
        except (TypeError, ValueError):
            detail = "values differ"
        out.append(f"{where}: {detail}")
    if check_attrs:
        out.extend(attr_differences(actual.attrs, expected.attrs, where))
    return out


def dataset_differences(actual: xr.Dataset, expected: xr.Dataset, *,
                        check_dtype: bool = True, check_attrs: bool = True,
                        variables: Iterator[Hashable] | list[Hashable] | None = None
                        ) -> list[str]:
    """Every difference `assert_same_as_source` would report, as lines."""
    out = []
    names = list(variables) if variables is not None else sorted(
        set(actual.variables) | set(expected.variables), key=str)
    for name in names:
        if name not in actual.variables:
            out.append(f"variable {name!r} missing")
            continue
        if name not in expected.variables:
            out.append(f"variable {name!r} not in the source")
            continue
        out.extend(variable_differences(name, actual.variables[name],
                                        expected.variables[name],
                                        check_dtype=check_dtype, check_attrs=check_attrs))
    if variables is None:
        coords_a, coords_e = set(actual.coords), set(expected.coords)
        if coords_a != coords_e:
            out.append(f"coordinates {sorted(coords_a, key=str)}, expected "
                       f"{sorted(coords_e, key=str)}")
        dims_a = dict(actual.sizes)
        dims_e = dict(expected.sizes)
        named_e = {d: n for d, n in dims_e.items() if not _is_phony(d)}
        if {d: dims_a.get(d) for d in named_e} != named_e:
            out.append(f"dims {dims_a}, expected {dims_e}")
        if check_attrs:
            out.extend(attr_differences(actual.attrs, expected.attrs, "file"))
    return out


def assert_same_as_source(actual: xr.Dataset, expected: xr.Dataset, *,
                          check_dtype: bool = True, check_attrs: bool = True,
                          variables: list[Hashable] | None = None) -> None:
    """`actual` (e.g. a converted file opened with engine="tet") equals xarray's reading
    of the source: every variable's decoded values (NaN-aware; datetimes and cftime
    objects by value), dims (a `phony_dim_*` in `expected` matches any name), shape,
    exact dtype, which variables are coordinates, and typed attributes of every variable
    and of the file. `variables=` restricts the check to those variables (then the
    coordinate set, dims and file attrs are not compared). Encodings are not compared.
    Raises AssertionError listing every difference."""
    diffs = dataset_differences(actual, expected, check_dtype=check_dtype,
                                check_attrs=check_attrs, variables=variables)
    if diffs:
        raise AssertionError("not the same as the source:\n  " + "\n  ".join(diffs))


def nan_stats(ds: xr.Dataset, var: Hashable) -> dict[str, float]:
    """xarray's `skipna` reductions of a float variable over all its axes, keyed like the
    engine's ops: `nan_count` (NaN cells), `count` (the others), `nan_mean`, `nan_std`
    (population, ddof=0), `nan_min`, `nan_max`, `nan_sum`. Values are xarray's results
    as Python floats; for float32 data xarray reduces in float32, so compare the engine's
    float64 answers with a relative tolerance of about 1e-6."""
    da = ds[var]
    if da.dtype.kind != "f":
        raise TypeError(f"{var!r} is {da.dtype}, not a float variable")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: xarray says NaN
        return {
            "nan_count": float(da.isnull().sum()),
            "count": float(da.count()),
            "nan_mean": float(da.mean(skipna=True)),
            "nan_std": float(da.std(skipna=True)),
            "nan_min": float(da.min(skipna=True)),
            "nan_max": float(da.max(skipna=True)),
            "nan_sum": float(da.sum(skipna=True)),
        }


@contextlib.contextmanager
def quiet_consolidated() -> Iterator[None]:
    """Silence zarr-python's 'consolidated metadata is not part of v3' warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Consolidated metadata", UserWarning)
        yield
