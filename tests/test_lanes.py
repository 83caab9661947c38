"""Kept-innermost-axis folds (a reduction over axis 0 and the like) and sum-only folds.

Whole rows are added lane-wise into the run of cells they feed (csrc/lanes.c, the f32
extremes body in fold_avx2.c); `sum` and `mean` fold the sum alone (TET_FOLD_SUM).

Matrix
------
shapes
    2-D and 3-D arrays whose kept innermost axis gives runs of 1, 7, 8, 9, 33, 1024 lanes
    (the SIMD width, its remainder, a full tile row) and whose tiles hold 1, 5, 1024 and
    1100 rows of one run (a group flushed mid-tile at TET_GROUP_ROWS); a run over 1024
    lanes (the per-element path); steps on either axis.
values
    f32, f64, i16, u8 and f16: NaN at the first, middle and last row of a column and
    all-NaN columns, +-inf-only columns, ties of the minimum and maximum across rows, tiles
    and parallel parts (the first position wins); fills read as NaN (a mask).
checks
    every tier A/B op equals NumPy (exact for extremes, positions and counts); every SIMD
    body gives the same bits; `sum`/`mean` from the sum-only fold are bit-equal to the
    sums the moment fold gives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tet
from tet import kernels, simd
from tet.query.folds import FOLDS, fold, fold_many

from .helpers import Arr, assert_matches_numpy

OPS = sorted(FOLDS)
LEVELS = simd.simd_levels()


def columns(dtype: str, rows: int, lanes: int, seed: int) -> Arr:
    """Values with the awkward columns: NaN at chosen rows, all-NaN, inf-only, ties."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        a = rng.integers(-4, 5, (rows, lanes)).astype(np.float64)  # many ties
        a[:, 1::3] = rng.standard_normal((rows, len(range(1, lanes, 3)))) * 100
        if lanes > 3:
            a[0, 2] = np.nan
            a[rows // 2, 3 % lanes] = np.nan
            a[rows - 1, lanes - 1] = np.nan
        if lanes > 5:
            a[:, 4] = np.nan
            a[:, 5] = np.where(np.arange(rows) % 2 == 0, np.inf, -np.inf)
        return a.astype(dt)
    info = np.iinfo(dt)
    a = rng.integers(info.min, int(info.max) + 1, (rows, lanes), dtype=dt)
    if lanes > 2:
        a[:, 2] = info.max  # a tie over every row
    return a


def fold_ops(path: Path, axes: list[int], ops: list[str], mask: kernels.FillMask | None = None,
             sel: Any = None) -> dict[str, Arr]:
    with tet.open(path) as f:
        did, box = f.resolve("a", sel)
        table = f.reader.table(did)
        return {op: fold(table, box, op, axes, mask=mask) for op in ops}


CASES = [  # rows, lanes, chunk
    (300, 1, (64, 1)),
    (37, 7, (5, 7)),
    (64, 8, (64, 8)),
    (40, 9, (16, 9)),
    (50, 33, (7, 16)),
    (2100, 24, (1100, 24)),   # 1100 rows of one run per tile: a flush at 1024 rows
    (12, 1024, (12, 1024)),
    (6, 1100, (6, 1100)),     # a run over TET_FOLD_BLOCK: the per-element path
]


@pytest.mark.parametrize("dtype", ["f4", "f8", "i2", "u1", "f2"])
@pytest.mark.parametrize(("rows", "lanes", "chunk"), CASES)
def test_axis0_folds_match_numpy(tmp_path: Path, dtype: str, rows: int, lanes: int,
                                 chunk: tuple[int, int]) -> None:
    a = columns(dtype, rows, lanes, rows * lanes)
    path = tet.write_dataset(tmp_path / "a.tet", "a", a, chunk_shape=chunk)
    x = a.astype(np.float64)
    got = fold_ops(path, [0], OPS)
    for op in OPS:
        assert_matches_numpy(op, got[op], x, [0], 0.0, f"{dtype} {rows}x{lanes} {chunk}")


@pytest.mark.parametrize("dtype", ["f4", "f8", "i2"])
def test_outer_axes_of_3d_and_steps(tmp_path: Path, dtype: str) -> None:
    a = columns(dtype, 6 * 35, 19, 5).reshape(6, 35, 19)
    path = tet.write_dataset(tmp_path / "a.tet", "a", a, chunk_shape=(4, 8, 16))
    sel = [{"start": 1, "step": 2}, {"start": 3, "stop": 34, "step": 3}, {"step": 1}]
    x = a[1::2, 3:34:3, :].astype(np.float64)
    for axes in ([0], [1], [0, 1]):
        got = fold_ops(path, axes, OPS, sel=sel)
        for op in OPS:
            assert_matches_numpy(op, got[op], x, axes, 0.0, f"{dtype} axes={axes}")


@pytest.mark.parametrize("dtype", ["f4", "i2"])
def test_masked_axis0_folds(tmp_path: Path, dtype: str) -> None:
    a = columns(dtype, 90, 40, 3)
    fill = a[7, 9]
    path = tet.write_dataset(tmp_path / "a.tet", "a", a, chunk_shape=(32, 16))
    x = a.astype(np.float64)
    x[a == fill] = np.nan
    mask = kernels.FillMask(a.dtype, [fill])
    got = fold_ops(path, [0], OPS, mask=mask)
    for op in OPS:
        assert_matches_numpy(op, got[op], x, [0], 0.0, f"masked {dtype}")


# lane-wise ops: exact, or each lane's rows added in row order by every body
LANED = [op for op in OPS if op not in ("sum", "mean", "var", "std", "nan_mean", "nan_std",
                                         "product")]


@pytest.mark.parametrize("dtype", ["f4", "f8"])
def test_every_simd_body_gives_the_same_bits(tmp_path: Path, dtype: str) -> None:
    a = columns(dtype, 2100, 41, 11)
    path = tet.write_dataset(tmp_path / "a.tet", "a", a, chunk_shape=(700, 24))
    results = []
    for level in LEVELS:
        with simd.using_simd(level):
            results.append(fold_ops(path, [0], LANED))
    assert "norm_l2" in LANED and "arg_min" in LANED
    for other in results[1:]:
        for op in LANED:
            assert other[op].tobytes() == results[0][op].tobytes(), op


def test_ties_across_tiles_and_parts_keep_the_first_row(tmp_path: Path) -> None:
    a = np.zeros((4000, 16), dtype=np.float32)
    a[[1500, 2500, 3999], 3] = -2.0   # the minimum at three rows of different tiles
    a[[10, 3000], 5] = 7.0
    a[:, 6] = np.nan
    a[[2999, 100], 7] = np.nan
    path = tet.write_dataset(tmp_path / "a.tet", "a", a, chunk_shape=(100, 8))
    got = fold_ops(path, [0], ["arg_min", "arg_max", "min", "max"])
    assert got["arg_min"][3] == 1500 and got["min"][3] == -2.0
    assert got["arg_max"][5] == 10 and got["max"][5] == 7.0
    assert got["arg_min"][6] == 0 and np.isnan(got["min"][6])
    assert got["arg_max"][7] == 100 and np.isnan(got["max"][7])
    assert got["arg_min"][0] == 0 and got["arg_max"][0] == 0  # all equal: the first row


@pytest.mark.parametrize("axes", [[], [0], [1]])
@pytest.mark.parametrize("dtype", ["f4", "f8", "i4"])
def test_sum_alone_is_the_moment_folds_sum(tmp_path: Path, axes: list[int], dtype: str) -> None:
    rng = np.random.default_rng(4)
    a = (rng.standard_normal((300, 1030)) * 1e3 + 1e6).astype(dtype)
    a.flat[::97] = 0
    path = tet.write_dataset(tmp_path / "a.tet", "a", a, chunk_shape=(128, 512))
    with tet.open(path) as f:
        did, box = f.resolve("a", None)
        table = f.reader.table(did)
        alone = fold_many(table, box, ("sum", "mean"), axes)
        with_moments = fold_many(table, box, ("sum", "mean", "var"), axes)
        reduce = sorted(axes) or [0, 1]
        bare = table.fold(box.start, box.stop, box.step, reduce=reduce, what=kernels.FOLD_SUM)
    for op in ("sum", "mean"):
        assert alone[op].tobytes() == with_moments[op].tobytes(), op
    assert np.all(bare["m2"] == 0) and np.all(bare["n"] == 300 * 1030 / bare.size)


@pytest.mark.parametrize("chunk", [(64, 16), (64, 100), (7, 300)])
def test_thread_count_does_not_change_a_bit(tmp_path: Path, chunk: tuple[int, int],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiles that feed disjoint cells are folded a group at a time (16 tile columns), or
    split into parts (3 columns, 1 column): either way every thread count agrees."""
    a = columns("f4", 500, 300, 8)
    path = tet.write_dataset(tmp_path / "a.tet", "a", a, chunk_shape=chunk)
    runs = []
    for threads in ("1", "2", "3", "16"):
        monkeypatch.setenv("TET_THREADS", threads)
        runs.append({axes: fold_ops(path, list(axes), OPS) for axes in ((0,), (1,))})
    for other in runs[1:]:
        for axes, got in other.items():
            for op in OPS:
                assert got[op].tobytes() == runs[0][axes][op].tobytes(), (threads, axes, op)
    x = a.astype(np.float64)
    for op in OPS:
        assert_matches_numpy(op, runs[0][(0,)][op], x, [0], 0.0, f"chunk {chunk}")
