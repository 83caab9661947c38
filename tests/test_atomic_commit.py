"""Atomic commit and append semantics of `tet.TetWriter`.

(a) A writer process SIGKILLed in the middle of ``commit`` — while payloads are
    being encoded, after the temp file is complete (at its fsync) and just
    before the rename — for a new target, an existing target replaced by
    ``create`` and an existing target grown by ``open_append``: the previous
    file is byte-identical and reads back, and where there was no file there
    still is none.  The torn temp file left behind is never a valid ``.tet``
    (the header is written last).
(b) An exception inside ``commit`` (metadata over the limits, a failing encode,
    a failing rename, KeyboardInterrupt) or leaving a ``with`` block by an
    exception leaves the old file byte-identical, and no ``.*.tmp`` / spool
    files in the directory.
(c) ``open_append`` copies every old chunk's stored bytes verbatim (compared row
    by row at the old and new offsets, raw and zstd), keeps old history rows
    before the new session's, merges metadata, keeps execution settings, and
    works on a footer-less upstream file and on a reference file with spilled
    metadata.
(d) A second ``commit()`` raises ``RuntimeError("TetWriterSession already committed")``.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tet
import tet.tempnames
import tet.verify
import tet.writer
from tests.conftest import INTEROP, REPO, UPSTREAM

OLD_A = np.arange(35, dtype=np.float32).reshape(5, 7)
OLD_B = (np.arange(60, dtype=np.int64) * -3).reshape(3, 4, 5)


def write_old(path: Path) -> bytes:
    """A two-dataset file (raw + zstd, edge chunks, metadata, history)."""
    w = tet.TetWriter.create(path)
    w.write_dataset("a", OLD_A, chunk_shape=(2, 3), attrs={"units": "K"}, dim_names=["y", "x"])
    w.write_dataset("b", OLD_B, chunk_shape=(2, 3, 2), codec="zstd", attrs={"k": "v"})
    w.push_history_event("create", "session one")
    w.set_execution(memory_budget_bytes=1 << 30, memory_budget_percent_bps=1234)
    w.commit()
    return path.read_bytes()


def temp_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.endswith((".tmp", ".spool")))


def assert_old_file(path: Path, old: bytes) -> None:
    assert path.read_bytes() == old
    with tet.open(path) as f:
        assert f.dataset_names() == ["a", "b"]
        assert np.array_equal(f.read_numpy("a"), OLD_A)
        assert np.array_equal(f.read_numpy("b"), OLD_B)


# ---------------------------------------------------------------------------
# (a) SIGKILL in the middle of commit

CHILD = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    import tet, tet.writer_stream as W

    target, ready, hook, mode = sys.argv[1:5]

    def stall(*args, **kwargs):
        with open(ready + ".part", "w") as fh:
            fh.write(str(os.getpid()))
        os.rename(ready + ".part", ready)
        time.sleep(300)
        os._exit(3)  # never reached when the parent kills us

    if hook == "encode":  # mid-payload: the third window of tiles
        W.WINDOW_BYTES = 256 * 1024
        real, calls = W.kernels.encode, [0]
        def encode(*args, **kwargs):
            calls[0] += 1
            if calls[0] == 3:
                stall()
            return real(*args, **kwargs)
        W.kernels.encode = encode
    elif hook == "fsync":  # temp file complete, not yet synced or renamed
        os.fsync = stall
    elif hook == "replace":  # synced, about to be renamed over the target
        os.replace = stall

    arr = np.arange(1_000_000, dtype=np.float64).reshape(1000, 1000)
    w = tet.TetWriter.create(target) if mode != "append" else tet.TetWriter.open_append(target)
    w.write_dataset("new", arr, chunk_shape=(100, 100), attrs={"big": "yes"})
    w.commit()
    os._exit(4)  # commit finished: the hook never fired
    """
)


