"""`tet.to_package`: the workers of a ``LocalCluster(processes=True)`` write one part per
block group (each its own session, region claims of one array), the client publishes
once, and the package equals the source array (locally and under ``s3://``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tet
from tests.helpers import local_cluster
from tet.errors import PackageError

da = pytest.importorskip("dask.array")

X = np.arange(10 * 7, dtype=np.float64).reshape(10, 7) / 3.0
Y = np.arange(10, dtype=np.int32) * -2


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with local_cluster(2) as c:
        yield c


def _pids(client: Any) -> set[int]:
    return set(client.run(lambda: __import__("os").getpid()).values())


def test_to_package_on_a_cluster_equals_the_array(client: Any, tmp_path: Path) -> None:
    pkg = tmp_path / "d.tet.d"
    src = da.from_array(X, chunks=(4, 3))  # 3 x 3 blocks, ragged at both edges
    assert tet.to_package(src, pkg, name="x", blocks_per_part=2) == 1
    with tet.open(pkg) as f:
        assert f.generation == 1 and list(f) == ["x"]
        assert f["x"].chunks == (4, 3)
        np.testing.assert_array_equal(f["x"][:], X)
    # one part per block group: 2 groups on axis 0 x 3 blocks on axis 1, each its own
    # session, each a region claim of the one array, written by the worker processes
    metas = [json.loads(p.read_text()) for p in sorted(pkg.glob("staging/*/PART_META.json"))]
    assert len(metas) == 6 and len({m["writer_session_id"] for m in metas}) == 6
    assert all(not c["full_grid"] and c["shape"] == [10, 7] for m in metas for c in m["claims"])
    assert sorted(tuple(c["region"]["tile_start"]) for m in metas for c in m["claims"]) == \
        [(0, 0), (0, 1), (0, 2), (2, 0), (2, 1), (2, 2)]
    assert len(_pids(client)) == 2


def test_to_package_of_an_xarray_dataset(client: Any, tmp_path: Path) -> None:
    xr = pytest.importorskip("xarray")
    ds = xr.Dataset({"x": (("t", "c"), da.from_array(X, chunks=(5, 7))),
                     "y": (("t",), Y)})
    pkg = tmp_path / "x.tet.d"
    assert tet.to_package(ds, pkg) == 1
    with tet.open(pkg) as f:
        assert sorted(f) == ["x", "y"]
        np.testing.assert_array_equal(f["x"][:], X)
        np.testing.assert_array_equal(f["y"][:], Y)
        assert f["x"].dims == ("t", "c")
    # a second call publishes a new generation of fresh parts (new sessions, new ids)
    assert tet.to_package(ds * 2, pkg, replace=["x", "y"]) == 2
    with tet.open(pkg) as f:
        np.testing.assert_array_equal(f["x"][:], X * 2)


def test_to_package_on_s3(client: Any, s3: Any) -> None:
    src = da.from_array(X, chunks=(3, 7))
    url = "s3://tet/dask/p1"
    assert tet.to_package(src, url, name="x", storage_options=s3.options) == 1
    with tet.open(url, storage_options=s3.options) as f:
        assert f.generation == 1
        np.testing.assert_array_equal(f["x"][:], X)


def test_blocks_off_the_tile_grid_are_refused(tmp_path: Path) -> None:
    src = da.from_array(X, chunks=((3, 7), (7,)))
    with pytest.raises(PackageError, match=r"dask block boundaries \[3\] on axis 0 are not "
                                           r"on the tile grid \(tile 4\)"):
        tet.to_package(src, tmp_path / "p.tet.d", name="x", chunk_shape=(4, 7))
    with pytest.raises(PackageError, match="needs name="):
        tet.to_package(src, tmp_path / "p.tet.d")
