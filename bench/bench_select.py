"""`make bench`, part 3b: scalar median / quantile by the streaming radix selection against
`np.median` / `np.quantile` on the same array already in RAM.  Not a test: prints a table,
exits 0.

Arrays: float32 side × side (``TET_BENCH_SELECT_SIZE``, default 16384 → 1.07 GB), chunks
1024²: "noise" (standard normal, raw tiles) and "smooth" (a sum of low-frequency waves
plus a little quantised noise, zstd tiles).  The two sides alternate run by run (A/B,
``TET_BENCH_REPS`` rounds after one warm-up each) and the medians are printed, with
whether the answers are bit-equal.  Target (issue 17, raw tiles): tet ≥ 5× faster than
`np.median`; zstd rows are printed for scale.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from timing import alternate

import tet

REPO = Path(__file__).resolve().parents[1]
Arr = np.ndarray[Any, Any]


def smooth(n: int, rng: np.random.Generator) -> Arr:
    """A realistic field: a few long waves plus noise at 1/100 of their size, quantised."""
    y = np.linspace(0.0, 6.0, n, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 9.0, n, dtype=np.float32)[None, :]
    a = np.sin(y) * np.cos(x * 0.7) + 0.3 * np.sin(x * 2.3 + y * 1.1)
    a += rng.standard_normal((n, n), dtype=np.float32) * np.float32(0.01)
    return np.round(a * 4096) / np.float32(4096)


def ab(ours: Callable[[], float], theirs: Callable[[], Any], reps: int,
       want: float) -> tuple[float, float, bool]:
    """Median seconds of each side, alternating runs; whether tet's answer is bit-equal to
    `want` (NumPy on the float64 promotion)."""
    t_ours, t_np, got, _ = alternate(ours, theirs, reps)
    equal = got == want or (got != got and want != want)
    return t_ours, t_np, equal


def main() -> int:
    n = int(os.environ.get("TET_BENCH_SELECT_SIZE", "16384"))
    reps = int(os.environ.get("TET_BENCH_REPS", "3"))
    rng = np.random.default_rng(9)
    fields = [("noise", rng.standard_normal((n, n), dtype=np.float32), "raw"),
              ("smooth", smooth(n, rng), "zstd")]
    print(f"[select] {n}x{n} float32 ({4 * n * n / 1e9:.2f} GB), chunks 1024², "
          f"median of {reps} alternating runs, {os.cpu_count()} cores", flush=True)
    print(f"{'query':<26}{'tet':>9}{'NumPy':>10}{'NumPy/tet':>11}{'equal':>7}{'target':>9}")
    with tempfile.TemporaryDirectory(dir=REPO / "build") as d:
        for name, a, codec in fields:
            path = Path(d) / f"{name}.tet"
            tet.write_dataset(path, "a", a, chunk_shape=(min(1024, n), min(1024, n)),
                              codec=codec)
            with tet.open(path) as f:
                wide = a.astype(np.float64)
                wants = [float(np.median(wide)), float(np.quantile(wide, 0.5)),
                         float(np.quantile(wide, 0.9))]
                del wide
                cases: list[tuple[str, Callable[[], float], Callable[[], Any], float]] = [
                    ("median", lambda: f.median("a"), lambda a=a: np.median(a), wants[0]),
                    ("quantile 0.5", lambda: f.quantile("a", 0.5),
                     lambda a=a: np.quantile(a, 0.5), wants[1]),
                    ("quantile 0.9", lambda: f.quantile("a", 0.9),
                     lambda a=a: np.quantile(a, 0.9), wants[2]),
                ]
                for label, ours, theirs, want in cases:
                    t_ours, t_np, equal = ab(ours, theirs, reps, want)
                    speed = t_np / t_ours
                    # zstd tiles are decoded once a pass (bench_io compares that with libzstd)
                    verdict = ("ok" if speed >= 5 else "MISS") if codec == "raw" else "-"
                    print(f"{label + f' ({name}, {codec})':<26}{t_ours:>8.3f}s{t_np:>9.3f}s"
                          f"{speed:>10.2f}x{'yes' if equal else 'NO':>7}{verdict:>5}"
                          f"{' ≥5' if codec == 'raw' else ''}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
