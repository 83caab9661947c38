"""Packages under an ``s3://bucket/prefix`` on the loopback S3 server: publish, pin and
range-read; ``CURRENT`` flipped by conditional puts (``If-None-Match: *`` first,
``If-Match`` on the ETag read after); a lost put leaves the previous generation; two
racing publishers, one wins; and both ways against tet-py 0.8.3's ``S3Store``."""

from __future__ import annotations

import json
import threading
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tet
from tests.packages import run_ref
from tests.servers import ACCESS_KEY, SECRET_KEY, env
from tet.errors import PackageError, PublishConflictError
from tet.package_remote import RemoteStore

pytest.importorskip("moto", reason="moto[server] (the test extra) is not installed")

A = np.arange(12, dtype=np.float64).reshape(3, 4)
B = np.arange(6, dtype=np.int32)
_N = count()


@pytest.fixture
def url(s3: Any) -> str:
    return f"s3://tet/pkgs/p{next(_N)}"


@pytest.fixture
def parts(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name, arr in (("a", A), ("b", B), ("c", A * 2)):
        out[name] = tmp_path / f"{name}.tet"
        tet.write_dataset(out[name], name, arr, chunk_shape=(2,) * arr.ndim)
    return out


@pytest.fixture
def puts(s3: Any, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    """Every PUT of a ``CURRENT`` with its condition headers.  Conditional PUTs are
    serialised as S3 does it (moto checks, then stores, unlocked), so a race under test
    is the publishers', not the test server's."""
    inner = s3._server.app.app
    lock = threading.Lock()
    seen: list[dict[str, str]] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["REQUEST_METHOD"] == "PUT":
            if environ["PATH_INFO"].endswith("/CURRENT"):
                seen.append({k: environ[k] for k in ("HTTP_IF_MATCH", "HTTP_IF_NONE_MATCH")
                             if k in environ})
            if "HTTP_IF_MATCH" in environ or "HTTP_IF_NONE_MATCH" in environ:
                with lock:
                    return list(inner(environ, start_response))
        return inner(environ, start_response)

    monkeypatch.setattr(s3._server.app, "app", app)
    return seen


def _fill(url: str, s3: Any, parts: dict[str, Path], *names: str) -> None:
    o = s3.options
    tet.create(url, storage_options=o)
    for i, n in enumerate(names):
        tet.ingest(url, parts[n], session_id=f"w{i}", storage_options=o)


def test_publish_pin_and_range_read(s3: Any, url: str, parts: dict[str, Path]) -> None:
    o = s3.options
    assert tet.create(url, storage_options=o) == url
    with pytest.raises(PackageError, match=f"^package path already exists: {url}$"):
        tet.create(url, storage_options=o)
    with pytest.raises(PackageError, match="package has no CURRENT generation"):
        tet.open(url, storage_options=o)
    tet.ingest(url, parts["a"], session_id="w1", storage_options=o)
    with pytest.raises(PackageError, match=f"^package path already exists: {url}/staging/w1$"):
        tet.ingest(url, parts["b"], session_id="w1", storage_options=o)
    assert tet.publish(url, ["a"], storage_options=o) == 1
    f1 = tet.open(url, storage_options=o)
    tet.ingest(url, parts["b"], session_id="w2", storage_options=o)
    assert tet.publish(url, ["a", "b"], dry_run=True, storage_options=o) == 2
    assert tet.publish(url, ["a", "b"], storage_options=o) == 2
    # the first handle stays pinned at generation 1, and reads through ranged GETs
    assert f1.generation == 1 and list(f1) == ["a"]
    assert str(f1.path) == f"{url}/generations/00000001/packed.tet"
    np.testing.assert_array_equal(f1["a"][:], A)
    f2 = tet.open(url, storage_options=o)
    assert f2.generation == 2 and list(f2) == ["a", "b"]
    np.testing.assert_array_equal(f2["b"][:], B)
    old = tet.open(f"{url}?generation=1", storage_options=o)
    assert old.generation == 1 and list(old) == ["a"]
    assert s3.traffic.count("/generations/00000002/packed.tet", "GET") >= 1
    assert [(r["generation"], r["current"], r["datasets"])
            for r in tet.log(url, storage_options=o)] == [(1, False, ["a"]), (2, True, ["a", "b"])]
    # a schema change against CURRENT (read by ranged GETs) needs replace=
    tet.write_dataset(parts["a"].with_name("a2.tet"), "a", B)
    tet.ingest(url, parts["a"].with_name("a2.tet"), session_id="w3", storage_options=o)
    with pytest.raises(PackageError, match=r"^dataset schema conflict vs CURRENT: dataset=a "):
        tet.publish(url, ["a2"], storage_options=o)
    assert tet.publish(url, ["a2"], replace=["a"], storage_options=o) == 3
    np.testing.assert_array_equal(tet.open(url, storage_options=o)["a"][:], B)


def test_current_flips_by_conditional_put(s3: Any, url: str, parts: dict[str, Path],
                                          puts: list[dict[str, str]]) -> None:
    o = s3.options
    _fill(url, s3, parts, "a", "b")
    tet.publish(url, ["a"], storage_options=o)
    first = RemoteStore(url, o)._get("CURRENT")
    tet.publish(url, ["a", "b"], storage_options=o)
    assert first is not None
    assert puts == [{"HTTP_IF_NONE_MATCH": "*"}, {"HTTP_IF_MATCH": first[1]}]


def test_a_lost_cas_leaves_the_previous_generation(s3: Any, url: str, parts: dict[str, Path],
                                                   puts: list[dict[str, str]],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Another publisher flips CURRENT between this publish's seal and its flip: the
    If-Match put loses, CURRENT stays at the winner's generation, the loser's sealed
    generation is never named."""
    o = s3.options
    _fill(url, s3, parts, "a", "b", "c")
    tet.publish(url, ["a"], storage_options=o)
    real_seal = RemoteStore.seal

    def seal_then_lose(self: RemoteStore, generation: int, folder: Path) -> None:
        real_seal(self, generation, folder)
        monkeypatch.setattr(RemoteStore, "seal", real_seal)
        assert tet.publish(url, ["c"], storage_options=o) == generation + 1

    monkeypatch.setattr(RemoteStore, "seal", seal_then_lose)
    with pytest.raises(PublishConflictError,
                       match=r"^publish conflict: CURRENT moved from 1 to 3 while generation 2 "
                             r"was assembled; the package stays at generation 3$"):
        tet.publish(url, ["b"], storage_options=o)
    assert len(puts) == 3 and "HTTP_IF_MATCH" in puts[2]  # the loser's put was conditional
    f = tet.open(url, storage_options=o)
    assert f.generation == 3 and list(f) == ["c"]
    # a stale expectation (the reference's cas_publish with expected=None) loses too
    store = RemoteStore(url, o)
    with pytest.raises(PublishConflictError, match="CURRENT moved from none to 3"):
        store.flip_current(2, None)
    store.current()
    with pytest.raises(PublishConflictError, match="CURRENT moved from 1 to 3"):
        store.flip_current(2, 1)
    assert RemoteStore(url, o).current() == 3
    # and the next publish goes past the orphaned generation 2
    assert tet.publish(url, ["a", "b"], storage_options=o) == 4


@pytest.mark.parametrize(("first", "explicit"), [(False, False), (True, False), (True, True)])
def test_two_racing_publishers_one_wins(s3: Any, url: str, parts: dict[str, Path],
                                        puts: list[dict[str, str]],
                                        monkeypatch: pytest.MonkeyPatch, first: bool,
                                        explicit: bool) -> None:
    """Both publishers read CURRENT before either seals (a barrier in `seal`); with the
    same next generation the claim of its folder decides, with explicit different ones
    the conditional put of CURRENT does."""
    o = s3.options
    _fill(url, s3, parts, "a", "b", "c")
    if first:
        tet.publish(url, ["a"], storage_options=o)
    both_read = threading.Barrier(2, timeout=60)
    real_seal = RemoteStore.seal

    def seal(self: RemoteStore, generation: int, folder: Path) -> None:
        both_read.wait()
        real_seal(self, generation, folder)

    monkeypatch.setattr(RemoteStore, "seal", seal)
    won: list[tuple[str, int]] = []
    lost: list[BaseException] = []

    def run(name: str, gen: int | None) -> None:
        try:
            won.append((name, tet.publish(url, [name], generation=gen, storage_options=o)))
        except BaseException as exc:  # collected and checked below
            lost.append(exc)

    threads = [threading.Thread(target=run, args=(n, 10 + i if explicit else None))
               for i, n in enumerate("bc")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert len(won) == 1 and len(lost) == 1, (won, lost)
    assert isinstance(lost[0], PublishConflictError), lost[0]
    assert ("CURRENT moved from 1 to" if explicit else "was sealed by another publish") \
        in str(lost[0])
    name, gen = won[0]
    f = tet.open(url, storage_options=o)
    assert f.generation == gen and list(f) == [name]
    np.testing.assert_array_equal(f[name][:], B if name == "b" else A * 2)


def test_tetration_env_and_errors(s3: Any, url: str, parts: dict[str, Path]) -> None:
    _fill(url, s3, parts, "a")
    tet.publish(url, ["a"], storage_options=s3.options)
    with env(TETRATION_S3_ENDPOINT=s3.endpoint, TETRATION_S3_ACCESS_KEY=ACCESS_KEY,
             TETRATION_S3_SECRET_KEY=SECRET_KEY, TETRATION_S3_REGION="us-east-1",
             AWS_ENDPOINT_URL=None, AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None):
        f = tet.open(url)
        assert f.generation == 1
        np.testing.assert_array_equal(f["a"][:], A)
    with pytest.raises(PackageError, match=r"^not a tet package .*: s3://tet/nothing/here$"):
        tet.publish("s3://tet/nothing/here", ["a"], storage_options=s3.options)
    with pytest.raises(PackageError, match="frozen part id not found in staging: 'zz'"):
        tet.publish(url, ["zz"], storage_options=s3.options)


def test_pack_and_prune(s3: Any, url: str, parts: dict[str, Path], tmp_path: Path) -> None:
    o = s3.options
    _fill(url, s3, parts, "a", "b")
    tet.publish(url, ["a"], storage_options=o)
    tet.publish(url, ["b"], storage_options=o)
    report = tet.prune(url, keep=1, grace_s=0.0, storage_options=o)
    assert report["removed_generations"] == [1] and report["kept_generations"] == [2]
    assert report["removed_sessions"] == ["w0"]  # part a: used only by generation 1
    assert [r["generation"] for r in tet.log(url, storage_options=o)] == [2]
    # a generation claimed above CURRENT may be a publish still uploading: kept while young
    RemoteStore(url, o)._claim("generations/00000007")
    assert tet.prune(url, grace_s=600.0, storage_options=o)["pinned"] == [7]
    assert tet.prune(url, grace_s=0.0, storage_options=o)["removed_generations"] == [7]
    assert tet.pack(url, tmp_path / "out.tet", storage_options=o) == 2
    with tet.open(tmp_path / "out.tet") as f:
        np.testing.assert_array_equal(f["b"][:], B)


def _ref_store(s3: Any, prefix: str) -> str:
    return (f"tet.S3Store.connect(endpoint={s3.endpoint!r}, bucket='tet', "
            f"access_key_id={ACCESS_KEY!r}, secret_access_key={SECRET_KEY!r}, "
            f"prefix={prefix!r})")


def test_reference_packages_open_here(s3: Any, parts: dict[str, Path], tmp_path: Path) -> None:
    prefix = f"pkgs/ref{next(_N)}"
    got = run_ref(f"""
        import json, tet
        st = {_ref_store(s3, prefix)}
        st.ingest({str(parts['a'])!r}, session_id="w1")
        st.ingest({str(parts['b'])!r}, session_id="w2")
        g1 = st.publish(["a"])
        g2 = st.publish(["a", "b"])
        print(json.dumps([g1, g2]))
    """, tmp_path)
    assert got == [1, 2]
    url, o = f"s3://tet/{prefix}", s3.options
    f = tet.open(url, storage_options=o)
    assert f.generation == 2 and list(f) == ["a", "b"]
    np.testing.assert_array_equal(f["b"][:], B)
    assert list(tet.open(f"{url}?generation=1", storage_options=o)) == ["a"]
    # and ours publishes on top of it, where tet-py reads it back
    tet.ingest(url, parts["c"], session_id="w3", storage_options=o)
    assert tet.publish(url, ["c", "a"], storage_options=o) == 3
    back = run_ref(f"""
        import json, tet
        f = {_ref_store(s3, prefix)}.open()
        print(json.dumps([f.generation, f.read_numpy("c").tolist()]))
    """, tmp_path)
    assert back == [3, (A * 2).tolist()]


def test_our_packages_open_in_the_reference(s3: Any, url: str, parts: dict[str, Path],
                                            tmp_path: Path) -> None:
    _fill(url, s3, parts, "a", "b")
    tet.publish(url, ["a"], storage_options=s3.options)
    tet.publish(url, ["a", "b"], storage_options=s3.options)
    got = run_ref(f"""
        import json, os, tet
        os.environ.update(TETRATION_S3_ENDPOINT={s3.endpoint!r},
                          TETRATION_S3_ACCESS_KEY={ACCESS_KEY!r},
                          TETRATION_S3_SECRET_KEY={SECRET_KEY!r})
        f = tet.open({url!r})
        g = tet.open({url + '?generation=1'!r})
        h = {_ref_store(s3, url.removeprefix('s3://tet/'))}.open("g/1")
        print(json.dumps([f.generation, f.read_numpy("a").tolist(), f.read_numpy("b").tolist(),
                          g.generation, h.generation, h.read_numpy("a").tolist()]))
    """, tmp_path)
    assert got == [2, A.tolist(), B.tolist(), 1, 1, A.tolist()]


def test_cli_on_an_s3_package(s3: Any, url: str, parts: dict[str, Path], cli: Any) -> None:
    opts = [f"--storage-option={k}={v}" for k, v in s3.options.items()
            if k in ("endpoint", "access_key_id", "secret_access_key", "region", "allow_http")]
    assert cli("pkg", "create", url, *opts).out.strip() == url
    r = cli("pkg", "ingest", url, parts["a"], "--session", "w1", *opts)
    assert (r.rc, r.out.strip()) == (0, "a"), r.err
    r = cli("pkg", "publish", url, "a", *opts)
    assert (r.rc, r.out.strip()) == (0, "1"), r.err
    r = cli("pkg", "log", url, "--json", *opts)
    assert r.rc == 0 and [g["generation"] for g in json.loads(r.out)] == [1]
    r = cli("info", url, *opts)
    assert r.rc == 0 and "a" in r.out, r.err
    r = cli("query", '{"dataset": "a", "sum": []}', "-t", f"{url}?generation=1", "-x",
            "-q", *opts)
    assert r.rc == 0, r.err
    assert f"status=ok op=sum sum={A.sum():g} " in r.out, r.out
    r = cli("pkg", "publish", url, "a", "--storage-option=bogus_key=1")
    assert r.rc != 0 and r.err.count("\n") == 1
