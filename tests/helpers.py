"""Helpers shared by test modules: a file's bytes with a crafted footer, and the NumPy
oracle that tier A/B results are compared to, with the tolerance each op allows."""

from __future__ import annotations

import contextlib
import math
import struct
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

Arr = np.ndarray[Any, Any]


def with_footer(base: bytes, text: bytes, *, version: int = 1, json_len: int | None = None,
                flags: int = 1, spill: bytes = b"") -> bytes:
    """`base` (a file without a footer) with header flags `flags`, then an optional metadata
    spill, the footer JSON `text` and its tail (JSON length `json_len`, default the true
    one; footer `version`)."""
    b = bytearray(base)
    struct.pack_into("<I", b, 12, flags)
    n = len(text) if json_len is None else json_len
    return bytes(b) + spill + text + struct.pack("<QI4s", n, version, b"THST")


EXACT = {"min", "max", "arg_min", "arg_max", "count", "nan_count", "inf_count", "null_count",
         "any_nan", "any_inf", "all_finite"}
BOOLEAN = {"any_nan", "any_inf", "all_finite"}
INTEGER = {"count", "arg_min", "arg_max"}
SUM_RTOL, VAR_RTOL, PROD_RTOL = 1e-12, 1e-9, 1e-9


# ---------------------------------------------------------------------------
# the NumPy reference and the comparison


def _ax(axes: Sequence[int]) -> tuple[int, ...] | None:
    return tuple(axes) if axes else None


def _kept(x: Arr, axes: Sequence[int]) -> tuple[int, ...]:
    return tuple(n for d, n in enumerate(x.shape) if axes and d not in axes)


def _arg(x: Arr, axes: Sequence[int], fn: Any) -> Arr:
    if not axes:
        return np.asarray(fn(x), dtype=np.int64)
    k = len(axes)
    moved = np.moveaxis(x, list(axes), list(range(x.ndim - k, x.ndim)))
    flat = moved.reshape((*moved.shape[: x.ndim - k], -1))
    return np.asarray(fn(flat, axis=-1), dtype=np.int64)


def _null(x: Arr, fill: float) -> Arr:
    if math.isnan(fill):
        return np.isnan(x)
    return x.view(np.uint64) == np.array(fill, dtype=np.float64).view(np.uint64)


def reference(x: Arr, op: str, axes: Sequence[int], fill: float = 0.0) -> Arr:
    """NumPy's answer for `op` over float64 `x`, reducing `axes` ([] = all)."""
    ax = _ax(axes)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        table = {
            "sum": lambda: np.sum(x, axis=ax),
            "mean": lambda: np.mean(x, axis=ax),
            "var": lambda: np.var(x, axis=ax),
            "std": lambda: np.std(x, axis=ax),
            "min": lambda: np.min(x, axis=ax),
            "max": lambda: np.max(x, axis=ax),
            "count": lambda: np.full(_kept(x, axes), x.size // max(1, math.prod(_kept(x, axes))),
                                     dtype=np.int64),
            "product": lambda: np.prod(x, axis=ax),
            "norm_l1": lambda: np.sum(np.abs(x), axis=ax),
            "norm_l2": lambda: np.sqrt(np.sum(x * x, axis=ax)),
            "nan_count": lambda: np.sum(np.isnan(x), axis=ax).astype(np.float64),
            "inf_count": lambda: np.sum(np.isinf(x), axis=ax).astype(np.float64),
            "null_count": lambda: np.sum(_null(x, fill), axis=ax).astype(np.float64),
            "any_nan": lambda: np.any(np.isnan(x), axis=ax),
            "any_inf": lambda: np.any(np.isinf(x), axis=ax),
            "all_finite": lambda: np.all(np.isfinite(x), axis=ax),
            "nan_mean": lambda: np.nanmean(x, axis=ax),
            "nan_std": lambda: np.nanstd(x, axis=ax),
            "arg_min": lambda: _arg(x, axes, np.argmin),
            "arg_max": lambda: _arg(x, axes, np.argmax),
        }
        return np.asarray(table[op]())


