"""The mutation fuzzer (tools/fuzz.py): a short deterministic run is part of the suite,
and the harness itself must notice crashes, hangs, non-TetErrors and memory breaches.

The long run is `make fuzz` (FUZZ_CASES, FUZZ_SEED, FUZZ_TIME)."""

from __future__ import annotations

import importlib.util
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import tet
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
    proc = run(tmp_path, "--cases", "30", "--seed", "3", "--workers", "2", "--timeout", "20",
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


def _fuzz_module() -> Any:
    spec = importlib.util.spec_from_file_location("tet_fuzz_tool", FUZZ)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_footer_edits_reach_the_footer_checks(tmp_path: Path) -> None:
    """The footer mutations hold what they say: lone surrogate escapes (refused at
    open), valid pairs (read back), duplicate dim names (refused by xarray), nesting
    past the limit; the harness's own edits keep the out-of-line regions in place."""
    fuzz = _fuzz_module()
    (base,) = [p for p in fuzz.generated_bases(tmp_path / "b") if p.name == "gen-f64-raw.tet"]
    data = base.read_bytes()

    def edited(style: str, seed: int = 0) -> Path:
        out = fuzz._edit_footer(data, random.Random(seed), style)
        assert out is not None
        path = tmp_path / f"{style}-{seed}.tet"
        path.write_bytes(out[0])
        return path

    for seed in range(8):
        with pytest.raises(tet.InvalidTextError, match="lone surrogate escape in a string at "):
            tet.open(edited("surrogate", seed))
    opened = 0
    for seed in range(16):  # valid text: it opens, or fails for the key it renamed
        try:
            with tet.open(edited("pair", seed)) as f:
                assert f.read_numpy("v").shape == (3, 4, 5)
                opened += 1
        except tet.CatalogError as exc:
            assert "surrogate" not in str(exc) and not isinstance(exc, tet.InvalidTextError)
    assert opened >= 4
    xr = pytest.importorskip("xarray")
    with pytest.raises(tet.CatalogError, match=r"duplicate dim_names \[.d0., .d0., .d0.\]"):
        xr.open_dataset(edited("dup_dims"), engine="tet")
    depths = set()
    for seed in range(40):
        path = edited("deep", seed)
        try:
            tet.open(path).close()
        except tet.CatalogError as exc:
            assert "exceeds maximum 64" in str(exc)
            depths.add("refused")
        else:
            depths.add("opened")
    assert depths == {"opened", "refused"}


def test_case_operations_cover_outputs_and_the_other_readers(tmp_path: Path) -> None:
    fuzz = _fuzz_module()
    (base,) = [p for p in fuzz.generated_bases(tmp_path / "b") if p.name == "gen-multi.tet"]
    where = tmp_path / "case"
    where.mkdir()
    with tet.open(base) as f:
        ops = [op for op, _ in fuzz._ops(f, random.Random(1), where)]
        short = [op for op, _ in fuzz._ops(f, random.Random(1), where, extended=False)]
    for op in ("covariance", "correlation", "read_spill", "transform_spill", "sidecar",
               "to_dask", "to_dask_sel"):
        assert op in ops
    assert "covariance" in short and "read_spill" not in short
    files = [op for op, _ in fuzz._file_ops(base, ["a"], where)]
    assert files[:1] == ["export"] and "query_many_combine" in files
    result = fuzz.run_case(base, random.Random(2), cli=False, extended=True)
    assert result["outcome"] == "ok", result
