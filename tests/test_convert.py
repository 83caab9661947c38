"""`tet convert` / `tet.convert.convert` (cli.md §6 and issue 6).

Matrix: every upstream HDF5 / NetCDF / Zarr fixture against what h5py / netCDF4 /
zarr read (values, dtype, chunk shape, names in visiting order, attrs, dim names,
coords); cf_3d decoded as xarray decodes it and `--keep-packed`; the reference
converter's output for zarr/tensor_3d (arrays and catalog); `--jobs 1` vs `--jobs 4`
byte for byte (raw and zstd); synthetic sources for the type map (bool, int8, f16, u32,
u64, big-endian, scalars, strings), skips (compounds, empty, rank > 8, long names,
links), metadata
limits (64 attrs, 1024-byte strings, 64 labels, 256 datasets), HDF5 chunk reads
(shuffle + deflate, unwritten chunks), NetCDF-3 and NetCDF-4 groups, Zarr dimension
names / shards / v2 stores (tests/test_convert_cf.py: real-world CF sources against
xarray); detection and its error text; compressed inputs; atomic
output on failure; the CLI's report, warnings and usage errors.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py  # type: ignore[import-untyped]
import netCDF4
import numpy as np
import pytest
import zarr

import tet
from tests.conftest import INTEROP, REPO, UPSTREAM, CliRun
from tet.convert import ConvertError, ConvertReport, ConvertWarning, convert
from tet.convert.source import SourceVar, block_boxes, display
from tet.convert.write import block_bytes, write_variables

Arr = np.ndarray[Any, Any]
CliFn = Callable[..., CliRun]
NOW = "1700000000"
H5_FIXTURES = ("tensor_3d", "tensor_4d", "tensor_5d", "groups_3d", "cf_3d")
ZARR_FIXTURES = ("tensor_3d", "tensor_4d", "tensor_5d", "groups_3d")
UNSUPPORTED = (
    "unsupported convert input `{p}`: extension `{e}` (supported extensions: .h5, .hdf5, .hdf, "
    ".he2, .he5; .nc, .netcdf, .nc4, .nc3, .cdf, .ncdf; .zarr directory store (v3 zarr.json "
    "at root); or recognizable HDF5 / NetCDF-3 file signature / Zarr v3 directory store)")


@pytest.fixture(autouse=True)
def _fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pin the writer's clock so `at` / `created_at` are reproducible."""
    monkeypatch.setattr("tet.writer._now", lambda: NOW)


