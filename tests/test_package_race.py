"""Packages under concurrency and crashes: writers ingest and a publisher publishes while
readers query in a loop (every answer is one generation's); two overlapping publishers
(one wins, the other is `PublishConflictError`); a publisher SIGKILLed at random points
(the package opens at the previous or the new generation, ``verify --deep`` passes on
its ``packed.tet``, and the next publish succeeds).  No timing assertions: waits poll
for states with generous deadlines."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import tet
from tet.cli.main import main as cli

REPO = Path(__file__).resolve().parent.parent
N = 256


def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(predicate: object, what: str, deadline_s: float = 120.0) -> None:
    end = time.monotonic() + deadline_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < end, f"gave up waiting for {what}"
        time.sleep(0.02)


INGEST = """
import sys, numpy as np, tet
pkg, i, tmp = sys.argv[1], int(sys.argv[2]), sys.argv[3]
src = tmp + f"/w{i}.tet"
tet.write_dataset(src, "v", np.full(256, float(i), dtype=np.float64), chunk_shape=(32,))
tet.ingest(pkg, src, session_id=f"w{i}", part_id=f"p{i}")
"""

PUBLISH = """
import sys, time, tet
pkg = sys.argv[1]
for i in (1, 2, 3, 4):
    while True:
        try:
            tet.publish(pkg, [f"p{i}"]); break
        except tet.PackageError as e:
            if "not found in staging" not in str(e): raise
            time.sleep(0.01)
"""

READ = """
import sys, json, tet
pkg, n = sys.argv[1], int(sys.argv[2])
seen = []
while True:
    with tet.open(pkg) as f:
        lo, hi = f.min("v"), f.max("v")
        seen.append([f.generation, lo, hi, f.sum("v")])
        if f.generation == 5 and len(seen) >= n:
            break
print(json.dumps(seen))
"""


def test_writers_publisher_and_readers(tmp_path: Path) -> None:
    pkg = tet.create(tmp_path / "p.tet.d")
    tet.write_dataset(tmp_path / "w0.tet", "v", np.zeros(N), chunk_shape=(32,))
    tet.ingest(pkg, tmp_path / "w0.tet", session_id="w0", part_id="p0")
    assert tet.publish(pkg, ["p0"]) == 1
    readers = [_spawn(READ, str(pkg), "20") for _ in range(4)]
    writers = [_spawn(INGEST, str(pkg), str(i), str(tmp_path)) for i in (1, 2, 3, 4)]
    publisher = _spawn(PUBLISH, str(pkg))
    for p in [*writers, publisher, *readers]:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        if p in readers:
            for gen, lo, hi, total in json.loads(out):
                value = gen - 1  # generation g holds part p(g-1): every element g - 1
                assert (lo, hi, total) == (value, value, value * N), (gen, lo, hi, total)
    with tet.open(pkg) as f:
        assert f.generation == 5 and f.max("v") == 4.0


RACE = """
import sys, tet
try:
    print(tet.publish(sys.argv[1], [sys.argv[2]]))
except tet.PublishConflictError as e:
    print("conflict:", e)
"""


def test_two_overlapping_publishers_one_wins(tmp_path: Path) -> None:
    pkg = tet.create(tmp_path / "p.tet.d")
    for i in range(3):
        tet.write_dataset(tmp_path / f"r{i}.tet", "v", np.full(8, i), chunk_shape=(4,))
        tet.ingest(pkg, tmp_path / f"r{i}.tet", session_id=f"s{i}")
    tet.publish(pkg, ["r0"])
    fd = os.open(pkg / "publishing" / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a publisher in the middle of its flip
    try:
        racers = [_spawn(RACE, str(pkg), f"r{i}") for i in (1, 2)]

        def assembled() -> bool:
            folders = [d for d in (pkg / "publishing").iterdir() if d.name.endswith(".publish")]
            return sum((d / "MANIFEST.json").exists() for d in folders) == 2

        _wait_for(assembled, "both publishers to assemble generation 2")
    finally:
        os.close(fd)
    outs = [p.communicate(timeout=120) for p in racers]
    assert all(p.returncode == 0 for p in racers), outs
    texts = sorted(o.strip() for o, _ in outs)
    assert texts[0] == "2" and texts[1].startswith(
        "conflict: publish conflict: CURRENT moved from 1 to 2 while generation 2 was "
        "assembled; the package stays at 2"), texts
    assert (pkg / "CURRENT").read_text() == "2\n"
    assert sorted(os.listdir(pkg / "generations")) == ["00000001", "00000002"]
    assert os.listdir(pkg / "publishing") == [".lock"]  # no assembly left behind


def _verify_deep(path: Path) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = cli(["verify", "--deep", str(path)])
    assert status == 0, out.getvalue()


def test_publisher_killed_at_random_points(tmp_path: Path) -> None:
    pkg = tet.create(tmp_path / "p.tet.d")
    for i in range(2):
        tet.write_dataset(tmp_path / f"k{i}.tet", "v", np.full((64, 8), i, dtype=np.int32),
                          chunk_shape=(4, 8))
        tet.ingest(pkg, tmp_path / f"k{i}.tet", session_id=f"s{i}")
    start = time.monotonic()
    tet.publish(pkg, ["k0"])
    span = max(time.monotonic() - start, 0.002)  # how long one publish takes here
    values = {1: 0}
    rng = random.Random(18)
    for trial in range(120):
        prev = tet.open(pkg).generation
        which = trial % 2
        pid = os.fork()
        if pid == 0:  # the publisher
            try:
                tet.publish(pkg, [f"k{which}"])
            finally:
                os._exit(0)
        if trial % 8 != 7:  # every eighth publish runs to its end, whatever the load
            time.sleep(rng.uniform(0, span * 1.5))
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        with tet.open(pkg) as f:
            # the previous generation, or a new one (past any a killed publish sealed
            # without flipping CURRENT)
            assert f.generation == prev or f.generation > max(values), (prev, f.generation)
            if f.generation not in values:
                values[f.generation] = which
            assert f.min("v") == f.max("v") == values[f.generation]
            _verify_deep(f.path)
    assert len(values) > 15  # the finished publishes, and any killed after their flip
    final = tet.publish(pkg, ["k1"])  # leftovers never block the next publish
    assert final > max(values)
    assert [d.name for d in (pkg / "publishing").iterdir() if d.name != ".lock"] == []
    with tet.open(pkg) as f:
        assert f.generation == final and f.max("v") == 1
