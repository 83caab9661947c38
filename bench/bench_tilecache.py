#!/usr/bin/env python3
"""Repeated small reads of compressed tiles: the decoded-tile cache (``make bench``).

One run on one machine: a float32 array of TET_BENCH_CACHE_SIZE squared (default 2048)
in 1024 x 1024 tiles (4 MiB each), a "noise" field (standard normal) and a "smooth"
one (low-frequency waves with a little noise: realistic compressibility), written under
``build/bench/`` (removed afterwards).  Per field, µs per call (median of 5 batches of
TET_BENCH_CACHE_CALLS calls, after the first call, which is timed on its own):

* ``f["x"][i, j]`` on a zstd file with the tile cache (default ``cache_bytes``), the
  same without it (``cache_bytes=0``: a whole-tile decode per call), and on a raw file
  (read from the mapping);
* ``f.read_numpy("x", selection)`` of the same element, cached;
* h5py 1 x 1 reads of the same data in the same chunks (gzip level 1, h5py has no zstd
  without hdf5plugin), with a 64 MiB chunk cache and with the library's default (the
  row says its size: 1 MiB before HDF5 2.0, which does not hold a 4 MiB chunk, 8 MiB
  since), and a NumPy in-RAM index for scale.

Not a test: it prints a table and exits 0.
"""

from __future__ import annotations

import functools
import os
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import tet

SIZE = int(os.environ.get("TET_BENCH_CACHE_SIZE", "2048"))
CALLS = int(os.environ.get("TET_BENCH_CACHE_CALLS", "2000"))
TILE = 1024
WHERE = Path(__file__).resolve().parent.parent / "build" / "bench" / "tilecache"


def fields() -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(17)
    noise = rng.standard_normal((SIZE, SIZE), dtype=np.float32)
    y, x = np.meshgrid(np.linspace(0, 6, SIZE, dtype=np.float32),
                       np.linspace(0, 9, SIZE, dtype=np.float32), indexing="ij")
    # a field stored to 3 decimals (zstd: about 2x; raw float noise: about 1.1x)
    smooth = np.round(np.sin(y) * np.cos(x) + 0.3 * np.sin(3.1 * x + y) + 0.01 * noise,
                      3).astype(np.float32)
    return {"noise": noise, "smooth": smooth}


def per_call(fn: Callable[[], Any]) -> tuple[float, float]:
    """(first call, median per-call of the repeated ones) in µs."""
    t0 = time.perf_counter()
    fn()
    first = (time.perf_counter() - t0) * 1e6
    batches = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(CALLS):
            fn()
        batches.append((time.perf_counter() - t0) * 1e6 / CALLS)
    return first, statistics.median(batches)


def bench_field(name: str, a: np.ndarray[Any, Any]) -> list[tuple[str, float, float]]:
    zp, rp = WHERE / f"{name}.zstd.tet", WHERE / f"{name}.raw.tet"
    tet.write_dataset(zp, "x", a, chunk_shape=(TILE, TILE), codec="zstd")
    tet.write_dataset(rp, "x", a, chunk_shape=(TILE, TILE))
    i, j = TILE + 517, 300  # inside tile (1, 0)
    sel = [{"start": i, "stop": i + 1}, {"start": j, "stop": j + 1}]
    want = a[i, j]
    rows: list[tuple[str, float, float]] = []
    ratio = a.nbytes / max(1, zp.stat().st_size)
    with tet.open(zp) as f:
        ds = f["x"]
        assert ds[i, j] == want
        f.reader.cache.clear()
        rows.append((f"tet zstd, cached ({ratio:.1f}x)", *per_call(lambda: ds[i, j])))
        f.reader.cache.clear()
        rows.append(("tet zstd, cached, read_numpy", *per_call(
            lambda: f.read_numpy("x", sel))))
    with tet.open(zp, cache_bytes=0) as f:
        ds0 = f["x"]
        t0 = time.perf_counter()
        ds0[i, j]
        first = (time.perf_counter() - t0) * 1e6
        rows.append(("tet zstd, cache_bytes=0", first, repeat_few(lambda: ds0[i, j])))
    with tet.open(rp) as f:
        dsr = f["x"]
        rows.append(("tet raw", *per_call(lambda: dsr[i, j])))
    try:
        import h5py  # type: ignore[import-untyped]
    except ImportError:
        print("  (h5py not installed: its rows are left out)")
    else:
        hp = WHERE / f"{name}.h5"
        with h5py.File(hp, "w") as h:
            h.create_dataset("x", data=a, chunks=(TILE, TILE), compression="gzip",
                             compression_opts=1)
        for cache in (64 << 20, None):
            kw = {} if cache is None else {"rdcc_nbytes": cache, "rdcc_nslots": 1009}
            with h5py.File(hp, "r", **kw) as h:
                hx = h["x"]
                held = h.id.get_access_plist().get_cache()[2] >> 20
                what = "" if cache is None else ", set"
                rows.append((f"h5py gzip, {held} MiB chunk cache{what}",
                             *per_call(functools.partial(hx.__getitem__, (i, j)))))
                assert hx[i, j] == want
    rows.append(("NumPy in RAM a[i, j]", *per_call(lambda: a[i, j])))
    return rows


def repeat_few(fn: Callable[[], Any], n: int = 20) -> float:
    """Median µs of `n` single calls (for the slow, uncached rows)."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(times)


def main() -> None:
    WHERE.mkdir(parents=True, exist_ok=True)
    try:
        print(f"repeated 1 x 1 reads, {SIZE}^2 float32 in {TILE}^2 tiles (4 MiB), "
              f"{os.cpu_count()} cpus, TET_THREADS={os.environ.get('TET_THREADS', 'auto')}")
        for name, a in fields().items():
            print(f"\n{name}:")
            print(f"  {'read':<36} {'first µs':>10} {'repeat µs/call':>15}")
            for label, first, rep in bench_field(name, a):
                print(f"  {label:<36} {first:>10.1f} {rep:>15.2f}")
    finally:
        shutil.rmtree(WHERE, ignore_errors=True)


if __name__ == "__main__":
    main()