def run_convert(src: Path, dst: Path, **kw: Any) -> tuple[ConvertReport, list[str]]:
    """Convert, returning the report and the warning messages."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = convert(src, dst, **kw)
    return report, [str(w.message) for w in caught if issubclass(w.category, ConvertWarning)]


def meta_of(f: tet.TetFile, name: str) -> dict[str, Any]:
    out: dict[str, Any] = f.metadata.get("datasets", {}).get(name, {})
    return out


def default_chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """The writer's default: halve the longest axis until a tile fits in 8 MiB."""
    chunk = list(shape)
    while math.prod(chunk) * itemsize > 8 * 1024 * 1024 and max(chunk) > 1:
        d = chunk.index(max(chunk))
        chunk[d] = -(-chunk[d] // 2)
    return tuple(chunk)


# ---------------------------------------------------------------------------
# Upstream fixtures


def h5_datasets(path: Path) -> list[str]:
    names: list[str] = []
    with h5py.File(path, "r") as h:
        h.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
    return names


@pytest.mark.parametrize("stem", H5_FIXTURES)
def test_hdf5_fixture(stem: str, tmp_path: Path) -> None:
    src = UPSTREAM / "h5" / f"{stem}.h5"
    report, warned = run_convert(src, tmp_path / "out.tet", jobs=2)
    with h5py.File(src, "r") as h, tet.open(tmp_path / "out.tet") as f:
        expected = sorted(h5_datasets(src))
        assert f.dataset_names() == expected == report.dataset_names
        assert warned == []
        for name in expected:
            ds, out = h[name], f.dataset(name)
            got = f.read_numpy(name)
            if ds.ndim == 0:  # a 0-d dataset: one element, marked
                assert (out.shape, out.chunk_shape, dict(out.extra)) == ((1,), (1,),
                                                                          {"shape": []})
                assert got.tolist() == [ds[()]]
                continue
            assert out.chunk_shape == (ds.chunks or default_chunks(ds.shape, ds.dtype.itemsize))
            if "scale_factor" in ds.attrs:
                continue  # CF-decoded: test_cf_3d_hdf5
            assert got.dtype == ds.dtype
            np.testing.assert_array_equal(got, ds[...])
            assert meta_of(f, name).get("attrs", {}) == {k: str(v) for k, v in ds.attrs.items()}
        assert f.history == [{"op": "convert", "source": "h5", "at": NOW}]
        assert f.metadata["file"] == {"tool": "tet convert", "library_version": tet.__version__,
                                      "created_at": NOW}


def nc_variables(group: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name in sorted(group.variables):
        yield prefix + name, group.variables[name]
    for name in sorted(group.groups):
        yield from nc_variables(group.groups[name], f"{prefix}{name}/")


@pytest.mark.parametrize("stem", H5_FIXTURES)
def test_netcdf_fixture(stem: str, tmp_path: Path) -> None:
    src = UPSTREAM / "netcdf" / f"{stem}.nc"
    report, _ = run_convert(src, tmp_path / "out.tet", jobs=3)
    with netCDF4.Dataset(src) as d, tet.open(tmp_path / "out.tet") as f:
        d.set_auto_maskandscale(False)
        variables = list(nc_variables(d))
        assert f.dataset_names() == [n for n, _ in variables] == report.dataset_names
        for name, var in variables:
            out = f.dataset(name)
            if var.ndim == 0:
                assert (out.shape, dict(out.extra)) == ((1,), {"shape": []})
                assert f.read_numpy(name).tolist() == [var[...].item()]
                continue
            chunking = var.chunking()
            want = (tuple(chunking) if isinstance(chunking, list)
                    else default_chunks(var.shape, var.dtype.itemsize))
            assert out.chunk_shape == want
            assert out.dim_names == var.dimensions
            if "scale_factor" in var.ncattrs():
                continue  # CF-decoded: test_cf_3d_netcdf
            got = f.read_numpy(name)
            assert got.dtype == var.dtype
            np.testing.assert_array_equal(got, var[...])
            assert meta_of(f, name).get("attrs", {}) == {k: str(var.getncattr(k))
                                                         for k in var.ncattrs()}
        assert f.history == [{"op": "convert", "source": "nc", "at": NOW}]


@pytest.mark.parametrize("stem", ZARR_FIXTURES)
def test_zarr_fixture(stem: str, tmp_path: Path) -> None:
    src = UPSTREAM / "zarr" / stem
    report, warned = run_convert(src, tmp_path / "out.tet", jobs=2)
    assert warned == []
    root = zarr.open_group(src, mode="r")
    names = sorted(n for n, node in root.members(max_depth=None) if isinstance(node, zarr.Array))
    with tet.open(tmp_path / "out.tet") as f:
        assert f.dataset_names() == names == report.dataset_names
        for name in names:
            arr = root[name]
            assert isinstance(arr, zarr.Array)
            got = f.read_numpy(name)
            assert got.dtype == arr.dtype
            assert f.dataset(name).chunk_shape == arr.chunks
            np.testing.assert_array_equal(got, arr[...])
            assert meta_of(f, name) == {"attrs": {"tetration_dtype": arr.attrs["tetration_dtype"]}}
        assert f.history == [{"op": "convert", "source": "zarr", "at": NOW}]


LAT = ["-90", "-84.19355", "-78.3871", "-72.58064"]


CF_3D_TEXT = {"scale_factor": "0.009999999776482582", "add_offset": "273.1499938964844",
              "_FillValue": "-9999"}


def test_cf_3d_hdf5(tmp_path: Path) -> None:
    """Packed `temperature` (f32 with f64 scale, offset and fill): decoded to f64 as
    xarray does (-9999 → NaN, then × scale + offset), the packing keys moved to the
    encoding (still listed as v1 text); chunk grid kept; `coordinates` names the axes
    and gives their labels."""
    src = UPSTREAM / "h5" / "cf_3d.h5"
    run_convert(src, tmp_path / "out.tet")
    with h5py.File(src, "r") as h, tet.open(tmp_path / "out.tet") as f:
        stored = h["temperature"][...]
        want = stored.astype(np.float64)
        want[want == -9999.0] = np.nan
        want *= 0.009999999776482582
        want += 273.1499938964844
        got = f.read_numpy("temperature")
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, want)
        assert int(np.isnan(got).sum()) == 3270
        assert f.dataset("temperature").chunk_shape == h["temperature"].chunks
        meta = meta_of(f, "temperature")
        assert meta["attrs"] == {"units": "K", "long_name": "sea surface temperature",
                                 "coordinates": "time lat lon", **CF_3D_TEXT}
        assert dict(f.dataset("temperature").extra) == {"encoding": {
            "_FillValue": -9999.0, "scale_factor": 0.009999999776482582,
            "add_offset": 273.1499938964844, "dtype": "float32"}}
        assert meta["dim_names"] == ["time", "lat", "lon"]
        assert meta["coords"]["time"]["labels"] == [str(i) for i in range(32)]
        assert meta["coords"]["lat"]["labels"][:4] == LAT
        assert meta["coords"]["lon"]["labels"][0] == "-180"
        assert meta_of(f, "coordinates/time") == {"attrs": {"units": "days since 2020-01-01"}}
        assert f.dataset("f32").dim_names is None


def test_cf_3d_hdf5_keep_packed(tmp_path: Path) -> None:
    src = UPSTREAM / "h5" / "cf_3d.h5"
    run_convert(src, tmp_path / "out.tet", keep_packed=True)
    with h5py.File(src, "r") as h, tet.open(tmp_path / "out.tet") as f:
        np.testing.assert_array_equal(f.read_numpy("temperature"), h["temperature"][...])
        assert meta_of(f, "temperature")["attrs"] == {
            "units": "K", "long_name": "sea surface temperature", "coordinates": "time lat lon",
            "scale_factor": "0.009999999776482582", "add_offset": "273.1499938964844",
            "_FillValue": "-9999"}


def test_cf_3d_netcdf(tmp_path: Path) -> None:
    src = UPSTREAM / "netcdf" / "cf_3d.nc"
    run_convert(src, tmp_path / "out.tet")
    with netCDF4.Dataset(src) as d, tet.open(tmp_path / "out.tet") as f:
        decoded = d["temperature"][...]  # netCDF4's own mask-and-scale, in f64
        got = f.read_numpy("temperature")
        assert got.dtype == np.float64  # f32 storage, f64 scale and offset (xarray)
        np.testing.assert_allclose(got, decoded.filled(np.nan), rtol=1e-12)
        meta = meta_of(f, "temperature")
        assert meta["attrs"] == {"units": "K", "long_name": "sea surface temperature",
                                 **CF_3D_TEXT}
        assert meta["dim_names"] == ["time", "lat", "lon"]
        assert meta["coords"]["lat"]["labels"][:4] == LAT
        assert meta_of(f, "time") == {
            "attrs": {"units": "days since 2020-01-01"}, "dim_names": ["time"],
            "coords": {"time": {"labels": [str(i) for i in range(32)]}}}
        assert meta_of(f, "lat")["attrs"] == {"units": "degrees_north",
                                              "standard_name": "latitude"}
        assert meta_of(f, "f32")["coords"].keys() == {"time", "lat", "lon"}


def test_cf_3d_netcdf_keep_packed(tmp_path: Path) -> None:
    src = UPSTREAM / "netcdf" / "cf_3d.nc"
    run_convert(src, tmp_path / "out.tet", keep_packed=True)
    with netCDF4.Dataset(src) as d, tet.open(tmp_path / "out.tet") as f:
        d.set_auto_maskandscale(False)
        np.testing.assert_array_equal(f.read_numpy("temperature"), d["temperature"][...])
        attrs = meta_of(f, "temperature")["attrs"]
        assert attrs["_FillValue"] == "-9999"
        assert attrs["scale_factor"] == "0.009999999776482582"


def test_matches_reference_conversion(tmp_path: Path) -> None:
    """Our conversion of zarr/tensor_3d and the reference converter's file: same arrays,
    same catalog (records, every chunk row), same footer but for version and times."""
    ours = tmp_path / "ours.tet"
    run_convert(UPSTREAM / "zarr" / "tensor_3d", ours)
    ref_path = INTEROP / "converted_zarr_tensor_3d.tet"
    with tet.open(ref_path) as ref, tet.open(ours) as got:
        assert got.catalog.datasets == ref.catalog.datasets
        assert got.catalog.entries.tobytes() == ref.catalog.entries.tobytes()
        assert got.catalog.flags == ref.catalog.flags
        for name in ref.dataset_names():
            npy = np.load(INTEROP / f"converted_zarr_tensor_3d.{name}.npy")
            np.testing.assert_array_equal(got.read_numpy(name), npy)
            np.testing.assert_array_equal(got.read_numpy(name), ref.read_numpy(name))
        last = ref.catalog.entries[-1]
        end = int(last["payload_offset"] + last["stored_byte_len"])
        masked = [{**row, "at": "T"} for row in ref.history]
        assert [{**row, "at": "T"} for row in got.history] == masked
        ref_meta, got_meta = ref.metadata, got.metadata
        assert got_meta["datasets"] == ref_meta["datasets"]
        assert got_meta["file"]["tool"] == ref_meta["file"]["tool"] == "tet convert"
    # the payload bytes are identical too
    assert ours.read_bytes()[:end] == ref_path.read_bytes()[:end]


# ---------------------------------------------------------------------------
# Determinism and parallel reads


def big_h5(path: Path) -> Path:
    """Several chunked datasets: shuffle + deflate, ragged edges, an unwritten chunk."""
    rng = np.random.default_rng(7)
    with h5py.File(path, "w") as h:
        a = h.create_dataset("a", shape=(130, 70, 9), chunks=(16, 32, 4), dtype="<f4",
                             compression="gzip", shuffle=True)
        a[...] = rng.standard_normal((130, 70, 9)).astype(np.float32)
        b = h.create_dataset("g/b", shape=(1000, 33), chunks=(64, 8), dtype=">i8",
                             compression="gzip", fillvalue=-5)
        b[:512] = rng.integers(-10**12, 10**12, size=(512, 33))
        h.create_dataset("g/c", data=np.arange(5000, dtype=np.uint16))  # contiguous
    return path


@pytest.mark.parametrize("codec", ["raw", "zstd"])
def test_jobs_do_not_change_the_bytes(codec: str, tmp_path: Path) -> None:
    src = big_h5(tmp_path / "src.h5")
    run_convert(src, tmp_path / "j1.tet", jobs=1, codec=codec)
    run_convert(src, tmp_path / "j4.tet", jobs=4, codec=codec)
    assert (tmp_path / "j1.tet").read_bytes() == (tmp_path / "j4.tet").read_bytes()
    with h5py.File(src, "r") as h, tet.open(tmp_path / "j4.tet") as f:
        for name in ("a", "g/b", "g/c"):
            np.testing.assert_array_equal(f.read_numpy(name), h[name][...])
        assert f.read_numpy("g/b")[600, 0] == -5  # never written: the fill value
        assert f.dataset("g/b").chunk_shape == (64, 8)
        assert f.dataset("g/c").chunk_shape == (5000,)
        assert set(f.catalog.entries["codec"].tolist()) == {1 if codec == "zstd" else 0}


def test_hdf5_chunks_are_read_outside_hdf5(tmp_path: Path) -> None:
    """Deflate/shuffle chunks take the parallel path; other filters go through h5py."""
    from tet.convert.hdf5 import H5Reader

    src = big_h5(tmp_path / "src.h5")
    with h5py.File(src, "a") as h:
        h.create_dataset("lzf", data=np.arange(100.0).reshape(10, 10), chunks=(3, 3),
                         compression="lzf")
    with h5py.File(src, "r") as h:
        fd = os.open(src, os.O_RDONLY)
        try:
            for name, direct in (("a", True), ("g/b", True), ("g/c", False), ("lzf", False)):
                reader = H5Reader(h[name], fd)
                assert reader.direct is direct, name
                box = tuple(slice(1, min(n, 50)) for n in h[name].shape)
                np.testing.assert_array_equal(reader.read(box), h[name][box])
        finally:
            os.close(fd)


def test_blocks_are_bounded_and_cover_the_array() -> None:
    shape, unit = (1000, 300, 7), (64, 32, 7)
    boxes = list(block_boxes(shape, unit, 8, 4 * 1024 * 1024))
    cover = np.zeros(shape, np.uint8)
    for box in boxes:
        cover[box] += 1
        assert math.prod(s.stop - s.start for s in box) * 8 <= 4 * 1024 * 1024
        assert all(s.start % u == 0 for s, u in zip(box, unit))
    assert (cover == 1).all()
    assert block_bytes(1) == 32 * 1024 * 1024 and block_bytes(64) == 4 * 1024 * 1024


def test_write_reads_block_by_block(tmp_path: Path) -> None:
    """A source bigger than one block never gets read whole: every read is at most
    one block, and the values land where they belong."""
    shape, chunks = (4096, 1024), (256, 256)  # 32 MiB of f64
    seen: list[int] = []

    def read(box: tuple[slice, ...]) -> Arr:
        seen.append(math.prod(s.stop - s.start for s in box) * 8)
        r, c = np.meshgrid(np.arange(box[0].start, box[0].stop),
                           np.arange(box[1].start, box[1].stop), indexing="ij")
        out: Arr = (r * 1024 + c).astype(np.float64)
        return out

    var = SourceVar(name="x", shape=shape, dtype=np.dtype("<f8"), read=read, chunks=chunks)
    w = tet.TetWriter.create(tmp_path / "x.tet")
    write_variables(w, [var], codec="raw", jobs=8)
    w.commit()
    assert max(seen) <= block_bytes(8) < 32 * 1024 * 1024
    with tet.open(tmp_path / "x.tet") as f:
        got = f.read_numpy("x")
    np.testing.assert_array_equal(got, np.arange(4096 * 1024, dtype=np.float64).reshape(shape))


def test_progress_reports_every_tile(tmp_path: Path) -> None:
    calls: list[tuple[str, int, int]] = []
    convert(big_h5(tmp_path / "s.h5"), tmp_path / "o.tet", jobs=2,
            progress=lambda *a: calls.append(a))
    with tet.open(tmp_path / "o.tet") as f:
        total = len(f.catalog.entries)
    assert calls[-1] == ("g/c", total, total)
    assert [c[1] for c in calls] == sorted(c[1] for c in calls)


# ---------------------------------------------------------------------------
# Synthetic HDF5: types, skips, limits


def test_hdf5_types_and_skips(tmp_path: Path) -> None:
    src = tmp_path / "types.h5"
    long_name = "n" * 1100
    with h5py.File(src, "w") as h:
        h["bool"] = np.array([True, False, True])
        h["int8"] = np.array([-128, -1, 0, 127], np.int8)
        h["f16"] = np.array([1.5, -2.0], np.float16)
        h["u32"] = np.array([2**32 - 1, 7], np.uint32)
        h["u64"] = np.array([2**63 + 5], np.uint64)
        h["be"] = np.array([[1.25, -3.5]], ">f8")
        h["strings"] = np.array([b"ab", b"cd"])
        h["compound"] = np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8")])
        h["complex"] = np.zeros(2, np.complex64)
        h["scalar"] = 3.0
        h.create_dataset("empty", shape=(0, 4), dtype="f4")
        h.create_dataset("nothing", data=h5py.Empty("f4"))
        h["rank9"] = np.zeros((1,) * 9, np.float32)
        h[long_name] = np.zeros(2, np.float32)
        h["grp/ünïcødé"] = np.arange(3, dtype=np.int32)
        h["alias"] = h5py.SoftLink("/u32")
    report, warned = run_convert(src, tmp_path / "o.tet")
    assert report.dataset_names == ["be", "bool", "f16", "grp/ünïcødé", "int8", "scalar",
                                    "strings", "u32", "u64"]
    assert warned == [
        "skipped `alias`: soft link",
        "skipped `complex`: unsupported element type c8",
        "skipped `compound`: compound element type",
        "skipped `empty`: empty array (shape [0, 4])",
        f"skipped `{long_name}`: name is not 1..1024 bytes of UTF-8",
        "skipped `nothing`: empty dataspace",
        "skipped `rank9`: rank 9 (the format allows 1..8)",
    ]
    with tet.open(tmp_path / "o.tet") as f:
        assert [f.dataset(n).dtype_name for n in report.dataset_names] == [
            "f64", "u8", "f16", "i32", "i16", "f64", "u8", "u32", "u64"]
        assert f.read_numpy("scalar").tolist() == [3.0]
        assert f.read_numpy("strings").tolist() == [[97, 98], [99, 100]]
        assert dict(f.dataset("strings").extra) == {"text": {"width": 2, "kind": "bytes"}}
        np.testing.assert_array_equal(f.read_numpy("bool"), [1, 0, 1])
        np.testing.assert_array_equal(f.read_numpy("int8"), [-128, -1, 0, 127])
        np.testing.assert_array_equal(f.read_numpy("u64"), np.array([2**63 + 5], np.uint64))
        np.testing.assert_array_equal(f.read_numpy("be"), [[1.25, -3.5]])
        np.testing.assert_array_equal(f.read_numpy("grp/ünïcødé"), [0, 1, 2])


def test_long_names_within_the_limit_convert(tmp_path: Path) -> None:
    """A 1000-byte name (longer than any file name may be) is a valid dataset name."""
    src = tmp_path / "long.h5"
    name = "g" * 300 + "/" + "é" * 349  # 300 + 1 + 698 = 999 bytes
    with h5py.File(src, "w") as h:
        h[name] = np.arange(3, dtype=np.int16)
        h[name].attrs["k" * 1024] = "v" * 1024  # both exactly at the limit: kept
    report, _ = run_convert(src, tmp_path / "o.tet")
    assert report.dataset_names == [name]
    with tet.open(tmp_path / "o.tet") as f:
        assert f.read_numpy(name).tolist() == [0, 1, 2]
        assert meta_of(f, name)["attrs"] == {"k" * 1024: "v" * 1024}


def test_hdf5_attribute_limits(tmp_path: Path) -> None:
    src = tmp_path / "attrs.h5"
    with h5py.File(src, "w") as h:
        ds = h.create_dataset("x", data=np.arange(100, dtype=np.float32))
        for i in range(80):
            ds.attrs[f"a{i:02d}"] = i
        ds.attrs["units"] = "m"
        ds.attrs["title"] = np.array([b"first", b"second"])
        ds.attrs["huge"] = "v" * 1025
        ds.attrs["k" * 1025] = "too long a key"
        ds.attrs["empty"] = ""
        ds.attrs["flag"] = np.bool_(True)
        ds.attrs["vec"] = np.array([1.5, 2.0])
        ds.attrs["f32"] = np.float32(0.1)
        ds.attrs["f64"] = 1e-7
        ds.attrs["nan"] = np.nan
    run_convert(src, tmp_path / "o.tet")
    with tet.open(tmp_path / "o.tet") as f:
        attrs = meta_of(f, "x")["attrs"]
    assert len(attrs) == 64
    assert attrs["units"] == "m" and attrs["title"] == "first"
    assert "huge" not in attrs and "empty" not in attrs and "k" * 1025 not in attrs
    assert [k for k in attrs if k.startswith("a")] == [f"a{i:02d}" for i in range(62)]
    assert attrs["a07"] == "7"
    # the keys after a79 in name order did not make the cut
    assert "flag" not in attrs and "vec" not in attrs


def test_display_forms() -> None:
    assert display(np.float32(0.1)) == "0.1"
    assert display(np.float64(1e-7)) == "0.0000001"
    assert display(-9999.0) == "-9999"
    assert display(np.float64(np.nan)) == "NaN"
    assert display(np.float32(-np.inf)) == "-inf"
    assert display(np.bool_(False)) == "false"
    assert display(np.array([1.5, 2.0])) == "[1.5, 2]"
    assert display(np.array(["a", "b"])) == "a"
    assert display(b"bytes") == "bytes"
    assert display("") is None
    assert display({"a": 1}) is None


def test_hdf5_dimension_scales_and_label_limit(tmp_path: Path) -> None:
    src = tmp_path / "scales.h5"
    with h5py.File(src, "w") as h:
        h["x"] = np.arange(4, dtype=np.float64) * 0.5
        h["y"] = np.arange(100, dtype=np.int32)
        data = h.create_dataset("data", data=np.zeros((4, 100), np.float32))
        h["x"].make_scale("x")
        h["y"].make_scale("y")
        data.dims[0].attach_scale(h["x"])
        data.dims[1].attach_scale(h["y"])
    run_convert(src, tmp_path / "o.tet")
    with tet.open(tmp_path / "o.tet") as f:
        meta = meta_of(f, "data")
    assert meta["dim_names"] == ["x", "y"]
    assert meta["coords"] == {"x": {"labels": ["0", "0.5", "1", "1.5"]}}  # y: 100 > 64 labels
    assert "attrs" not in meta  # DIMENSION_LIST & co. are plumbing


def test_many_datasets_keep_256_metadata_entries(tmp_path: Path) -> None:
    src = tmp_path / "many.h5"
    with h5py.File(src, "w") as h:
        for i in range(300):
            h.create_dataset(f"v{i:03d}", data=np.array([i], np.int32)).attrs["units"] = "m"
    report, warned = run_convert(src, tmp_path / "o.tet")
    assert report.to_dict()["dataset_count"] == 300
    assert warned == ["footer metadata of 44 dataset(s) left out (metadata limits: 256 "
                      "datasets, 16 MiB), first `v256`"]
    with tet.open(tmp_path / "o.tet") as f:
        assert len(f.metadata["datasets"]) == 256
        assert f.read_numpy("v299").tolist() == [299]


# ---------------------------------------------------------------------------
# Synthetic NetCDF


def test_netcdf4_groups_packing_and_types(tmp_path: Path) -> None:
    src = tmp_path / "x.nc"
    with netCDF4.Dataset(src, "w") as d:
        d.createDimension("t", None)
        d.createDimension("s", 3)
        d.createDimension("big", 70)
        t = d.createVariable("t", "f8", ("t",))
        t[:] = [10.0, 20.0]
        s = d.createVariable("s", str, ("s",))
        s[:] = np.array(["a", "b", "c"], dtype=object)
        p = d.createVariable("packed", "i2", ("t", "s"), fill_value=-1)
        p.scale_factor = np.float32(0.5)
        p.add_offset = np.float32(1.0)
        p.units = "K"
        p.set_auto_maskandscale(False)
        p[:] = np.array([[0, 2, -1], [4, 6, 8]], np.int16)
        u = d.createVariable("u", "u4", ("big",), chunksizes=(16,))
        u[:] = np.arange(70, dtype=np.uint32) + 2**31
        b = d.createVariable("b", "i1", ("s",))
        b[:] = [-3, 0, 3]
        d.createVariable("scalar", "f4")
        g = d.createGroup("sub")
        g.createDimension("s", 2)
        v = g.createVariable("v", "f4", ("t", "s"))
        v[:] = [[1, 2], [3, 4]]
    report, warned = run_convert(src, tmp_path / "o.tet")
    assert report.dataset_names == ["b", "packed", "s", "scalar", "t", "u", "sub/v"]
    assert warned == []
    with tet.open(tmp_path / "o.tet") as f:
        packed = f.read_numpy("packed")
        assert packed.dtype == np.float32  # xarray: i2 with f32 scale and offset
        np.testing.assert_array_equal(packed, [[1.0, 2.0, np.nan], [3.0, 4.0, 5.0]])
        assert meta_of(f, "packed") == {
            "attrs": {"units": "K", "scale_factor": "0.5", "add_offset": "1",
                      "_FillValue": "-1"}, "dim_names": ["t", "s"],
            "coords": {"t": {"labels": ["10", "20"]}, "s": {"labels": ["a", "b", "c"]}}}
        assert f.dataset("u").chunk_shape == (16,)
        assert f.read_numpy("u")[-1] == 2**31 + 69
        assert "coords" not in meta_of(f, "u")  # 70 labels > 64
        assert f.read_numpy("b").tolist() == [-3, 0, 3]
        assert meta_of(f, "sub/v") == {"dim_names": ["t", "s"],
                                       "coords": {"t": {"labels": ["10", "20"]}}}
        assert dict(f.dataset("s").extra) == {"text": {"width": 1, "kind": "str"}}
        assert f.read_numpy("s").tolist() == [[97], [98], [99]]
        assert dict(f.dataset("scalar").extra) == {"shape": []}


def test_netcdf3_by_signature_and_default_fill(tmp_path: Path) -> None:
    """A NetCDF-3 file without a known extension is found by its `CDF\\x01` signature;
    the type's default fill masks nothing (xarray does not mask it either), and a
    Python-float offset decodes to f64."""
    src = tmp_path / "classic.dat"
    with netCDF4.Dataset(src, "w", format="NETCDF3_CLASSIC") as d:
        d.createDimension("n", 4)
        v = d.createVariable("v", "f4", ("n",))
        v.add_offset = 100.0
        v.set_auto_maskandscale(False)
        v[:] = np.array([1, 2, 3, netCDF4.default_fillvals["f4"]], np.float32)
    assert src.read_bytes()[:4] == b"CDF\x01"
    report, _ = run_convert(src, tmp_path / "o.tet")
    assert report.source == "nc"
    with tet.open(tmp_path / "o.tet") as f:
        got = f.read_numpy("v")
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, np.array([1, 2, 3, netCDF4.default_fillvals["f4"]],
                                                    np.float32).astype(np.float64) + 100.0)
        assert f.dataset("v").chunk_shape == (4,)


