"""`make bench`, part 3: tier C statistics and transforms through the query engine,
against NumPy on the same array already in RAM.  Not a test: prints a table, exits 0.

Array: float32 side × side (``TET_BENCH_SIZE``, default 16384 → 1.07 GB), chunks
1024², raw, warm page cache.  Each side: best of 2 after one warm-up.  Targets
(time ratio tet / NumPy): median and quantile ≤ 1.0, histogram ≤ 0.5 (2× faster),
zscore ≤ 1.0.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from timing import best

import tet

REPO = Path(__file__).resolve().parents[1]


def numpy_zscore(a: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    out: np.ndarray[Any, Any] = ((a - a.mean(dtype=np.float64)) / a.std(dtype=np.float64))
    return out.astype(np.float32)


def main() -> int:
    n = int(os.environ.get("TET_BENCH_SIZE", "16384"))
    rng = np.random.default_rng(9)
    a = rng.standard_normal((n, n), dtype=np.float32)
    gb = a.nbytes / 1e9
    print(f"[tier C] {n}x{n} float32 ({gb:.2f} GB), chunks 1024²", flush=True)
    with tempfile.TemporaryDirectory(dir=REPO / "build") as d:
        path = Path(d) / "c.tet"
        tet.write_dataset(path, "a", a, chunk_shape=(min(1024, n), min(1024, n)))
        spill = Path(d) / "z.bin"
        with tet.open(path) as f:
            cases: list[tuple[str, Callable[[], Any], Callable[[], Any], float]] = [
                ("median", lambda: f.median("a"), lambda: np.median(a), 1.0),
                ("quantile 0.5", lambda: f.quantile("a", 0.5), lambda: np.quantile(a, 0.5), 1.0),
                ("histogram 64 bins", lambda: f.histogram("a", 64),
                 lambda: np.histogram(a, 64), 0.5),
                ("zscore to NumPy", lambda: f.transform.to_numpy.zscore("a"),
                 lambda: numpy_zscore(a), 1.0),
                ("zscore to spill", lambda: f.transform.to_spill.zscore("a", path=spill),
                 lambda: numpy_zscore(a), 1.0),
            ]
            print(f"{'query':<22}{'tet':>10}{'NumPy':>10}{'tet/NumPy':>11}{'target':>10}")
            for name, ours, theirs, target in cases:
                t_ours, t_np = best(ours, 2), best(theirs, 2)
                ratio = t_ours / t_np
                print(f"{name:<22}{t_ours:>9.3f}s{t_np:>9.3f}s{ratio:>10.2f}x"
                      f"{'ok' if ratio <= target else 'MISS':>6} ≤{target:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
