"""A file truncated (or truncated and rewritten in place) while it is mapped is a
`FileChangedError` naming the file, never a SIGBUS (tet.guard, csrc/guard.c).

Every case runs in a child process with a timeout, so a crash is seen as a signal death
rather than taking the test run down.  Matrix: truncation after open, then each reader
(folds, reads, slicing, quantiles, queries, zero-copy views, the CLI's query and verify
--deep); truncation while `tet.open` parses the catalog and while `verify` checks; a second
process truncating and rewriting in place while the main one opens and reads; a SIGBUS
outside tet's mappings still ends the process (with and without faulthandler, enabled
before or after tet is imported); slots are released when files close or are dropped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import tet
from tests.conftest import REPO
from tet import guard

pytestmark = pytest.mark.skipif(not guard.SUPPORTED or not hasattr(signal, "SIGBUS"),
                                reason="no POSIX signals here: mappings are not guarded")

# Under `make asan` the children inherit the preloaded ASan runtime, whose own SIGBUS
# handler reports a foreign fault and aborts (abort_on_error=1) instead of the default
# action: a genuine crash then ends in SIGABRT.
ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")
N = 1 << 16      # float64 elements: 512 KiB of payload
CHUNK = 4096     # 32 KiB tiles
CUT = 4096       # the truncated length: superblock and index survive, payloads do not
TIMEOUT = 120


def changed(path: Path) -> str:
    return (f"{path} changed (truncated or rewritten in place) while it was being read; "
            f"what was read from it was discarded; open it again")


def _child(code: str, *args: str, timeout: int = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, "TET_DEBUG": ""})


def _outcome(r: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert r.returncode == 0, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    out: dict[str, object] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def _write(path: Path, codec: str = "raw") -> Path:
    return tet.write_dataset(path, "a", np.arange(N, dtype="f8").reshape(64, 1024),
                             chunk_shape=(4, 1024), codec=codec)


# The child: open, truncate in place, run one operation; print what came of it.
AFTER_OPEN = """
import json, os, sys, numpy as np, tet
path, op, cut = sys.argv[1], sys.argv[2], int(sys.argv[3])
f = tet.open(path)
os.truncate(path, cut)
ops = {
    "mean": lambda: f.mean("a"),
    "sum_axis": lambda: f.sum("a", axis=0),
    "max": lambda: f.max("a", axis=1),
    "median": lambda: f.median("a"),
    "quantile": lambda: f.quantile("a", 0.9),
    "read_numpy": lambda: f.read_numpy("a"),
    "read_selection": lambda: f.read_numpy("a", {"start": [8, 0], "stop": [60, 1024],
                                                 "step": [3, 7]}),
    "slicing": lambda: f["a"][10:50, ::2],
    "zero_copy": lambda: f.read_numpy("a", {"start": [60, 0], "stop": [64, 1024]},
                                      copy=None),
    "query": lambda: f.query_execute({"dataset": "a", "mean": [0]}),
    "histogram": lambda: f.histogram("a", 8),
}
try:
    value = ops[op]()
    print(json.dumps({"value": repr(value)[:200]}))
except tet.TetError as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc),
                      "catalog_error": isinstance(exc, tet.CatalogError)}))
