"""`make bench`, part 2: tier A/B folds through the full query engine, against NumPy's
reduction of the same array already in RAM, and against the reference binding
(tet-py 0.8.3 in ``.venv-ref``, run as a subprocess on the same file, one run each:
it needs seconds per fold).  Not a test: prints a table and exits 0.

Array: float32 side × side (``TET_BENCH_SIZE``, default 16384 → 1.07 GB), chunks
1024², raw, warm page cache.  tet: best of 3 (1 untimed warm-up); NumPy: best of 3.
``TET_BENCH_NO_REF=1`` leaves the (slow) reference out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from timing import best

import tet

REPO = Path(__file__).resolve().parents[1]
REF_PY = REPO / ".venv-ref" / "bin" / "python"
REF_CHILD = Path(__file__).resolve().with_name("bench_fold_ref.py")

# name -> (query op object, NumPy on the array in RAM, target ratio); GB/s count the bytes
# the selection covers.  NumPy accumulates in float64 here, as tet does.
CASES: list[tuple[str, dict[str, Any], Callable[[np.ndarray[Any, Any]], Any], float]] = [
    ("mean", {"mean": []}, lambda a: a.mean(dtype=np.float64), 0.8),
    ("sum", {"sum": []}, lambda a: a.sum(dtype=np.float64), 0.8),
    ("min", {"min": []}, lambda a: a.min(), 0.8),
    ("max", {"max": []}, lambda a: a.max(), 0.8),
    ("var", {"var": []}, lambda a: a.var(dtype=np.float64), 0.8),
    ("std", {"std": []}, lambda a: a.std(dtype=np.float64), 0.8),
    ("mean axis 0", {"mean": [0]}, lambda a: a.mean(axis=0, dtype=np.float64), 0.7),
    ("mean last axis", {"mean": [1]}, lambda a: a.mean(axis=1, dtype=np.float64), 0.7),
    ("mean, step 4 on axis 0", {"mean": [], "selection": [{"step": 4}, {}]},
     lambda a: a[::4].mean(dtype=np.float64), 0.7),
]


def reference(path: Path, docs: list[dict[str, Any]]) -> list[float | str]:
    if not REF_PY.exists():
        return ["not installed (run make interop first)"] * len(docs)
    spec = json.dumps({"path": str(path), "docs": docs})
    r = subprocess.run([str(REF_PY), "-E", "-s", str(REF_CHILD)], input=spec, text=True,
                       capture_output=True, timeout=3600, check=False)
    if r.returncode != 0:
        return [f"failed: {r.stderr.strip().splitlines()[-1:]}"] * len(docs)
    out: list[float | str] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def main() -> int:
    n = int(os.environ.get("TET_BENCH_SIZE", "16384"))
    rng = np.random.default_rng(7)
    a = rng.standard_normal((n, n), dtype=np.float32)
    gb = a.nbytes / 1e9
    print(f"[fold] {n}x{n} float32 ({gb:.2f} GB), chunks 1024², simd={tet.simd_level()}",
          flush=True)
    with tempfile.TemporaryDirectory(dir=REPO / "build") as d:
        path = Path(d) / "fold.tet"
        tet.write_dataset(path, "a", a, chunk_shape=(min(1024, n), min(1024, n)))
        docs = [{"dataset": "a", **q} for _, q, _, _ in CASES]
        rows = []
        with tet.open(path) as f:
            for (name, _, numpy_fn, target), doc in zip(CASES, docs, strict=True):
                ours = best(lambda doc=doc: f.query(doc))
                theirs = best(lambda fn=numpy_fn: fn(a))
                rows.append((name, ours, theirs, target))
        if os.environ.get("TET_BENCH_NO_REF"):
            ref: list[float | str] = ["skipped"] * len(docs)
        else:
            print("[fold] reference tet-py 0.8.3 (one run each)", flush=True)
            ref = reference(path, docs)
    plan_seconds = plan_million_chunks()
    print(f"{'query':<26}{'tet':>12}{'NumPy in RAM':>16}{'vs NumPy':>10}{'target':>9}"
          f"{'tet-py 0.8.3':>16}{'vs ref':>9}")
    for (name, ours, theirs, target), r in zip(rows, ref, strict=True):
        gb = a.nbytes / 1e9 / (4 if "step 4" in name else 1)
        ratio = theirs / ours
        ref_text = f"{gb / r:.2f} GB/s" if isinstance(r, float) else str(r)[:40]
        vs_ref = f"{r / ours:.1f}x" if isinstance(r, float) else "-"
        print(f"{name:<26}{gb / ours:>8.2f} GB/s{gb / theirs:>11.2f} GB/s{ratio:>9.2f}x"
              f"{'ok' if ratio >= target else 'MISS':>6} {target:.1f}{ref_text:>16}{vs_ref:>9}")
    print(f"plan-only, 10^6 chunks (open + plan + chunk list): {plan_seconds:.2f} s")
    return 0


def plan_million_chunks() -> float:
    """Open a file of 1000x1000 one-element tiles and plan its full selection."""
    with tempfile.TemporaryDirectory(dir=REPO / "build") as d:
        path = Path(d) / "plan.tet"
        a = np.arange(10**6, dtype=np.uint8).reshape(1000, 1000)
        tet.write_dataset(path, "a", a, chunk_shape=(1, 1))
        t0 = time.perf_counter()
        with tet.open(path) as f:
            plan = f.plan_only({"dataset": "a"})
        seconds = time.perf_counter() - t0
        assert plan["read_plan"]["chunk_count"] == 10**6
        return seconds


if __name__ == "__main__":
    sys.exit(main())
