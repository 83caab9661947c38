"""Reading remote `.tet` files (tet.remote, tet.remote_tiles) on the loopback S3 and HTTP
servers: the same answers as the local file, the requests it takes, and each failure a
clean `TetError`."""

from __future__ import annotations

import json
import pickle
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("obstore", reason="obstore (the remote extra) is not installed")

import tet
from tests.conftest import INTEROP
from tet.errors import FileChangedError, TetError, TetFileNotFoundError
from tet.objstore import RemoteError
from tet.remote import RangedSource, Tuning, merge, requests_for, subtract

FILES = sorted(p.name for p in INTEROP.glob("*.tet")) if INTEROP.exists() else []
CASES = ([json.loads(line) for line in (INTEROP / "cases.jsonl").read_text().splitlines()]
         if INTEROP.exists() else [])
# the tile geometry of the accounting file: a grid of 1024 x 1024 f32 tiles (4 MiB each);
# 8 x 8 tiles (256 MiB, not 1 GiB) keeps the upload to moto within seconds
TILE = 1024
GRID = 8
# what depends on the moment (timings, the RAM free now), not on the file
TIMINGS = re.compile(r"(elapsed|_ms$|_ns$|_seconds$|^time|available|memory_budget_bytes)")


def _normal(value: Any, names: tuple[str, ...]) -> Any:
    """A response with timings dropped and the file's name (path or URL) as <FILE>."""
    if isinstance(value, dict):
        return {k: _normal(v, names) for k, v in value.items() if not TIMINGS.search(k)}
    if isinstance(value, list):
        return [_normal(v, names) for v in value]
    if isinstance(value, str):
        for n in names:
            value = value.replace(n, "<FILE>")
    return value


def _answer(f: tet.TetFile, query: Any) -> Any:
    try:
        got = ("ok", _normal(f.query(query, preview=8), (str(f.path),)))
    except TetError as exc:
        got = (type(exc).__name__, str(exc).replace(str(f.path), "<FILE>"))
    return json.dumps(got, sort_keys=True, default=str)  # NaN equal to NaN


@pytest.fixture(scope="module")
def corpus(s3_server: Any, http_server: Any) -> dict[str, str]:
    for name in FILES:
        s3_server.put("tet", f"corpus/{name}", (INTEROP / name).read_bytes())
        (http_server.root / "corpus").mkdir(exist_ok=True)
        shutil.copyfile(INTEROP / name, http_server.root / "corpus" / name)
    return {"s3": "s3://tet/corpus/", "http": f"{http_server.url}/corpus/"}


def _open(kind: str, corpus: dict[str, str], name: str, s3: Any, http: Any,
          **options: Any) -> tet.TetFile:
    base = s3.options if kind == "s3" else http.options
    return tet.open(corpus[kind] + name, storage_options={**base, **options})


@pytest.mark.skipif(not FILES, reason="shared interop corpus not present")
@pytest.mark.parametrize("kind", ["s3", "http"])
@pytest.mark.parametrize("name", FILES)
def test_corpus_file_gives_the_local_answers(kind: str, name: str, corpus: dict[str, str],
                                             s3: Any, http: Any) -> None:
    try:
        remote = _open(kind, corpus, name, s3, http)
    except TetError as exc:  # a file the reference wrote to fail: the same error remotely
        with pytest.raises(type(exc)) as info:
            tet.open(INTEROP / name)
        assert str(info.value) == str(exc)
        return
    local = tet.open(INTEROP / name)
    with local, remote:
        assert remote.url == corpus[kind] + name and local.url is None
        assert _normal(remote.summary(), (str(remote.path),)) == \
            _normal(local.summary(), (str(local.path),))
        for ds in local.values():
            npy = INTEROP / f"{Path(name).stem}.{ds.name}.npy"
            want = local.read_numpy(ds.name)
            got = remote.read_numpy(ds.name)
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
            if npy.exists():
                assert got.tobytes() == np.load(npy).tobytes()
            if ds.ndim and ds.size:
                key = tuple(slice(None, None, 2) for _ in range(ds.ndim))
                assert remote[ds.name][key].tobytes() == local[ds.name][key].tobytes()
        for case in (c for c in CASES if c["file"] == name):
            assert _answer(remote, case["query"]) == _answer(local, case["query"]), case["id"]


