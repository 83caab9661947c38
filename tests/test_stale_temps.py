"""Temp files name their owner, so stale ones are found and removed, live ones kept.

Matrix: every kind of `tet.tempnames.TEMP_NAMES` × owner (dead pid, live process, live pid
reused by another process, zombie, another host or pid namespace) × who cleans up (a
later writer or spill of the same target, `tet verify` / `tet repair --apply
stale_temp_files`, the next sidecar draft in the cache); and SIGKILLed writers, with and
without O_TMPFILE, leave the old or the new file and nothing that nothing removes.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

import tet
import tet.tempnames
import tet.verify
from tests.conftest import REPO, CliRun
from tet.tempnames import TEMP_NAMES, stale_temps

LINUX = sys.platform.startswith("linux")
pytestmark = [pytest.mark.usefixtures("private_cache"),
              pytest.mark.skipif(not LINUX, reason="owners are told apart through /proc")]


def _start(pid: int) -> int:
    info = tet.tempnames._proc_stat(pid)
    assert info is not None
    return info[1]


def forged(kind: str, target: str, pid: int, start: int, host: str | None = None) -> str:
    """A temp name as process `pid` (started at `start` ticks) would have made it."""
    host = host or tet.tempnames._me().host
    return TEMP_NAMES[kind].pattern.format(target=target, owner=f"{pid}-{start}-{host}",
                                           pid=pid, nanos=time.time_ns())


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(proc.stdout)
    assert not tet.tempnames._alive(pid, None, None), "pid reused at once; run again"
    return pid


@pytest.fixture
def live() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        deadline = time.monotonic() + 30
        while tet.tempnames._proc_stat(proc.pid) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A directory of its own (the private cache lives in tmp_path too)."""
    d = tmp_path / "w"
    d.mkdir()
    return d


def _names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_names_come_from_the_table_and_parse_back(tmp_path: Path) -> None:
    me = tet.tempnames._me()
    owner = rf"{os.getpid()}-{me.start}-{me.host}"
    assert me.start > 0 and re.fullmatch(r"[0-9a-f]{8}", me.host)
    for kind, suffix in (("write", "tmp"), ("output", "part"), ("repair", "repair"),
                         ("backup", "bak"), ("export", "export"), ("unpacked", "unpacked")):
        name = tet.tempnames.temp_name(kind, "data.tet")
        assert re.fullmatch(rf"\.data\.tet\.{owner}\.\d+\.{suffix}", name), name
        assert tet.tempnames._parse(name) is not None
    assert re.fullmatch(rf"spill-{os.getpid()}-\d+\.bin", tet.tempnames.temp_name("spill"))
    assert re.fullmatch(rf"sidecar-draft-{os.getpid()}-\d+\.tet",
                        tet.tempnames.temp_name("sidecar-draft"))
    long = "x" * 250 + ".tet"  # the temp name must still fit NAME_MAX (255 bytes)
    name = tet.tempnames.temp_name("write", long)
    assert len(os.fsencode(name)) <= 255
    (tmp_path / name).write_bytes(b"")  # a valid name on this file system
    with pytest.raises(ValueError, match="unknown temp file kind 'bogus'"):
        tet.tempnames.temp_name("bogus")


def test_dead_owners_and_reused_pids_are_stale_live_owners_are_kept(
        work: Path, dead_pid: int, live: subprocess.Popen[bytes]) -> None:
    t = "data.tet"
    dead = forged("write", t, dead_pid, 12345)
    reused = forged("output", t, live.pid, _start(live.pid) + 1)  # same pid, another process
    alive = forged("write", t, live.pid, _start(live.pid))
    foreign = forged("write", t, dead_pid, 12345, host="0badf00d")  # another host: unknown
    other_target = forged("write", "other.tet", dead_pid, 12345)
    for name in (dead, reused, alive, foreign, other_target):
        (work / name).write_bytes(b"x" * 100)
    assert [s.name for s in stale_temps(work, t)] == sorted([dead, reused])
    assert [s.size for s in stale_temps(work, t)] == [100, 100]
    assert [s.name for s in stale_temps(work, "other.tet")] == [other_target]


