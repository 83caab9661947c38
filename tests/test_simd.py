"""Every SIMD body gives the same bytes as the scalar body and as NumPy.

Matrix:

- ``tet.simd.copy_strided(level, src, step)`` for every level of
  ``simd_levels()`` × element size 1, 2, 4, 8 (uint8, uint16, float32 / int32,
  float64 / int64) × lengths 0, 1, w-1, w, w+1 and 8w+3 for w in 4, 8, 16 ×
  steps 1..9 plus large steps; equal to ``src[::step]`` and to the scalar body;
- gathers (``read_numpy`` with strided selections, non-unit innermost step
  included, raw and zstd multi-chunk files, all ten dtypes) under
  ``using_simd(level)`` give identical arrays for every level;
- NaN payloads (signalling, quiet, negative, custom mantissa bits) survive copy
  and gather bit for bit;
- ``TET_SIMD=scalar`` in the environment selects the scalar body at import.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tet
from tet import simd

LEVELS = simd.simd_levels()
DTYPES = ("uint8", "uint16", "int16", "float16", "float32", "int32", "uint32", "float64",
          "int64", "uint64")
COPY_DTYPES = ("uint8", "uint16", "float32", "int32", "float64", "int64")
LENGTHS = sorted({0, 1, *(n for w in (4, 8, 16) for n in (w - 1, w, w + 1, 8 * w + 3))})
STEPS = (*range(1, 10), 31, 64, 1000, 4097)
UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def bits(a: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return np.ascontiguousarray(a).view(UINT[a.dtype.itemsize])


def random_array(dtype: str, n: int, seed: int) -> np.ndarray[Any, Any]:
    """Random bit patterns: every value (NaNs of all payloads included) is fair game."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=n * np.dtype(dtype).itemsize, dtype=np.uint8)
    return raw.view(dtype)


def test_scalar_is_always_available() -> None:
    assert LEVELS[0] == "scalar"
    assert set(LEVELS) <= {"scalar", "avx2", "neon"}
    assert simd.simd_level() in LEVELS


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", COPY_DTYPES)
def test_copy_strided_matches_numpy_and_scalar(level: str, dtype: str) -> None:
    for n in LENGTHS:
        for step in STEPS:
            src = random_array(dtype, n * step + step - 1, seed=n * 7919 + step)
            for length in {n, len(src)}:
                part = src[:length]
                got = simd.copy_strided(level, part, step)
                want = part[::step]
                assert got.dtype == part.dtype
                assert got.shape == want.shape, (level, dtype, length, step)
                assert np.array_equal(bits(got), bits(want)), (level, dtype, length, step)
                scalar = simd.copy_strided("scalar", part, step)
                assert np.array_equal(bits(got), bits(scalar)), (level, dtype, length, step)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", COPY_DTYPES)
def test_copy_strided_large_step(level: str, dtype: str) -> None:
    """Nine or seventeen elements 100003 apart: enough for full SIMD iterations plus a tail."""
    step = 100_003
    for count in (9, 17):
        src = random_array(dtype, (count - 1) * step + 1, seed=count)
        got = simd.copy_strided(level, src, step)
        assert np.array_equal(bits(got), bits(src[::step]))


@pytest.mark.parametrize("level", LEVELS)
def test_copy_strided_preserves_nan_payloads(level: str) -> None:
    f32 = np.array([0x7FC00000, 0x7F800001, 0xFFC00001, 0x7FBFFFFF, 0x7FC12345, 0xFF800001,
                    0x00000001, 0x80000000] * 5, dtype=np.uint32)
    f64 = np.array([0x7FF8000000000000, 0x7FF0000000000001, 0xFFF8000000000001,
                    0x7FF7FFFFFFFFFFFF, 0x7FF800000000BEEF, 0x8000000000000000] * 5,
                   dtype=np.uint64)
    f16 = np.array([0x7E00, 0x7C01, 0xFE01, 0x7DFF, 0x8000] * 5, dtype=np.uint16)
    for pattern, dtype in ((f32, np.float32), (f64, np.float64), (f16, np.float16)):
        src = pattern.view(dtype)
        for step in (1, 2, 3):
            got = simd.copy_strided(level, src, step)
            assert np.array_equal(got.view(pattern.dtype), pattern[::step])


def test_unknown_level_is_refused() -> None:
    with pytest.raises((ValueError, tet.TetError)):
        simd.copy_strided("sse9", np.zeros(4, np.uint8), 1)
    with pytest.raises((ValueError, tet.TetError)), simd.using_simd("sse9"):
        pass