def test_cf_packing_on_strings_attrs_is_an_error(tmp_path: Path) -> None:
    src = tmp_path / "bad.h5"
    with h5py.File(src, "w") as h:
        h["v"] = np.arange(3, dtype=np.float32)
        h["v"].attrs["scale_factor"] = "two"
    with pytest.raises(ConvertError, match="variable `v`: scale_factor/add_offset must be numbers"):
        convert(src, tmp_path / "o.tet")
    assert not (tmp_path / "o.tet").exists()


# ---------------------------------------------------------------------------
# Synthetic Zarr


def test_zarr_dims_coords_shards_and_types(tmp_path: Path) -> None:
    src = tmp_path / "s.zarr"
    g = zarr.open_group(src, mode="w", zarr_format=3)
    g.attrs["title"] = "root group attrs are file attrs"
    t = g.create_array("time", shape=(5,), dtype="i8", dimension_names=["time"])
    t[:] = np.arange(5) * 10
    a = g.create_array("data", shape=(5, 70), chunks=(2, 35), shards=(4, 70), dtype="<f4",
                       dimension_names=["time", "x"], attributes={"units": "m", "ok": True,
                                                                  "n": 2, "v": [1, 2]})
    a[:] = np.arange(350, dtype=np.float32).reshape(5, 70)
    sub = g.create_group("nested")
    b = sub.create_array("mask", shape=(5,), dtype=bool, dimension_names=["time"])
    b[:] = [True, False, True, True, False]
    s = g.create_array("names", shape=(2,), dtype=str)
    s[:] = ["a", "b"]
    report, warned = run_convert(src, tmp_path / "o.tet", jobs=2)
    assert report.dataset_names == ["data", "names", "nested/mask", "time"]
    assert warned == []
    with tet.open(tmp_path / "o.tet") as f:
        assert f.file_attrs == {"title": "root group attrs are file attrs"}
        assert f.dataset("data").typed_attrs == {"units": "m", "ok": True, "n": 2, "v": [1, 2]}
        assert dict(f.dataset("names").extra) == {"text": {"width": 1, "kind": "str"}}
        np.testing.assert_array_equal(f.read_numpy("data"), a[...])
        assert f.dataset("data").chunk_shape == (2, 35)
        assert meta_of(f, "data") == {
            "attrs": {"units": "m", "ok": "true", "n": "2", "v": "[1, 2]"},
            "dim_names": ["time", "x"],
            "coords": {"time": {"labels": ["0", "10", "20", "30", "40"]}}}
        assert f.read_numpy("nested/mask").tolist() == [1, 0, 1, 1, 0]
        assert meta_of(f, "nested/mask")["coords"]["time"]["labels"][1] == "10"


