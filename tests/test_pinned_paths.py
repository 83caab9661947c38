"""Paths are checked where they come in, and output roots are pinned when a file opens.

- The allowlist of a `TetFile` is fixed by `tet.open`: its directory (a relative path
  against the cwd then), ``spill_allow`` entries (relative ones against the cwd then,
  created then; an empty, NUL or unencodable one refused then) and the cache roots
  (pinned at the latest at their first use).  A root replaced afterwards, by a symlink
  or another directory, is refused in so many words; a later ``chdir`` changes nothing.
- Every entry point that takes a path refuses a NUL byte or text the file system
  encoding cannot encode with `InvalidPathError` (query documents: `QueryError`), and
  OS failures on those paths are the `TetOSError` classes: never a builtin.
- Spill results keep the canonical path the engine reported, and read it back through
  a regular-file open that cannot block.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tet
from tests.conftest import REPO, CliRun

A = np.arange(24, dtype=np.float64).reshape(4, 6)
ENC = sys.getfilesystemencoding()
MOVED = ("is no longer the directory the allowlist recorded (a symlink or another directory "
         "was put in its place); nothing was written")


@pytest.fixture
def world(tmp_path: Path, private_cache: Path) -> Iterator[dict[str, Path]]:
    data, outside = tmp_path / "data", tmp_path / "outside"
    data.mkdir()
    outside.mkdir()
    tet.write_dataset(data / "x.tet", "a", A)
    yield {"data": data.resolve(), "outside": outside.resolve(), "tmp": tmp_path.resolve(),
           "cache": private_cache}


def _files(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


# ---------------------------------------------------------------------------
# the allowlist is pinned at open


def test_the_tet_directory_replaced_after_open_is_refused(world: dict[str, Path]) -> None:
    data, outside, tmp = world["data"], world["outside"], world["tmp"]
    with tet.open(data / "x.tet") as f:
        os.rename(data, tmp / "data.moved")  # the directory moves away ...
        (tmp / "data").symlink_to(outside, target_is_directory=True)  # ... a link takes its name
        with pytest.raises(tet.QueryError) as info:
            f.read_spill("a", "out.bin")
        assert str(info.value) == f"validation: spill path out.bin: allowed root {data} {MOVED}"
        with pytest.raises(tet.QueryError) as info:
            f.transform.to_sidecar.zscore("a", timestamp=False)
        assert str(info.value) == (f"validation: sidecar path x.zscore.tet: allowed root "
                                   f"{data} {MOVED}")
        with pytest.raises(tet.QueryError) as info:
            f.transform.to_spill.center("a", path=str(data / "c.bin"))
        assert str(info.value) == (f"validation: write.path path {data / 'c.bin'}: allowed "
                                   f"root {data} {MOVED}")
    assert _files(outside) == []
    assert _files(tmp / "data.moved") == ["x.tet"]


def test_the_tet_directory_replaced_by_another_directory_is_refused(
        world: dict[str, Path]) -> None:
    data, tmp = world["data"], world["tmp"]
    with tet.open(data / "x.tet") as f:
        os.rename(data, tmp / "data.moved")
        data.mkdir()  # the same name, another directory
        with pytest.raises(tet.QueryError) as info:
            f.query({"dataset": "a", "spill": "s.bin"}, preview=1)
        assert str(info.value) == f"validation: spill path s.bin: allowed root {data} {MOVED}"
    assert _files(data) == []


def test_a_relative_open_keeps_its_directory_after_chdir(
        world: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    data, outside = world["data"], world["outside"]
    monkeypatch.chdir(data)
    with tet.open("x.tet") as f:
        monkeypatch.chdir(outside)
        spill = f.read_spill("a", "rel.bin")
        side = f.transform.to_sidecar.minmax("a", path="m.tet")
        moved = f.query({"dataset": "a", "spill": "q.bin"}, preview=1)
    assert spill.path == data / "rel.bin" and side.path == data / "m.tet"
    assert moved["execution"]["spill_f32_path"] == str(data / "q.bin")
    np.testing.assert_array_equal(spill.to_numpy(), A)
    assert _files(outside) == []


def test_relative_spill_allow_is_taken_against_the_cwd_at_open(
        world: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    data, outside, tmp = world["data"], world["outside"], world["tmp"]
    work = tmp / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with tet.open(data / "x.tet", spill_allow=["extra", "~/home-extra"]) as f:
        assert (work / "extra").is_dir()  # created at open, in the cwd of then
        assert f.allowlist.roots[-2:] == (work / "extra",
                                          Path(os.path.expanduser("~/home-extra")).resolve())
        monkeypatch.chdir(outside)
        (outside / "extra").mkdir()
        with pytest.raises(tet.QueryError) as info:
            f.read_spill("a", str(outside / "extra" / "s.bin"))
        assert str(info.value) == (
            f"validation: spill path {outside / 'extra' / 's.bin'} is not under an allowed "
            "root (.tet directory, platform cache, or --spill-allow); resolved to "
            f"{outside / 'extra' / 's.bin'}")
        ok = f.read_spill("a", str(work / "extra" / "s.bin"))
    assert ok.path == work / "extra" / "s.bin"
    assert _files(outside) == ["extra"]


def test_the_cache_root_swapped_after_first_use_is_refused(world: dict[str, Path]) -> None:
    data, outside = world["data"], world["outside"]
    cache = world["cache"] / "tetration"
    with tet.open(data / "x.tet") as f:
        first = f.read_spill("a")  # the first use pins (and creates) the cache roots
        assert first.path.parent == cache  # the tmp_path of pytest has no symlinks
        os.rename(cache, cache.with_name("tetration.real"))
        cache.symlink_to(outside, target_is_directory=True)
        with pytest.raises(tet.QueryError) as info:
            f.query({"dataset": "a", "median": [1], "execution": {"memory_budget_bytes": 1}},
                    preview=0)
        assert str(info.value) == f"validation: allowed root {cache} {MOVED}"
        with pytest.raises(tet.QueryError) as info:
            f.read_spill("a")
        text = str(info.value)
        assert text.startswith(f"validation: spill path {cache}/spill-{os.getpid()}-")
        assert text.endswith(f".bin: allowed root {cache} {MOVED}")
        with pytest.raises(tet.QueryError, match=f"^validation: write.path path {cache}/"):
            f.query({"dataset": "a", "transform": {"method": "l2", "axis": []},
                     "write": "spill"}, preview=1)
    assert _files(outside) == []


def test_a_cache_root_swapped_between_open_and_first_use_is_refused(
        world: dict[str, Path]) -> None:
    """An existing cache root's identity is taken at open: a symlink put in its place
    before the first output is not followed there."""
    data, outside = world["data"], world["outside"]
    cache = world["cache"] / "tetration"
    cache.mkdir(parents=True)
    with tet.open(data / "x.tet") as f:
        os.rename(cache, cache.with_name("tetration.real"))
        cache.symlink_to(outside, target_is_directory=True)
        with pytest.raises(tet.QueryError) as info:
            f.read_spill("a")
        text = str(info.value)
        assert text.startswith(f"validation: spill path {cache}/spill-{os.getpid()}-")
        assert text.endswith(f".bin: allowed root {cache} {MOVED}")
        with pytest.raises(tet.QueryError) as info:
            f.query({"dataset": "a", "median": [1], "execution": {"memory_budget_bytes": 1}},
                    preview=0)
        assert str(info.value) == f"validation: allowed root {cache} {MOVED}"
    assert _files(outside) == []


def test_the_cli_takes_spill_allow_against_its_cwd(world: dict[str, Path], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 cli: Callable[..., CliRun]) -> None:
    data = world["data"]
    monkeypatch.chdir(tmp_path)
    doc = json.dumps({"dataset": "a", "spill": str(tmp_path / "extra" / "s.bin")})
    r = cli("query", doc, "-t", data / "x.tet", "-x", "-q")
    assert r.rc == 1 and "is not under an allowed root" in r.err
    r = cli("query", doc, "-t", data / "x.tet", "--spill-allow", "extra", "-x", "-q")
    assert r.rc == 0, r.err
    np.testing.assert_array_equal(np.fromfile(tmp_path / "extra" / "s.bin").reshape(A.shape), A)
    r = cli("query", doc, "-t", data / "x.tet", "--spill-allow", "", "-x", "-q")
    assert (r.rc, r.err) == (1, "error: validation: --spill-allow directory '' is empty; name "
                                "a directory ('.' for the current one)\n")


# ---------------------------------------------------------------------------
# paths no file can have

NUL = "/tmp/a\0b.tet"
LONE = "/tmp/s\ud800.tet"


def _nul(action: str, path: str = NUL) -> str:
    return f"{action} {path!r}: the path contains a NUL byte"


def _lone(action: str, path: str = LONE) -> str:
    return (f"{action} {path!r}: the path contains '\\ud800', which the file system encoding "
            f"({ENC}) cannot encode; no file can have this name")


def _entry_points(good: Path) -> dict[str, tuple[Callable[[str], Any], str]]:
    """name -> (call with a bad path, the action its message starts with)"""
    import xarray as xr

    def writer_create(p: str) -> Any:
        return tet.TetWriter.create(p)

    return {
        "tet.open": (tet.open, "cannot open"),
        "TetWriter.create": (writer_create, "cannot write"),
        "TetWriter.open_append": (tet.TetWriter.open_append, "cannot write"),
        "write_dataset": (lambda p: tet.write_dataset(p, "a", A), "cannot write"),
        "export source": (lambda p: tet.export(p, good.parent / "o.zarr"), "cannot open"),
        "export destination": (lambda p: tet.export(good, p), "cannot export to"),
        "convert source": (lambda p: tet.convert(p, good.parent / "c.tet"), "cannot convert"),
        "convert destination": (lambda p: tet.convert(good, p), "cannot write"),
        "query_many": (lambda p: tet.query_many([p], {"dataset": "a", "sum": []}),
                       "cannot query"),
        "to_dask": (lambda p: tet.to_dask(p, "a"), "cannot open"),
        "xarray": (lambda p: xr.open_dataset(p, engine="tet"), "cannot open"),
    }


@pytest.mark.parametrize("bad", [NUL, LONE], ids=["nul", "lone-surrogate"])
def test_every_path_entry_point_refuses_a_path_no_file_can_have(tmp_path: Path,
                                                                bad: str) -> None:
    pytest.importorskip("xarray")
    pytest.importorskip("dask")
    good = tet.write_dataset(tmp_path / "g.tet", "a", A)
    want = _nul if bad == NUL else _lone
    for name, (call, action) in _entry_points(good).items():
        with pytest.raises(tet.InvalidPathError) as info:
            call(bad)
        assert isinstance(info.value, ValueError), name
        assert str(info.value) == want(action, bad), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.tet"]


@pytest.mark.parametrize("bad", ["x\0y.bin", "x\ud800.bin"], ids=["nul", "lone-surrogate"])
def test_output_paths_no_file_can_have_are_query_errors(tmp_path: Path, bad: str) -> None:
    src = tet.write_dataset(tmp_path / "g.tet", "a", A)
    problem = ("spill open failed: file name contained an unexpected NUL byte" if "\0" in bad
               else "{what} path 'x\\ud800.bin' contains '\\ud800', which the file system "
                    f"encoding ({ENC}) cannot encode")
    calls: dict[str, Callable[[tet.TetFile], Any]] = {
        "spill": lambda f: f.read_spill("a", bad),
        "write.path": lambda f: f.transform.to_spill.zscore("a", path=bad),
        "sidecar": lambda f: f.transform.to_sidecar.zscore("a", path=bad),
    }
    docs = {
        "spill": {"dataset": "a", "spill": bad},
        "write.path": {"dataset": "a", "transform": {"method": "l2", "axis": []},
                       "write": {"target": "spill", "path": bad}},
        "sidecar": {"dataset": "a", "transform": {"method": "l2", "axis": []},
                    "write": {"target": "sidecar", "path": bad}},
    }
    with tet.open(src) as f:
        for what, call in calls.items():
            for how in ("python", "document"):
                with pytest.raises(tet.QueryError) as info:
                    if how == "python":
                        call(f)
                    else:
                        f.query(docs[what], preview=1)
                assert str(info.value) == "validation: " + problem.format(what=what), how
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.tet"]


def test_the_cli_prints_one_line_for_a_lone_surrogate_in_a_document(
        tmp_path: Path) -> None:
    src = tet.write_dataset(tmp_path / "g.tet", "a", A)
    for doc, what in (('{"dataset":"a","spill":"x\\ud800.bin"}', "spill"),
                      ('{"dataset":"a","transform":{"method":"l2","axis":[]},'
                       '"write":{"target":"spill","path":"x\\ud800.bin"}}', "write.path")):
        r = subprocess.run([sys.executable, "-m", "tet.cli.main", "query", doc, "-t", str(src),
                            "-x", "-q"], capture_output=True, text=True, timeout=120, cwd=REPO)
        assert (r.returncode, r.stdout) == (1, "")
        assert r.stderr == (f"error: validation: {what} path 'x\\ud800.bin' contains "
                            f"'\\ud800', which the file system encoding ({ENC}) cannot "
                            "encode\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.tet"]


def test_xarray_probe_never_raises(tmp_path: Path) -> None:
    pytest.importorskip("xarray")
    from tet.xarray_backend import TetBackendEntrypoint

    probe = TetBackendEntrypoint().guess_can_open
    good = tet.write_dataset(tmp_path / "g.tet", "a", A)
    os.mkfifo(tmp_path / "fifo.nc")
    (tmp_path / "file").write_text("x")
    assert probe(good) and probe(str(good)) and probe(tmp_path / "later.tet")
    for odd in (NUL, LONE, b"x.tet", 5, None, tmp_path / "fifo.nc", tmp_path / "file",
                str(tmp_path / "file" / "under.nc")):
        assert probe(odd) is False, odd


def test_dask_and_xarray_raise_os_errors_as_tet_errors(tmp_path: Path) -> None:
    pytest.importorskip("dask")
    xr = pytest.importorskip("xarray")
    (tmp_path / "file").write_text("x")
    missing, under = tmp_path / "missing.tet", tmp_path / "file" / "x.tet"
    for call in (lambda p: tet.to_dask(p, "a"), lambda p: xr.open_dataset(p, engine="tet"),
                 tet.dask.file_key):
        with pytest.raises(FileNotFoundError) as info:
            call(missing)
        assert type(info.value) is tet.TetFileNotFoundError
        assert str(info.value) == f"cannot open {missing}: No such file or directory"
        with pytest.raises(NotADirectoryError) as ninfo:
            call(under)
        assert type(ninfo.value) is tet.TetNotADirectoryError
        assert str(ninfo.value) == f"cannot open {under}: Not a directory"


# ---------------------------------------------------------------------------
# output paths a Python caller gives


@pytest.mark.parametrize("given", ["", ".", "..", "sub/", "sub/."])
def test_an_output_path_that_names_a_directory_says_so(tmp_path: Path, given: str) -> None:
    src = tet.write_dataset(tmp_path / "g.tet", "a", A)
    shown = given or "''"
    with tet.open(src) as f:
        for what, call in (("spill", lambda: f.read_spill("a", given)),
                           ("write.path", lambda: f.transform.to_spill.l2("a", path=given)),
                           ("sidecar", lambda: f.transform.to_sidecar.l2("a", path=given))):
            with pytest.raises(tet.QueryError) as info:
                call()
            assert str(info.value) == (f"validation: {what} path {shown} names a directory, "
                                       "not a file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.tet"]


def test_spill_results_keep_the_path_the_engine_reported(world: dict[str, Path]) -> None:
    data = world["data"]
    (data / "real").mkdir()
    (data / "other").mkdir()
    (data / "alias").symlink_to(data / "real", target_is_directory=True)
    with tet.open(data / "x.tet") as f:
        spill = f.read_spill("a", "alias/s.bin")
        moved = f.transform.to_spill.center("a", path="alias/c.bin")
    assert spill.path == data / "real" / "s.bin" == Path(spill.raw["execution"]["spill_f32_path"])
    assert moved.path == data / "real" / "c.bin"
    (data / "alias").unlink()  # the link now leads elsewhere: the results do not follow it
    (data / "alias").symlink_to(data / "other", target_is_directory=True)
    (data / "other" / "s.bin").write_bytes(bytes(A.nbytes))
    np.testing.assert_array_equal(spill.to_numpy(), A)
    np.testing.assert_array_equal(moved.to_numpy(), A - A.mean())
    # a response whose path cannot be resolved (a symlink loop) still makes a result
    (data / "loop").symlink_to(data / "loop")
    raw = {**spill.raw, "execution": {**spill.raw["execution"],
                                      "spill_f32_path": str(data / "loop" / "s.bin")}}
    odd = tet.query.sinks.SpillReadResult.from_response(raw)
    assert odd.path == data / "loop" / "s.bin"
    with pytest.raises(tet.TetOSError) as info:
        odd.to_numpy()
    assert str(info.value) == (f"cannot read spill file {data / 'loop' / 's.bin'}: Too many "
                               "levels of symbolic links")


FIFO_READ = textwrap.dedent(r"""
    import os, sys
    import tet
    from tet.query.sinks import SpillReadResult, SpillTransformResult
    path = sys.argv[1]
    raw = {"catalog": {"dtype": 2, "shape": [3]}, "read_plan": {"logical_selection_shape": [3]},
           "execution": {"spill_f32_path": path, "spill_f32_bytes": 24}}
    for result in (SpillReadResult.from_response(raw),
                   SpillTransformResult.from_response(raw, "l2")):
        try:
            result.to_numpy()
        except tet.TetError as exc:
            print(type(exc).__name__ + ": " + str(exc), flush=True)
""")


@pytest.mark.skipif(os.name != "posix", reason="FIFOs")
def test_a_spill_result_that_is_a_fifo_now_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "s.bin"
    os.mkfifo(fifo)
    done = subprocess.run([sys.executable, "-c", FIFO_READ, str(fifo)], capture_output=True,
                          text=True, timeout=120, cwd=REPO)  # a blocked open would time out
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"NotRegularFileError: cannot read spill file {fifo}: is a FIFO, not a spill file"] * 2
