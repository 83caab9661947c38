"""Tier A/B reduction kernels: `tet.query.folds.fold` and `tet.kernels.fold_vector` vs NumPy.

Every op in `FOLDS` is checked against NumPy on ``a[selection].astype(np.float64)``.

Matrix
------
property (Hypothesis)
    dtype {f2, f4, f8, i2, i4, i8, u1, u2, u4, u8} × rank 1–4 (≤ 3000 elements, long and
    flat shapes) × chunk extent 1..n+1 per axis × codec {raw, zstd} × random start/stop/step
    per axis × every op × axes (a random proper subset, or [] = scalar) × fill (0.0, -0.0,
    NaN, or a value of the array).  Floats get NaN / ±inf / -0.0 sprinkled in (sometimes),
    integers get the dtype's extremes; value flavours: normal, small-integer ties, near one
    (products that stay finite), wide magnitudes, far from zero (1e9 ± 1, dtype max - k).
invariance
    chunk shapes × {parallel, sequential} × TET_THREADS {1, 3, 16} in-process and 1 in a
    subprocess × every SIMD body: min/max/arg/counts/booleans bit-equal, sums ≤ 1e-12.
accuracy
    mean / var / sum / std of 10^8 float32 values 1e6 ± 1 (chunk 2**22) vs NumPy float64.
edges
    NaN at the first / middle / last position of a chunk and of the selection; all-NaN cells;
    ties across chunk boundaries and across parallel parts (first occurrence wins); ±inf only;
    -0.0 vs 0.0 for null_count; f16 subnormals; int64 near 2**62; uint64 ≥ 2**63; lengths
    1, 3, 4, 5, 35, 1023, 1024, 1025 (TET_FOLD_BLOCK = 1024) through the block, lane and
    row-group paths (innermost axis reduced / kept, runs ≤ and > 1024, > 1024 rows).
fold_vector
    the same edge vectors through the C test hook.
interop
    every tier-A/B `op` case of shared/interop/files/cases.jsonl, the call built by hand.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tet
from tet.kernels import fold_vector
from tet.query.folds import FOLDS, fold

from .conftest import INTEROP, REPO, decode_special
from .helpers import EXACT, Arr, assert_matches_numpy, close_within, scales

OPS = sorted(FOLDS)
DTYPES = ["f2", "f4", "f8", "i2", "i4", "i8", "u1", "u2", "u4", "u8"]
LENGTHS = [1, 3, 4, 5, 8 * 4 + 3, 1023, 1024, 1025]


def _sel_slices(sel: Sequence[dict[str, int]] | None, shape: Sequence[int]) -> tuple[slice, ...]:
    if sel is None:
        return tuple(slice(None) for _ in shape)
    return tuple(slice(d.get("start", 0), d.get("stop", n), d.get("step", 1))
                 for d, n in zip(sel, shape))


def _fold_all(path: Path, sel: Any, axes: Sequence[int], ops: Sequence[str] = OPS,
              fill: float = 0.0, **kw: Any) -> dict[str, Arr]:
    with tet.open(path) as f:
        did, box = f.resolve("a", sel)
        table = f.reader.table(did)
        return {op: fold(table, box, op, axes, fill=fill, **kw) for op in ops}


def check_array(tmp: Path, a: Arr, chunk: Sequence[int], sel: Any = None,
                axes_list: Sequence[Sequence[int]] = ((),), codec: str = "raw",
                fills: Sequence[float] = (0.0,), ops: Sequence[str] = OPS) -> None:
    """Write `a`, fold every op over `sel` for each axes choice, compare with NumPy."""
    path = tet.write_dataset(tmp / "a.tet", "a", a, chunk_shape=tuple(chunk), codec=codec)
    x = a[_sel_slices(sel, a.shape)].astype(np.float64)
    for axes in axes_list:
        for fill in fills:
            got = _fold_all(path, sel, axes, ops, fill=fill)
            for op in ops:
                assert_matches_numpy(op, got[op], x, axes, fill,
                                     f"dtype={a.dtype} chunk={tuple(chunk)}")


# ---------------------------------------------------------------------------
# 1. property test


@st.composite
def fold_cases(draw: st.DrawFn) -> dict[str, Any]:
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    rank = draw(st.integers(1, 4))
    cap = draw(st.sampled_from([3000, 60, 12]))  # one long axis, or a squarer block
    budget, extents = 3000, []
    for _ in range(rank):
        e = draw(st.integers(1, max(1, min(budget, cap))))
        extents.append(e)
        budget = max(1, budget // e)
    shape = tuple(draw(st.permutations(extents)))
    chunk = tuple(draw(st.integers(1, n + 1)) for n in shape)
    sel = []
    for n in shape:
        start = draw(st.integers(0, n - 1))
        stop = draw(st.integers(start + 1, n))
        sel.append({"start": start, "stop": stop, "step": draw(st.integers(1, n))})
    reduced = draw(st.lists(st.booleans(), min_size=rank, max_size=rank))
    axes = [] if all(reduced) else [d for d, r in enumerate(reduced) if r]
    return {
        "dtype": dtype, "shape": shape, "chunk": chunk, "sel": sel, "axes": axes,
        "codec": draw(st.sampled_from(["raw", "zstd"])),
        "flavour": draw(st.sampled_from(["normal", "ties", "near_one", "wide", "offset"])),
        "specials": draw(st.integers(0, 6)),
        "fill": draw(st.sampled_from(["zero", "neg_zero", "nan", "value"])),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


def make_array(dtype: np.dtype[Any], shape: tuple[int, ...], flavour: str, specials: int,
               seed: int) -> Arr:
    rng = np.random.default_rng(seed)
    n = math.prod(shape)
    if dtype.kind == "f":
        if flavour == "ties":
            v = rng.integers(-3, 4, n).astype(np.float64)
        elif flavour == "near_one":
            v = rng.choice([-1.0, 1.0], n) * (1 + rng.uniform(-0.05, 0.05, n))
        elif flavour == "offset":  # far from zero: variance by sum of squares would cancel
            centre, spread = {2: (1000.0, 4.0), 4: (1e6, 1.0), 8: (1e9, 1.0)}[dtype.itemsize]
            v = centre + spread * rng.standard_normal(n)
        elif flavour == "wide":
            top = 4 if dtype.itemsize == 2 else 30
            v = rng.standard_normal(n) * 10.0 ** rng.uniform(-top, top, n)
        else:
            v = rng.standard_normal(n) * (30.0 if dtype.itemsize == 2 else 1e3)
        out = v.astype(dtype)
        if specials:
            at = rng.integers(0, n, specials)
            out[at] = rng.choice(np.array([np.nan, np.inf, -np.inf, -0.0, np.nan], dtype=dtype),
                                 specials)
    else:
        info = np.iinfo(dtype)
        if flavour == "offset":
            out = dtype.type(info.max) - rng.integers(0, min(1000, info.max), n, dtype=dtype,
                                                      endpoint=True)
        elif flavour in ("ties", "near_one"):
            lo, hi = (-2, 3) if flavour == "near_one" else (-3, 4)
            out = rng.integers(max(lo, info.min), hi, n).astype(dtype)
        else:
            out = rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True)
        if specials:
            at = rng.integers(0, n, specials)
            out[at] = rng.choice(np.array([info.min, info.max], dtype=dtype), specials)
    return out.reshape(shape)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("folds")


@settings(max_examples=5 * settings().max_examples)  # a few ms each: five times the profile
@given(case=fold_cases())
def test_fold_matches_numpy(scratch: Path, case: dict[str, Any]) -> None:
    a = make_array(case["dtype"], case["shape"], case["flavour"], case["specials"],
                   case["seed"])
    x = a[_sel_slices(case["sel"], a.shape)].astype(np.float64)
    fill = {"zero": 0.0, "neg_zero": -0.0, "nan": math.nan,
            "value": float(x.flat[case["seed"] % x.size])}[case["fill"]]
    path = tet.write_dataset(scratch / "p.tet", "a", a, chunk_shape=case["chunk"],
                             codec=case["codec"])
    got = _fold_all(path, case["sel"], case["axes"], fill=fill)
    for op in OPS:
        assert_matches_numpy(op, got[op], x, case["axes"], fill,
                             str({**case, "dtype": str(case["dtype"])}))


# ---------------------------------------------------------------------------
# 2. independence of chunking, parallelism, thread count and SIMD body

INVARIANCE_AXES: list[list[int]] = [[], [0], [1], [2], [0, 1], [0, 2], [1, 2]]
INVARIANCE_SEL = [{"start": 1, "stop": 37, "step": 1}, {"start": 0, "stop": 29, "step": 2},
                  {"start": 2, "stop": 11, "step": 1}]
INVARIANCE_CHUNKS = [(37, 29, 11), (5, 7, 3), (16, 1, 11), (1, 29, 4), (8, 8, 8), (2, 3, 1)]


def _invariance_array(dtype: str) -> Arr:
    rng = np.random.default_rng(17)
    if dtype[0] == "f":
        a = (rng.integers(-20, 21, (37, 29, 11)) * 0.25).astype(dtype)  # many ties
        a.flat[rng.integers(0, a.size, 12)] = np.nan
        a.flat[rng.integers(0, a.size, 6)] = np.inf
        a.flat[rng.integers(0, a.size, 6)] = -np.inf
        a[3, 4, :] = np.nan  # whole fibres of NaN
        a[:, 6, 7] = np.nan
        return a
    info = np.iinfo(dtype)
    a = rng.integers(info.min, info.max, (37, 29, 11), dtype=dtype, endpoint=True)
    a.flat[rng.integers(0, a.size, 40)] = info.min
    a.flat[rng.integers(0, a.size, 40)] = info.max
    return a


def _same(op: str, got: Arr, base: Arr, what: str, x: Arr, axes: Sequence[int]) -> None:
    if op in EXACT:
        assert got.dtype == base.dtype and got.tobytes() == base.tobytes(), f"{what}: {op}"
    elif op == "product":  # an overflowing product depends on the order (0 * inf)
        ok = scales(x, axes)["prod_ok"]
        close_within(np.where(ok, got, 0.0), np.where(ok, base, 0.0), 1e-12, 0.0, f"{what}: {op}")
    else:
        close_within(got, base, 1e-12, 1e-300, f"{what}: {op}")


def _fold_grid(path: Path, **kw: Any) -> dict[tuple[str, tuple[int, ...]], Arr]:
    out = {}
    for axes in INVARIANCE_AXES:
        got = _fold_all(path, INVARIANCE_SEL, axes, fill=0.25, **kw)
        out.update({(op, tuple(axes)): v for op, v in got.items()})
    return out


@pytest.mark.parametrize("dtype", ["f4", "f8", "i8", "u8", "f2"])
def test_results_do_not_depend_on_chunking_or_sequential(dtype: str, tmp_path: Path) -> None:
    a = _invariance_array(dtype)
    x = a[_sel_slices(INVARIANCE_SEL, a.shape)].astype(np.float64)
    base: dict[tuple[str, tuple[int, ...]], Arr] = {}
    for chunk in INVARIANCE_CHUNKS:
        path = tet.write_dataset(tmp_path / "c.tet", "a", a, chunk_shape=chunk, codec="zstd")
        for sequential in (False, True):
            got = _fold_grid(path, sequential=sequential)
            for (op, axes), v in got.items():
                if (op, axes) not in base:
                    base[(op, axes)] = v
                    assert_matches_numpy(op, v, x, axes, 0.25, f"chunk={chunk}")
                _same(op, v, base[(op, axes)], f"chunk={chunk} sequential={sequential} {axes}",
                      x, axes)


def test_results_do_not_depend_on_thread_count_or_simd(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    a = _invariance_array("f4")
    path = tet.write_dataset(tmp_path / "t.tet", "a", a, chunk_shape=(4, 5, 3))
    monkeypatch.delenv("TET_THREADS", raising=False)
    base = _fold_grid(path)
    variants: list[tuple[str, dict[tuple[str, tuple[int, ...]], Arr]]] = []
    for threads in ("1", "3", "16"):
        monkeypatch.setenv("TET_THREADS", threads)
        variants.append((f"TET_THREADS={threads}", _fold_grid(path)))
    monkeypatch.delenv("TET_THREADS")
    for what, got in variants:  # a fixed cut into parts: bit-equal, sums included
        for key, v in got.items():
            assert v.tobytes() == base[key].tobytes(), f"{what}: {key}"
    # SIMD bodies add in other lanes: exact where no rounding happens, 1e-12 for sums
    rounded = {"sum", "mean", "var", "std", "nan_mean", "nan_std", "norm_l1", "norm_l2"}
    for level in tet.simd.simd_levels():
        with tet.simd.using_simd(level):
            got = _fold_grid(path)
        for key, v in got.items():
            if key[0] in rounded:
                np.testing.assert_allclose(v, base[key], rtol=1e-12, atol=0, equal_nan=True,
                                           err_msg=f"simd={level}: {key}")
            else:
                assert v.tobytes() == base[key].tobytes(), f"simd={level}: {key}"


_SUBPROCESS = """
import sys, numpy as np, tet
from tet.query.folds import FOLDS, fold
f = tet.open(sys.argv[1])
did, box = f.resolve("a", None)
t = f.reader.table(did)
np.savez(sys.argv[2], **{f"{op}|{ax}": fold(t, box, op, [] if ax < 0 else [ax])
                         for op in FOLDS for ax in (-1, 0, 1)})