def _grid_file(tmp: Path, grid: int = GRID, tile: int = TILE, codec: str = "raw") -> Path:
    rng = np.random.default_rng(7)
    x = rng.integers(0, 4, size=(grid * tile, grid * tile)).astype(np.float32)
    path = tmp / f"grid{grid}x{tile}.{codec}.tet"
    tet.write_dataset(path, "x", x, chunk_shape=(tile, tile), codec=codec)
    return path


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory, s3_server: Any) -> tuple[str, np.ndarray]:
    path = _grid_file(tmp_path_factory.mktemp("big"))
    s3_server.put("tet", "big.tet", path.read_bytes())
    with tet.open(path) as f:
        return "s3://tet/big.tet", f.read_numpy("x")


def test_open_costs_at_most_two_requests(big: tuple[str, np.ndarray], s3: Any) -> None:
    url, _ = big
    s3.traffic.reset()
    with tet.open(url, storage_options=s3.options) as f:
        assert f["x"].shape == (GRID * TILE, GRID * TILE)
        assert s3.traffic.count("big.tet") <= 2
        s3.traffic.reset()
        got = f["x"][1500:1600, 2100:2200]  # inside tile (1, 2)
        assert got.tobytes() == big[1][1500:1600, 2100:2200].tobytes()
        assert s3.traffic.count("big.tet") == 1
        assert s3.traffic.bytes("big.tet") == TILE * TILE * 4
        s3.traffic.reset()
        got = f["x"][1000:1100, 2000:2100]  # across four tiles
        assert got.tobytes() == big[1][1000:1100, 2000:2100].tobytes()
        assert s3.traffic.bytes("big.tet") <= 4 * TILE * TILE * 4 + 2 * TILE * 4 * 2


def test_scalar_fold_fetches_every_tile_once_in_few_requests(
        big: tuple[str, np.ndarray], s3: Any) -> None:
    url, x = big
    with tet.open(url, storage_options=s3.options) as f:
        s3.traffic.reset()
        assert f.sum("x") == float(x.sum(dtype=np.float64))
        tiles = GRID * GRID
        assert s3.traffic.count("big.tet") <= tiles // 4  # 16 MiB requests of 4 MiB tiles
        payload = s3.traffic.bytes("big.tet")
        head = Tuning().head_bytes + 65552  # the reads at open hold the first and last bytes
        assert tiles * TILE * TILE * 4 - head <= payload <= f.reader.size
        source = f.reader.source
        assert isinstance(source, RangedSource) and source.held == 0


def test_windows_bound_memory_and_equal_numpy(tmp_path: Path, s3: Any) -> None:
    path = _grid_file(tmp_path, grid=6, tile=64, codec="zstd")
    s3.put("tet", "windows.tet", path.read_bytes())
    x = tet.open(path).read_numpy("x").astype(np.float64)
    window = 40_000  # a few zstd tiles of 64 x 64 f32
    opts = {**s3.options, "tet_window_bytes": window, "tet_gap_bytes": 1,
            "tet_request_bytes": 8192, "tet_head_bytes": 4096}
    with tet.open("s3://tet/windows.tet", storage_options=opts) as f:
        source = f.reader.source
        assert isinstance(source, RangedSource)
        table = f.reader.table(0)
        biggest = int(table.stored.max())
        assert window < int(table.stored.sum())  # the fold cannot run in one window
        assert f.sum("x") == pytest.approx(x.sum(), rel=1e-12)
        assert f.mean("x", axis=1).value == pytest.approx(x.mean(axis=1), rel=1e-12)
        assert f.mean("x", axis=0).value == pytest.approx(x.mean(axis=0), rel=1e-12)
        assert f.arg_max("x") == int(np.argmax(x))
        assert f.min("x", axis=0).value.tolist() == x.min(axis=0).tolist()
        assert f.read_numpy("x").tobytes() == x.astype(np.float32).tobytes()
        sel = f["x"][5:370:3, 7:300]
        assert sel.tobytes() == x[5:370:3, 7:300].astype(np.float32).tobytes()
        assert 0 < source.peak_held <= window + biggest * tet.kernels.thread_count()
        assert source.held == 0


