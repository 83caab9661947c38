"""Scalar median / quantile by the streaming radix selection (csrc/select.c,
tet/kernels_select.py) against `np.quantile(x.astype(np.float64), q)` / `np.median`.

Matrix (hypothesis): every dtype of tet/dtypes.py (u64 / i64 over their whole range, so
the float64 promotion rounds), NaN anywhere, ±inf, ±0.0, ties and all-equal arrays,
n = 1 and 2, chunkings, codecs, selections with steps, `q` on a grid and drawn; the
candidate threshold forced down so the 16-bit refinement passes run to the last key;
fill masks; a remote median over the `s3` fixture run in several windows.  Results are
bit-equal (a signed zero among equal zeros aside: NumPy's partition picks either).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tet
from tet import kernels_select
from tet.dtypes import DTYPES

Arr = np.ndarray[Any, Any]
Q_GRID = [0.0, 1e-9, 0.25, 0.5, math.nextafter(0.5, 0.0), math.nextafter(0.5, 1.0), 0.75, 1.0]
FLOAT_SPECIALS = [0.0, -0.0, math.inf, -math.inf, 1.0, -1.0, 1e-300, -5e-324, 65504.0]


def same(g: float, want: float) -> bool:
    """Bit-equal, NaN equal to NaN, +0.0 equal to -0.0."""
    if math.isnan(want):
        return math.isnan(g)
    return g == want and (want != 0 or g == 0)


@st.composite
def arrays(draw: st.DrawFn, dtype: np.dtype[Any]) -> Arr:
    n = draw(st.integers(1, 48))
    if dtype.kind == "f":
        width = 8 * dtype.itemsize
        elem = st.floats(width=width, allow_nan=False) | st.sampled_from(FLOAT_SPECIALS)
    else:
        info = np.iinfo(dtype)
        elem = st.integers(int(info.min), int(info.max)) | st.sampled_from(
            [int(info.min), int(info.max), 0, int(info.max) - 1])
    if draw(st.booleans()):  # ties: a few distinct values repeated
        pool = draw(st.lists(elem, min_size=1, max_size=3))
        elem = st.sampled_from(pool)
    with np.errstate(over="ignore"):
        a = np.array(draw(st.lists(elem, min_size=n, max_size=n)), dtype=dtype)
    if dtype.kind == "f" and draw(st.integers(0, 5)) == 0:
        a[draw(st.integers(0, n - 1))] = np.nan
    return a


@st.composite
def cases(draw: st.DrawFn) -> tuple[Arr, tuple[int, int], str, list[dict[str, int]],
                                    tuple[slice, slice]]:
    dt = draw(st.sampled_from(DTYPES)).numpy
    a = draw(arrays(dt))
    rows = draw(st.sampled_from([d for d in range(1, a.size + 1) if a.size % d == 0]))
    a = a.reshape(rows, a.size // rows)
    chunk = (draw(st.integers(1, a.shape[0])), draw(st.integers(1, a.shape[1])))
    wire: list[dict[str, int]] = []
    keys: list[slice] = []
    for n in a.shape:
        start = draw(st.integers(0, n - 1))
        stop = draw(st.integers(start + 1, n))
        step = draw(st.integers(1, 3))
        wire.append({"start": start, "stop": stop, "step": step})
        keys.append(slice(start, stop, step))
    return a, chunk, draw(st.sampled_from(["raw", "zstd"])), wire, (keys[0], keys[1])


def want_quantile(x: Arr, q: float) -> float:
    with np.errstate(invalid="ignore", over="ignore"):
        return float(np.quantile(x.astype(np.float64), q))


def want_median(x: Arr) -> float:
    with np.errstate(invalid="ignore", over="ignore"):
        return float(np.median(x.astype(np.float64)))


def answers(path: Path, wire: list[dict[str, int]], qs: list[float],
            mask_fill: bool = False) -> tuple[float, list[float]]:
    """The median and the quantiles through the API (JSON would write ±inf as null)."""
    with tet.open(path) as f:
        doc = {"dataset": "a", "median": [], "selection": wire,
               "execution": {"mask_fill": mask_fill}}
        assert f.query(doc)["execution"]["memory_strategy"] == "streaming_select"
        median = f.median("a", selection=wire, mask_fill=mask_fill)
        got = [f.quantile("a", q, selection=wire, mask_fill=mask_fill) for q in qs]
    return median, got


@pytest.mark.parametrize("collect_max", [kernels_select.COLLECT_MAX, 0, 3])
@given(case=cases(), drawn=st.floats(0.0, 1.0))
def test_bit_equal_to_numpy(case: Any, drawn: float, collect_max: int) -> None:
    a, chunk, codec, wire, key = case
    x = a[key]
    qs = [*Q_GRID, drawn]
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        mp.setattr(kernels_select, "COLLECT_MAX", collect_max)
        path = tet.write_dataset(Path(tmp) / "s.tet", "a", a, chunk_shape=chunk, codec=codec)
        median, got = answers(path, wire, qs)
    assert same(median, want_median(x)), (x, median)
    for q, g in zip(qs, got):
        assert same(g, want_quantile(x, q)), (x, q, g)


@pytest.mark.parametrize("dtype", [d.numpy for d in DTYPES])
@pytest.mark.parametrize("values", [[7], [3, 9], [5, 5, 5, 5, 5], [0, 0, 1, 1, 1, 0]])
def test_tiny_and_all_equal(dtype: np.dtype[Any], values: list[int], tmp_path: Path) -> None:
    a = np.array(values, dtype=dtype)
    path = tet.write_dataset(tmp_path / "t.tet", "a", a, chunk_shape=(2,), codec="raw")
    median, got = answers(path, [{}], Q_GRID)
    assert same(median, want_median(a))
    assert all(same(g, want_quantile(a, q)) for q, g in zip(Q_GRID, got))


@pytest.mark.parametrize("values,median", [
    ([1.0, math.nan], math.nan), ([math.inf, -math.inf], math.nan),
    ([math.inf, math.inf, 1.0], math.inf), ([-0.0, 0.0], 0.0), ([1e308, 1.5e308], math.inf)])
def test_specials(values: list[float], median: float, tmp_path: Path) -> None:
    a = np.array(values, dtype=np.float64)
    path = tet.write_dataset(tmp_path / "s.tet", "a", a, chunk_shape=(1,), codec="raw")
    got, qs = answers(path, [{}], Q_GRID)
    assert same(got, median) and same(got, want_median(a))
    assert all(same(g, want_quantile(a, q)) for q, g in zip(Q_GRID, qs))


def test_u64_promotion_rounds_like_numpy(tmp_path: Path) -> None:
    top = np.iinfo(np.uint64).max
    a = np.array([top, top - 1, top - 1024, 2**53 + 1, 2**53 + 3], dtype=np.uint64)
    path = tet.write_dataset(tmp_path / "u.tet", "a", a, chunk_shape=(2,), codec="zstd")
    median, got = answers(path, [{}], Q_GRID)
    assert median == want_median(a) == float(np.float64(top - 1024))  # 2**64 - 2048
    assert all(same(g, want_quantile(a, q)) for q, g in zip(Q_GRID, got))


@given(values=st.lists(st.sampled_from([1.5, -2.0, 7.0, -9999.0, 0.0]), min_size=1,
                       max_size=40), step=st.integers(1, 3))
def test_fill_mask_reads_fills_as_nan(values: list[float], step: int) -> None:
    a = np.array(values, dtype=np.float32)
    x = a[::step].astype(np.float64)
    x[x == -9999.0] = np.nan
    with tempfile.TemporaryDirectory() as tmp:
        path = tet.write_dataset(Path(tmp) / "m.tet", "a", a, chunk_shape=(4,), codec="zstd",
                                 attrs={"_FillValue": "-9999"})
        median, got = answers(path, [{"step": step}], Q_GRID, mask_fill=True)
    assert same(median, want_median(x))
    assert all(same(g, want_quantile(x, q)) for q, g in zip(Q_GRID, got))


def test_many_passes_over_a_large_tie(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Values sharing their top 48 bits: every refinement pass runs down to the last key."""
    monkeypatch.setattr(kernels_select, "COLLECT_MAX", 0)
    rng = np.random.default_rng(3)
    a = (1.0 + rng.integers(0, 1 << 12, size=(300, 70)) * 2.0**-52).astype(np.float64)
    path = tet.write_dataset(tmp_path / "p.tet", "a", a, chunk_shape=(64, 32), codec="zstd")
    with tet.open(path) as f:
        table = f.reader.table(0)
        got, passes = kernels_select.order_statistics(table, (0, 0), a.shape, (1, 1),
                                                      [0, a.size // 2, a.size - 1])
    assert passes == 4
    assert got == np.sort(a, axis=None)[[0, a.size // 2, a.size - 1]].tolist()


@pytest.mark.parametrize("dtype", ["f4", "f8"])
def test_large_candidate_sets_through_every_body(tmp_path: Path, dtype: str) -> None:
    """A bucket of a quarter million candidates (copied out a stash at a time by both
    workers) and NaN-free noise, keyed by the scalar and the SIMD bodies alike."""
    rng = np.random.default_rng(8)
    a = np.concatenate([rng.standard_normal(200_000), 1.0 + rng.random(250_000) * 2.0**-8,
                        rng.integers(-3, 4, 50_000)]).astype(dtype).reshape(500, 1000)
    path = tet.write_dataset(tmp_path / "c.tet", "a", a, chunk_shape=(100, 256))
    x = a.astype(np.float64)
    qs = [0.0, 0.3, 0.5, 0.6, 0.75, 0.99, 1.0]
    for level in tet.simd.simd_levels():
        with tet.simd.using_simd(level), tet.open(path) as f:
            got = [f.quantile("a", q) for q in qs]
            assert same(f.median("a"), want_median(x)), level
        assert all(same(g, want_quantile(x, q)) for q, g in zip(qs, got)), (level, got)


def test_ranks_outside_the_selection_are_refused(tmp_path: Path) -> None:
    path = tet.write_dataset(tmp_path / "r.tet", "a", np.arange(6.0), chunk_shape=(4,))
    with tet.open(path) as f, pytest.raises(ValueError, match=r"ranks \[6\] outside a "
                                                              r"selection of 6 values"):
        kernels_select.order_statistics(f.reader.table(0), (0,), (6,), (1,), [6])


def test_a_tiny_budget_still_streams_and_writes_nothing(tmp_path: Path,
                                                         private_cache: Path) -> None:
    """The passes hold buckets and candidates only (within the budget's work floor): a
    selection far over the budget is answered with no copy and no temp file."""
    a = np.random.default_rng(5).standard_normal(20_000)
    path = tet.write_dataset(tmp_path / "b.tet", "a", a, chunk_shape=(1000,), codec="zstd")
    with tet.open(path) as f:
        ex = f.query({"dataset": "a", "median": [],
                      "execution": {"memory_budget_bytes": 1}})["execution"]
    assert ex["memory_strategy"] == "streaming_select"
    assert ex["operation_median"] == want_median(a)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [path]


def test_remote_median_in_windows(tmp_path: Path, s3: Any) -> None:
    rng = np.random.default_rng(11)
    a = rng.standard_normal((6 * 64, 6 * 64)).astype(np.float32)
    path = tet.write_dataset(tmp_path / "w.tet", "x", a, chunk_shape=(64, 64), codec="zstd")
    s3.put("tet", "select.tet", path.read_bytes())
    opts = {**s3.options, "tet_window_bytes": 40_000, "tet_gap_bytes": 1,
            "tet_request_bytes": 8192, "tet_head_bytes": 4096}
    with tet.open("s3://tet/select.tet", storage_options=opts) as f:
        table = f.reader.table(0)
        assert int(table.stored.sum()) > 40_000  # the passes cannot run in one window
        ex = f.query({"dataset": "x", "median": [],
                      "selection": [{"start": 3, "step": 2}, {"stop": 301}]})["execution"]
        assert ex["memory_strategy"] == "streaming_select"
        assert ex["operation_median"] == want_median(a[3::2, :301])
        assert f.quantile("x", 0.3) == want_quantile(a, 0.3)
        assert f.reader.source.held == 0
