"""`tet.convert` with object-store ends, on the loopback S3 server: to an `s3://` URL
(built in the cache, uploaded), and from remote HDF5 / NetCDF objects (downloaded to the
cache) and remote Zarr stores (read in place through zarr's ObjectStore)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("obstore", reason="obstore (the remote extra) is not installed")

import tet
from tests.test_remote_write import contents, download, leftovers

T = (np.arange(4 * 6, dtype=np.float64).reshape(4, 6) - 3.5) / 7
N = np.arange(30, dtype=np.int16).reshape(5, 6)


def _h5(path: Path) -> Path:
    h5py = pytest.importorskip("h5py", reason="h5py is not installed")
    with h5py.File(path, "w") as h:
        h.create_dataset("t", data=T, chunks=(2, 3))
        h.create_dataset("g/n", data=N)
    return path


def _nc(path: Path) -> Path:
    netCDF4 = pytest.importorskip("netCDF4", reason="netCDF4 is not installed")
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("y", 4)
        d.createDimension("x", 6)
        v = d.createVariable("t", "f8", ("y", "x"))
        v[:] = T
    return path


def _zarr(path: Path) -> Path:
    zarr = pytest.importorskip("zarr", reason="zarr is not installed")
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    root.attrs["title"] = "remote"
    a = root.create_array("t", shape=T.shape, dtype=T.dtype, chunks=(2, 3),
                          dimension_names=["y", "x"])
    a[...] = T
    sub = root.create_group("g")
    b = sub.create_array("n", shape=N.shape, dtype=N.dtype, chunks=(5, 2))
    b[...] = N
    return path


def _upload_tree(s3: Any, root: Path, prefix: str) -> None:
    for p in sorted(root.rglob("*")):
        if p.is_file():
            s3.put("tet", f"{prefix}/{p.relative_to(root).as_posix()}", p.read_bytes())


def test_convert_to_s3(s3: Any, private_cache: Path, tmp_path: Path) -> None:
    src = _h5(tmp_path / "in.h5")
    report = tet.convert(src, "s3://tet/cv/out.tet", storage_options=s3.options)
    assert report.output == "s3://tet/cv/out.tet" and report.input == str(src)
    got = contents(download(s3, "cv/out.tet", tmp_path))
    np.testing.assert_array_equal(got["t"], T)
    np.testing.assert_array_equal(got["g/n"], N)
    assert leftovers(private_cache) == []


@pytest.mark.parametrize("make", [_h5, _nc], ids=["hdf5", "netcdf"])
def test_convert_from_a_remote_file(s3: Any, private_cache: Path, tmp_path: Path,
                                    make: Any) -> None:
    name = "in.h5" if make is _h5 else "in.nc"
    src = make(tmp_path / name)
    s3.put("tet", f"cv/{name}", src.read_bytes())
    out = tmp_path / "from-remote.tet"
    report = tet.convert(f"s3://tet/cv/{name}", out, storage_options=s3.options)
    assert report.input == f"s3://tet/cv/{name}"
    np.testing.assert_array_equal(contents(out)["t"], T)
    assert leftovers(private_cache) == []  # the downloaded copy is gone


def test_convert_from_a_remote_zarr_store_reads_in_place(s3: Any, private_cache: Path,
                                                         tmp_path: Path) -> None:
    src = _zarr(tmp_path / "in.zarr")
    _upload_tree(s3, src, "cv/in.zarr")
    local = tmp_path / "local.tet"
    tet.convert(src, local)
    s3.traffic.reset()
    out = tmp_path / "remote.tet"
    report = tet.convert("s3://tet/cv/in.zarr", out, storage_options=s3.options)
    assert report.source == "zarr" and report.input == "s3://tet/cv/in.zarr"
    got, want = contents(out), contents(local)
    assert sorted(got) == sorted(want) == ["g/n", "t"]
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    with tet.open(out) as f:
        assert f.file_attrs["title"] == "remote"
    assert s3.traffic.count("cv/in.zarr/t/", "GET") >= 4  # chunks read from the store
    assert leftovers(private_cache) == []


def test_convert_remote_to_remote(s3: Any, private_cache: Path, tmp_path: Path) -> None:
    src = _h5(tmp_path / "in.h5")
    s3.put("tet", "cv/both.h5", src.read_bytes())
    tet.convert("s3://tet/cv/both.h5", "s3://tet/cv/both.tet", storage_options=s3.options)
    np.testing.assert_array_equal(contents(download(s3, "cv/both.tet", tmp_path))["t"], T)
    assert leftovers(private_cache) == []


def test_a_missing_remote_input(s3: Any, private_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(tet.ConvertError, match=r"convert input `s3://tet/cv/none\.h5` does "
                                               "not exist"):
        tet.convert("s3://tet/cv/none.h5", tmp_path / "x.tet", storage_options=s3.options)
    assert leftovers(private_cache) == [] and not (tmp_path / "x.tet").exists()


def test_a_failed_conversion_uploads_nothing(s3: Any, private_cache: Path,
                                             tmp_path: Path) -> None:
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # an HDF5 signature, no file
    with pytest.raises(tet.ConvertError):
        tet.convert(bad, "s3://tet/cv/bad.tet", storage_options=s3.options)
    assert s3.traffic.count("cv/bad.tet", "PUT") == 0
    assert leftovers(private_cache) == []