def run_and_kill(target: Path, hook: str, mode: str) -> None:
    ready = target.parent / "ready.flag"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(target), str(ready), hook, mode],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            if proc.poll() is not None:
                _, err = proc.communicate()
                pytest.fail(f"child exited early ({proc.returncode}): {err.decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("child never reached the commit hook")
            time.sleep(0.01)
        assert int(ready.read_text()) == proc.pid
        # the output has no name until it is complete and synced (O_TMPFILE); just
        # before the rename it is a hidden temp beside the target, named for its owner
        tmps = [p.name for p in target.parent.iterdir() if p.name.endswith(".tmp")]
        if hook == "replace":
            assert len(tmps) == 1
            assert re.fullmatch(rf"\.{re.escape(target.name)}\.{proc.pid}-\d+-[0-9a-f]{{8}}"
                                r"\.\d+\.tmp", tmps[0])
        else:
            assert tmps == []
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    assert proc.returncode == -signal.SIGKILL
    ready.unlink()


@pytest.mark.parametrize("hook", ["encode", "fsync", "replace"])
@pytest.mark.parametrize("mode", ["create", "append"])
def test_kill_during_commit_keeps_previous_file(tmp_path: Path, hook: str, mode: str) -> None:
    target = tmp_path / "data.tet"
    old = write_old(target)
    run_and_kill(target, hook, mode)
    assert_old_file(target, old)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    if hook != "replace":
        assert leftovers == []  # the killed output had no name: nothing to clean up
        return
    # killed between naming and renaming: a stale temp a later writer recognises
    assert [t.name for t in tet.tempnames.stale_temps(tmp_path, target.name)] == leftovers
    report = tet.verify.verify(target)
    assert report.ok and [f.check for f in report.findings if not f.ok] == ["stale_temp_files"]
    write_old(target)  # the next writer of the same target removes it
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("hook", ["encode", "fsync", "replace"])
def test_kill_during_commit_leaves_no_target(tmp_path: Path, hook: str) -> None:
    target = tmp_path / "fresh.tet"
    run_and_kill(target, hook, "create")
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".tmp")] == []
    assert len(temp_files(tmp_path)) == (1 if hook == "replace" else 0)


def test_child_without_kill_commits(tmp_path: Path) -> None:
    """Control: the same child with no hook completes the commit (exit code 4)."""
    target = tmp_path / "ok.tet"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(target), str(tmp_path / "r"),
                           "none", "create"], cwd=REPO, capture_output=True, timeout=120)
    assert proc.returncode == 4, proc.stderr.decode()[-2000:]
    assert temp_files(tmp_path) == []
    with tet.open(target) as f:
        got = f.read_numpy("new")
    assert np.array_equal(got, np.arange(1_000_000, dtype=np.float64).reshape(1000, 1000))


# ---------------------------------------------------------------------------
# (b) exceptions during commit


def _new_session(path: Path, append: bool) -> tet.TetWriter:
    w = tet.TetWriter.open_append(path) if append else tet.TetWriter.create(path)
    w.write_dataset("c", np.arange(5000, dtype=np.uint16), chunk_shape=(300,))
    return w


@pytest.mark.parametrize("append", [False, True], ids=["create", "append"])
def test_invalid_metadata_leaves_old_file(tmp_path: Path, append: bool) -> None:
    target = tmp_path / "d.tet"
    old = write_old(target)
    before = sorted(p.name for p in tmp_path.iterdir())
    w = tet.TetWriter.open_append(target) if append else tet.TetWriter.create(target)
    w.write_dataset("c", np.arange(5000, dtype=np.uint16), chunk_shape=(300,),
                    attrs={"too_long": "x" * 2000})
    with pytest.raises(tet.CatalogError, match="metadata string exceeds attr_string_bytes limit"):
        w.commit()
    assert_old_file(target, old)
    assert temp_files(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("append", [False, True], ids=["create", "append"])
@pytest.mark.parametrize("failure", ["encode", "replace", "interrupt", "fsync"])
def test_failing_commit_leaves_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, append: bool, failure: str
) -> None:
    target = tmp_path / "d.tet"
    old = write_old(target)
    w = _new_session(target, append)

    def boom(*args: Any, **kwargs: Any) -> Any:
        if failure == "interrupt":
            raise KeyboardInterrupt
        raise OSError(28, "No space left on device")

    if failure == "encode":
        monkeypatch.setattr(tet.kernels, "encode", boom)
    elif failure == "replace":
        monkeypatch.setattr(os, "replace", boom)
    elif failure == "fsync":
        monkeypatch.setattr(os, "fsync", boom)
    else:
        monkeypatch.setattr(tet.writer, "encode_footer", boom)
    with pytest.raises((OSError, KeyboardInterrupt)):
        w.commit()
    monkeypatch.undo()
    assert_old_file(target, old)
    assert temp_files(tmp_path) == []


def test_failing_commit_with_no_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "new.tet"
    w = _new_session(target, False)
    monkeypatch.setattr(os, "replace",
                        lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EIO, "nope")))
    with pytest.raises(tet.TetOSError) as info:
        w.commit()
    assert str(info.value) == f"cannot write {target}: nope" and info.value.errno == errno.EIO
    assert list(tmp_path.iterdir()) == []


