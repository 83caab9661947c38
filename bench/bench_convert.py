"""`make bench`, part 4: `tet convert` and `tet export` against the source library's own
full read.  Not a test: prints a table, exits 0.

Data: float32 side × side (``TET_BENCH_CONVERT_SIZE``, default 16384 → 1.07 GB), chunks
1024², once as an uncompressed HDF5 file and once as a Zarr v3 store with zstd.  Warm
page cache; best of 2 after one warm-up.  The convert target is ≥ 0.7× the source
library's full-read speed (time ratio convert / read ≤ 1.43); the output is fsynced, as
every `tet` writer does, so the disk's flush rate bounds it.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from timing import best

import tet

REPO = Path(__file__).resolve().parents[1]
TARGET = 1 / 0.7


def main() -> int:
    try:
        import h5py
        import zarr
    except ImportError as exc:  # the convert extra is not installed
        print(f"[convert] skipped: {exc}")
        return 0
    n = int(os.environ.get("TET_BENCH_CONVERT_SIZE", "16384"))
    chunk = min(1024, n)
    a = np.random.default_rng(4).standard_normal((n, n), dtype=np.float32)
    gb = a.nbytes / 1e9
    print(f"[convert] {n}x{n} float32 ({gb:.2f} GB), chunks {chunk}²", flush=True)
    (REPO / "build").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=REPO / "build") as d:
        h5 = Path(d) / "src.h5"
        with h5py.File(h5, "w") as f:
            f.create_dataset("x", data=a, chunks=(chunk, chunk))
        store = Path(d) / "src.zarr"
        z = zarr.create_array(store, shape=a.shape, chunks=(chunk, chunk), dtype="float32",
                              compressors=zarr.codecs.ZstdCodec(level=1))
        z[...] = a
        del a
        out = Path(d) / "out.tet"
        exported = Path(d) / "out_export.zarr"

        def read_h5() -> None:
            with h5py.File(h5, "r") as f:
                f["x"][...]

        def read_zarr() -> None:
            zarr.open_array(store, mode="r")[...]

        def read_tet() -> None:
            with tet.open(out) as f:
                f.read_numpy(f.datasets()[0])

        def export() -> None:
            shutil.rmtree(exported, ignore_errors=True)
            tet.export(out, exported)

        print(f"{'job':<28}{'tet':>9}{'source':>9}{'GB/s':>7}{'tet/src':>9}{'target':>10}")
        for name, ours, theirs in (
                ("convert HDF5 (raw)", lambda: tet.convert(h5, out), read_h5),
                ("convert Zarr v3 (zstd)", lambda: tet.convert(store, out), read_zarr)):
            t_ours, t_src = best(ours, 2), best(theirs, 2)
            ratio = t_ours / t_src
            print(f"{name:<28}{t_ours:>8.3f}s{t_src:>8.3f}s{gb / t_ours:>7.2f}{ratio:>8.2f}x"
                  f"{'ok' if ratio <= TARGET else 'MISS':>6} ≤{TARGET:.2f}", flush=True)
        t_exp = best(export, 2)
        t_read = best(read_tet, 2)
        print(f"{'export Zarr v3 (raw)':<28}{t_exp:>8.3f}s{t_read:>8.3f}s{gb / t_exp:>7.2f}"
              f"{t_exp / t_read:>8.2f}x  (source: tet read_numpy)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
