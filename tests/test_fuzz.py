"""The mutation fuzzer (tools/fuzz.py): a short deterministic run is part of the suite,
and the harness itself must notice crashes, hangs, non-TetErrors and memory breaches.

The long run is `make fuzz` (FUZZ_CASES, FUZZ_SEED, FUZZ_TIME)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import INTEROP, REPO

FUZZ = REPO / "tools" / "fuzz.py"
# under `make asan` workers cannot run under RLIMIT_AS (ASan reserves its shadow memory)
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")
LIMITS = ["--as-limit", "0", "--rss-limit", str(4 << 30)] if UNDER_ASAN else []


def run(tmp_path: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(FUZZ), "--out", str(tmp_path / "fuzz"), *LIMITS,
                           *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def counts(out: str) -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"^  (\S+)\s+(\d+)$", out, re.M)}


def test_short_fuzz_run_is_clean(tmp_path: Path) -> None:
    assert INTEROP.is_dir(), "the reference corpus ../shared/interop/files is missing"
    proc = run(tmp_path, "--cases", "2000", "--seed", "12", "--workers", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-6000:]
    got = counts(proc.stdout)
    assert sum(got.values()) == 2000
    assert got["ok"] > 200 and got["TetError:CatalogError"] > 500
    assert not [k for k in got if not (k == "ok" or k.startswith("TetError:"))]
    bases = re.search(r"cases from (\d+) base files", proc.stdout)
    assert bases is not None and int(bases[1]) > 22  # the corpus and our 22 written files


def test_harness_reports_every_kind_of_failure(tmp_path: Path) -> None:
    proc = run(tmp_path, "--cases", "30", "--seed", "3", "--workers", "2", "--timeout", "3",
               "--rss-limit", str((1 << 30) if UNDER_ASAN else (300 << 20)),
               "--inject-crash", "5", "--inject-hang", "9",
               "--inject-error", "12", "--inject-breach", "20", timeout=300)
    assert proc.returncode == 1
    got = counts(proc.stdout)
    assert sum(got.values()) == 30  # the workers were restarted after each failure
    assert (got["crash:SIGABRT"], got["hang"], got["exception:ValueError"], got["breach"]) == (
        1, 1, 1, 1)
    assert "FAILED: 4 case(s)" in proc.stderr
    for case in (5, 9, 12, 20):
        assert f"--seed 3 --replay {case} --out {tmp_path / 'fuzz'}" in proc.stderr
        assert (tmp_path / "fuzz" / f"seed-3-case-{case}.tet").is_file()


def test_cases_are_deterministic(tmp_path: Path) -> None:
    a = run(tmp_path, "--seed", "5", "--replay", "77")
    b = run(tmp_path, "--seed", "5", "--replay", "77")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout
    assert a.stdout.startswith("case 77: ")
