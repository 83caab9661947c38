#!/usr/bin/env python3
"""Write and deep-verify throughput (the cost of per-tile checksums).

``python bench/bench_integrity.py [MiB]`` writes a float32 array of about MiB
mebibytes (default 512) in 1024 x 1024 tiles, raw and zstd, with
``commit(fsync=False)`` (page cache only, so the encode and checksum work is
what is timed), then runs ``verify(p, deep=True)`` on each file.  Best of
3; the files live under ``build/bench-integrity/`` and are removed afterwards.
Not a test: it prints one line per measurement.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import tet
from tet.verify import verify

ROOT = Path(__file__).resolve().parent.parent
REPS = 5


def best_of(fn: Callable[[], Any]) -> tuple[float, float]:
    """(best wall seconds, best CPU seconds) of REPS calls."""
    wall, cpu = [], []
    for _ in range(REPS):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return min(wall), min(cpu)


def main() -> int:
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 512
    rows = max(1024, mib * 1024 * 1024 // (4 * 16384))
    rng = np.random.default_rng(0)
    arr = (rng.standard_normal((rows, 16384)) * 100).astype(np.float32).round(1)
    work = ROOT / "build" / "bench-integrity"
    work.mkdir(parents=True, exist_ok=True)
    try:
        for codec in ("raw", "zstd"):
            p = work / f"{codec}.tet"

            def write(p: Path = p, codec: str = codec) -> None:
                w = tet.TetWriter.create(p)
                w.write_dataset("a", arr, chunk_shape=(1024, 1024), codec=codec)
                w.commit(fsync=False)

            t, c = best_of(write)
            print(f"write {codec:4}: {arr.nbytes / t / 1e9:6.2f} GB/s wall, "
                  f"{arr.nbytes / c / 1e9:6.2f} GB/s of CPU ({arr.nbytes / 2**20:.0f} MiB: "
                  f"{t:.3f} s wall, {c:.3f} s CPU)")
            size = p.stat().st_size
            t, c = best_of(lambda p=p: verify(p, deep=True))
            print(f"verify --deep {codec:4}: {size / t / 1e9:6.2f} GB/s of file wall, "
                  f"{size / c / 1e9:6.2f} GB/s of CPU ({size / 2**20:.0f} MiB file: {t:.3f} s "
                  f"wall, {c:.3f} s CPU)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
