"""`make bench`, part 3c: histograms and outer-axis (axis 0) folds through the query
engine, against NumPy on the same array already in RAM.  Not a test: prints a table,
exits 0.

Arrays: float32 side × side (``TET_BENCH_SIZE``, default 16384 → 1.07 GB), chunks 1024²:
"noise" (standard normal, raw tiles) and "smooth" (long waves plus quantised noise, zstd
tiles; bench_select.smooth).  The sides alternate run by run (``TET_BENCH_REPS`` rounds
after a warm-up) and the medians are printed, with whether the answers agree: histogram
counts equal to `np.histogram` of the float64 values (NumPy on float32 itself bins with
float32 edges), axis-0 extremes and counts equal, sums within 1e-12.  NumPy's histogram
is timed as users call it, on the float32 array; its axis-0 sums accumulate in float64.
Targets (issue 17, raw tiles): histogram ≥ 5× NumPy, axis-0 folds ≥ 1.0×; zstd rows
are printed for scale (their tiles are decoded first).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from bench_select import smooth
from timing import alternate

import tet

REPO = Path(__file__).resolve().parents[1]
Arr = np.ndarray[Any, Any]

# op -> NumPy's answer over axis 0 of the array in RAM
AXIS0: list[tuple[str, Callable[[Arr], Any]]] = [
    ("mean", lambda a: a.mean(axis=0, dtype=np.float64)),
    ("std", lambda a: a.std(axis=0, dtype=np.float64)),
    ("min", lambda a: a.min(axis=0)),
    ("max", lambda a: a.max(axis=0)),
    ("nan_count", lambda a: np.isnan(a).sum(axis=0)),
]


def agree(got: Any, want: Any, exact: bool) -> bool:
    g, w = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if g.shape != w.shape:
        return False
    if exact:
        return bool(np.array_equal(g, w, equal_nan=True))
    return bool(np.allclose(g, w, rtol=1e-12, atol=0, equal_nan=True))


def main() -> int:
    n = int(os.environ.get("TET_BENCH_SIZE", "16384"))
    reps = int(os.environ.get("TET_BENCH_REPS", "3"))
    rng = np.random.default_rng(11)
    print(f"[hist, axis 0] {n}x{n} float32 ({4 * n * n / 1e9:.2f} GB), chunks 1024², "
          f"median of {reps} alternating runs, {os.cpu_count()} cores", flush=True)
    print(f"{'query':<34}{'tet':>9}{'NumPy':>10}{'NumPy/tet':>11}{'agree':>7}{'target':>9}")
    with tempfile.TemporaryDirectory(dir=REPO / "build") as d:
        for name, codec in (("noise", "raw"), ("smooth", "zstd")):
            a = rng.standard_normal((n, n), dtype=np.float32) if name == "noise" \
                else smooth(n, rng)
            path = Path(d) / f"{name}.tet"
            tet.write_dataset(path, "a", a, chunk_shape=(min(1024, n), min(1024, n)),
                              codec=codec)
            with tet.open(path) as f:
                wide_counts = np.histogram(a.astype(np.float64), 64)[0]
                rows: list[tuple[str, Callable[[], Any], Callable[[], Any], Any, bool, float]]
                rows = [("histogram 64 bins", lambda f=f: f.histogram("a", 64).histogram_counts,
                         lambda a=a: np.histogram(a, 64)[0], wide_counts, True, 5.0)]
                for op, fn in AXIS0:
                    rows.append((f"{op} axis 0",
                                 lambda f=f, op=op: getattr(f, op)("a", [0]).reduced,
                                 lambda a=a, fn=fn: fn(a), None, op not in ("mean", "std"), 1.0))
                for label, ours, theirs, want, exact, target in rows:
                    t_ours, t_np, got, numpy_answer = alternate(ours, theirs, reps)
                    ok = agree(got, numpy_answer if want is None else want, exact)
                    speed = t_np / t_ours
                    # zstd tiles are decoded first (bench_io compares that with libzstd)
                    verdict = ("ok" if speed >= target else "MISS") if codec == "raw" else "-"
                    print(f"{label + f' ({name}, {codec})':<34}{t_ours:>8.3f}s{t_np:>9.3f}s"
                          f"{speed:>10.2f}x{'yes' if ok else 'NO':>7}{verdict:>5}"
                          f"{f' ≥{target:g}' if codec == 'raw' else ''}", flush=True)
            del a
    return 0


if __name__ == "__main__":
    sys.exit(main())