"""


def test_tet_threads_1_in_a_subprocess_matches_default(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    a = rng.standard_normal((300, 700)) * 1e3
    a[rng.integers(0, 300, 5), rng.integers(0, 700, 5)] = np.nan
    path = tet.write_dataset(tmp_path / "s.tet", "a", a, chunk_shape=(32, 64))
    env = {k: v for k, v in os.environ.items() if k != "TET_THREADS"}
    for threads, out in ((None, "default.npz"), ("1", "one.npz")):
        e = env if threads is None else {**env, "TET_THREADS": threads}
        subprocess.run([sys.executable, "-c", _SUBPROCESS, str(path), str(tmp_path / out)],
                       check=True, env=e, cwd=REPO, timeout=60)
    with np.load(tmp_path / "default.npz") as d, np.load(tmp_path / "one.npz") as o:
        assert sorted(d.files) == sorted(o.files)
        for key in d.files:
            assert d[key].tobytes() == o[key].tobytes(), key
    # and the in-process default (this process's thread count) agrees bit for bit
    with tet.open(path) as f, np.load(tmp_path / "one.npz") as o:
        did, box = f.resolve("a", None)
        t = f.reader.table(did)
        for key in o.files:
            op, ax = key.split("|")
            got = fold(t, box, op, [] if ax == "-1" else [int(ax)])
            assert got.tobytes() == o[key].tobytes(), key
            assert_matches_numpy(op, got, a, [] if ax == "-1" else [int(ax)])


# ---------------------------------------------------------------------------
# 3. accuracy on 10^8 values

BIG_N = 10**8


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, float, float]]:
    rng = np.random.default_rng(2024)
    a = np.empty(BIG_N, dtype=np.float32)
    step = 10**7
    for i in range(0, BIG_N, step):  # 1e6 + U(-1, 1) rounded to f32 (spacing 1/16)
        a[i:i + step] = 1e6 + rng.uniform(-1.0, 1.0, step)
    want_mean = float(np.mean(a, dtype=np.float64))
    x = a.astype(np.float64)
    want_var = float(np.var(x))
    del x
    path = tet.write_dataset(tmp_path_factory.mktemp("big") / "big.tet", "a", a,
                             chunk_shape=(2**22,))
    del a
    yield path, want_mean, want_var
    path.unlink()


def test_mean_and_var_of_1e8_float32_near_1e6(big_file: tuple[Path, float, float]) -> None:
    path, want_mean, want_var = big_file
    got = _fold_all(path, None, [], ["mean", "var", "sum", "std"])
    assert abs(float(got["mean"]) - want_mean) <= 1e-12 * abs(want_mean)
    assert abs(float(got["sum"]) - want_mean * BIG_N) <= 1e-12 * abs(want_mean * BIG_N)
    assert abs(float(got["var"]) - want_var) <= 1e-9 * want_var
    assert abs(float(got["std"]) - math.sqrt(want_var)) <= 1e-9 * math.sqrt(want_var)
    seq = _fold_all(path, None, [], ["mean", "var"], sequential=True)
    assert abs(float(seq["mean"]) - want_mean) <= 1e-12 * abs(want_mean)
    assert abs(float(seq["var"]) - want_var) <= 1e-9 * want_var


# ---------------------------------------------------------------------------
# 4. edge cases through files


@pytest.mark.parametrize("dtype", ["f4", "f8", "f2"])
@pytest.mark.parametrize("n", LENGTHS)
def test_nan_at_chunk_and_selection_edges(n: int, dtype: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(n)
    base = (rng.standard_normal(n) * 10).astype(dtype)
    chunk = 4 if n < 1023 else 256
    sel = [{"start": 1, "stop": n - 1, "step": 1}] if n >= 3 else None
    lo, hi = (1, n - 2) if n >= 3 else (0, n - 1)
    places = {0, n - 1, n // 2, lo, hi, (lo + hi) // 2}
    places |= {p for c in range(0, n, chunk) for p in (c, min(c + chunk, n) - 1)}
    for p in sorted(places)[:24]:
        a = base.copy()
        a[p] = np.nan
        check_array(tmp_path, a, (chunk,), None)
        check_array(tmp_path, a, (chunk,), sel)
    a = base.copy()
    a[[0, n - 1]] = np.nan  # first and last together: the first NaN wins
    check_array(tmp_path, a, (chunk,), None)


def test_all_nan_cells(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for dtype in ("f4", "f8"):
        a = rng.standard_normal((6, 9)).astype(dtype)
        a[1, :] = np.nan
        a[:, 4] = np.nan
        for chunk in [(6, 9), (2, 2), (1, 4)]:
            check_array(tmp_path, a, chunk, None, [[], [0], [1]], fills=(0.0, math.nan))
            got = _fold_all(tmp_path / "a.tet", None, [1])
            assert math.isnan(got["nan_mean"][1]) and math.isnan(got["nan_std"][1])
            assert got["arg_min"][1] == 0 and got["arg_max"][1] == 0
            assert math.isnan(got["min"][1]) and got["nan_count"][1] == 9
            got = _fold_all(tmp_path / "a.tet", None, [0])
            assert got["arg_min"][4] == 0 and math.isnan(got["nan_mean"][4])
        allnan = np.full((5, 7), np.nan, dtype=dtype)
        check_array(tmp_path, allnan, (2, 3), None, [[], [0], [1]], fills=(math.nan,))
        assert _fold_all(tmp_path / "a.tet", None, [])["arg_max"] == 0


@pytest.mark.parametrize("dtype", ["f4", "f8", "i4", "u2"])
def test_ties_across_chunk_boundaries_first_occurrence_wins(dtype: str, tmp_path: Path) -> None:
    a = np.full(4096, 7, dtype=dtype)
    a[np.arange(4096) % 3 == 0] = 5
    for i in (100, 1000, 1001, 3000, 4095):  # ties in different tiles and parallel parts
        a[i] = 1
    for i in (517, 2048, 2049, 4000):
        a[i] = 9
    for chunk in [(16,), (4,), (1,), (1000,), (4096,)]:
        path = tet.write_dataset(tmp_path / "t.tet", "a", a, chunk_shape=chunk)
        for sequential in (False, True):
            got = _fold_all(path, None, [], ["arg_min", "arg_max", "min", "max"],
                            sequential=sequential)
            assert (got["arg_min"], got["arg_max"]) == (100, 517)
            got = _fold_all(path, [{"start": 101, "stop": 4096, "step": 1}], [],
                            ["arg_min", "arg_max"], sequential=sequential)
            assert (got["arg_min"], got["arg_max"]) == (1000 - 101, 517 - 101)
    b = a.reshape(64, 64)  # partial: ties along a reduced axis that crosses tiles
    for chunk in [(3, 5), (64, 1), (1, 64), (7, 64)]:
        check_array(tmp_path, b, chunk, None, [[0], [1]], ops=["arg_min", "arg_max"])
    c = a.reshape(16, 16, 16)
    for chunk in [(3, 5, 2), (16, 1, 16), (1, 16, 7)]:
        check_array(tmp_path, c, chunk, None, [[0, 2], [0, 1], [1, 2], [1]],
                    ops=["arg_min", "arg_max", "min", "max"])


def test_infinities_only(tmp_path: Path) -> None:
    vectors = [[np.inf] * 5, [-np.inf] * 3, [np.inf, -np.inf, np.inf], [-np.inf, np.inf],
               [np.inf], [np.inf, 1.0, -np.inf, np.nan], [1.0, np.inf, 2.0]]
    for v in vectors:
        for dtype in ("f2", "f4", "f8"):
            a = np.array(v, dtype=dtype)
            for chunk in [(len(v),), (1,), (2,)]:
                check_array(tmp_path, a, chunk, None, fills=(0.0, math.inf, -math.inf))
            m = np.array([v, v[::-1]], dtype=dtype)
            check_array(tmp_path, m, (1, 2), None, [[], [0], [1]])


def test_null_count_tells_negative_zero_from_zero(tmp_path: Path) -> None:
    v = [0.0, -0.0, 0.0, 1.0, -0.0, np.nan, -0.0]
    for dtype in ("f2", "f4", "f8"):
        a = np.array(v, dtype=dtype)
        for chunk in [(7,), (2,), (1,)]:
            tet.write_dataset(tmp_path / "z.tet", "a", a, chunk_shape=chunk)
            for fill, want in ((0.0, 2.0), (-0.0, 3.0), (math.nan, 1.0), (1.0, 1.0)):
                got = _fold_all(tmp_path / "z.tet", None, [], ["null_count"], fill=fill)
                assert float(got["null_count"]) == want, (dtype, chunk, fill)
        check_array(tmp_path, a.reshape(7, 1), (3, 1), None, [[], [0], [1]],
                    fills=(0.0, -0.0, math.nan))
    ints = np.array([0, 3, 0, -1, 0], dtype="i4")
    tet.write_dataset(tmp_path / "z.tet", "a", ints, chunk_shape=(2,))
    assert float(_fold_all(tmp_path / "z.tet", None, [], ["null_count"])["null_count"]) == 3
    got = _fold_all(tmp_path / "z.tet", None, [], ["null_count"], fill=-0.0)
    assert float(got["null_count"]) == 0  # integer zero promotes to +0.0


def test_float16_subnormals(tmp_path: Path) -> None:
    tiny = np.float16(2.0**-24)
    v = np.array([tiny, -tiny, tiny * 3, np.float16(2.0**-15), np.float16(6.1e-5), 0.0, -0.0,
                  np.float16(65504), np.float16(-65504), tiny * 1023], dtype="f2")
    assert np.sum(np.abs(v.astype(np.float64)) < 2.0**-14) >= 6
    for chunk in [(10,), (3,), (1,)]:
        check_array(tmp_path, v, chunk, None, fills=(float(tiny), 0.0, -0.0))
        got = _fold_all(tmp_path / "a.tet", None, [], ["min", "max", "arg_min"])
        assert float(got["min"]) == -65504.0 and float(got["max"]) == 65504.0
    sub = np.array([tiny, tiny * 2, -tiny * 5, tiny], dtype="f2")
    check_array(tmp_path, sub, (2,), None, fills=(float(tiny),))
    got = _fold_all(tmp_path / "a.tet", None, [], ["sum", "min", "arg_min", "null_count"],
                    fill=float(tiny))
    assert float(got["sum"]) == -(2.0**-24)
    assert float(got["min"]) == -5 * 2.0**-24 and got["arg_min"] == 2
    assert float(got["null_count"]) == 2
    m = np.frombuffer(np.arange(0, 2048, dtype="<u2").tobytes(), dtype="f2").reshape(32, 64)
    check_array(tmp_path, m, (5, 16), None, [[], [0], [1]])  # every subnormal and small normal


def test_int64_near_2_pow_62(tmp_path: Path) -> None:
    rng = np.random.default_rng(62)
    a = (2**62 + rng.integers(-5000, 5000, 3000)).astype(np.int64)
    a[::7] = -(2**62) - rng.integers(0, 5000, a[::7].size)
    a[5] = np.iinfo(np.int64).max
    a[9] = np.iinfo(np.int64).min
    for chunk in [(3000,), (1024,), (7,)]:
        check_array(tmp_path, a, chunk, None)
        check_array(tmp_path, a.reshape(30, 100), (7, 33), None, [[], [0], [1]])
    x = a.astype(np.float64)
    got = _fold_all(tmp_path / "a.tet", None, [], ["sum", "max", "arg_max"])
    assert float(got["max"]) == float(np.float64(a.max()))
    assert got["arg_max"] == np.argmax(x)  # ties after the float64 conversion: the first
    # values a float64 cannot tell apart are ties
    b = np.array([2**62 + 1, 2**62 + 2, 2**62 + 3, 2**62], dtype=np.int64)
    tet.write_dataset(tmp_path / "b.tet", "a", b, chunk_shape=(2,))
    got = _fold_all(tmp_path / "b.tet", None, [], ["arg_max", "arg_min", "sum", "var"])
    assert (got["arg_max"], got["arg_min"]) == (0, 0)
    assert float(got["sum"]) == 4 * 2.0**62 and float(got["var"]) == 0.0


def test_uint64_above_2_pow_63(tmp_path: Path) -> None:
    rng = np.random.default_rng(63)
    a = rng.integers(2**63, 2**64 - 1, 2000, dtype=np.uint64, endpoint=True)
    a[[3, 1500]] = 2**64 - 1
    a[[7, 700]] = 2**63
    a[11] = 0
    a[12] = 2**63 - 1
    for chunk in [(2000,), (64,), (3,)]:
        check_array(tmp_path, a, chunk, None)
        check_array(tmp_path, a.reshape(40, 50), (6, 7), None, [[], [0], [1]])
    got = _fold_all(tmp_path / "a.tet", None, [], ["min", "max", "arg_min", "mean"])
    assert float(got["max"]) == 2.0**64 and float(got["min"]) == 0.0 and got["arg_min"] == 11
    assert float(got["mean"]) > 2.0**63  # a signed reading would give a negative mean


@pytest.mark.parametrize("n", LENGTHS)
def test_lengths_around_the_fold_block(n: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(1000 + n)
    for dtype in ("f4", "f8", "i2"):
        a = (rng.standard_normal(n) * 100 + 3).astype(dtype)
        for chunk in {(n,), (1024,), (7,), (n + 1,)}:
            check_array(tmp_path, a, chunk, None)
            if n >= 3:
                check_array(tmp_path, a, chunk, [{"start": 1, "stop": n, "step": 2}])
    # a reduced innermost axis (block path), a kept one (row groups / lanes), > 1024 rows
    for shape in [(n, 3), (3, n)]:
        m = rng.standard_normal(shape) * 1e3 + 1e5
        m.flat[rng.integers(0, m.size)] = np.nan if n % 2 else m.flat[0]
        for chunk in {shape, (max(1, shape[0] // 2), shape[1]), (shape[0], 1024)}:
            check_array(tmp_path, m, chunk, None, [[], [0], [1]])


def test_many_cells_fold_in_one_part(tmp_path: Path) -> None:
    n = 45_000  # cells * accumulator size * FOLD_PARTS > FOLD_PART_BYTES: one ordered part
    assert tet.kernels.fold_parts(n) == 1 and tet.kernels.fold_parts(3) > 1
    rng = np.random.default_rng(45)
    a = rng.standard_normal((3, n)) * 10 + 1e4
    a[1, 7] = np.nan
    a[2, 40_000] = np.inf
    for chunk in [(3, 1000), (2, 4500), (3, 1025)]:
        check_array(tmp_path, a, chunk, None, [[0], [1]])
        check_array(tmp_path, np.ascontiguousarray(a.T), chunk[::-1], None, [[0], [1]])
        seq = _fold_all(tmp_path / "a.tet", None, [1], sequential=True)
        par = _fold_all(tmp_path / "a.tet", None, [1])
        assert all(seq[op].tobytes() == par[op].tobytes() for op in OPS)


# ---------------------------------------------------------------------------
# 5. fold_vector


def vector_fold(x: Arr, op: str, fill: float = 0.0) -> Arr:
    what, finish = FOLDS[op]
    acc = fold_vector(np.asarray(x, dtype=np.float64), what, fill)
    return np.asarray(finish(acc)).reshape(())


def _edge_vectors() -> Iterator[tuple[str, Arr]]:
    rng = np.random.default_rng(5)
    for n in LENGTHS:
        base = rng.standard_normal(n) * 10
        yield f"plain{n}", base
        for p in sorted({0, n // 2, n - 1, min(n - 1, 1023), min(n - 1, 1024)}):
            v = base.copy()
            v[p] = np.nan
            yield f"nan@{p}of{n}", v
        yield f"allnan{n}", np.full(n, np.nan)
        yield f"inf{n}", np.full(n, np.inf)
        yield f"mixed_inf{n}", np.where(np.arange(n) % 2 == 0, np.inf, -np.inf)
        t = np.where(np.arange(n) % 5 == 0, -3.0, 2.0)
        if n > 1:
            t[-1] = -3.0
        yield f"ties{n}", t
        yield f"zeros{n}", np.where(np.arange(n) % 3 == 0, -0.0, 0.0)
        yield f"big_int64_{n}", (2**62 + rng.integers(-9999, 9999, n)).astype(np.float64)
        yield f"uint64_{n}", rng.integers(2**63, 2**64 - 1, n, dtype=np.uint64).astype(np.float64)
        yield f"far{n}", 1e6 + rng.uniform(-1, 1, n).astype(np.float32).astype(np.float64)
    yield "f16_subnormals", np.arange(0, 1024, dtype="<u2").view("f2").astype(np.float64)
    yield "tie_over_block", np.where(np.arange(2100) % 1024 == 1000, -1.0, 0.0)


@pytest.mark.parametrize(("name", "x"), [pytest.param(n, x, id=n) for n, x in _edge_vectors()])
def test_fold_vector_edges(name: str, x: Arr) -> None:
    fills = [0.0, -0.0, math.nan, float(x[len(x) // 2])]
    for op in OPS:
        for fill in fills if op == "null_count" else fills[:1]:
            assert_matches_numpy(op, vector_fold(x, op, fill), x, [], fill, name)


def test_fold_vector_bits() -> None:
    bits = [tet.kernels.FOLD_MOMENTS, tet.kernels.FOLD_NAN_MOMENTS, tet.kernels.FOLD_NORMS,
            tet.kernels.FOLD_PRODUCT, tet.kernels.FOLD_MINMAX, tet.kernels.FOLD_COUNTS,
            tet.kernels.FOLD_SUM]
    assert len(set(bits)) == 7 and all(b and b & (b - 1) == 0 for b in bits)
    x = np.array([3.0, np.nan, -1.0, np.inf, 0.0])
    acc = fold_vector(x, sum(bits), -1.0)
    assert acc["n"][0] == 5 and acc["nan_count"][0] == 1 and acc["inf_count"][0] == 1
    assert acc["null_count"][0] == 1 and acc["first_nan"][0] == 1 and acc["argmin"][0] == 2
    assert acc["nn"][0] == 4


# ---------------------------------------------------------------------------
# 6. the interop corpus

RESPONSE_KEY = {"count": "element_count", "arg_min": "argmin_index", "arg_max": "argmax_index"}
REDUCED_KEY = {"arg_min": "argmin", "arg_max": "argmax"}
FILL_ATTRS = ("_FillValue", "missing_value", "fill_value")


def _interop_cases() -> list[dict[str, Any]]:
    path = INTEROP / "cases.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        case = json.loads(line)
        ops = [k for k in case["query"] if k not in ("dataset", "selection")]
        if case["kind"] == "op" and len(ops) == 1 and ops[0] in FOLDS:
            out.append(case)
    return out


INTEROP_CASES = _interop_cases()


def _same_value(got: Any, want: Any, rtol: float, atol: float) -> bool:
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(
            _same_value(g, w, rtol, atol) for g, w in zip(got, want))
    if isinstance(want, bool):
        return isinstance(got, bool) and got == want
    if isinstance(want, float) and math.isnan(want):
        return isinstance(got, float) and math.isnan(got)
    if isinstance(want, float) and math.isinf(want):
        return got == want
    return bool(abs(got - want) <= atol + rtol * abs(want))


@pytest.fixture(scope="module")
def interop_files() -> Iterator[dict[str, tet.TetFile]]:
    files: dict[str, tet.TetFile] = {}
    yield files
    for f in files.values():
        f.close()


def _axis_tokens(spec: Any) -> list[Any]:
    if isinstance(spec, dict):
        spec = spec.get("axes", spec.get("axis", []))
    return spec if isinstance(spec, list) else [spec]


def _fill(spec: Any, attrs: Any) -> float:
    if isinstance(spec, dict) and spec.get("fill") is not None:
        return float(spec["fill"])
    for name in FILL_ATTRS:
        if name in attrs:
            text = str(attrs[name]).strip()
            return math.nan if text.lower() == "nan" else float(text)
    raise AssertionError("null_count case without a fill")


@pytest.mark.skipif(not INTEROP_CASES, reason="shared interop corpus not present")
@pytest.mark.parametrize("case", INTEROP_CASES, ids=lambda c: c["id"])
def test_interop_case(case: dict[str, Any], interop_files: dict[str, tet.TetFile]) -> None:
    f = interop_files.get(case["file"])
    if f is None:
        f = interop_files[case["file"]] = tet.open(INTEROP / case["file"])
    q = case["query"]
    (op,) = [k for k in q if k not in ("dataset", "selection")]
    ds = f[q["dataset"]]
    axes = sorted(ds.axis_index(int(t) if isinstance(t, str) and t.isdigit() else t)
                  for t in _axis_tokens(q[op]))
    fill = _fill(q[op], ds.attrs) if op == "null_count" else 0.0
    did, box = f.resolve(q["dataset"], q.get("selection"))
    got = fold(f.reader.table(did), box, op, axes, fill=fill)
    if axes:
        response = {"operation_reduced_shape": list(got.shape),
                    f"operation_reduced_{REDUCED_KEY.get(op, op)}": got.ravel().tolist()}
    else:
        response = {f"operation_{RESPONSE_KEY.get(op, op)}": got.item()}
    exact = set(case.get("exact_keys", []))
    for key, want in case["expect"].items():
        assert key in response, f"{case['id']}: no {key} in {sorted(response)}"
        rtol, atol = (0.0, 0.0) if key in exact else (case["rtol"], case["atol"])
        assert _same_value(response[key], decode_special(want), rtol, atol), (
            f"{case['id']} {q}: {key} got {response[key]} want {want}")


def test_interop_corpus_covers_every_tier_ab_op() -> None:
    if not INTEROP_CASES:
        pytest.skip("shared interop corpus not present")
    seen = {next(k for k in c["query"] if k not in ("dataset", "selection"))
            for c in INTEROP_CASES}
    assert seen == set(FOLDS)