def test_with_block_exception_discards_session(tmp_path: Path) -> None:
    target = tmp_path / "d.tet"
    old = write_old(target)
    with pytest.raises(ZeroDivisionError), tet.TetWriter.open_append(target) as w:
        w.write_dataset("c", np.ones(10, np.float32))
        stream = w.create_dataset("s", (100,), np.int32, chunk_shape=(7,))
        stream[0:50] = np.arange(50)
        1 / 0  # noqa: B018
    assert_old_file(target, old)
    assert temp_files(tmp_path) == []


def test_refused_dataset_leaves_no_trace(tmp_path: Path) -> None:
    target = tmp_path / "d.tet"
    old = write_old(target)
    w = tet.TetWriter.open_append(target)
    with pytest.raises(tet.CatalogError, match="dataset name already exists in file: 'a'"):
        w.write_dataset("a", np.ones(3, np.float32))
    w.abort()
    assert_old_file(target, old)
    assert temp_files(tmp_path) == []


# ---------------------------------------------------------------------------
# (c) open_append


def _rows(summary: dict[str, Any], dataset_id: int) -> dict[tuple[int, ...], dict[str, Any]]:
    return {tuple(r["chunk_index"]): r for r in summary["chunks"] if r["dataset_id"] == dataset_id}


def _check_verbatim(old_bytes: bytes, old_sum: dict[str, Any], new_bytes: bytes,
                    new_sum: dict[str, Any], names: list[str]) -> None:
    new_names = [d["name"] for d in new_sum["datasets"]]
    for i, name in enumerate(names):
        j = new_names.index(name)
        assert new_sum["datasets"][j] == old_sum["datasets"][i]
        old_rows, new_rows = _rows(old_sum, i), _rows(new_sum, j)
        assert old_rows.keys() == new_rows.keys()
        for key, o in old_rows.items():
            n = new_rows[key]
            for field in ("raw_byte_len", "stored_byte_len", "codec"):
                assert n[field] == o[field], (name, key, field)
            a, b = o["payload_offset"], n["payload_offset"]
            length = o["stored_byte_len"]
            assert new_bytes[b : b + length] == old_bytes[a : a + length], (name, key)


def test_open_append_keeps_payloads_history_metadata(tmp_path: Path) -> None:
    target = tmp_path / "d.tet"
    old_bytes = write_old(target)
    with tet.open(target) as f:
        old_sum = f.summary()
    new = np.arange(24, dtype=np.int32).reshape(4, 6)
    w = tet.TetWriter.open_append(target)
    w.write_dataset("c", new, chunk_shape=(3, 4), codec="zstd", attrs={"n": 1},
                    coords={"0": ["p", "q", "r", "s"]})
    w.push_history_event("append", "session two", params={"why": "test"})
    w.commit()
    new_bytes = target.read_bytes()
    assert temp_files(tmp_path) == []
    with tet.open(target) as f:
        new_sum = f.summary()
        assert f.dataset_names() == ["a", "b", "c"]
        assert np.array_equal(f.read_numpy("a"), OLD_A)
        assert np.array_equal(f.read_numpy("b"), OLD_B)
        assert np.array_equal(f.read_numpy("c"), new)
        assert f.file_execution == {"memory_budget_percent_bps": 1234,
                                    "memory_budget_bytes": 1 << 30}
        hist = f.history
        meta = f.metadata
    _check_verbatim(old_bytes, old_sum, new_bytes, new_sum, ["a", "b"])
    # history: session one's row, then session two's
    assert [(h["op"], h["source"]) for h in hist] == [("create", "session one"),
                                                     ("append", "session two")]
    assert hist[0] == old_sum["history"][0]
    assert hist[1]["params"] == {"why": "test"}
    # metadata: old entries kept, new one added, file info kept
    old_meta = old_sum["metadata"]
    assert meta["datasets"]["a"] == old_meta["datasets"]["a"]
    assert meta["datasets"]["b"] == old_meta["datasets"]["b"]
    assert meta["datasets"]["c"] == {"attrs": {"n": "1"},
                                     "coords": {"0": {"labels": ["p", "q", "r", "s"]}}}
    assert meta["file"]["created_at"] == old_meta["file"]["created_at"]
    assert meta["file"]["tool"] == "tet-py"
    # new payloads follow the old ones, back to back, in index order
    offsets = [r["payload_offset"] for r in new_sum["chunks"]]
    ends = [r["payload_offset"] + r["stored_byte_len"] for r in new_sum["chunks"]]
    assert offsets[0] == new_sum["superblock"]["chunk_index_offset"] + \
        new_sum["superblock"]["chunk_index_length"]
    assert offsets[1:] == ends[:-1]


