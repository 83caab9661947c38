"""The reference side of ``bench/bench_io.py``; runs under ``.venv-ref``'s interpreter.

``python bench_ref.py SPEC.json`` times the reference binding (tet-py, import name
``tet``) on the same machine and data as the parent:

* ``write``: ``tet.write_dataset`` of the array in ``spec["npy"]`` with the same
  chunk shape (its commit fsyncs), best of ``reps``;
* ``read``: open + full ``read_numpy`` of each file in ``spec["reads"]`` (the
  parent's raw and zstd files: same bytes, same chunking), warm, best of ``reps``;
* ``hyperslab``: ``read_numpy`` of ``side`` x ``side`` selections of the same files
  at the parent's offsets, seconds per call, best of ``rounds``.

Each figure is seconds (or seconds per call); a step that raises records its
error text instead.  Prints one JSON object on its last stdout line.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from typing import Any

import numpy as np
from rss import peak_rss

import tet


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def time_write(spec: dict[str, Any]) -> dict[str, Any]:
    arr = np.load(spec["npy"])
    path = spec["write_path"]
    best = float("inf")
    try:
        for _ in range(spec["reps"]):
            if os.path.exists(path):
                os.unlink(path)
            t0 = time.perf_counter()
            tet.write_dataset(path, "a", arr, chunk_shape=tuple(spec["chunk"]))
            best = min(best, time.perf_counter() - t0)
    except Exception as exc:
        return {"error": _error(exc)}
    finally:
        del arr
        gc.collect()
        if os.path.exists(path):
            os.unlink(path)
    return {"seconds": best}


def time_read(spec: dict[str, Any], path: str) -> dict[str, Any]:
    """The parent has just read `path`, so its pages are warm already."""
    best = float("inf")
    kind = ""
    try:
        for _ in range(spec["reps"]):
            t0 = time.perf_counter()
            out = tet.open(path).read_numpy("a")
            elapsed = time.perf_counter() - t0
            kind = type(out).__name__
            if out.shape != tuple(spec["shape"]) or out.dtype != np.float32:
                return {"error": f"read back {out.shape} {out.dtype}"}
            del out
            best = min(best, elapsed)
    except Exception as exc:
        return {"error": _error(exc)}
    return {"seconds": best, "type": kind}


def time_hyperslab(spec: dict[str, Any], path: str, offsets: list[list[int]],
                   rounds: int) -> dict[str, Any]:
    side = spec["side"]
    try:
        f = tet.open(path)
        sels = [[{"start": i, "stop": i + side}, {"start": j, "stop": j + side}]
                for i, j in offsets]
        first = f.read_numpy("a", sels[0])
        if first.shape != (side, side):
            return {"error": f"read back {first.shape}"}
        # Calibrate: a round of at most about `round_s` seconds (at least 20 calls).
        t0 = time.perf_counter()
        for sel in sels[:20]:
            f.read_numpy("a", sel)
        per_call = (time.perf_counter() - t0) / min(20, len(sels))
        sels = sels[:max(20, int(spec["round_s"] / per_call))]
        best = float("inf")
        for _ in range(rounds):
            t0 = time.perf_counter()
            for sel in sels:
                f.read_numpy("a", sel)
            best = min(best, (time.perf_counter() - t0) / len(sels))
    except Exception as exc:
        return {"error": _error(exc)}
    return {"seconds": best, "calls": len(sels)}


def main() -> None:
    with open(sys.argv[1]) as fh:
        spec = json.load(fh)
    out: dict[str, Any] = {"version": getattr(tet, "__version__", "?"),
                           "write": time_write(spec)}
    for key, path in spec["reads"].items():
        out[f"read_{key}"] = time_read(spec, path)
        offsets, rounds = spec["slabs"][key]
        out[f"slab_{key}"] = time_hyperslab(spec, path, offsets, rounds)
    out["peak_rss_bytes"] = peak_rss()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