def test_a_zombie_owner_is_dead(work: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while (tet.tempnames._proc_stat(proc.pid) or ("R", 0))[0] != "Z":
        assert time.monotonic() < deadline, "child never exited"
        time.sleep(0.01)
    name = forged("write", "z.tet", proc.pid, _start(proc.pid))
    (work / name).write_bytes(b"")
    try:
        assert [s.name for s in stale_temps(work, "z.tet")] == [name]
    finally:
        proc.wait()


def test_a_later_writer_of_the_same_target_removes_only_stale_temps(
        work: Path, dead_pid: int, live: subprocess.Popen[bytes]) -> None:
    dead = forged("write", "d.tet", dead_pid, 1)
    kept = forged("write", "d.tet", live.pid, _start(live.pid))
    other = forged("write", "e.tet", dead_pid, 1)
    for name in (dead, kept, other):
        (work / name).write_bytes(bytes(1000))
    tet.write_dataset(work / "d.tet", "a", np.arange(4.0))
    assert _names(work) == sorted(["d.tet", kept, other])


def test_a_later_spill_of_the_same_target_removes_stale_parts(
        work: Path, dead_pid: int, live: subprocess.Popen[bytes]) -> None:
    src = tet.write_dataset(work / "d.tet", "a", np.arange(4.0))
    dead = forged("output", "s.bin", dead_pid, 1)
    kept = forged("output", "s.bin", live.pid, _start(live.pid))
    for name in (dead, kept):
        (work / name).write_bytes(bytes(1000))
    with tet.open(src) as f:
        f.query({"dataset": "a", "spill": "s.bin"}, preview=1)
    assert _names(work) == sorted(["d.tet", "s.bin", kept])


def test_stale_sidecar_drafts_in_the_cache_are_removed(
        work: Path, private_cache: Path, dead_pid: int,
        live: subprocess.Popen[bytes]) -> None:
    src = tet.write_dataset(work / "d.tet", "a", np.arange(4.0))
    cache = private_cache / "tetration"
    cache.mkdir(parents=True)
    dead = forged("sidecar-draft", "", dead_pid, 0)
    kept = forged("sidecar-draft", "", live.pid, 0)
    spill = forged("spill", "", dead_pid, 0)  # engine spill files are outputs: never removed
    for name in (dead, kept, spill):
        (cache / name).write_bytes(b"x")
    with tet.open(src) as f:
        f.transform.to_sidecar.zscore("a", path="side.tet")
    assert _names(cache) == sorted([kept, spill])


def test_a_later_export_removes_a_stale_store(work: Path, dead_pid: int) -> None:
    src = tet.write_dataset(work / "d.tet", "a", np.arange(4.0))
    stale = work / forged("export", "out.zarr", dead_pid, 1)
    (stale / "a" / "c").mkdir(parents=True)
    (stale / "a" / "c" / "0").write_bytes(bytes(64))
    assert [(s.name, s.size, s.directory) for s in stale_temps(work, "out.zarr")] == [
        (stale.name, 64, True)]
    tet.export(src, work / "out.zarr")
    assert _names(work) == ["d.tet", "out.zarr"]


def test_verify_warns_and_repair_removes(work: Path, dead_pid: int,
                                         live: subprocess.Popen[bytes],
                                         cli: Callable[..., CliRun]) -> None:
    path = tet.write_dataset(work / "d.tet", "a", np.arange(4.0))
    dead = [forged(k, "d.tet", dead_pid, 1) for k in ("write", "output", "repair", "backup")]
    kept = forged("write", "d.tet", live.pid, _start(live.pid))
    for i, name in enumerate([*dead, kept]):
        (work / name).write_bytes(bytes(10 * (i + 1)))
    report = tet.verify.verify(path)
    assert report.ok  # a warning: the file itself is fine
    (finding,) = [f for f in report.findings if not f.ok]
    listed = ", ".join(f"{n} ({10 * (dead.index(n) + 1)} bytes)" for n in sorted(dead))
    assert finding.to_dict() == {
        "check": "stale_temp_files", "severity": "warning", "ok": False,
        "detail": f"4 stale temp file(s) of 100 bytes beside the file, their writers gone: "
                  f"{listed}"}
    (rec,) = report.recommendations
    assert rec.to_dict() == {
        "code": "stale_temp_files",
        "message": "Temp files left beside the file by writers that are gone (killed or "
                   "crashed) take disk space.",
        "fix": {"summary": "Remove them; the file itself is not changed.",
                "command": f"tet repair {path} --apply stale_temp_files"}}
    r = cli("verify", path)
    assert r.rc == 0 and "stale_temp_files       warn (4 stale temp file(s)" in r.out
    r = cli("repair", path, "--apply", "stale_temp_files", "--dry-run")
    assert r.rc == 0 and "[stale_temp_files] planned: would remove 4 stale temp file(s) " \
                         "(100 bytes)" in r.out
    assert len(_names(work)) == 6
    r = cli("repair", path, "--apply", "stale_temp_files")
    assert r.rc == 0, r.err
    assert "[stale_temp_files] applied: removed 4 stale temp file(s) (100 bytes)" in r.out
    assert _names(work) == sorted(["d.tet", kept])
    assert [f.check for f in tet.verify.verify(path).findings if not f.ok] == []


def test_stale_temps_of_a_file_that_does_not_exist(work: Path, dead_pid: int,
                                                   live: subprocess.Popen[bytes],
                                                   cli: Callable[..., CliRun]) -> None:
    """A first write killed before its rename leaves only temps: verify still says the
    file is missing, and names them; repair --apply stale_temp_files removes them."""
    path = work / "new.tet"
    dead = [forged("write", "new.tet", dead_pid, 1), forged("output", "new.tet", dead_pid, 1)]
    kept = forged("write", "new.tet", live.pid, _start(live.pid))
    other = forged("write", "other.tet", dead_pid, 1)  # another target's: not listed
    for i, name in enumerate([*dead, kept, other]):
        (work / name).write_bytes(bytes(10 * (i + 1)))
    listed = ", ".join(f"{n} ({10 * (dead.index(n) + 1)} bytes)" for n in sorted(dead))
    missing = f"cannot read {path}: No such file or directory"
    want = (f"{missing}; 2 stale temp file(s) of 30 bytes of that name are beside it, their "
            f"writers gone: {listed} (remove them with `tet repair {path} --apply "
            "stale_temp_files`)")
    with pytest.raises(FileNotFoundError) as info:
        tet.verify.verify(path)
    assert type(info.value) is tet.TetFileNotFoundError and str(info.value) == want
    assert cli("verify", path) == CliRun(1, "", f"error: {want}\n")
    assert cli("repair", path) == CliRun(1, "", f"error: {want}\n")  # the plan: no file
    r = cli("repair", path, "--apply", "stale_temp_files", "--dry-run")
    assert r == CliRun(0, f"file: {path}\nmode: dry-run\n  [stale_temp_files] planned: would "
                          f"remove 2 stale temp file(s) (30 bytes); {path} itself does not "
                          "exist\n", "")
    assert len(_names(work)) == 4
    r = cli("repair", path, "--apply", "stale_temp_files", "--apply", "footer_invalid")
    assert r == CliRun(0, f"file: {path}\nmode: apply\n  [stale_temp_files] applied: removed "
                          f"2 stale temp file(s) (30 bytes); {path} itself does not exist\n"
                          f"  [footer_invalid] skipped: {path} does not exist; nothing to "
                          "repair\n", "")
    assert _names(work) == sorted([kept, other])
    # nothing stale of that name is left: a missing file is the plain error again
    assert cli("verify", path) == CliRun(1, "", f"error: {missing}\n")
    assert cli("repair", path, "--apply", "stale_temp_files") == CliRun(
        1, "", f"error: {missing}\n")
    report = tet.verify.repair(work / "other.tet", ["stale_temp_files"])
    assert report.verify_after_ok is None and _names(work) == [kept]


# ---------------------------------------------------------------------------
# SIGKILLed writers

WRITER = textwrap.dedent(r"""
    import os, sys
    import numpy as np
    import tet
    target, tmpfile, stream = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1"
    if not tmpfile:
        del os.O_TMPFILE
    for i in range(1, 10_000):
        if stream:
            w = tet.TetWriter.create(target)
            s = w.create_dataset("a", (512, 1024), "f8", chunk_shape=(64, 1024))
            for r in range(0, 512, 64):
                s[r:r + 64] = np.full((64, 1024), float(i))
            w.push_history_event("gen", str(i))
            w.commit()
        else:
            tet.write_dataset(target, "a", np.full((512, 1024), float(i)),
                              chunk_shape=(64, 1024), history_op="gen", history_source=str(i))
        print(i, flush=True)
""")

TRIALS = [(tmpfile, stream, seed) for seed, (tmpfile, stream) in enumerate(
    [(True, False), (True, True), (False, False), (False, True)] * 2)]


@pytest.mark.skipif(not hasattr(os, "O_TMPFILE"), reason="no O_TMPFILE on this platform")
@pytest.mark.parametrize(("tmpfile", "stream", "seed"), TRIALS)
def test_sigkilled_writer_leaves_old_or_new_file_and_nothing_unremovable(
        work: Path, tmpfile: bool, stream: bool, seed: int) -> None:
    target = work / "t.tet"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(int(tmpfile)),
                             str(int(stream))], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # one commit is done: there is an old file
        assert first.strip() == "1", proc.stderr.read() if proc.stderr else ""
        time.sleep(random.Random(seed).uniform(0.0, 0.4))  # when to kill, not a wait
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = max([1, *(int(n) for n in out.split())])
    with tet.open(target) as f:  # the file is whole: one generation, old or new
        (gen,) = {h["source"] for h in f.history}
        assert int(gen) in (done, done + 1)
        np.testing.assert_array_equal(f.read_numpy("a"), np.full((512, 1024), float(gen)))
    others = [n for n in _names(work) if n != "t.tet"]
    stale = [s.name for s in stale_temps(work, "t.tet")]
    assert others == stale  # anything left is recognised as stale
    if tmpfile:
        assert len(others) <= 1  # only the instant between naming and rename
    tet.write_dataset(target, "a", np.zeros(3))  # the next writer cleans up
    assert _names(work) == ["t.tet"]