def test_open_append_default_history_row(tmp_path: Path) -> None:
    target = tmp_path / "d.tet"
    write_old(target)
    w = tet.TetWriter.open_append(target)
    w.write_dataset("c", np.ones(3, np.float64))
    w.commit()
    with tet.open(target) as f:
        assert [(h["op"], h["source"]) for h in f.history] == [
            ("create", "session one"), ("write", str(target))]


def test_open_append_twice(tmp_path: Path) -> None:
    target = tmp_path / "d.tet"
    write_old(target)
    for k in range(2):
        w = tet.TetWriter.open_append(target)
        w.write_dataset(f"extra{k}", np.full((3, 3), k, np.int16), chunk_shape=(2, 2))
        w.push_history_event("append", f"round {k}")
        w.commit()
    with tet.open(target) as f:
        assert f.dataset_names() == ["a", "b", "extra0", "extra1"]
        assert [h["source"] for h in f.history] == ["session one", "round 0", "round 1"]
        assert np.array_equal(f.read_numpy("extra0"), np.zeros((3, 3), np.int16))
        assert np.array_equal(f.read_numpy("b"), OLD_B)


@pytest.mark.parametrize("source", [UPSTREAM / "tet" / "sample.tet",
                                    INTEROP / "metadata_spill.tet",
                                    INTEROP / "appended.tet"], ids=lambda p: p.name)
def test_open_append_to_foreign_files(tmp_path: Path, source: Path) -> None:
    """Files written by the reference: old payloads verbatim, old footer rows kept."""
    target = tmp_path / source.name
    old_bytes = source.read_bytes()
    target.write_bytes(old_bytes)  # a scratch copy: the shared corpus stays read-only
    with tet.open(target) as f:
        old_sum = f.summary()
        old_arrays = {n: f.read_numpy(n) for n in f.dataset_names}
    w = tet.TetWriter.open_append(target)
    w.write_dataset("appended_here", np.arange(7, dtype=np.uint64), chunk_shape=(3,),
                    dim_names=["i"])
    w.commit()
    with tet.open(target) as f:
        new_sum = f.summary()
        for n, a in old_arrays.items():
            assert np.array_equal(f.read_numpy(n), a, equal_nan=True)
        assert np.array_equal(f.read_numpy("appended_here"), np.arange(7, dtype=np.uint64))
        meta = f.metadata
        hist = f.history
    names = [d["name"] for d in old_sum["datasets"]]
    assert new_sum["superblock"]["flags"] == 1
    _check_verbatim(old_bytes, old_sum, target.read_bytes(), new_sum, names)
    assert hist[: len(old_sum["history"])] == old_sum["history"]
    assert hist[-1]["op"] == "write" and len(hist) == len(old_sum["history"]) + 1
    for n, entry in old_sum["metadata"].get("datasets", {}).items():
        assert meta["datasets"][n] == entry
    assert meta["datasets"]["appended_here"] == {"dim_names": ["i"]}
    assert source.read_bytes() == old_bytes


# ---------------------------------------------------------------------------
# (d) a session commits once


@pytest.mark.parametrize("mode", ["create", "append"])
def test_second_commit_raises(tmp_path: Path, mode: str) -> None:
    target = tmp_path / "d.tet"
    if mode == "create":
        w = tet.TetWriter.create(target)
        w.write_dataset("a", OLD_A)
    else:
        write_old(target)
        w = tet.TetWriter.open_append(target)
        w.write_dataset("c", np.ones(2, np.float32))
    assert w.commit() == target
    first = target.read_bytes()
    with pytest.raises(RuntimeError, match=r"^TetWriterSession already committed$"):
        w.commit()
    assert target.read_bytes() == first


def test_context_manager_commits_once(tmp_path: Path) -> None:
    target = tmp_path / "d.tet"
    with tet.TetWriter.create(target) as w:
        w.write_dataset("a", OLD_A)
        w.commit()
    with pytest.raises(RuntimeError, match="TetWriterSession already committed"):
        w.commit()
    with tet.open(target) as f:
        assert np.array_equal(f.read_numpy("a"), OLD_A)
