"""Writing `.tet` files to an object store (tet.remote_write) against the loopback S3
server: create, write_dataset and convert upload one object; an append uploads only if
the object is unchanged; the local build in the cache is gone after every outcome."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("obstore", reason="obstore (the remote extra) is not installed")

import tet
from tet import objstore, remote_write
from tet.objstore import RemoteConflictError, RemoteError

A = np.arange(6 * 7, dtype=np.float32).reshape(6, 7) / 3
B = (np.arange(40, dtype=np.int64) * 7 - 11).reshape(5, 8)


def download(s3: Any, key: str, into: Path) -> Path:
    """The object `key` of bucket `tet`, downloaded to a local file."""
    out = into / f"got-{key.replace('/', '_')}"
    loc = objstore.locate(f"s3://tet/{key}", s3.options)
    with out.open("wb") as f:
        objstore.download(loc, f)
    return out


def contents(path: Path) -> dict[str, np.ndarray[Any, Any]]:
    with tet.open(path) as f:
        return {name: f[name][...] for name in f.dataset_names}


def leftovers(cache: Path) -> list[Path]:
    """Every file, and every upload build directory, under the private cache roots."""
    roots = [cache, cache.parent / "home", cache.parent / "tmp"]
    return sorted(p for r in roots if r.exists() for p in r.rglob("*")
                  if p.is_file() or p.name.endswith(".upload"))


def test_write_dataset_to_s3_round_trips(s3: Any, private_cache: Path, tmp_path: Path) -> None:
    out = tet.write_dataset("s3://tet/rw/one.tet", "a", A, chunk_shape=(4, 4),
                            attrs={"units": "K"}, storage_options=s3.options)
    assert out == "s3://tet/rw/one.tet"
    got = download(s3, "rw/one.tet", tmp_path)
    with tet.open(got) as f:
        np.testing.assert_array_equal(f["a"][...], A)
        assert f["a"].attrs["units"] == "K"
        assert f.history[-1]["source"] == "s3://tet/rw/one.tet"
    assert leftovers(private_cache) == []


def test_create_streams_and_replaces_an_existing_object(s3: Any, private_cache: Path,
                                                        tmp_path: Path) -> None:
    tet.write_dataset("s3://tet/rw/two.tet", "old", B, storage_options=s3.options)
    w = tet.TetWriter.create("s3://tet/rw/two.tet", storage_options=s3.options)
    assert w.url == "s3://tet/rw/two.tet"
    assert private_cache in w.path.parents  # built in the platform cache
    stream = w.create_dataset("s", (10, 6), np.float64, chunk_shape=(3, 4), codec="zstd")
    want = np.linspace(-1, 1, 60).reshape(10, 6)
    for i in range(0, 10, 3):
        stream[i:i + 3] = want[i:i + 3]
    w.write_dataset("b", B)
    assert w.commit() == "s3://tet/rw/two.tet"
    assert not w.path.exists()
    got = contents(download(s3, "rw/two.tet", tmp_path))
    assert sorted(got) == ["b", "s"]  # replaced: the old dataset is gone, as locally
    np.testing.assert_array_equal(got["s"], want)
    np.testing.assert_array_equal(got["b"], B)
    assert leftovers(private_cache) == []


def test_a_key_with_a_store_object(s3: Any, private_cache: Path, tmp_path: Path) -> None:
    store = objstore.locate("s3://tet/x", s3.options).reach()
    assert tet.write_dataset("rw/keyed.tet", "b", B, store=store) == "S3Store:rw/keyed.tet"
    np.testing.assert_array_equal(contents(download(s3, "rw/keyed.tet", tmp_path))["b"], B)


def test_a_failed_upload_leaves_nothing_and_keeps_the_old_object(
        s3: Any, private_cache: Path, tmp_path: Path) -> None:
    tet.write_dataset("s3://tet/rw/fail.tet", "old", B, storage_options=s3.options)
    before = download(s3, "rw/fail.tet", tmp_path).read_bytes()
    s3.faults.status, s3.faults.match = 403, "rw/fail.tet"
    w = tet.TetWriter.create("s3://tet/rw/fail.tet", storage_options=s3.options)
    w.write_dataset("a", A)
    with pytest.raises(RemoteError, match=r"writing `s3://tet/rw/fail\.tet`: access denied"):
        w.commit()
    s3.faults.clear()
    assert leftovers(private_cache) == []
    assert download(s3, "rw/fail.tet", tmp_path).read_bytes() == before


def test_abort_and_an_exception_leave_nothing(s3: Any, private_cache: Path) -> None:
    w = tet.TetWriter.create("s3://tet/rw/aborted.tet", storage_options=s3.options)
    w.write_dataset("a", A)
    w.abort()
    with pytest.raises(ZeroDivisionError), tet.TetWriter.create(
            "s3://tet/rw/aborted.tet", storage_options=s3.options) as w2:
        w2.write_dataset("a", A)
        _ = 1 / 0
    assert leftovers(private_cache) == []
    with pytest.raises(tet.TetFileNotFoundError, match="no such object"):
        objstore.head(objstore.locate("s3://tet/rw/aborted.tet", s3.options))


def test_large_files_upload_in_parts(s3: Any, private_cache: Path, tmp_path: Path) -> None:
    big = np.arange((17 << 20) // 8, dtype=np.float64)  # 17 MiB: above the part size
    s3.traffic.reset()
    tet.write_dataset("s3://tet/rw/big.tet", "big", big, storage_options=s3.options)
    # a multipart upload: initiate (POST ?uploads), parts (PUT), complete (POST)
    assert s3.traffic.count("rw/big.tet", "POST") == 2
    assert s3.traffic.count("rw/big.tet", "PUT") == 2
    got = contents(download(s3, "rw/big.tet", tmp_path))
    np.testing.assert_array_equal(got["big"], big)
    assert leftovers(private_cache) == []


def test_small_files_upload_in_one_put(s3: Any, private_cache: Path) -> None:
    s3.traffic.reset()
    tet.write_dataset("s3://tet/rw/small.tet", "a", A, storage_options=s3.options)
    assert s3.traffic.count("rw/small.tet", "PUT") == 1
    assert s3.traffic.count("rw/small.tet", "POST") == 0


def test_append_adds_datasets(s3: Any, private_cache: Path, tmp_path: Path) -> None:
    tet.write_dataset("s3://tet/rw/app.tet", "a", A, storage_options=s3.options)
    w = tet.TetWriter.open_append("s3://tet/rw/app.tet", storage_options=s3.options)
    w.write_dataset("b", B)
    w.commit()
    got = contents(download(s3, "rw/app.tet", tmp_path))
    assert sorted(got) == ["a", "b"]
    np.testing.assert_array_equal(got["a"], A)
    np.testing.assert_array_equal(got["b"], B)
    assert leftovers(private_cache) == []


def test_append_to_a_missing_object(s3: Any, private_cache: Path) -> None:
    with pytest.raises(tet.TetFileNotFoundError, match=r"no such object: `s3://tet/rw/none"):
        tet.TetWriter.open_append("s3://tet/rw/none.tet", storage_options=s3.options)
    assert leftovers(private_cache) == []


@pytest.fixture
def atomic_conditional_puts(s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 checks a PUT's If-Match and stores the object as one step; moto checks, then
    stores, unlocked.  Conditional PUTs are serialised here as S3 does it, so the race
    under test is the writers', not the test server's."""
    inner = s3._server.app.app  # behind the counting layer
    lock = threading.Lock()

    def serialised(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["REQUEST_METHOD"] == "PUT" and "HTTP_IF_MATCH" in environ:
            with lock:
                return list(inner(environ, start_response))
        return inner(environ, start_response)

    monkeypatch.setattr(s3._server.app, "app", serialised)


def _race(s3: Any, key: str, round_: int) -> tuple[list[str], list[BaseException]]:
    """Two sessions append to `key` from the same version and commit at once."""
    url = f"s3://tet/{key}"
    writers = [tet.TetWriter.open_append(url, storage_options=s3.options) for _ in range(2)]
    for i, w in enumerate(writers):
        w.write_dataset(f"w{i}", np.full((3, 3), 10 * round_ + i, np.int32))
    start = threading.Barrier(2, timeout=30)
    won: list[str] = []
    lost: list[BaseException] = []

    def commit(i: int) -> None:
        start.wait()
        try:
            writers[i].commit()
            won.append(f"w{i}")
        except BaseException as exc:  # collected and checked below
            lost.append(exc)

    threads = [threading.Thread(target=commit, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    return won, lost


@pytest.mark.parametrize("round_", range(4))
@pytest.mark.usefixtures("atomic_conditional_puts")
def test_concurrent_appends_one_wins(s3: Any, private_cache: Path, tmp_path: Path,
                                      round_: int) -> None:
    key = f"rw/race{round_}.tet"
    tet.write_dataset(f"s3://tet/{key}", "base", A, storage_options=s3.options)
    won, lost = _race(s3, key, round_)
    assert len(won) == 1 and len(lost) == 1, (won, lost)
    assert isinstance(lost[0], RemoteConflictError)
    assert str(lost[0]).startswith(f"writing `s3://tet/{key}`: the object changed since it "
                                   "was read (a concurrent writer won)")
    got = contents(download(s3, key, tmp_path))
    assert sorted(got) == ["base", won[0]]
    np.testing.assert_array_equal(got["base"], A)
    np.testing.assert_array_equal(got[won[0]], np.full((3, 3), 10 * round_ + int(won[0][1:])))
    assert leftovers(private_cache) == []


def test_a_later_append_from_a_stale_version_conflicts(s3: Any, private_cache: Path,
                                                       tmp_path: Path) -> None:
    tet.write_dataset("s3://tet/rw/stale.tet", "a", A, storage_options=s3.options)
    slow = tet.TetWriter.open_append("s3://tet/rw/stale.tet", storage_options=s3.options)
    with tet.TetWriter.open_append("s3://tet/rw/stale.tet", storage_options=s3.options) as fast:
        fast.write_dataset("fast", B)
    slow.write_dataset("slow", B)
    with pytest.raises(RemoteConflictError, match="concurrent writer"):
        slow.commit()
    assert sorted(contents(download(s3, "rw/stale.tet", tmp_path))) == ["a", "fast"]
    assert leftovers(private_cache) == []


def test_storage_options_with_a_local_path_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="storage_options apply to URLs"):
        tet.write_dataset(tmp_path / "x.tet", "a", A, storage_options={"region": "r"})


def test_stale_build_directories_are_swept(s3: Any, private_cache: Path) -> None:
    from tet.query.allow import cache_roots
    from tet.tempnames import temp_name

    root = cache_roots()[0]
    host = temp_name("upload", "sweep.tet").split(".")[3].split("-")[2]  # this host's token
    dead = root / f".sweep.tet.999999999-1-{host}.1.upload"  # its owner is gone
    dead.mkdir()
    (dead / "sweep.tet").write_bytes(b"half")
    tet.write_dataset("s3://tet/rw/sweep.tet", "a", A, storage_options=s3.options)
    assert not dead.exists()


def test_part_size_is_a_parameter(s3: Any, private_cache: Path) -> None:
    target = remote_write.RemoteTarget.create("s3://tet/rw/p.tet", s3.options,
                                              part_bytes=5 << 20)
    assert target.part_bytes == 5 << 20
    target.cleanup()
    assert not target.build_dir.exists()
    with pytest.raises(ValueError, match="part_bytes must be positive"):
        remote_write.RemoteTarget.create("s3://tet/rw/p.tet", s3.options, part_bytes=0)