def test_zarr_root_array_v2_and_unknown_format(tmp_path: Path) -> None:
    arr = zarr.create_array(tmp_path / "temps.zarr", shape=(3, 4), dtype="u2", zarr_format=3)
    arr[:] = np.arange(12).reshape(3, 4)
    report, _ = run_convert(tmp_path / "temps.zarr", tmp_path / "o.tet")
    assert report.dataset_names == ["temps"]
    g = zarr.open_group(tmp_path / "old.zarr", mode="w", zarr_format=2)
    g.create_array("v", shape=(3,), dtype="f4", fill_value=None)[:] = [1, 2, 3]
    report, _ = run_convert(tmp_path / "old.zarr", tmp_path / "o2.tet")
    assert report.dataset_names == ["v"]
    (tmp_path / "new.zarr").mkdir()
    (tmp_path / "new.zarr" / "zarr.json").write_text('{"zarr_format": 4}')
    with pytest.raises(ConvertError) as err:
        convert(tmp_path / "new.zarr", tmp_path / "o3.tet")
    assert str(err.value) == (f"unsupported Zarr store `{tmp_path / 'new.zarr'}`: zarr_format 4 "
                              "(only Zarr v2 directory stores and v3 stores convert)")


# ---------------------------------------------------------------------------
# Detection, compressed inputs, failures


