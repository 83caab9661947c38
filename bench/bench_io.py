#!/usr/bin/env python3
"""I/O benchmark of `tet` against NumPy and the reference binding (``make bench``).

One run on one machine: a float32 array of TET_BENCH_SIZE x TET_BENCH_SIZE
(default 16384, 1 GiB) in 1024 x 1024 chunks, written and read with warm page
cache under ``build/bench/`` (removed afterwards):

* write GB/s: ``tet.write_dataset`` raw and zstd (its commit fsyncs), and the same
  through ``TetWriter.create(p) ... commit(fsync=False)``; against ``np.save``
  (with an fsync where ours fsyncs) and the reference's ``write_dataset``;
* full read GB/s: ``tet.open(p).read_numpy(name)``; against ``np.load`` and the
  reference's ``read_numpy`` of the same file;
* zstd writes and reads also against libzstd itself (the ``zstandard`` package, two
  threads) compressing and decoding the same tiles;
* 100 x 100 hyperslab µs/call at random offsets: ``f.read_numpy(name, selection)``
  and ``f[name][i:i+100, j:j+100]``; against ``np.array(memmap[i:i+100, j:j+100])``
  and the reference's ``read_numpy`` with a selection.

The reference (tet-py in ``.venv-ref``, made by ``make interop``) runs as a
subprocess (``bench/bench_ref.py``).  Not a test: it prints a table and exits 0
unless something could not run.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rss import peak_rss

import tet

ROOT = Path(__file__).resolve().parent.parent
REF_PY = ROOT / ".venv-ref" / "bin" / "python"
REF_CHILD = Path(__file__).resolve().with_name("bench_ref.py")
REF_NAME = "tet-py"
REPS = 3  # best of N for the big operations
SLAB = 100  # hyperslab side
SLAB_CALLS = 2000
SLAB_ROUNDS = 5
TARGET_WRITE = 1.0  # GB/s, raw write
TARGET_READ = 3.0  # GB/s, full read
TARGET_SLAB = 30.0  # µs per 100 x 100 read


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def best_of(fn: Callable[[], Any], reps: int, *, setup: Callable[[], None] | None = None,
            warmup: bool = False) -> float:
    """Smallest wall time of `reps` calls (`setup` untimed before each; one untimed
    call first when `warmup`)."""
    if warmup:
        if setup:
            setup()
        fn()
    best = float("inf")
    for _ in range(reps):
        if setup:
            setup()
        gc.collect()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def fresh(path: Path) -> Callable[[], None]:
    """Setup for a timed write: no old file, no dirty pages from earlier runs in flight."""
    def setup() -> None:
        path.unlink(missing_ok=True)
        os.sync()
    return setup


def make_array(n: int) -> np.ndarray[Any, Any]:
    """N(0, 1) float32 rounded to multiples of 1/1024, so zstd has something to find."""
    rng = np.random.default_rng(12345)
    arr = np.empty((n, n), dtype=np.float32)
    step = max(1, (64 << 20) // (4 * n))
    for r in range(0, n, step):
        block = arr[r:r + step]
        rng.standard_normal(out=block, dtype=np.float32)
        block *= 1024
        np.rint(block, out=block)
        block /= 1024
    return arr


def slab_time(read: Callable[[int, int], Any], offsets: np.ndarray[Any, Any],
              rounds: int = SLAB_ROUNDS) -> float:
    """Best per-call seconds over `rounds` passes through `offsets`."""
    pairs = [(int(i), int(j)) for i, j in offsets]

    def one_round() -> None:
        for i, j in pairs:
            read(i, j)

    return best_of(one_round, rounds, warmup=True) / len(pairs)


def reference_version() -> str | None:
    if not REF_PY.exists():
        return None
    probe = "import importlib.metadata as m, tet; print(m.version('tet-py'))"
    r = subprocess.run([str(REF_PY), "-I", "-c", probe], capture_output=True, text=True,
                       check=False)
    return r.stdout.strip() if r.returncode == 0 else None


def run_reference(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    spec_path = work / "ref-spec.json"
    spec_path.write_text(json.dumps(spec))
    r = subprocess.run([str(REF_PY), "-E", "-s", str(REF_CHILD), str(spec_path)], cwd=work,
                       capture_output=True, text=True, timeout=1800, check=False)
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or not lines:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        return {"error": f"exit status {r.returncode}: {' | '.join(tail)}"}
    out: dict[str, Any] = json.loads(lines[-1])
    return out


# ---------------------------------------------------------------------------
# The table.


@dataclass
class Row:
    label: str
    ours: float  # seconds (whole op, or per call when unit is µs)
    unit: str  # "GB/s" or "µs"
    base_label: str = ""
    base: float | None = None
    ref: float | None = None
    ref_note: str = ""
    target: float | None = None


def fmt(seconds: float | None, unit: str, nbytes: int) -> str:
    if seconds is None:
        return "-"
    if unit == "GB/s":
        return f"{nbytes / seconds / 1e9:6.2f} GB/s"
    return f"{seconds * 1e6:7.1f} µs"


def speedup(ours: float, other: float | None) -> str:
    if other is None:
        return "-"
    x = other / ours
    return f"{x:.2f}x" if x >= 0.1 else f"{x:.3f}x"


def target_text(row: Row, nbytes: int) -> str:
    if row.target is None:
        return ""
    if row.unit == "GB/s":
        ok = nbytes / row.ours / 1e9 >= row.target
        return f">= {row.target:g} GB/s {'ok' if ok else 'MISS'}"
    ok = row.ours * 1e6 <= row.target
    return f"<= {row.target:g} µs {'ok' if ok else 'MISS'}"


def print_table(rows: list[Row], nbytes: int, slab_bytes: int, ref_title: str) -> None:
    head = (f"{'operation':<44} {'tet':>12}  {'target':<18} {'numpy baseline':<28} "
            f"{'vs numpy':>8}  {ref_title:<22} {'vs ref':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        size = nbytes if r.unit == "GB/s" else slab_bytes
        base = f"{r.base_label:<14} {fmt(r.base, r.unit, size)}" if r.base_label else "-"
        ref = fmt(r.ref, r.unit, size) + (f" {r.ref_note}" if r.ref_note else "")
        if r.ref is None:
            ref = r.ref_note or "-"
        print(f"{r.label:<44} {fmt(r.ours, r.unit, size):>12}  {target_text(r, nbytes):<18} "
              f"{base:<28} {speedup(r.ours, r.base):>8}  {ref:<22} {speedup(r.ours, r.ref):>7}")


# ---------------------------------------------------------------------------


def main() -> int:
    n = int(os.environ.get("TET_BENCH_SIZE", "16384"))
    if n <= SLAB:
        print(f"bench: TET_BENCH_SIZE must be > {SLAB}, got {n}")
        return 2
    chunk = (min(1024, n), min(1024, n))
    work = ROOT / "build" / "bench" / f"run-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    try:
        return bench(n, chunk, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        with_parent = work.parent
        if with_parent.exists() and not any(with_parent.iterdir()):
            with_parent.rmdir()


def bench(n: int, chunk: tuple[int, int], work: Path) -> int:
    log(f"making a {n} x {n} float32 array")
    arr = make_array(n)
    nbytes = arr.nbytes
    p_raw, p_zstd, p_npy = work / "raw.tet", work / "zstd.tet", work / "array.npy"
    offsets = np.random.default_rng(7).integers(0, n - SLAB, size=(SLAB_CALLS, 2), endpoint=True)
    rows = measure_ours(arr, chunk, p_raw, p_zstd, p_npy, offsets)
    del arr  # the reference loads its own copy
    gc.collect()
    if rows is None:
        return 1
    ratio = p_zstd.stat().st_size / p_raw.stat().st_size
    notes: list[str] = []

    version = reference_version()
    res: dict[str, Any] = {}
    ref_title = f"{REF_NAME} {version}" if version else REF_NAME
    if version is None:
        print("reference: not installed (run make interop first)")
        for r in rows:
            r.ref_note = "n/a"
    else:
        log(f"reference {REF_NAME} {version} (subprocess)")
        spec = {"npy": str(p_npy), "write_path": str(work / "ref.tet"), "chunk": list(chunk),
                "shape": [n, n], "reps": REPS, "side": SLAB, "round_s": 2.0,
                "reads": {"raw": str(p_raw), "zstd": str(p_zstd)},
                "slabs": {"raw": [offsets.tolist(), SLAB_ROUNDS],
                          "zstd": [offsets[:200].tolist(), 3]}}
        res = run_reference(spec, work)
        fill_reference(rows, res)
        calls = res.get("slab_raw", {}).get("calls")
        if calls:
            notes.append(f"{REF_NAME} hyperslabs: {calls} of the same offsets per round "
                         f"(rounds capped near 2 s)")
    rss = f"peak RSS: {peak_rss() / 2**30:.2f} GiB here"
    if version is not None and res.get("peak_rss_bytes"):
        rss += f", {res['peak_rss_bytes'] / 2**30:.2f} GiB in the reference subprocess"
    notes.append(rss)

    print()
    print(f"tet bench_io: {n} x {n} float32 = {nbytes / 1e9:.2f} GB, chunks {chunk[0]} x "
          f"{chunk[1]}; zstd (default level) file is {ratio:.2f} of raw")
    print(f"best of {REPS} (hyperslab: best of {SLAB_ROUNDS} rounds x {SLAB_CALLS} random "
          f"offsets; zstd: 3 x 200); warm page cache; files under build/bench/")
    print("GB/s = 1e9 bytes/s; 'vs' = how many times faster tet is (>1: tet is faster); "
          f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} cpus, "
          f"tet {tet.core_version()}")
    print()
    print_table(rows, nbytes, SLAB * SLAB * 4, ref_title)
    print()
    for note in notes:
        print(note)
    return 0


def libzstd_times(arr: np.ndarray[Any, Any], chunk: tuple[int, int]) -> tuple[float, float]:
    """Seconds libzstd takes (through the `zstandard` package, two threads, the default
    level tet writes with) to compress the array's tiles and to decode them again: the
    floor a zstd write or read can approach."""
    from concurrent.futures import ThreadPoolExecutor

    import zstandard

    tiles = [np.ascontiguousarray(arr[i:i + chunk[0], j:j + chunk[1]]).tobytes()
             for i in range(0, arr.shape[0], chunk[0]) for j in range(0, arr.shape[1], chunk[1])]
    halves = [tiles[0::2], tiles[1::2]]
    compressors = [zstandard.ZstdCompressor(level=3) for _ in halves]
    decoders = [zstandard.ZstdDecompressor() for _ in halves]
    frames: list[list[bytes]] = [[], []]

    def compress(k: int) -> None:
        frames[k] = [compressors[k].compress(t) for t in halves[k]]

    def decode(k: int) -> None:
        for frame in frames[k]:
            decoders[k].decompress(frame)

    with ThreadPoolExecutor(2) as pool:
        t_compress = best_of(lambda: list(pool.map(compress, (0, 1))), REPS)
        t_decode = best_of(lambda: list(pool.map(decode, (0, 1))), REPS, warmup=True)
    return t_compress, t_decode


def measure_ours(arr: np.ndarray[Any, Any], chunk: tuple[int, int], p_raw: Path, p_zstd: Path,
                 p_npy: Path, offsets: np.ndarray[Any, Any]) -> list[Row] | None:
    """Time our writes and reads and NumPy's; leaves the three files behind.
    None (after printing why) when something does not read back equal."""
    rows: list[Row] = []

    # -- writes -----------------------------------------------------------
    def ours_write(path: Path, codec: str) -> Callable[[], None]:
        return lambda: tet.write_dataset(path, "a", arr, chunk_shape=chunk, codec=codec)

    def ours_write_nosync(path: Path, codec: str) -> Callable[[], None]:
        def run() -> None:
            w = tet.TetWriter.create(path)
            w.write_dataset("a", arr, chunk_shape=chunk, codec=codec)
            w.commit(fsync=False)
        return run

    def np_save_fsync() -> None:
        with p_npy.open("wb") as fh:
            np.save(fh, arr)
            fh.flush()
            os.fsync(fh.fileno())

    log("np.save")
    t_save = best_of(lambda: np.save(p_npy, arr), REPS, setup=fresh(p_npy))
    t_save_sync = best_of(np_save_fsync, REPS, setup=fresh(p_npy))
    log("write raw")
    t_raw_nosync = best_of(ours_write_nosync(p_raw, "raw"), REPS, setup=fresh(p_raw))
    t_raw = best_of(ours_write(p_raw, "raw"), REPS, setup=fresh(p_raw))
    log("write zstd")
    t_zstd_nosync = best_of(ours_write_nosync(p_zstd, "zstd"), REPS, setup=fresh(p_zstd))
    t_zstd = best_of(ours_write(p_zstd, "zstd"), REPS, setup=fresh(p_zstd))
    rows += [
        Row("write raw  (write_dataset, fsync)", t_raw, "GB/s", "np.save+fsync", t_save_sync,
            target=TARGET_WRITE),
        Row("write raw  (commit(fsync=False))", t_raw_nosync, "GB/s", "np.save", t_save,
            target=TARGET_WRITE),
        Row("write zstd (write_dataset, fsync)", t_zstd, "GB/s", "np.save+fsync", t_save_sync),
        Row("write zstd (commit(fsync=False))", t_zstd_nosync, "GB/s", "np.save", t_save),
    ]

    # -- full reads (warm) -------------------------------------------------
    def ours_read(path: Path) -> Callable[[], None]:
        def run() -> None:
            with tet.open(path) as f:
                out = f.read_numpy("a")
            del out
        return run

    log("checking what was written")
    for path in (p_raw, p_zstd):
        with tet.open(path) as f:
            if not np.array_equal(f.read_numpy("a"), arr):
                print(f"bench: {path.name} does not read back equal")
                return None
    if not np.array_equal(np.load(p_npy), arr):
        print("bench: np.load does not read back equal")
        return None
    log("full reads")
    t_load = best_of(lambda: np.load(p_npy), REPS, warmup=True)
    t_read = best_of(ours_read(p_raw), REPS, warmup=True)
    t_read_zstd = best_of(ours_read(p_zstd), REPS, warmup=True)
    read_row = Row("full read raw  (open + read_numpy)", t_read, "GB/s", "np.load", t_load,
                   target=TARGET_READ)
    rows += [read_row,
             Row("full read zstd (open + read_numpy)", t_read_zstd, "GB/s", "np.load", t_load)]
    log("libzstd through zstandard, the same tiles")
    t_compress, t_decode = libzstd_times(arr, chunk)
    rows += [Row("write zstd (commit(fsync=False))", t_zstd_nosync, "GB/s",
                 "zstandard, 2 threads", t_compress),
             Row("full read zstd (open + read_numpy)", t_read_zstd, "GB/s",
                 "zstandard, 2 threads", t_decode)]

    # -- 100 x 100 hyperslabs (warm) ----------------------------------------
    log("hyperslabs")
    mm = np.load(p_npy, mmap_mode="r")
    f_raw, f_zstd = tet.open(p_raw), tet.open(p_zstd)
    i0, j0 = (int(v) for v in offsets[0])
    want = arr[i0:i0 + SLAB, j0:j0 + SLAB]

    def sel(i: int, j: int) -> list[dict[str, int]]:
        return [{"start": i, "stop": i + SLAB}, {"start": j, "stop": j + SLAB}]

    readers: dict[str, Callable[[int, int], Any]] = {
        "read_numpy": lambda i, j: f_raw.read_numpy("a", sel(i, j)),
        "index": lambda i, j: f_raw["a"][i:i + SLAB, j:j + SLAB],
        "zstd": lambda i, j: f_zstd.read_numpy("a", sel(i, j)),
        "memmap": lambda i, j: np.array(mm[i:i + SLAB, j:j + SLAB]),
    }
    for name, read in readers.items():
        if not np.array_equal(read(i0, j0), want):
            print(f"bench: hyperslab via {name} does not read back equal")
            return None
    t_mm = slab_time(readers["memmap"], offsets)
    t_slab = slab_time(readers["read_numpy"], offsets)
    t_index = slab_time(readers["index"], offsets)
    t_slab_zstd = slab_time(readers["zstd"], offsets[:200], rounds=3)
    slab_rows = [
        Row("hyperslab 100x100 raw (read_numpy sel)", t_slab, "µs", "memmap", t_mm,
            target=TARGET_SLAB),
        Row('hyperslab 100x100 raw (f["a"][i:i+100,..])', t_index, "µs", "memmap", t_mm,
            target=TARGET_SLAB),
        Row("hyperslab 100x100 zstd (read_numpy sel)", t_slab_zstd, "µs", "memmap", t_mm),
    ]
    rows += slab_rows
    f_raw.close()
    f_zstd.close()
    return rows


def fill_reference(rows: list[Row], res: dict[str, Any]) -> None:
    """Put the reference's figures beside ours (its write fsyncs, like write_dataset)."""
    if "error" in res:
        print(f"reference: failed to run: {res['error']}")
        for r in rows:
            r.ref_note = "failed"
        return

    def put(row: Row, part: dict[str, Any], note: str = "") -> None:
        if "error" in part:
            row.ref_note = "raised"
            print(f"reference: {row.label}: {part['error']}")
        else:
            row.ref, row.ref_note = part["seconds"], note

    by_label = {r.label: r for r in rows}
    put(by_label["write raw  (write_dataset, fsync)"], res["write"], "(fsync)")
    put(by_label["write raw  (commit(fsync=False))"], res["write"], "(fsync)")
    for codec in ("raw", "zstd"):
        kind = res[f"read_{codec}"].get("type", "")
        put(by_label[f"full read {codec:<4} (open + read_numpy)"], res[f"read_{codec}"],
            f"({kind})" if kind and kind != "ndarray" else "")
    for label in ("hyperslab 100x100 raw (read_numpy sel)",
                  'hyperslab 100x100 raw (f["a"][i:i+100,..])'):
        put(by_label[label], res["slab_raw"])
    put(by_label["hyperslab 100x100 zstd (read_numpy sel)"], res["slab_zstd"])
    for r in rows:
        if r.ref is None and not r.ref_note:
            r.ref_note = "(no zstd writer)" if "write zstd" in r.label else "-"


if __name__ == "__main__":
    sys.exit(main())