def test_interval_helpers() -> None:
    assert merge([(5, 9), (0, 3), (3, 4), (20, 21)]) == [(0, 4), (5, 9), (20, 21)]
    assert merge([(0, 3), (5, 9)], gap=2) == [(0, 9)]
    assert subtract([(0, 10), (20, 30)], [(2, 4), (8, 22)]) == [(0, 2), (4, 8), (22, 30)]
    tuning = Tuning(gap_bytes=2, request_bytes=4)
    assert requests_for([(0, 3), (4, 9), (20, 21)], tuning) == [(0, 4), (4, 8), (8, 9),
                                                                (20, 21)]


@pytest.fixture
def sample(s3: Any, http: Any) -> Iterator[Path]:
    src = INTEROP / "sample.tet"
    if not src.exists():
        pytest.skip("shared interop corpus not present")
    s3.put("tet", "sample.tet", src.read_bytes())
    shutil.copyfile(src, http.root / "sample.tet")
    yield src


def test_pickle_reopens_and_notices_a_replaced_object(sample: Path, s3: Any) -> None:
    f = tet.open("s3://tet/sample.tet", storage_options=s3.options)
    copy = pickle.loads(pickle.dumps(f))
    assert copy.url == "s3://tet/sample.tet"
    assert copy.read_numpy("temperature").tolist() == f.read_numpy("temperature").tolist()
    stale = pickle.loads(pickle.dumps(f))
    s3.put("tet", "sample.tet", sample.read_bytes() + b"")  # same bytes, a new version?
    data = bytearray(sample.read_bytes())
    s3.put("tet", "sample.tet", bytes(data) + b"\0" * 8)
    with pytest.raises(FileChangedError, match="changed since this handle was pickled"):
        stale.read_numpy("temperature")


def test_replaced_mid_query_is_file_changed(big: tuple[str, np.ndarray], s3: Any,
                                            tmp_path: Path) -> None:
    path = _grid_file(tmp_path, grid=2, tile=256)
    s3.put("tet", "swap.tet", path.read_bytes())
    with tet.open("s3://tet/swap.tet", storage_options=s3.options) as f:
        s3.put("tet", "swap.tet", path.read_bytes()[:-8] + b"\1" * 8)
        with pytest.raises(FileChangedError, match=r"swap\.tet.*changed while it was"):
            f.sum("x")


def test_missing_object_is_file_not_found(s3: Any, http: Any) -> None:
    with pytest.raises(TetFileNotFoundError, match=r"no such object: `s3://tet/none\.tet`"):
        tet.open("s3://tet/none.tet", storage_options=s3.options)
    with pytest.raises(FileNotFoundError):
        tet.open(f"{http.url}/none.tet", storage_options=http.options)