def test_using_simd_restores_the_previous_level() -> None:
    before = simd.simd_level()
    for level in LEVELS:
        with simd.using_simd(level):
            assert simd.simd_level() == level
        assert simd.simd_level() == before
    with pytest.raises(RuntimeError), simd.using_simd("scalar"):
        raise RuntimeError("boom")
    assert simd.simd_level() == before


# ---------------------------------------------------------------------------
# gathers under each body

SELECTIONS: list[tuple[slice, ...]] = [
    (slice(None), slice(None), slice(None)),
    (slice(None), slice(None), slice(None, None, 2)),
    (slice(1, None, 3), slice(None), slice(2, 37, 3)),
    (slice(None), slice(0, 9, 4), slice(1, None, 5)),
    (slice(2, 3), slice(1, 8), slice(0, None, 7)),
    (slice(None, None, 2), slice(None, None, 2), slice(None, None, 9)),
    (slice(0, 5), slice(3, 4), slice(5, 38, 1)),
    (slice(None), slice(None), slice(None, None, 40)),
]


def wire(key: tuple[slice, ...], shape: tuple[int, ...]) -> list[dict[str, int]]:
    out = []
    for sl, n in zip(key, shape):
        start, stop, step = sl.indices(n)
        out.append({"start": start, "stop": stop, "step": step})
    return out


@pytest.fixture(scope="module")
def gather_files() -> Any:
    """One file per codec holding every dtype as a multi-chunk 3-D dataset, edge tiles included."""
    shape = (6, 10, 41)
    arrays = {dt: random_array(dt, int(np.prod(shape)), seed=i).reshape(shape)
              for i, dt in enumerate(DTYPES)}
    with tempfile.TemporaryDirectory() as d:
        paths = {}
        for codec in ("raw", "zstd"):
            path = Path(d) / f"g-{codec}.tet"
            with tet.TetWriter.create(path) as w:
                for dt, a in arrays.items():
                    w.write_dataset(dt, a, chunk_shape=(4, 3, 16), codec=codec)
            paths[codec] = path
        yield paths, arrays