def scales(x: Arr, axes: Sequence[int]) -> dict[str, Arr]:
    """Per-cell magnitudes the float tolerances are relative to."""
    ax = _ax(axes)
    finite = np.isfinite(x)
    a = np.where(finite, np.abs(x), 0.0)
    n = np.sum(np.ones_like(x), axis=ax)
    nn = np.maximum(np.sum(~np.isnan(x), axis=ax), 1)
    hi = np.max(np.where(finite, x, -np.inf), axis=ax)
    lo = np.min(np.where(finite, x, np.inf), axis=ax)
    spread = np.where(hi >= lo, hi - lo, 0.0)
    with np.errstate(divide="ignore"):
        lg = np.where(finite & (x != 0), np.log2(np.where(finite & (x != 0), a, 1.0)), 0.0)
    return {
        # variance errors scale with the spread, plus NumPy's own (eps * |mean|)**2 from
        # the rounded mean it subtracts; not with the magnitude squared
        "abs_sum": np.sum(a, axis=ax), "n": n, "nn": nn,
        "var_atol": 1e-12 * spread * spread + 1e-28 * np.square(np.max(a, axis=ax)),
        # no order of the products can leave [2**-1000, 2**1000]: every order agrees
        "prod_ok": (np.sum(np.maximum(lg, 0), axis=ax) < 1000)
        & (np.sum(np.minimum(lg, 0), axis=ax) > -1000),
    }


def close_within(got: Arr, want: Arr, rtol: float, atol: Arr | float, what: str) -> None:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    nan_g, nan_w = np.isnan(got), np.isnan(want)
    assert np.array_equal(nan_g, nan_w), f"{what}: NaN positions differ: got {got} want {want}"
    inf_w = np.isinf(want)
    assert np.array_equal(got[inf_w], want[inf_w]), f"{what}: inf differs: {got} vs {want}"
    ok = ~nan_w & ~inf_w
    atol = np.broadcast_to(np.asarray(atol, dtype=np.float64), want.shape)
    err = np.abs(got[ok] - want[ok])
    bound = atol[ok] + rtol * np.abs(want[ok])
    assert np.all(err <= bound), (
        f"{what}: got {got[ok][err > bound][:5]} want {want[ok][err > bound][:5]} "
        f"(err {err[err > bound][:5]}, bound {bound[err > bound][:5]})")


def assert_matches_numpy(op: str, got: Arr, x: Arr, axes: Sequence[int], fill: float = 0.0,
                         where: str = "") -> None:
    """`got` (tet's answer for a tier A/B `op` over float64 `x`, reducing `axes`) equals
    NumPy's (`reference`) within the op's tolerance: exact for the order, count and
    boolean ops, relative to each cell's magnitudes (`scales`) for sums, means, norms,
    variances and products; the dtype kind (b, i or f) and the shape must match."""
    want = reference(x, op, axes, fill)
    what = f"{op} axes={list(axes)} fill={fill} {where}"
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    kind = "b" if op in BOOLEAN else "i" if op in INTEGER else "f"
    assert got.dtype.kind == kind, f"{what}: dtype {got.dtype}"
    if op in EXACT:
        if kind == "f":
            assert np.array_equal(got, want, equal_nan=True), f"{what}: {got} != {want}"
        else:
            assert np.array_equal(got, want), f"{what}: {got} != {want}"
        return
    s = scales(x, axes)
    if op in ("sum", "norm_l1"):
        close_within(got, want, SUM_RTOL, 1e-12 * s["abs_sum"], what)
    elif op == "mean":
        close_within(got, want, SUM_RTOL, 1e-12 * s["abs_sum"] / s["n"], what)
    elif op == "nan_mean":
        close_within(got, want, SUM_RTOL, 1e-12 * s["abs_sum"] / s["nn"], what)
    elif op == "norm_l2":
        close_within(got, want, SUM_RTOL, 0.0, what)
    elif op == "var":
        close_within(got, want, VAR_RTOL, s["var_atol"], what)
    elif op in ("std", "nan_std"):  # compared as variances: std near 0 is ill-conditioned
        close_within(np.square(got), np.square(want), 2 * VAR_RTOL, s["var_atol"], what)
        assert np.array_equal(np.isnan(got), np.isnan(want)), what
    elif op == "product":
        mask = s["prod_ok"]
        close_within(np.where(mask, got, 0.0), np.where(mask, want, 0.0), PROD_RTOL, 0.0, what)
    else:
        raise AssertionError(f"no tolerance for {op}")


@contextlib.contextmanager
def local_cluster(n_workers: int) -> Iterator[Any]:
    """A `dask.distributed` client of a LocalCluster of `n_workers` single-threaded worker
    processes on 127.0.0.1 (skipped, saying why, where one cannot start)."""
    distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed")
    try:
        cluster: Any = distributed.LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=None, timeout=60)
    except (OSError, TimeoutError) as exc:
        pytest.skip(f"a LocalCluster cannot start here: {exc}")
    client: Any = distributed.Client(cluster, timeout=60)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
