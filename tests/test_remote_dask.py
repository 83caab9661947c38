"""dask, xarray and `query_many` over URLs on the loopback S3 and HTTP servers.

Covers:

- `tet.opencache` keys a remote object by URL, options, ETag and size: one open per
  process, a replaced object refused (`FileChangedError`);
- ``xr.open_dataset(url, engine="tet", storage_options=...)`` (and `open_groups`,
  `open_datatree`) equal xarray over the local file, lazily and through dask;
- `tet.to_dask(url)` and ``Dataset.to_dask()`` of a remote handle compute to the NumPy
  array; their graphs pickle without an open handle and compute after unpickling in a
  fresh cache;
- request accounting over HTTP: an open costs at most two requests, a slab only the
  touched tiles;
- a ``LocalCluster(processes=True)`` on 127.0.0.1 whose workers open 10 ``s3://`` objects
  themselves: `query_many` per file and with ``combine=True`` equal the local answers,
  and dask arrays over a URL compute there with one open per worker.
"""

from __future__ import annotations

import math
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("obstore", reason="obstore (the remote extra) is not installed")

import tet
from tests.helpers import local_cluster
from tests.test_remote_read import _grid_file
from tet.errors import FileChangedError
from tet.opencache import RemoteKey, cache_info, clear_cache, open_cached, open_key

pytestmark = pytest.mark.usefixtures("fresh_cache")

SHAPE = (24, 10, 6)


def _cube(path: Path, seed: int = 5) -> np.ndarray[Any, Any]:
    a = np.random.default_rng(seed).standard_normal(SHAPE) * 3 + seed
    with tet.TetWriter.create(path) as w:
        w.write_dataset("t", a, chunk_shape=(5, 4, 6), dim_names=["time", "y", "x"])
        w.write_dataset("grp/u", a[:, :, 0].astype(np.float32), chunk_shape=(8, 10),
                        dim_names=["time", "y"])
    return a


@pytest.fixture
def cube(tmp_path: Path, s3: Any) -> tuple[Path, np.ndarray[Any, Any], str]:
    path = tmp_path / "cube.tet"
    a = _cube(path)
    s3.put("tet", "dask/cube.tet", path.read_bytes())
    return path, a, "s3://tet/dask/cube.tet"


def test_open_cached_opens_a_url_once_and_refuses_a_replaced_object(
        cube: tuple[Path, np.ndarray[Any, Any], str], s3: Any) -> None:
    path, a, url = cube
    reader, key = open_key(url, s3.options)
    assert isinstance(key, RemoteKey) and key.path == url and key.size == path.stat().st_size
    assert open_key(url, s3.options)[0] is reader  # same object, same ETag: the same reader
    copy = pickle.loads(pickle.dumps(key))
    assert open_cached(copy) is reader
    assert cache_info() == {url: 1}
    clear_cache()
    assert tet.TetFile.from_reader(open_cached(copy)).read_numpy("t").tobytes() == a.tobytes()
    other = path.with_name("other.tet")
    _cube(other, seed=9)
    for replacement in (other.read_bytes(), path.read_bytes() + b"\0" * 8):  # opens, or not
        s3.put("tet", "dask/cube.tet", replacement)
        clear_cache()
        with pytest.raises(FileChangedError, match=r"`s3://tet/dask/cube\.tet` changed after "
                           r"it was opened for dask/xarray \(it was \d+ bytes, ETag .*; now "
                           r"\d+ bytes, ETag .*\); open it again"):
            open_cached(copy)


def test_xarray_over_s3_equals_the_local_file(
        cube: tuple[Path, np.ndarray[Any, Any], str], s3: Any) -> None:
    xr = pytest.importorskip("xarray", reason="xarray is not installed")
    path, a, url = cube
    local = xr.open_dataset(path, engine="tet")
    remote = xr.open_dataset(url, engine="tet", storage_options=s3.options)
    assert remote["t"].encoding["source"] == url
    copy = pickle.loads(pickle.dumps(remote))  # lazy variables carry the key, not a file
    xr.testing.assert_identical(remote.load(), local.load())
    clear_cache()
    xr.testing.assert_identical(copy.load(), local)
    lazy = xr.open_dataset(url, engine="tet", storage_options=s3.options, chunks={})
    assert lazy["t"].chunks is not None
    xr.testing.assert_identical(lazy.compute(), local)
    tree = xr.open_datatree(url, engine="tet", storage_options=s3.options)
    want = xr.open_datatree(path, engine="tet")
    xr.testing.assert_identical(tree.load(), want.load())
    groups = xr.open_groups(url, engine="tet", storage_options=s3.options)
    assert sorted(groups) == ["/", "/grp"]
    assert groups["/grp"]["u"].values.tobytes() == a[:, :, 0].astype(np.float32).tobytes()


def _graph_bytes(array: Any) -> bytes:
    return pickle.dumps(dict(array.__dask_graph__()))


