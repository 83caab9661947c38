"""The xarray/dask path against tet's own fold and against NetCDF.  Not a test: prints
a table, exits 0.

Array: float32 side × side (``TET_BENCH_SIZE``, default 16384 → 1.07 GB), tiles of
1024 × 2048 (8 MiB, tet's default), raw, warm page cache; the NetCDF copy (h5netcdf,
HDF5 chunks of the same shape, no compression) sits beside it in a temp dir that
is removed at the end.  Each row: best of 3 after one warm-up.  Every row computes
the mean of the whole array; the ratio is time / time of ``TetFile.mean``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from timing import best

import tet
from tet.dask import clear_cache, to_dask
from tet.xarray_backend import TetBackendEntrypoint


def main() -> int:
    n = int(os.environ.get("TET_BENCH_SIZE", "16384"))
    chunk = (min(1024, n), min(2048, n))
    rng = np.random.default_rng(3)
    a = rng.standard_normal((n, n), dtype=np.float32)
    print(f"[xarray] mean of {n}x{n} float32 ({a.nbytes / 1e9:.2f} GB), chunks {chunk}, "
          f"{os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="tet-bench-xarray-") as d:
        path = Path(d) / "a.tet"
        nc = Path(d) / "a.nc"
        tet.write_dataset(path, "a", a, chunk_shape=chunk, dim_names=["y", "x"])
        xr.Dataset({"a": (("y", "x"), a)}).to_netcdf(
            nc, engine="h5netcdf", encoding={"a": {"chunksizes": chunk}})
        reference = float(a.mean(dtype=np.float64))
        del a

        def tet_mean() -> float:
            f: Any = tet.open(path)  # the op helpers are generated, so typed loosely
            with f:
                return float(f.mean("a"))

        def tet_dask() -> float:
            x: Any = to_dask(path, "a")
            return float(x.mean(dtype=np.float64).compute())

        def xr_tet() -> float:
            with xr.open_dataset(path, engine=TetBackendEntrypoint, chunks={}) as ds:
                return float(ds["a"].mean(dtype=np.float64).compute())

        def xr_netcdf() -> float:
            with xr.open_dataset(nc, engine="h5netcdf", chunks={}) as ds:
                return float(ds["a"].mean(dtype=np.float64).compute())

        cases: list[tuple[str, Callable[[], float]]] = [
            ("TetFile.mean (C fold)", tet_mean),
            ("tet.dask.to_dask + dask", tet_dask),
            ("xarray engine=tet + dask", xr_tet),
            ("xarray h5netcdf + dask", xr_netcdf),
        ]
        print(f"{'path':<28}{'time':>10}{'ratio':>10}{'mean - NumPy':>16}")
        base = None
        for name, fn in cases:
            clear_cache()
            t = best(fn, 3)
            base = base or t
            err = fn() - reference
            print(f"{name:<28}{t:>9.3f}s{t / base:>9.2f}x{err:>16.2e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