def test_detection_order_and_error_text(tmp_path: Path) -> None:
    from tet.convert.sniff import sniff

    shutil.copy(UPSTREAM / "h5" / "tensor_3d.h5", tmp_path / "noext")
    (tmp_path / "notes.TXT").write_text("hello")
    (tmp_path / "dir").mkdir()
    assert sniff(tmp_path / "noext") == "h5"
    assert sniff(UPSTREAM / "zarr" / "tensor_3d") == "zarr"
    (tmp_path / "a.NC.gz").write_bytes(b"")
    assert sniff(tmp_path / "a.NC.gz") == "nc"
    (tmp_path / "b.he5.xz.bz2").write_bytes(b"")
    assert sniff(tmp_path / "b.he5.xz.bz2") == "h5"
    for name, ext in (("notes.TXT", "TXT"), ("dir", "")):
        with pytest.raises(ConvertError) as err:
            sniff(tmp_path / name)
        assert str(err.value) == UNSUPPORTED.format(p=tmp_path / name, e=ext)


def test_compressed_input(tmp_path: Path) -> None:
    src = tmp_path / "t.nc.gz"
    with gzip.open(src, "wb") as out:
        out.write((UPSTREAM / "netcdf" / "tensor_3d.nc").read_bytes())
    report, _ = run_convert(src, tmp_path / "o.tet")
    assert report.dataset_names == ["f32", "f64", "i32", "i64"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.tet", "t.nc.gz"]


def test_zipped_zarr_store(tmp_path: Path) -> None:
    archive = shutil.make_archive(str(tmp_path / "g.zarr"), "zip", UPSTREAM / "zarr" / "groups_3d")
    report, _ = run_convert(Path(archive), tmp_path / "o.tet")
    assert (report.source, Path(archive).name) == ("zarr", "g.zarr.zip")
    assert report.dataset_names == ["primary/f32", "primary/f64", "primary/i32", "primary/i64"]
    with tet.open(tmp_path / "o.tet") as f:
        want = zarr.open_array(UPSTREAM / "zarr" / "groups_3d" / "primary" / "i64", mode="r")
        np.testing.assert_array_equal(f.read_numpy("primary/i64"), want[...])


def test_no_numeric_datasets(tmp_path: Path) -> None:
    src = tmp_path / "s.h5"
    with h5py.File(src, "w") as h:
        h["c"] = np.zeros(2, dtype=[("a", "<i4")])
    with pytest.raises(ConvertError, match=r"^no supported numeric datasets found in .*s\.h5$"):
        run_convert(src, tmp_path / "o.tet")


def test_failure_names_the_variable_and_leaves_output_alone(tmp_path: Path) -> None:
    src = big_h5(tmp_path / "src.h5")
    with h5py.File(src, "r") as h:
        info = h["a"].id.get_chunk_info(3)
    raw = bytearray(src.read_bytes())
    raw[info.byte_offset: info.byte_offset + info.size] = b"\0" * info.size
    src.write_bytes(bytes(raw))
    (tmp_path / "o.tet").write_bytes(b"previous contents")
    with pytest.raises(ConvertError, match=r"^failed to convert `a`: .*"):
        convert(src, tmp_path / "o.tet", jobs=2)
    assert (tmp_path / "o.tet").read_bytes() == b"previous contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.tet", "src.h5"]