def test_denied_refused_truncated_stalled(sample: Path, s3: Any, http: Any) -> None:
    s3.faults.status, s3.faults.match = 403, "sample.tet"
    with pytest.raises(RemoteError, match="access denied"):
        tet.open("s3://tet/sample.tet", storage_options=s3.options)
    s3.faults.clear()
    from tests.servers import free_port
    dead = {**s3.options, "endpoint": f"http://127.0.0.1:{free_port()}", "max_retries": 0}
    with pytest.raises(RemoteError, match=r"s3://tet/sample\.tet"):
        tet.open("s3://tet/sample.tet", storage_options=dead)
    http.faults.truncate, http.faults.match = 10, "sample.tet"
    with pytest.raises(RemoteError, match=r"sample\.tet"):
        tet.open(f"{http.url}/sample.tet", storage_options=http.options)
    http.faults.clear()
    http.faults.stall_s, http.faults.match = 5.0, "sample.tet"
    quick = {**http.options, "timeout": "1s", "max_retries": 0, "retry_timeout": 1}
    with pytest.raises(RemoteError, match=r"sample\.tet"):
        tet.open(f"{http.url}/sample.tet", storage_options=quick)


def test_store_object_file_url_and_bad_options(sample: Path, s3: Any) -> None:
    from obstore.store import S3Store
    opts = s3.options
    store = S3Store("tet", endpoint=opts["endpoint"], access_key_id=opts["access_key_id"],
                    secret_access_key=opts["secret_access_key"], region=opts["region"],
                    client_options={"allow_http": True})
    with tet.open("sample.tet", store=store) as f:
        assert f.read_numpy("temperature").shape == (2, 3)
    with tet.open(sample.as_uri()) as f:
        assert f.url is None and f.path == sample
    with pytest.raises(TetError, match="positive integer"):
        tet.open("s3://tet/sample.tet", storage_options={**opts, "tet_window_bytes": 0})
    with pytest.raises(TetError, match="apply to remote URLs"):
        tet.open(sample, storage_options=opts)