"""

OPS = ["mean", "sum_axis", "max", "median", "quantile", "read_numpy", "read_selection",
       "slicing", "zero_copy", "query", "histogram"]


@pytest.mark.parametrize(("op", "codec"), [(op, codec) for codec in ("raw", "zstd")
                                            for op in OPS
                                            if (op, codec) != ("zero_copy", "zstd")])
def test_truncated_after_open_is_file_changed(tmp_path: Path, op: str, codec: str) -> None:
    """(zstd tiles are never handed out as views: zero_copy is a raw case only.)"""
    path = _write(tmp_path / "t.tet", codec)
    out = _outcome(_child(AFTER_OPEN, str(path), op, str(CUT)))
    assert out == {"error": "FileChangedError", "message": changed(path),
                   "catalog_error": True}


def test_every_read_after_the_change_is_refused(tmp_path: Path) -> None:
    """The flag stays set: the zeros mapped over the truncated part are never read as
    data, even by a read of a part that had not been touched before."""
    path = _write(tmp_path / "t.tet")
    code = """
    import json, os, sys, tet, tet.guard
    path = sys.argv[1]
    f = tet.open(path)
    head = f.read_numpy("a", {"start": [0, 0], "stop": [1, 1024]})  # before the cut
    before = tet.guard.absorbed_faults()
    os.truncate(path, int(sys.argv[2]))
    seen = []
    for op in (lambda: f.mean("a"), lambda: f.read_numpy("a", {"start": [0, 0],
               "stop": [1, 1024]}), lambda: f["a"][63]):
        try:
            op()
            seen.append("value")
        except tet.FileChangedError as exc:
            seen.append(str(exc))
    absorbed = tet.guard.absorbed_faults() - before
    print(json.dumps({"head": float(head.sum()), "seen": seen, "absorbed": absorbed}))
    """
    out = _outcome(_child(code, str(path), str(CUT)))
    # the guard saw the fault (each absorbed fault maps zeros over the rest of the cut
    # tail, so there are at most as many as pages past the cut)
    assert out.pop("absorbed") in range(1, N * 8 // 4096 + 1)
    assert out == {"head": float(np.arange(1024).sum()), "seen": [changed(path)] * 3}


def test_a_zero_copy_view_of_a_file_truncated_later_reads_zeros(tmp_path: Path) -> None:
    """A view handed out cannot be checked when it is read: the truncated part reads as
    zeros (documented), the process lives, and the file's next read reports the change."""
    path = _write(tmp_path / "t.tet")
    code = """
    import json, os, sys, numpy as np, tet
    path = sys.argv[1]
    f = tet.open(path)
    view = f.read_numpy("a", {"start": [60, 0], "stop": [64, 1024]}, copy=None)
    before = float(view.sum())
    os.truncate(path, int(sys.argv[2]))
    after = float(view.sum())
    try:
        f.mean("a")
        then = "value"
    except tet.FileChangedError as exc:
        then = str(exc)
    f.close()  # the view keeps the map (and its guard) alive
    closed = float(view.sum())
    print(json.dumps({"before": before, "after": after, "then": then, "closed": closed}))
    """
    out = _outcome(_child(code, str(path), str(CUT)))
    assert out == {"before": float(np.arange(60 * 1024, N, dtype="f8").sum()), "after": 0.0,
                   "then": changed(path), "closed": 0.0}


def test_truncated_while_the_catalog_is_parsed(tmp_path: Path) -> None:
    """Between the mapping and the end of the catalog parse (another process truncating
    at that moment): the parse reads zeros, which is a FileChangedError, not whatever
    CatalogError the zeros would make."""
    path = _write(tmp_path / "t.tet")
    code = """
    import json, os, sys, tet, tet.reader
    path = sys.argv[1]
    real = tet.reader.parse_catalog
    def cut_then_parse(buf, n):
        os.truncate(path, 17)  # the footer at the end and the index are gone
        return real(buf, n)
    tet.reader.parse_catalog = cut_then_parse
    try:
        tet.open(path)
        print(json.dumps({"value": "opened"}))
    except tet.TetError as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
    """
    out = _outcome(_child(code, str(path)))
    assert out == {"error": "FileChangedError", "message": changed(path)}


