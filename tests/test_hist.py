"""Histogram counts (csrc/hist.c): bin for bin those of `np.histogram` on the float64
values, through every body, however the values sit against the edges.

Matrix
------
values
    noise, a smooth field (long runs in one bin), small integers (every value on an edge),
    the edges themselves and their float64 neighbours, the upper end, -0.0 against a 0.0
    lower end, NaN and +-inf, values outside an explicit range.
ranges and bins
    from the data or explicit, bins 1, 2, 3, 7, 64, 1000 and 4096 (the maximum); ranges far
    from zero and a few units in the last place wide per bin, where the edges are not
    uniform (the cell takes NumPy's rule itself); a range near the float64 limit.
layout
    f32 (its own body), f64, i16, u8 and f16; one cell (sub-histograms per worker) or a
    cell per row (the innermost axis reduced) or per column (kept); steps; a fill mask;
    raw and zstd tiles.
bodies
    every SIMD body gives identical counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tet
from tet import simd
from tet.query.materialize import histogram

Arr = np.ndarray[Any, Any]
LEVELS = simd.simd_levels()


def counts_of(path: Path, bins: int, axes: list[int], rng: tuple[float, float] | None,
              sel: Any = None, mask: Any = None) -> tuple[Arr, Arr]:
    with tet.open(path) as f:
        did, box = f.resolve("a", sel)
        return histogram(f, did, box, bins, axes, rng, mask=mask)


def numpy_counts(x: Arr, bins: int, rng: tuple[float, float] | None) -> Arr:
    v = x.astype(np.float64).ravel()
    v = v[~np.isnan(v)]
    if rng is None:
        finite = v[np.isfinite(v)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        rng = (lo - 0.5, hi + 0.5) if lo == hi else (lo, hi)
    return np.histogram(v, bins, range=rng)[0]


def values(kind: str, n: int, seed: int) -> Arr:
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return rng.standard_normal(n)
    if kind == "smooth":
        return np.sin(np.linspace(0, 6, n)) * 3 + np.linspace(0, 1, n)
    if kind == "integers":
        return rng.integers(-8, 9, n).astype(np.float64)
    raise AssertionError(kind)


def write(tmp: Path, a: Arr, chunk: tuple[int, ...], codec: str = "raw") -> Path:
    return tet.write_dataset(tmp / "a.tet", "a", a, chunk_shape=chunk, codec=codec)


@pytest.mark.parametrize("bins", [1, 2, 3, 7, 64, 1000, 4096])
@pytest.mark.parametrize("kind", ["noise", "smooth", "integers"])
@pytest.mark.parametrize("dtype", ["f4", "f8"])
def test_one_cell_equals_numpy(tmp_path: Path, bins: int, kind: str, dtype: str) -> None:
    a = values(kind, 300 * 70, bins).astype(dtype).reshape(300, 70)
    path = write(tmp_path, a, (64, 32))
    for rng in (None, (-2.0, 2.0), (-8.0, 8.0)):
        counts, _ = counts_of(path, bins, [], rng)
        assert counts.shape == (1, bins)
        assert np.array_equal(counts[0], numpy_counts(a, bins, rng)), (kind, rng)


def test_values_on_and_beside_every_edge(tmp_path: Path) -> None:
    """Edges of a range NumPy's linspace does not hit exactly, each edge and its two
    float64 neighbours as values: each must land where np.histogram puts it."""
    lo, hi, bins = -1.3, 2.9, 37
    edges = np.linspace(lo, hi, bins + 1)
    v = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf),
                        [np.nan, np.inf, -np.inf, hi, lo, 3.0, -2.0]])
    a = np.resize(v, 7 * len(v)).reshape(7, -1)
    path = write(tmp_path, a, (3, 40))
    counts, got_edges = counts_of(path, bins, [], (lo, hi))
    assert np.array_equal(got_edges[0], edges)
    assert np.array_equal(counts[0], numpy_counts(a, bins, (lo, hi)))


def test_negative_zero_against_a_zero_lower_end(tmp_path: Path) -> None:
    a = np.array([[-0.0, 0.0, 0.25, 0.5, 1.0, -0.0, 0.75, 1e-300]])
    path = write(tmp_path, a, (1, 3))
    counts, _ = counts_of(path, 4, [], (0.0, 1.0))
    assert counts[0].tolist() == numpy_counts(a, 4, (0.0, 1.0)).tolist() == [4, 1, 1, 2]


@pytest.mark.parametrize(("lo", "ulps"), [(1e15, 3), (1e15, 40), (-7e12, 2.5), (2.0**52, 1)])
def test_ranges_where_the_edges_are_not_uniform(tmp_path: Path, lo: float, ulps: float) -> None:
    """A few ulps per bin: the edges round away from uniform, the estimate can be off,
    and the counts still equal NumPy's."""
    bins = 16
    hi = lo + ulps * bins * abs(float(np.spacing(lo)))
    rng = np.random.default_rng(1)
    a = lo + (hi - lo) * rng.uniform(-0.1, 1.1, 4000)
    a = np.concatenate([a, np.linspace(lo, hi, bins + 1)]).reshape(1, -1)
    path = write(tmp_path, a, (1, 512))
    edges = np.linspace(lo, hi, bins + 1)
    if not (np.diff(edges) > 0).all():
        pytest.fail("the case must have increasing edges")
    counts, _ = counts_of(path, bins, [], (lo, hi))
    assert np.array_equal(counts[0], numpy_counts(a, bins, (lo, hi)))


