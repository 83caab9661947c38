#!/usr/bin/env python3
"""Remote-read benchmark on a loopback S3 server (moto, counted at the server).

A float32 array of TET_BENCH_REMOTE_SIZE² (default 8192², 256 MiB, a few minutes; the
issue's 1 GiB is 16384) in 1024² tiles, a
"smooth" field (zstd compresses it about 2×), written raw and zstd as one `.tet` each and
as zarr v3 arrays with the same chunks; all uploaded to the same server.  Rows: open, a
100×100 slab, the whole `read_numpy` and a scalar `mean`; columns: time (best of
TET_BENCH_REMOTE_REPS, default 3, after a warm-up), requests and MB moved per call.
Against: the same `.tet` read locally (warm page cache) and zarr-python 3 through
`zarr.storage.ObjectStore` on an obstore `S3Store`.  Not a test: it prints and exits 0.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from timing import best  # noqa: E402

import tet  # noqa: E402
from tests.servers import ACCESS_KEY, REGION, SECRET_KEY, start_s3  # noqa: E402

N = int(os.environ.get("TET_BENCH_REMOTE_SIZE", "8192"))
REPS = int(os.environ.get("TET_BENCH_REMOTE_REPS", "3"))
TILE = 1024
ROOT = REPO / "build" / "bench-remote"


def smooth(n: int) -> np.ndarray[Any, Any]:
    """A realistic field: a few waves plus a little noise (about 2× under zstd)."""
    rng = np.random.default_rng(0)
    y = np.linspace(0, 6 * np.pi, n, dtype=np.float32)[:, None]
    out = np.empty((n, n), dtype=np.float32)
    step = 1024
    for r in range(0, n, step):
        x = np.linspace(0, 4 * np.pi, n, dtype=np.float32)[None, :]
        block = np.sin(y[r:r + step]) * np.cos(x) * 10
        block += rng.standard_normal(block.shape, dtype=np.float32) * 0.01
        out[r:r + step] = block
    return out


class Row:
    def __init__(self, server: Any) -> None:
        self.server = server
        self.cells: dict[str, tuple[float, int, int]] = {}

    def measure(self, label: str, fn: Callable[[], Any]) -> None:
        self.server.traffic.reset()
        t = best(fn, REPS)
        calls = REPS + 1  # best() warms up once first
        reqs = self.server.traffic.count() // calls
        moved = self.server.traffic.bytes() // calls
        self.cells[label] = (t, reqs, moved)


def main() -> None:
    shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.mkdir(parents=True)
    server = start_s3()
    try:
        run(server)
    finally:
        server.stop()
        shutil.rmtree(ROOT, ignore_errors=True)


def run(server: Any) -> None:
    import obstore
    from obstore.store import S3Store
    server.create_bucket("bench")
    opts = {"endpoint": server.endpoint, "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY, "region": REGION, "allow_http": True}
    store = S3Store("bench", endpoint=server.endpoint, access_key_id=ACCESS_KEY,
                    secret_access_key=SECRET_KEY, region=REGION,
                    client_options={"allow_http": True, "timeout": "300s"})
    a = smooth(N)
    want_mean = float(a.astype(np.float64).mean())
    slab = (slice(N // 2 - 50, N // 2 + 50), slice(N // 3 - 50, N // 3 + 50))
    results: dict[str, dict[str, tuple[float, int, int]]] = {}
    for codec in ("raw", "zstd"):
        path = ROOT / f"a-{codec}.tet"
        tet.write_dataset(path, "x", a, chunk_shape=(TILE, TILE), codec=codec)
        obstore.put(store, f"a-{codec}.tet", path)
        url = f"s3://bench/a-{codec}.tet"
        local = tet.open(path)
        remote = tet.open(url, storage_options=opts)
        assert np.array_equal(remote["x"][slab], a[slab])
        assert abs(remote.mean("x") - want_mean) <= 1e-6 * max(1.0, abs(want_mean))
        for label, target in ((f"tet s3 {codec}", url), (f"tet local {codec}", str(path))):
            row = Row(server)
            is_remote = target.startswith("s3://")
            f = remote if is_remote else local
            row.measure("open", lambda t=target, r=is_remote: tet.open(
                t, storage_options=opts if r else None))
            row.measure("slab", lambda f=f: f["x"][slab])
            row.measure("read", lambda f=f: f.read_numpy("x"))
            row.measure("mean", lambda f=f: f.mean("x"))
            results[label] = row.cells
        local.close()
        remote.close()
        try:
            import zarr
            from zarr.storage import ObjectStore
        except ImportError:
            continue
        zstore = ObjectStore(S3Store("bench", prefix=f"z-{codec}", endpoint=server.endpoint,
                                     access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY,
                                     region=REGION,
                                     client_options={"allow_http": True, "timeout": "300s"}))
        comp = None if codec == "raw" else zarr.codecs.ZstdCodec()
        z = zarr.create_array(zstore, shape=a.shape, dtype=a.dtype, chunks=(TILE, TILE),
                              compressors=comp, overwrite=True)
        z[...] = a
        row = Row(server)
        row.measure("open", lambda zs=zstore: zarr.open_array(zs, mode="r"))
        zr = zarr.open_array(zstore, mode="r")
        assert np.array_equal(zr[slab], a[slab])
        row.measure("slab", lambda zr=zr: zr[slab])
        row.measure("read", lambda zr=zr: zr[...])
        row.measure("mean", lambda zr=zr: float(zr[...].astype(np.float64).mean()))
        results[f"zarr s3 {codec}"] = row.cells
    gib = a.nbytes / 2**30
    print(f"remote reads, loopback S3 (moto): {N}x{N} float32 ({gib:.2f} GiB), {TILE}² tiles, "
          f"best of {REPS}; per call: time, requests, MB moved")
    print(f"{'':18} {'open':>20} {'100x100 slab':>20} {'read_numpy':>22} {'mean':>22}")
    for label, cells in results.items():
        parts = []
        for op in ("open", "slab", "read", "mean"):
            t, reqs, moved = cells[op]
            unit = f"{t * 1e3:7.1f} ms" if op in ("open", "slab") else f"{t:6.2f} s"
            parts.append(f"{unit} {reqs:4d} {moved / 1e6:7.1f}")
        print(f"{label:18} " + " ".join(f"{p:>20}" for p in parts))
    for codec in ("raw", "zstd"):
        r, loc = results.get(f"tet s3 {codec}"), results.get(f"tet local {codec}")
        z = results.get(f"zarr s3 {codec}")
        if r and loc:
            print(f"{codec}: s3/local read {r['read'][0] / loc['read'][0]:.2f}x, "
                  f"mean {r['mean'][0] / loc['mean'][0]:.2f}x", end="")
        if r and z:
            print(f"; zarr/tet open {z['open'][0] / r['open'][0]:.2f}x, slab "
                  f"{z['slab'][0] / r['slab'][0]:.2f}x, read {z['read'][0] / r['read'][0]:.2f}x, "
                  f"mean {z['mean'][0] / r['mean'][0]:.2f}x", end="")
        print()


if __name__ == "__main__":
    main()