@pytest.mark.parametrize("codec", ["raw", "zstd"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gather_is_identical_under_every_body(gather_files: Any, codec: str, dtype: str) -> None:
    paths, arrays = gather_files
    a = arrays[dtype]
    with tet.open(paths[codec]) as f:
        for key in SELECTIONS:
            want = a[key]
            results = {}
            for level in LEVELS:
                with simd.using_simd(level):
                    results[level] = (f.read_numpy(dtype, wire(key, a.shape)), f[dtype][key])
            for level, (by_wire, by_key) in results.items():
                for got in (by_wire, by_key):
                    assert got.dtype == want.dtype
                    assert got.shape == want.shape
                    assert np.array_equal(bits(got), bits(want)), (level, codec, dtype, key)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("codec", ["raw", "zstd"])
def test_gather_preserves_nan_payloads(level: str, codec: str) -> None:
    f32 = np.array([0x7FC00000, 0x7F800001, 0xFFC00001, 0x7FBFFFFF, 0x7FC12345, 0xFF800001,
                    0x00000001, 0x80000000] * 9, dtype=np.uint32)
    f64 = np.array([0x7FF8000000000000, 0x7FF0000000000001, 0xFFF8000000000001,
                    0x7FF7FFFFFFFFFFFF, 0x7FF800000000BEEF, 0x8000000000000000] * 12,
                   dtype=np.uint64)
    f16 = np.array([0x7E00, 0x7C01, 0xFE01, 0x7DFF, 0x8000, 0x7C00] * 12, dtype=np.uint16)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "nan.tet"
        with tet.TetWriter.create(path) as w:
            for name, pattern, dtype in (("f32", f32, np.float32), ("f64", f64, np.float64),
                                         ("f16", f16, np.float16)):
                w.write_dataset(name, pattern.view(dtype).reshape(-1, 8), chunk_shape=(3, 5),
                                codec=codec)
        with tet.open(path) as f, simd.using_simd(level):
            for name, pattern in (("f32", f32), ("f64", f64), ("f16", f16)):
                p = pattern.reshape(-1, 8)
                for key in ((slice(None), slice(None)), (slice(1, None, 2), slice(0, None, 3)),
                            (slice(None), slice(1, 8, 2))):
                    got = f[name][key]
                    assert np.array_equal(got.view(p.dtype), p[key]), (name, key)


def test_env_tet_simd_scalar_forces_the_scalar_body() -> None:
    code = "import tet, tet.simd as k; print(k.simd_level()); print(tet.core_version())"
    env = {**os.environ, "TET_SIMD": "scalar"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1])
    level, core = out.stdout.splitlines()
    assert level == "scalar"
    assert "simd=scalar" in core
    # Without the variable the best body is chosen (the last one this CPU lists).
    env.pop("TET_SIMD")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.splitlines()[0] == LEVELS[-1]


@pytest.mark.parametrize("level", tet.simd.simd_levels())
@pytest.mark.parametrize("n", [0, 1, 7, 8, 15, 16, 17, 31, 33, 1000, 16 * 8 + 3])
def test_minmax_f32_bodies_agree_with_scalar_and_numpy(level: str, n: int) -> None:
    rng = np.random.default_rng(n)
    for nan_at in (None, 0, n // 2, n - 1):
        x = (rng.standard_normal(n) * 1e3).astype(np.float32)
        if n:
            x[rng.integers(0, n)] = np.inf
        if nan_at is not None and n:
            x[nan_at] = np.nan
        got = tet.simd.minmax_f32(level, x)
        assert got == tet.simd.minmax_f32("scalar", x)
        finite = x[~np.isnan(x)]
        want_lo = float(finite.min()) if finite.size else np.inf
        want_hi = float(finite.max()) if finite.size else -np.inf
        assert got == (want_lo, want_hi, bool(np.isnan(x).any()))


def _results(execution: dict[str, object]) -> dict[str, object]:
    """The answer part of an execution block: host RAM figures move between two queries."""
    return {k: v for k, v in execution.items()
            if k.endswith("_preview") or k.startswith("operation_")}


@pytest.mark.parametrize("level", tet.simd.simd_levels())
def test_f32_min_max_folds_equal_under_every_body(level: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    a = rng.standard_normal((40, 300)).astype(np.float32)
    a[3, 20] = a.min() - 1  # a unique minimum, and ties for the maximum
    a[30, 5] = a[31, 6] = a.max() + 1
    a[7, 250] = np.nan
    path = tet.write_dataset(tmp_path / "m.tet", "a", a, chunk_shape=(16, 64))
    with tet.open(path) as f, tet.simd.using_simd(level):
        for op in ("min", "max", "arg_min", "arg_max"):
            for axes in ([], [1], [0]):
                doc = {"dataset": "a", op: axes, "selection": [{"stop": 7}, {}]}
                got = _results(f.query(doc)["execution"])
                with tet.simd.using_simd("scalar"):
                    want = _results(f.query(doc)["execution"])
                assert got == want, (op, axes, level)
        assert f.arg_min("a") == 7 * 300 + 250  # NumPy: the first NaN wins
        assert f.arg_min("a", selection=[{"stop": 7}, {}]) == 3 * 300 + 20
        assert f.arg_max("a", selection=[{"start": 10}, {}]) == 20 * 300 + 5


@pytest.mark.parametrize("level", tet.simd.simd_levels())
@pytest.mark.parametrize("chunk", [(16, 2050), (16, 1029), (5, 13)])
def test_f32_moment_folds_under_every_body(level: str, chunk: tuple[int, int],
                                           tmp_path: Path) -> None:
    """Long unit-stride f32 runs take the dispatched moments and row bodies (full
    8-lane sweeps plus tails); far-from-zero data checks the shifted two-pass."""
    rng = np.random.default_rng(sum(chunk))
    a = (1e6 + rng.uniform(-1, 1, (37, 2050))).astype(np.float32)
    a[4, 2049] = np.nan
    path = tet.write_dataset(tmp_path / "v.tet", "a", a, chunk_shape=chunk)
    x = a.astype(np.float64)
    sel = [{"start": 5}, {"stop": 2049}]
    xs = x[5:, :2049]
    def run(f: tet.TetFile, op: str, axes: list[int], selection: Any) -> Any:
        r = getattr(f, op)("a", axes, selection=selection)
        return r.reduced if axes else r

    with tet.open(path) as f:
        for op, ref in (("sum", np.sum), ("mean", np.mean), ("var", np.var), ("std", np.std)):
            for axes in ([], [0], [1]):
                axis = tuple(axes) if axes else None
                with tet.simd.using_simd(level):
                    got = run(f, op, axes, sel)
                    full = run(f, op, axes, None)
                with tet.simd.using_simd("scalar"):
                    want = run(f, op, axes, sel)
                np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=f"{op} {axes}")
                np.testing.assert_allclose(got, ref(xs, axis=axis), rtol=1e-11,
                                           err_msg=f"{op} {axes} vs NumPy")
                np.testing.assert_allclose(full, ref(x, axis=axis), rtol=1e-11, equal_nan=True,
                                           err_msg=f"{op} {axes} with NaN")