def test_outputs_stay_local_and_sidecars_need_a_path(sample: Path, s3: Any,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "out"
    with tet.open("s3://tet/sample.tet", storage_options=s3.options,
                  spill_allow=[out]) as f:
        doc = {"dataset": "temperature", "transform": {"method": "zscore"}}
        with pytest.raises(tet.QueryError, match=r"remote file `s3://tet/sample\.tet` "
                                                 r"needs `write.path`"):
            f.query({**doc, "write": "sidecar"})
        f.query({**doc, "write": {"target": "sidecar", "path": str(out / "z.tet")}})
        with tet.open(out / "z.tet") as z, tet.open(sample) as local:
            x = local.read_numpy("temperature").astype(np.float64)
            assert z.read_numpy(z.datasets()[0]) == pytest.approx((x - x.mean()) / x.std())
        spilled = f.query({**doc, "write": {"target": "spill", "path": str(out / "s.bin")}})
        assert (out / "s.bin").exists() and spilled["status"]
        with pytest.raises(TetError, match="allow"):
            f.query({**doc, "write": {"target": "spill", "path": "/elsewhere/s.bin"}})


def test_plan_only_preview_oindex_and_views(big: tuple[str, np.ndarray], s3: Any) -> None:
    url, x = big
    with tet.open(url, storage_options=s3.options) as f:
        source = f.reader.source
        assert isinstance(source, RangedSource)
        before = source.requests
        plan = f.plan_only({"dataset": "x", "mean": [],
                            "selection": [{"start": 1000, "stop": 1100},
                                          {"start": 0, "stop": 10}]})
        assert len(plan["read_plan"]["chunks"]) == 2 and source.requests == before
        got = f["x"][[5, 3000, 9], [7, 7, 8000]]
        assert got.tobytes() == x[np.ix_([5, 3000, 9], [7, 7, 8000])].tobytes()
        assert f["x"].oindex[[1, 2], 3:5].tobytes() == x[[1, 2], 3:5].tobytes()
        view = f.read_numpy("x", {"start": [TILE, 0], "stop": [2 * TILE, TILE]}, copy=None)
        assert not view.flags.writeable
        f.sum("x")  # fetches and releases every tile: the view's tile stays
        assert view.tobytes() == x[TILE:2 * TILE, :TILE].tobytes()
        result = f.mean("x", axis=0, preview=4)
        assert result.value == pytest.approx(x.mean(axis=0, dtype=np.float64), rel=1e-9)


def test_verify_a_remote_file(sample: Path, s3: Any, tmp_path: Path) -> None:
    from tet.verify import verify
    local = verify(sample, deep=True)
    remote = verify("s3://tet/sample.tet", deep=True, storage_options=s3.options)
    assert remote.ok and [f.check for f in remote.findings] == \
        [f.check for f in local.findings]
    good = _grid_file(tmp_path, grid=3, tile=64, codec="zstd")
    bad = bytearray(good.read_bytes())
    row = tet.open(good).catalog.entries[4]
    bad[int(row["payload_offset"]) + int(row["stored_byte_len"]) // 2] ^= 0xFF
    s3.put("tet", "bad.tet", bytes(bad))
    (tmp_path / "bad.tet").write_bytes(bytes(bad))
    want = verify(tmp_path / "bad.tet", deep=True)
    got = verify("s3://tet/bad.tet", deep=True, storage_options=s3.options)
    assert [(f.check, f.ok, f.detail) for f in got.findings] == \
        [(f.check, f.ok, f.detail) for f in want.findings] and not got.ok


def _value(r: Any) -> Any:
    return r.value if hasattr(r, "value") else r


@pytest.mark.parametrize("window", [30_000, 120_000])
def test_windows_cut_along_two_axes_equal_one_window(tmp_path: Path, s3: Any,
                                                     window: int) -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(-3, 4, size=(3, 5 * 32 + 7, 6 * 32)).astype(np.float32)
    x[1, 40, 50] = np.nan
    path = tmp_path / "cube.tet"
    tet.write_dataset(path, "x", x, chunk_shape=(1, 32, 32), codec="zstd")
    s3.put("tet", "cube.tet", path.read_bytes())
    base = {**s3.options, "tet_head_bytes": 4096, "tet_gap_bytes": 1}
    one = tet.open("s3://tet/cube.tet", storage_options=base)
    cut = tet.open("s3://tet/cube.tet",
                   storage_options={**base, "tet_window_bytes": window})
    with one, cut:
        table = cut.reader.table(0)
        slab = int(table.stored[:30].sum())  # one slab along axis 0: 6 x 6 tiles
        assert (window // 2 < slab) == (window == 30_000)  # the small window cuts slabs
        for op, axes in [("sum", None), ("nan_mean", (0,)), ("nan_mean", (1,)),
                         ("nan_mean", (2,)), ("nan_mean", (0, 2)), ("min", (1,)),
                         ("arg_min", None), ("arg_max", (0, 1)), ("max", (2,)),
                         ("count", (0,)), ("nan_count", (1, 2))]:
            a = _value(getattr(one, op)("x", axes))
            b = _value(getattr(cut, op)("x", axes))
            if op in ("min", "max", "arg_min", "arg_max", "count", "nan_count"):
                assert np.array_equal(a, b, equal_nan=True), (op, axes)
            else:
                assert np.allclose(a, b, rtol=1e-12, equal_nan=True), (op, axes)
        want = np.nanmean(x.astype(np.float64), axis=(0, 2))
        assert np.allclose(_value(cut.nan_mean("x", (0, 2))), want, rtol=1e-12)
        assert int(_value(cut.arg_max("x"))) == int(np.argmax(x))  # the first NaN
        h1, h2 = one.histogram("x", 7, (1,)), cut.histogram("x", 7, (1,))
        assert np.array_equal(np.asarray(h1.value), np.asarray(h2.value))
        assert cut.read_numpy("x").tobytes() == x.tobytes()
        assert cut["x"][:, 3:150:5, 17:].tobytes() == x[:, 3:150:5, 17:].tobytes()
        source = cut.reader.source
        assert isinstance(source, RangedSource)
        biggest = int(table.stored.max())
        assert 0 < source.peak_held <= window + biggest and source.held == 0
        assert source.peak_held < int(table.stored.sum())  # it did run in windows