def test_a_range_near_the_float64_limit(tmp_path: Path) -> None:
    a = np.array([[-8e307, -1e307, 0.0, 8.4e307, 8.5e307, 3e307, -7.9e307]])
    path = write(tmp_path, a, (1, 5))
    for rng in (None, (-8e307, 8.5e307)):
        counts, _ = counts_of(path, 4, [], rng)
        assert np.array_equal(counts[0], numpy_counts(a, 4, rng))


@pytest.mark.parametrize("dtype", ["f4", "f8", "i2", "u1", "f2"])
@pytest.mark.parametrize("codec", ["raw", "zstd"])
def test_a_cell_per_row_and_per_column(tmp_path: Path, dtype: str, codec: str) -> None:
    rng = np.random.default_rng(5)
    a = (rng.standard_normal((40, 333)) * 30).astype(dtype)
    if a.dtype.kind == "f":
        a[3, ::7] = np.nan
    path = write(tmp_path, a, (16, 100), codec)
    for axes, cells in (([1], [a[i] for i in range(40)]), ([0], [a[:, j] for j in range(333)])):
        counts, _ = counts_of(path, 9, axes, None)
        want = np.stack([numpy_counts(c, 9, None) for c in cells])
        assert np.array_equal(counts, want), (dtype, axes)
    sel = [{"start": 1, "step": 3}, {"start": 2, "stop": 300, "step": 2}]
    counts, _ = counts_of(path, 5, [], (-20.0, 20.0), sel=sel)
    assert np.array_equal(counts[0], numpy_counts(a[1::3, 2:300:2], 5, (-20.0, 20.0)))


def test_fills_are_left_out(tmp_path: Path) -> None:
    from tet.kernels import FillMask

    a = np.arange(-50, 50, dtype=np.float32).reshape(10, 10)
    a[a % 7 == 0] = -9999.0
    path = write(tmp_path, a, (4, 8))
    counts, _ = counts_of(path, 6, [], None, mask=FillMask(a.dtype, [-9999.0]))
    x = a.astype(np.float64)
    x[a == -9999.0] = np.nan
    assert np.array_equal(counts[0], numpy_counts(x, 6, None))


def test_every_body_gives_the_same_counts(tmp_path: Path) -> None:
    a = np.concatenate([values("noise", 30030, 3), values("integers", 30030, 4),
                        np.linspace(-3, 3, 65)]).astype(np.float32).reshape(-1, 65)
    path = write(tmp_path, a, (200, 65))
    results = []
    for level in LEVELS:
        with simd.using_simd(level):
            results.append([counts_of(path, b, axes, r)[0]
                            for b in (3, 64, 4096) for axes in ([], [1])
                            for r in (None, (-3.0, 3.0))])
    for other in results[1:]:
        for x, y in zip(other, results[0], strict=True):
            assert np.array_equal(x, y)
    assert np.array_equal(results[0][1][0], numpy_counts(a, 3, (-3.0, 3.0)))
