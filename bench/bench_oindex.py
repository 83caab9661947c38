#!/usr/bin/env python3
"""Orthogonal-indexing benchmark: ``ds[idx]``, ``ds[:, idx]`` and ``ds[idx, idx]`` on a
float32 array of TET_BENCH_OINDEX_SIZE x TET_BENCH_OINDEX_SIZE (default 4096) in
256 x 256 chunks, with TET_BENCH_OINDEX_N (default 1000) random indices per axis (any
order, repeats), warm page cache, files under ``build/bench-oindex/`` (removed after).

Against: a NumPy memmap of the raw array (``np.asarray(m[np.ix_(...)])``), h5py's fancy
indexing (same chunks; h5py needs increasing indices, so it reads the sorted distinct
ones and the permutation is applied with NumPy as ours does), and zarr's ``oindex``
(same chunks, no compression and zstd).  Not a test: it prints a table and exits 0.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import best

import tet

N = int(os.environ.get("TET_BENCH_OINDEX_SIZE", "4096"))
K = int(os.environ.get("TET_BENCH_OINDEX_N", "1000"))
CHUNK = 256
ROOT = Path(__file__).resolve().parent.parent / "build" / "bench-oindex"


def main() -> None:
    shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.mkdir(parents=True)
    try:
        run()
    finally:
        shutil.rmtree(ROOT, ignore_errors=True)


def run() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((N, N), dtype=np.float32)
    idx = rng.integers(0, N, K)
    u, inv = np.unique(idx, return_inverse=True)
    keys = {"rows": (idx,), "cols": (slice(None), idx), "both": (idx, idx)}
    want = {name: a[np.ix_(*[np.arange(N)[k] for k in key + (slice(None),) * (2 - len(key))])]
            for name, key in keys.items()}
    readers: dict[str, object] = {}
    for codec in ("raw", "zstd"):
        path = ROOT / f"a-{codec}.tet"
        tet.write_dataset(path, "x", a, chunk_shape=(CHUNK, CHUNK), codec=codec)
        readers[f"tet {codec}"] = tet.open(path)["x"]
    np.save(ROOT / "a.npy", a)
    mm = np.load(ROOT / "a.npy", mmap_mode="r")
    table: dict[str, dict[str, float]] = {}
    for label, ds in readers.items():
        table[label] = {}
        for name, key in keys.items():
            assert np.array_equal(ds[key], want[name])  # type: ignore[index]
            table[label][name] = best(lambda: ds[key])  # type: ignore[index]  # noqa: B023
    table["numpy memmap"] = {
        "rows": best(lambda: np.asarray(mm[idx])),
        "cols": best(lambda: np.asarray(mm[:, idx])),
        "both": best(lambda: np.asarray(mm[np.ix_(idx, idx)])),
    }
    try:
        import h5py
    except ImportError:
        h5py = None
    if h5py is not None:
        with h5py.File(ROOT / "a.h5", "w") as h:
            h.create_dataset("x", data=a, chunks=(CHUNK, CHUNK))
        h = h5py.File(ROOT / "a.h5", "r")
        d = h["x"]
        table["h5py"] = {
            "rows": best(lambda: d[u][inv]),
            "cols": best(lambda: d[:, u][:, inv]),
            "both": best(lambda: d[u][:, u][np.ix_(inv, inv)]),
        }
        assert np.array_equal(d[u][:, u][np.ix_(inv, inv)], want["both"])
    try:
        import zarr
    except ImportError:
        zarr = None
    if zarr is not None:
        for codec in ("raw", "zstd"):
            comp = None if codec == "raw" else zarr.codecs.ZstdCodec()
            z = zarr.create_array(str(ROOT / f"a-{codec}.zarr"), shape=a.shape, dtype=a.dtype,
                                  chunks=(CHUNK, CHUNK), compressors=comp)
            z[...] = a
            table[f"zarr oindex {codec}"] = {
                name: best(lambda: z.oindex[key])  # noqa: B023
                for name, key in keys.items()}
            assert np.array_equal(z.oindex[keys["both"]], want["both"])
    print(f"{K} random indices per axis on a {N}x{N} float32 array, {CHUNK}x{CHUNK} chunks, "
          "best of 3 (ms)")
    print(f"{'':22} {'ds[idx]':>10} {'ds[:, idx]':>11} {'ds[idx, idx]':>13}")
    for label, row in table.items():
        print(f"{label:22} {row['rows'] * 1e3:10.1f} {row['cols'] * 1e3:11.1f} "
              f"{row['both'] * 1e3:13.2f}")


if __name__ == "__main__":
    main()