def test_to_dask_over_s3_computes_to_numpy_and_pickles_as_url(
        cube: tuple[Path, np.ndarray[Any, Any], str], s3: Any) -> None:
    dask = pytest.importorskip("dask", reason="dask is not installed")
    _, a, url = cube
    arr = tet.to_dask(url, "t", storage_options=s3.options, block_bytes=2000)
    assert arr.npartitions > 4
    assert arr.compute(scheduler="sync").tobytes() == a.tobytes()
    assert cache_info() == {url: 1}  # every block through one open
    graph = _graph_bytes(arr)
    for marker in (b"RangedSource", b"tet.reader", b"mmap"):
        assert marker not in graph
    assert b"s3://tet/dask/cube.tet" in graph and s3.endpoint.encode() in graph
    clear_cache()
    blocks = pickle.loads(graph)
    got = dask.get(blocks, list(blocks))  # every task, from the unpickled graph alone
    assert sum(b.size for b in got) == a.size
    assert math.isclose(float(arr.mean().compute()), float(a.mean()), rel_tol=1e-12)
    with tet.open(url, storage_options=s3.options) as f:
        sub = f["t"].to_dask(selection={"start": [2, 1, 0], "stop": [20, 9, 6],
                                         "step": [3, 2, 1]})
        assert sub.compute().tobytes() == a[2:20:3, 1:9:2].tobytes()


def test_to_dask_over_http_and_a_replaced_object(
        cube: tuple[Path, np.ndarray[Any, Any], str], s3: Any, http: Any) -> None:
    path, a, url = cube
    shutil.copyfile(path, http.root / "cube.tet")
    arr = tet.to_dask(f"{http.url}/cube.tet", "t", storage_options=http.options)
    assert arr.compute().tobytes() == a.tobytes()
    stale = tet.to_dask(url, "t", storage_options=s3.options)
    s3.put("tet", "dask/cube.tet", path.read_bytes() + b"\0" * 8)
    clear_cache()
    with pytest.raises(FileChangedError, match="changed after it was opened for dask"):
        stale.compute()


def test_http_open_takes_two_requests_and_a_slab_only_its_tiles(
        tmp_path: Path, http: Any) -> None:
    tile, grid = 512, 4
    path = _grid_file(tmp_path, grid=grid, tile=tile)
    shutil.copyfile(path, http.root / "grid.tet")
    with tet.open(path) as f:
        x = f.read_numpy("x")
    http.traffic.reset()
    with tet.open(f"{http.url}/grid.tet", storage_options=http.options) as f:
        assert f["x"].shape == (grid * tile, grid * tile)
        assert http.traffic.count("grid.tet") <= 2
        http.traffic.reset()
        got = f["x"][700:800, 1100:1200]  # inside tile (1, 2)
        assert got.tobytes() == x[700:800, 1100:1200].tobytes()
        assert http.traffic.count("grid.tet") == 1
        assert http.traffic.bytes("grid.tet") == tile * tile * 4
        http.traffic.reset()
        got = f["x"][480:580, 1000:1100]  # across four tiles
        assert got.tobytes() == x[480:580, 1000:1100].tobytes()
        assert http.traffic.bytes("grid.tet") <= 4 * tile * tile * 4 + 2 * tile * 4 * 2
        assert http.traffic.count("grid.tet") <= 4


# ---------------------------------------------------------------------------
# a cluster whose workers open the URLs themselves

FILES = 10


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with local_cluster(2) as c:
        yield c


def _values(response: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in response["execution"].items() if k.startswith("operation_")}


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, (bool, int)) or a is None:
        return bool(a == b and type(a) is type(b))
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-9)


def test_cluster_query_many_over_s3_equals_the_local_answer(
        client: Any, tmp_path: Path, s3: Any) -> None:
    assert len(client.scheduler_info()["workers"]) == 2
    pieces, urls, paths = [], [], []
    for i in range(FILES):
        path = tmp_path / f"day{i}.tet"
        pieces.append(_cube(path, seed=i))
        s3.put("tet", f"days/day{i}.tet", path.read_bytes())
        urls.append(f"s3://tet/days/day{i}.tet")
        paths.append(str(path))
    whole = tet.write_dataset(tmp_path / "whole.tet", "t", np.concatenate(pieces),
                              chunk_shape=(5, 4, 6), dim_names=["time", "y", "x"])
    s3.traffic.reset()
    doc = {"dataset": "t", "mean": ["x"]}
    remote = tet.query_many(urls, doc, client, storage_options=s3.options)
    assert s3.traffic.count("days/") >= FILES  # the workers read them (this process did not)
    assert [r["tet_file"] for r in remote] == urls
    local = tet.query_many(paths, doc)
    assert [_values(r) for r in remote] == [_values(r) for r in local]
    with tet.open(whole) as f:
        for op in ("mean", "var", "min", "max", "sum", "count"):
            query = {"dataset": "t", op: ["time"]}
            got = tet.query_many(urls, query, client, combine=True,
                                 storage_options=s3.options)
            assert got["tet_files"] == urls
            assert _close(_values(got), _values(f.query(query))), op
            assert _close(_values(got), _values(tet.query_many(paths, query, combine=True)))
    with pytest.raises(tet.TetFileNotFoundError, match=r"s3://tet/days/none\.tet"):
        tet.query_many([*urls[:2], "s3://tet/days/none.tet"], doc, client,
                       storage_options=s3.options)
    arr = tet.to_dask(urls[3], "t", storage_options=s3.options, block_bytes=2000)
    assert client.compute(arr).result().tobytes() == pieces[3].tobytes()
    opened = client.run(cache_info)  # each worker opened the URL itself, at most once
    assert all(counts.get(urls[3], 0) <= 1 for counts in opened.values())
    assert sum(counts.get(urls[3], 0) for counts in opened.values()) >= 1