def test_missing_library_says_how_to_install(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ConvertError) as err:
        convert(UPSTREAM / "h5" / "tensor_3d.h5", tmp_path / "o.tet")
    assert str(err.value).startswith("h5py is required to convert HDF5 files")
    assert str(err.value).endswith("pip install 'tet-arrays[convert]'")


def test_importing_tet_does_not_import_readers() -> None:
    code = ("import sys, tet, tet.convert, tet.cli.main; "
            "print(sorted(m for m in ('h5py', 'netCDF4', 'zarr') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------------------
# CLI


def test_cli_report(cli: CliFn, tmp_path: Path) -> None:
    r = cli("convert", UPSTREAM / "h5" / "groups_3d.h5", tmp_path / "o.tet", "--jobs", "2")
    assert r.rc == 0
    assert r.out.startswith("{\n")  # no blank line before the JSON
    doc = json.loads(r.out)
    assert list(doc) == ["input", "output", "dataset_count", "dataset_names", "datasets",
                         "history", "elapsed_secs"]
    assert doc["input"] == str(UPSTREAM / "h5" / "groups_3d.h5")
    assert doc["output"] == str(tmp_path / "o.tet")
    assert doc["dataset_count"] == 5
    assert doc["dataset_names"] == ["aux/scale", "primary/f32", "primary/f64", "primary/i32",
                                    "primary/i64"]
    assert doc["datasets"][0] == {"name": "aux/scale", "ndim": 1, "dims": [3]}
    assert doc["datasets"][1] == {"name": "primary/f32", "ndim": 3, "dims": [32, 32, 32]}
    assert doc["history"] == [{"op": "convert", "source": "h5", "at": NOW}]
    assert isinstance(doc["elapsed_secs"], float)
    assert r.err == ""


def test_cli_warnings_codec_and_keep_packed(cli: CliFn, tmp_path: Path) -> None:
    r = cli("convert", UPSTREAM / "netcdf" / "cf_3d.nc", tmp_path / "o.tet", "--codec", "zstd",
            "--keep-packed")
    assert r.rc == 0, r.err
    r = cli("convert", UPSTREAM / "netcdf" / "groups_3d.nc", tmp_path / "g.tet")
    assert (r.rc, r.err) == (0, "")
    src = tmp_path / "c.h5"
    with h5py.File(src, "w") as h:
        h["c"] = np.zeros(2, dtype=[("a", "<i4")])
        h["v"] = np.zeros(2, np.float32)
    r = cli("convert", src, tmp_path / "c.tet")
    assert (r.rc, r.err) == (0, "warning: skipped `c`: compound element type\n")
    with tet.open(tmp_path / "o.tet") as f:
        assert set(f.catalog.entries["codec"].tolist()) == {1}
        assert meta_of(f, "temperature")["attrs"]["add_offset"] == "273.1499938964844"


def test_cli_progress_bar_on_a_terminal(cli: CliFn, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tet.cli.progress.wanted", lambda: True)
    r = cli("convert", UPSTREAM / "zarr" / "groups_3d", tmp_path / "o.tet")
    assert r.rc == 0
    assert "Zarr → .tet:   0%|          | 0/4 [" in r.err
    assert "Zarr → .tet (primary/f32)" in r.err and "Zarr → .tet (primary/i64)" in r.err
    assert r.out.startswith("{")


def test_cli_errors(cli: CliFn, tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("1,2")
    r = cli("convert", tmp_path / "x.csv", tmp_path / "o.tet")
    assert (r.rc, r.out) == (1, "")
    assert r.err == "error: " + UNSUPPORTED.format(p=tmp_path / "x.csv", e="csv") + "\n"
    r = cli("convert", UPSTREAM / "h5" / "cf_3d.h5", tmp_path / "o.tet", "--jobs", "-1")
    assert r.rc == 2 and "invalid job count -1" in r.err
    r = cli("convert", UPSTREAM / "h5" / "cf_3d.h5", tmp_path / "o.tet", "--codec", "lz4")
    assert r.rc == 2
    r = cli("convert", tmp_path / "missing.h5", tmp_path / "o.tet")
    assert r.err == f"error: convert input `{tmp_path / 'missing.h5'}` does not exist\n"
    r = cli("convert", UPSTREAM / "h5" / "cf_3d.h5", tmp_path / "nodir" / "o.tet")
    assert r.err == f"error: output directory `{tmp_path / 'nodir'}` does not exist\n"
    assert not list(tmp_path.glob("*.tet"))


FIFO_PROBE = """
import sys
import tet
from tet.convert.hdf5 import H5Source
from tet.convert.netcdf import NCSource
for call in (lambda p: tet.convert(p, sys.argv[2]), H5Source, NCSource):
    for name in sys.argv[3:]:
        try:
            call(sys.argv[1] + "/" + name)
            print("OPENED")
        except tet.TetError as exc:
            print(type(exc).__name__ + ": " + str(exc), flush=True)
"""


@pytest.mark.skipif(os.name != "posix", reason="FIFOs")
def test_a_fifo_input_is_refused_at_once(tmp_path: Path) -> None:
    """Sniffing and every reader open a non-regular input without blocking and refuse it
    (a child with a timeout: a blocked open would time out)."""
    names = ["in.h5", "in.nc", "in.h5.gz", "noext"]
    for name in names:
        os.mkfifo(tmp_path / name)
    done = subprocess.run([sys.executable, "-c", FIFO_PROBE, str(tmp_path),
                           str(tmp_path / "o.tet"), *names],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"NotRegularFileError: cannot convert {tmp_path / n}: is a FIFO, not a regular file"
        for n in names] * 3
    r = subprocess.run([sys.executable, "-m", "tet.cli.main", "convert",
                        str(tmp_path / "in.nc"), str(tmp_path / "o.tet")],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert (r.returncode, r.stdout, r.stderr) == (
        1, "", f"error: cannot convert {tmp_path / 'in.nc'}: is a FIFO, not a regular file\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


def test_jobs_are_clamped() -> None:
    from tet.convert import resolve_jobs

    assert resolve_jobs(1) == 1
    assert resolve_jobs(1000) == 64
    assert 1 <= resolve_jobs(0) <= 64
    with pytest.raises(ValueError, match="jobs must be >= 0"):
        resolve_jobs(-2)