def test_verify_deep_of_a_file_truncated_while_checked(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.tet", "zstd")
    code = """
    import os, sys, tet.verify_checks
    from tet.cli.main import main
    path = sys.argv[1]
    real = tet.verify_checks.parse_catalog
    def parse_then_cut(buf, n):
        cat = real(buf, n)
        os.truncate(path, int(sys.argv[2]))  # the payload checks meet the cut
        return cat
    tet.verify_checks.parse_catalog = parse_then_cut
    sys.exit(main(["verify", "--deep", path]))
    """
    r = _child(code, str(path), str(CUT))
    assert (r.returncode, r.stdout, r.stderr) == (1, "", f"error: {changed(path)}\n")


def test_the_cli_query_of_a_file_truncated_while_read(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.tet")
    code = """
    import os, sys, tet.reader
    from tet.cli.main import main
    path = sys.argv[1]
    real = tet.reader.parse_catalog
    def parse_then_cut(buf, n):
        cat = real(buf, n)
        os.truncate(path, int(sys.argv[2]))
        return cat
    tet.reader.parse_catalog = parse_then_cut
    sys.exit(main(["query", '{"dataset": "a", "mean": []}', "-t", path, "-x", "-q"]))
    """
    r = _child(code, str(path), str(CUT))
    assert (r.returncode, r.stdout, r.stderr) == (1, "", f"error: {changed(path)}\n")


def test_appending_to_a_file_truncated_under_the_writer(tmp_path: Path) -> None:
    """The appender computes the old tiles' checksums from the mapping when the file
    has no table: checksums of zeros are never recorded."""
    path = tet.write_dataset(tmp_path / "t.tet", "a", np.arange(N, dtype="f8"),
                             chunk_shape=(CHUNK,))
    code = """
    import json, os, sys, numpy as np, tet, tet.integrity, tet.writer
    path = sys.argv[1]
    tet.writer.read_table = lambda buf, cat: None  # as for a file without a table
    w = tet.TetWriter.open_append(path)
    os.truncate(path, int(sys.argv[2]))
    try:
        w.write_dataset("b", np.arange(4.0))
        w.commit()
        print(json.dumps({"value": "committed"}))
    except tet.TetError as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
    """
    out = _outcome(_child(code, str(path), str(CUT)))
    assert out == {"error": "FileChangedError", "message": changed(path)}


# ---------------------------------------------------------------------------
# a second process rewriting the file in place


RACE = """
import collections, json, os, sys, time, numpy as np, tet
path, rounds, seconds, n = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
want = np.arange(n, dtype="f8").reshape(64, 1024)
seen = collections.Counter()
deadline = time.monotonic() + seconds
for i in range(rounds):
    if time.monotonic() > deadline:
        break
    try:
        with tet.open(path) as f:
            x = f.read_numpy("a")
            m = f.mean("a")
            s = f["a"][5:9, ::3]
        if not (np.array_equal(x, want) and m == want.mean() and
                np.array_equal(s, want[5:9, ::3])):
            seen["WRONG VALUES"] += 1
        else:
            seen["ok"] += 1
    except tet.TetError as exc:
        seen[type(exc).__name__] += 1
    except Exception as exc:
        seen[f"not a TetError: {type(exc).__name__}: {exc}"] += 1
print(json.dumps(dict(seen)))
"""

FLIPPER = """
import os, sys, time
path, good, rounds, seconds = sys.argv[1], open(sys.argv[1], "rb").read(), int(sys.argv[2]), \
    float(sys.argv[3])
deadline = time.monotonic() + seconds
for i in range(rounds):
    if time.monotonic() > deadline or os.path.exists(path + ".stop"):
        break
    os.truncate(path, (0, 4096, len(good) // 2 // 4096 * 4096)[i % 3])
    time.sleep(0.0005)
    with open(path, "r+b") as fh:
        fh.write(good)  # rewritten in place, same inode
    time.sleep(0.002)
"""


def test_reads_while_another_process_truncates_and_rewrites(tmp_path: Path) -> None:
    """Cut at page boundaries, a read gives the right values or a TetError. (A cut inside a
    page leaves the rest of that page reading as zeros, which no memory-mapped reader can
    tell from data: the README says so, and tet's writers never rewrite in place.)"""
    path = _write(tmp_path / "r.tet")
    flipper = subprocess.Popen([sys.executable, "-c", FLIPPER, str(path), "100000", "60"],
                               cwd=REPO)
    try:
        r = _child(RACE, str(path), "400", "40", str(N))
    finally:
        (tmp_path / "r.tet.stop").touch()
        flipper.wait(timeout=TIMEOUT)
    seen = _outcome(r)
    assert set(seen) <= {"ok", "CatalogError", "FileChangedError", "ChunkError"}, seen
    assert sum(seen.values()) > 0


# ---------------------------------------------------------------------------
# faults that are not tet's still end the process


FOREIGN = """
import faulthandler, mmap, os, sys
steps = sys.argv[2].split(",")
if "fh_before" in steps:
    faulthandler.enable()
import numpy as np, tet
d = sys.argv[1]
p = os.path.join(d, "x.tet")
tet.write_dataset(p, "a", np.arange(4096.0), chunk_shape=(512,))
f = tet.open(p)
if "fh_after" in steps:
    faulthandler.enable()
if "reopen" in steps:
    g = tet.open(p)
if "fh_off" in steps:
    faulthandler.disable()
if "absorb" in steps:  # the guard has worked once before the foreign fault
    os.truncate(p, 1024)
    try:
        f.mean("a")
    except tet.FileChangedError:
        print("absorbed", flush=True)
q = os.path.join(d, "other.bin")
with open(q, "wb") as h:
    h.write(b"x" * 65536)
fd = os.open(q, os.O_RDONLY)
m = mmap.mmap(fd, 65536, access=mmap.ACCESS_READ)  # not tet's: nobody guards it
os.truncate(q, 0)
print("reading", flush=True)
print(int(np.frombuffer(m, dtype=np.uint8)[100]))
print("survived", flush=True)
"""


@pytest.mark.parametrize("steps", [
    "plain", "fh_before", "fh_after", "fh_after,reopen", "fh_before,fh_off",
    "fh_after,reopen,fh_off", "absorb", "fh_before,absorb", "fh_after,absorb",
])
def test_a_sigbus_outside_tet_mappings_still_kills(tmp_path: Path, steps: str) -> None:
    r = subprocess.run([sys.executable, "-c", FOREIGN, str(tmp_path), steps],
                       capture_output=True, text=True, timeout=TIMEOUT, cwd=REPO)
    expected = ["absorbed", "reading"] if "absorb" in steps else ["reading"]
    assert r.stdout.split() == expected, (r.stdout, r.stderr[-2000:])
    if ASAN:
        assert r.returncode in (-signal.SIGBUS, -signal.SIGABRT), r.stderr[-2000:]
        return
    assert r.returncode == -signal.SIGBUS, (r.returncode, r.stderr[-2000:])
    on = "fh_before" in steps or "fh_after" in steps
    dumps = 0 if not on or "fh_off" in steps else 1
    assert r.stderr.count("Fatal Python error: Bus error") == dumps, r.stderr


def test_faulthandler_enabled_after_open_does_not_unguard(tmp_path: Path) -> None:
    """faulthandler.enable() after tet.open puts its handler on top; the next read puts
    the guard back (without it the truncation below would end in faulthandler's dump
    and a SIGBUS)."""
    path = _write(tmp_path / "t.tet")
    code = """
    import faulthandler, json, os, sys, tet
    path = sys.argv[1]
    f = tet.open(path)
    faulthandler.enable()
    os.truncate(path, int(sys.argv[2]))
    try:
        f.mean("a")
        print(json.dumps({"value": "mean"}))
    except tet.TetError as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
    """
    r = _child(code, str(path), str(CUT))
    assert _outcome(r) == {"error": "FileChangedError", "message": changed(path)}
    assert "Fatal Python error" not in r.stderr


# ---------------------------------------------------------------------------
# the slot table


def test_slots_are_released_by_close_and_by_dropping_the_file(tmp_path: Path) -> None:
    """More files than the table has slots, opened and closed or dropped one after the
    other: every one of them is guarded (no slot leaks)."""
    path = _write(tmp_path / "t.tet")
    code = """
    import gc, json, sys, tet, tet.guard
    path, n = sys.argv[1], int(sys.argv[2])
    unguarded = 0
    for i in range(n):
        f = tet.open(path)
        unguarded += not f.reader.source.map.guarded
        if i % 2:
            f.close()
        del f  # the other half is released when the map is dropped
    gc.collect()
    print(json.dumps({"unguarded": unguarded}))
    """
    out = _outcome(_child(code, str(path), str(guard.GUARD_SLOTS + 200)))
    assert out == {"unguarded": 0}


def test_a_map_with_a_view_stays_guarded_after_close(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.tet")
    f = tet.open(path)
    m = f.reader.source.map
    assert isinstance(m, guard.GuardedMap) and m.guarded
    view = f.read_numpy("a", {"start": [0, 0], "stop": [4, 1024]}, copy=None)
    f.close()
    assert not m.closed and m.guarded  # the view still reads it: still guarded
    np.testing.assert_array_equal(view, np.arange(4096, dtype="f8").reshape(4, 1024))
    del view
    m.close()
    assert m.closed and not m.guarded


def test_an_empty_file_has_no_map_to_guard(tmp_path: Path) -> None:
    empty = tmp_path / "e.tet"
    empty.write_bytes(b"")
    with pytest.raises(tet.CatalogError) as info:
        tet.open(empty)
    assert type(info.value) is tet.CatalogError
    assert str(info.value) == "file too short for superblock: need 32 bytes, got 0"
