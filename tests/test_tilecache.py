"""The decoded-tile cache (tet.tilecache): small reads of zstd tiles served from decoded
tiles give the same arrays as uncached reads, the cache stays within its bytes and
evicts least recently used first, belongs to one open reader, is shared safely by
threads, and spares a remote file's repeated small reads their requests."""

from __future__ import annotations

import os
import pickle
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tet
from tests.keys import axis_keys
from tests.test_oindex import expected
from tests.test_roundtrip import assert_same, make_array
from tet.errors import ChunkError, TetError
from tet.layout import parse_catalog
from tet.tilecache import DEFAULT_CACHE_BYTES, TileCache

FAST = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
DTYPES = ("float32", "float64", "int16", "uint8", "uint64", "float16", "bool")


@contextmanager
def pair(a: np.ndarray[Any, Any], chunk: tuple[int, ...],
         cache_bytes: int = DEFAULT_CACHE_BYTES) -> Iterator[tuple[tet.TetFile, tet.TetFile]]:
    """One zstd file opened twice: with the tile cache and without it."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "a.tet"
        tet.write_dataset(path, "x", a, chunk_shape=chunk, codec="zstd")
        with tet.open(path, cache_bytes=cache_bytes) as cached, \
                tet.open(path, cache_bytes=0) as plain:
            yield cached, plain


@st.composite
def cases(draw: st.DrawFn) -> tuple[np.ndarray[Any, Any], tuple[int, ...]]:
    rank = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, (300, 40, 12)[rank - 1])) for _ in range(rank))
    chunk = tuple(draw(st.integers(1, n + 2)) for n in shape)
    dtype = draw(st.sampled_from(DTYPES))
    return make_array(dtype, shape, draw(st.integers(0, 2**32 - 1))), chunk


@st.composite
def small_box(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """A box of a few elements per axis (any positive step), the reads the cache serves."""
    out = []
    for n in shape:
        start = draw(st.integers(0, n - 1))
        step = draw(st.integers(1, max(1, n)))
        stop = draw(st.integers(start + 1, min(n, start + 3 * step)))
        out.append(slice(start, stop, step))
    return tuple(out)


@FAST
@given(case=cases(), data=st.data())
def test_cached_boxes_equal_uncached_reads(case: tuple[np.ndarray[Any, Any], tuple[int, ...]],
                                           data: st.DataObject) -> None:
    a, chunk = case
    with pair(a, chunk) as (cached, plain):
        for _ in range(6):
            key = data.draw(small_box(a.shape))
            want = a[key]
            for _ in range(2):  # the miss that decodes, then the hit
                assert_same(cached["x"][key], want)
                assert_same(cached.read_numpy("x", {"start": [s.start for s in key],
                                                    "stop": [s.stop for s in key],
                                                    "step": [s.step for s in key]}), want)
            assert_same(plain["x"][key], want)
        assert cached.reader.cache.nbytes <= DEFAULT_CACHE_BYTES
        assert len(plain.reader.cache) == 0


@FAST
@given(case=cases(), data=st.data())
def test_cached_index_reads_equal_uncached_reads(
        case: tuple[np.ndarray[Any, Any], tuple[int, ...]], data: st.DataObject) -> None:
    a, chunk = case
    with pair(a, chunk) as (cached, plain):
        for _ in range(4):
            key = [data.draw(axis_keys(n, max_indices=6)) for n in a.shape]
            want = expected(a, key)
            for _ in range(2):
                assert_same(np.asarray(cached["x"][tuple(key)]), want)
                assert_same(np.asarray(cached["x"].oindex[tuple(key)]), want)
            assert_same(np.asarray(plain["x"][tuple(key)]), want)


def test_small_reads_are_served_from_the_cache(tmp_path: Path) -> None:
    a = np.random.default_rng(1).standard_normal((64, 96)).astype(np.float32)
    p = tmp_path / "z.tet"
    tet.write_dataset(p, "x", a, chunk_shape=(32, 32), codec="zstd")
    with tet.open(p) as f:
        cache = f.reader.cache
        assert f.cache_bytes == DEFAULT_CACHE_BYTES == 64 * 1024 * 1024
        assert f["x"][3, 5] == a[3, 5] and (cache.hits, cache.misses, len(cache)) == (0, 1, 1)
        assert f["x"][31, 0] == a[31, 0] and (cache.hits, cache.misses) == (1, 1)
        assert_same(f["x"][30:34, 31:33], a[30:34, 31:33])  # four tiles, one decoded before
        assert sorted(cache.keys()) == [(0, 0), (0, 1), (0, 3), (0, 4)]
        assert cache.nbytes == 4 * 32 * 32 * 4
        assert_same(f["x"][[40, 3], [95, 1]], a[[40, 3]][:, [95, 1]])  # tiles 5, 3, 2, 0
        assert sorted(cache.keys()) == [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (0, 5)]
        # a large part of the tiles it touches: the one-C-call path, nothing cached
        f.reader.cache.clear()
        assert_same(f["x"][:, :40], a[:, :40])
        assert_same(f["x"][0:32, 0:32], a[0:32, 0:32])
        assert len(cache) == 0 and cache.nbytes == 0


def test_raw_tiles_of_a_local_file_are_not_cached(tmp_path: Path) -> None:
    a = np.arange(64 * 64, dtype=np.int32).reshape(64, 64)
    p = tmp_path / "r.tet"
    tet.write_dataset(p, "x", a, chunk_shape=(32, 32))
    with tet.open(p) as f:
        assert f["x"][3, 4] == a[3, 4] and f["x"][[1, 40], 2].tolist() == [a[1, 2], a[40, 2]]
        assert len(f.reader.cache) == 0 and f.reader.cache.misses == 0


def test_masked_reads_do_not_use_the_cache(tmp_path: Path) -> None:
    a = np.arange(64 * 64, dtype=np.float64).reshape(64, 64)
    a[0, 0] = -1.0
    p = tmp_path / "z.tet"
    tet.write_dataset(p, "x", a, chunk_shape=(32, 32), codec="zstd", attrs={"_FillValue": "-1"})
    sel = [{"start": 0, "stop": 1}, {"start": 0, "stop": 2}]
    with tet.open(p) as f:
        r = f.query({"dataset": "x", "nan_mean": [], "selection": sel,
                     "execution": {"mask_fill": True}})
        assert r["execution"]["operation_nan_mean"] == 1.0
        r = f.query({"dataset": "x", "selection": sel, "execution": {"mask_fill": True}},
                    preview=4)
        assert r["execution"]["f64_preview"][1] == 1.0
        assert len(f.reader.cache) == 0 and f.reader.cache.misses == 0
        assert f["x"][0, 1] == 1.0 and len(f.reader.cache) == 1  # an unmasked read caches


def test_cache_bytes_zero_never_caches(tmp_path: Path) -> None:
    a = np.arange(64 * 64, dtype=np.int16).reshape(64, 64)
    p = tmp_path / "z.tet"
    tet.write_dataset(p, "x", a, chunk_shape=(16, 16), codec="zstd")
    with tet.open(p, cache_bytes=0) as f:
        for i in range(20):
            assert f["x"][i, 2 * i] == a[i, 2 * i]
            assert_same(f["x"][[i, 63], i], a[[i, 63], i])
        cache = f.reader.cache
        assert (len(cache), cache.nbytes, cache.hits, cache.misses) == (0, 0, 0, 0)


def test_lru_eviction_and_the_byte_bound(tmp_path: Path) -> None:
    a = np.arange(64 * 64, dtype=np.float64).reshape(64, 64)
    p = tmp_path / "z.tet"
    tet.write_dataset(p, "x", a, chunk_shape=(16, 16), codec="zstd")
    tile = 16 * 16 * 8
    with tet.open(p, cache_bytes=2 * tile + tile // 2) as f:  # room for two tiles
        cache = f.reader.cache
        ds = f["x"]
        assert ds[0, 0] == a[0, 0] and ds[0, 16] == a[0, 16]
        assert cache.keys() == [(0, 0), (0, 1)]
        assert ds[1, 1] == a[1, 1]  # tile 0 used again: now the most recent
        assert cache.keys() == [(0, 1), (0, 0)]
        assert ds[0, 32] == a[0, 32]  # tile 2 evicts the least recently used, tile 1
        assert cache.keys() == [(0, 0), (0, 2)] and cache.nbytes == 2 * tile
        rng = np.random.default_rng(0)
        for _ in range(200):
            i, j = (int(v) for v in rng.integers(0, 64, 2))
            assert ds[i, j] == a[i, j]
            assert cache.nbytes <= 2 * tile + tile // 2 and len(cache) <= 2
    # a tile larger than the cache is decoded, served and not kept
    with tet.open(p, cache_bytes=tile - 1) as f:
        assert f["x"][5, 5] == a[5, 5] and len(f.reader.cache) == 0


def test_tile_cache_unit_bounds() -> None:
    cache = TileCache(100)
    for k in range(50):
        cache.put((0, k), np.zeros(k % 7 * 5 + 1, dtype=np.uint8))
        assert cache.nbytes <= 100
        assert cache.nbytes == sum(int(cache.get(key).nbytes) for key in list(cache.keys()))  # type: ignore[union-attr]
    cache.put((1, 0), np.zeros(101, dtype=np.uint8))
    assert cache.get((1, 0)) is None and cache.nbytes <= 100
    cache.put((1, 1), np.zeros(100, dtype=np.uint8))
    assert cache.keys() == [(1, 1)] and cache.nbytes == 100


def test_cache_bytes_option_is_checked_and_pickled(tmp_path: Path) -> None:
    p = tmp_path / "z.tet"
    tet.write_dataset(p, "x", np.arange(10.0), chunk_shape=(5,), codec="zstd")
    with pytest.raises(ValueError, match=r"cache_bytes must be >= 0 \(0 disables the tile "
                                         r"cache\), got -1"):
        tet.open(p, cache_bytes=-1)
    for bad in (True, 1.5, "64"):
        with pytest.raises(TypeError, match="cache_bytes must be an integer"):
            tet.open(p, cache_bytes=bad)  # type: ignore[arg-type]
    with tet.TetFile.open(p, cache_bytes=12345) as f:
        assert f.cache_bytes == f.reader.cache.capacity == 12345
        copy = pickle.loads(pickle.dumps(f))
        ds = pickle.loads(pickle.dumps(f["x"]))
    assert copy.cache_bytes == 12345 and copy.reader.cache.capacity == 12345
    assert ds[3] == 3.0 and ds._owner(None).reader.cache.capacity == 12345
    with tet.open(p, cache_bytes=0) as f:
        assert pickle.loads(pickle.dumps(f)).reader.cache.capacity == 0
    assert tet.TetFile.from_reader(tet.reader.Reader.open(p, cache_bytes=77)).cache_bytes == 77


def test_a_replaced_file_is_never_served_from_an_old_cache(tmp_path: Path) -> None:
    p = tmp_path / "z.tet"
    old = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    tet.write_dataset(p, "x", old, chunk_shape=(32, 32), codec="zstd")
    f = tet.open(p)
    assert f["x"][3, 4] == old[3, 4] and len(f.reader.cache) == 1
    pickled = pickle.dumps(f)
    new = -old
    tet.write_dataset(tmp_path / "n.tet", "x", new, chunk_shape=(32, 32), codec="zstd")
    os.replace(tmp_path / "n.tet", p)
    with tet.open(p) as g:
        assert g["x"][3, 4] == new[3, 4] and g.read_numpy("x")[3, 4] == new[3, 4]
    # the old handle reads the file it opened (its mapping), cached or not, consistently
    assert f["x"][3, 4] == old[3, 4] == f.read_numpy("x")[3, 4]
    with pytest.raises(tet.FileChangedError):
        pickle.loads(pickled)["x"][3, 4]
    f.close()
    with pytest.raises(TetError, match="is closed"):
        f["x"][3, 4]
    assert len(f.reader.cache) == 0


def test_a_corrupt_tile_fails_the_same_cached_or_not(tmp_path: Path) -> None:
    a = np.random.default_rng(2).standard_normal((64, 64))
    p = tmp_path / "z.tet"
    tet.write_dataset(p, "x", a, chunk_shape=(32, 32), codec="zstd")
    buf = bytearray(p.read_bytes())
    cat = parse_catalog(bytes(buf), len(buf))
    buf[int(cat.entries["payload_offset"][1])] ^= 0x01  # tile [0, 1]: its zstd magic
    p.write_bytes(bytes(buf))
    messages = []
    for cache_bytes in (DEFAULT_CACHE_BYTES, 0):
        with tet.open(p, cache_bytes=cache_bytes) as f:
            assert f["x"][0, 0] == a[0, 0]
            for _ in range(2):
                with pytest.raises(ChunkError) as info:
                    f["x"][3, 40]
                messages.append(str(info.value))
            assert len(f.reader.cache) == (1 if cache_bytes else 0)
    assert messages == ["read failed: dataset_id=0 chunk_index=[0, 1]: zstd decode failed: "
                        "Unknown frame descriptor"] * 4


def test_threads_share_one_cache(tmp_path: Path) -> None:
    a = np.random.default_rng(3).standard_normal((256, 256)).astype(np.float32)
    p = tmp_path / "z.tet"
    tet.write_dataset(p, "x", a, chunk_shape=(32, 32), codec="zstd")
    tile = 32 * 32 * 4
    errors: list[BaseException] = []
    with tet.open(p, cache_bytes=5 * tile) as f:  # 5 of 64 tiles: evictions all the time
        cache = f.reader.cache
        ds = f["x"]

        def work(seed: int) -> None:
            rng = np.random.default_rng(seed)
            try:
                for _ in range(150):
                    i, j = (int(v) for v in rng.integers(0, 250, 2))
                    if rng.random() < 0.5:
                        got = ds[i:i + 3, j:j + 5:2]
                        assert np.array_equal(got, a[i:i + 3, j:j + 5:2])
                    else:
                        got = ds[[i, i // 2], [j, 255]]
                        assert np.array_equal(got, a[[i, i // 2]][:, [j, 255]])
                    assert cache.nbytes <= 5 * tile
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        assert cache.hits > 0 and cache.nbytes <= 5 * tile


def test_verify_deep_names_the_tile_of_a_frame_whose_checksum_fails(tmp_path: Path,
                                                                    cli: Any) -> None:
    """A zstd frame whose content checksum no longer matches its decoded bytes (the last
    four bytes of the frame flipped: the frame still decodes): `tet verify --deep` reports
    that chunk and only it, through the checksum table and through the frame check; a read
    of the tile (cached or not) names the same tile."""
    import json

    p = tmp_path / "z.tet"
    a = np.random.default_rng(4).standard_normal((64, 64))
    with tet.TetWriter.create(p) as w:
        w.write_dataset("a", a, chunk_shape=(32, 32), codec="zstd")
        w.write_dataset("b", a * 2, chunk_shape=(32, 32), codec="zstd")
    buf = bytearray(p.read_bytes())
    cat = parse_catalog(bytes(buf), len(buf))
    row = int(np.flatnonzero((cat.entries["dataset_id"] == 1)
                             & (cat.entries["chunk_index"][:, 0] == 1)
                             & (cat.entries["chunk_index"][:, 1] == 0))[0])
    end = int(cat.entries["payload_offset"][row]) + int(cat.entries["stored_byte_len"][row])
    buf[end - 1] ^= 0x40  # inside the frame's XXH64 content checksum
    p.write_bytes(bytes(buf))
    r = cli("verify", "--deep", "--json", p)
    assert r.rc == 1
    d = json.loads(r.out)
    decode = [x["detail"] for x in d["findings"] if x["check"] == "chunk_decode" and not x["ok"]]
    sums = [x["detail"] for x in d["findings"]
            if x["check"] == "chunk_checksums" and not x["ok"]]
    assert decode == [f"chunk {row}: zstd decode failed: Restored data doesn't match checksum"]
    assert len(sums) == 1 and sums[0].startswith(f"chunk {row}: ")
    assert "chunk_index [1, 0]: stored bytes" in sums[0]
    for cache_bytes in (DEFAULT_CACHE_BYTES, 0):
        with tet.open(p, cache_bytes=cache_bytes) as f:
            assert f["a"][40, 3] == a[40, 3] and f["b"][3, 40] == 2 * a[3, 40]
            with pytest.raises(ChunkError, match=r"read failed: dataset_id=1 chunk_index=\[1, 0\]"
                                                 r": zstd decode failed: Restored data doesn't "
                                                 r"match checksum"):
                f["b"][40, 3]


@pytest.mark.parametrize("codec", ["zstd", "raw"])
def test_remote_small_reads_fetch_each_tile_once(tmp_path: Path, s3: Any, codec: str) -> None:
    """Counted at the server: the first small read of a tile fetches it, later reads of
    it (points, boxes, index lists, read_numpy) fetch nothing; without the cache each
    read fetches its tile again.  (A small head read at open, so that the tiles read
    here are not among the bytes the open fetched.)"""
    a = np.random.default_rng(5).standard_normal((256, 256)).astype(np.float32)
    p = tmp_path / "r.tet"
    tet.write_dataset(p, "x", a, chunk_shape=(64, 64), codec=codec)
    key = f"cache-{codec}.tet"
    s3.put("tet", key, p.read_bytes())
    url = f"s3://tet/{key}"
    options = {**s3.options, "tet_head_bytes": 4096, "tet_gap_bytes": 1}
    with tet.open(url, storage_options=options) as f:
        ds = f["x"]
        s3.traffic.reset()
        assert ds[3, 5] == a[3, 5]
        assert s3.traffic.count(key) == 1
        s3.traffic.reset()
        for i in range(10):
            assert ds[i, 63 - i] == a[i, 63 - i]
            assert_same(ds[i:i + 3, 2:9:3], a[i:i + 3, 2:9:3])
            assert_same(ds[[i, 40], [1, 60]], a[[i, 40]][:, [1, 60]])
            assert f.read_numpy("x", [{"start": i, "stop": i + 1},
                                      {"start": 7, "stop": 8}])[0, 0] == a[i, 7]
        assert s3.traffic.count(key) == 0
        assert_same(ds[62:66, 62:66], a[62:66, 62:66])  # three more tiles
        assert 1 <= s3.traffic.count(key) <= 3
        s3.traffic.reset()
        assert_same(ds[63:65, 60:68], a[63:65, 60:68])
        assert s3.traffic.count(key) == 0
        assert f.reader.cache.nbytes == 4 * 64 * 64 * 4
    with tet.open(url, storage_options=options, cache_bytes=0) as f:
        s3.traffic.reset()
        for i in range(3):
            assert f["x"][i, 5] == a[i, 5]
        assert s3.traffic.count(key) == 3
        assert len(f.reader.cache) == 0


@pytest.mark.usefixtures("fresh_cache")
def test_xarray_point_reads_use_the_cache_of_the_cached_reader(tmp_path: Path) -> None:
    xr = pytest.importorskip("xarray", reason="xarray (the xarray extra) is not installed")
    from tet.opencache import file_key, open_cached
    from tet.xarray_backend import TetBackendEntrypoint

    a = np.random.default_rng(6).standard_normal((64, 64)).astype(np.float32)
    p = tmp_path / "z.tet"
    tet.write_dataset(p, "v", a, chunk_shape=(32, 32), codec="zstd", dim_names=["y", "x"])
    ds = xr.open_dataset(p, engine=TetBackendEntrypoint)
    for i in range(5):
        assert ds["v"].isel(y=i, x=40 - i).values == a[i, 40 - i]
        assert_same(ds["v"].isel(y=[i, 3], x=slice(33, 36)).values, a[[i, 3], 33:36])
    cache = open_cached(file_key(p)).cache
    assert len(cache) == 1 and cache.misses == 1 and cache.hits == 9
