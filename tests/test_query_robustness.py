"""Hostile documents and numerical robustness of the engine.

Matrix: random text and random JSON-like values through parse_text / parse_value
(only TetError may escape); the mean and variance of 10^8 float32 values near 1e6
against NumPy's float64 answer; fold results across chunkings, parallel vs
sequential, against NumPy for arrays with NaN/inf.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tet
from tests.helpers import EXACT, reference
from tet.query.document import parse_text, parse_value
from tet.query.folds import fold

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["dataset", "mean", "selection", "axis", "axes", "q", "bins",
                         "execution", "write", "spill", "start", "stop", "step", "fill",
                         "quantile", "histogram", "transform", "method", "x"]), inner,
        max_size=5),
    max_leaves=20,
)


@given(st.text(max_size=200))
def test_random_text_only_raises_tet_errors(text: str) -> None:
    for name in (None, "q.json", "q.toml"):
        with contextlib.suppress(tet.TetError):
            parse_text(text, filename=name)


@given(JSONISH)
def test_random_values_only_raise_tet_errors(value: Any) -> None:
    doc = {"dataset": "a", **value} if isinstance(value, dict) else value
    try:
        parse_value(doc)
    except tet.TetError:
        return
    try:  # what parses must round-trip through the wire form
        assert parse_value(json.loads(json.dumps(parse_value(doc).to_dict()))) == parse_value(doc)
    except tet.TetError:
        pytest.fail("a parsed document did not parse again from its wire form")


def test_deep_and_huge_documents_are_refused() -> None:
    deep = '{"dataset": "a", "mean": ' + "[" * 70 + "]" * 70 + "}"
    with pytest.raises(tet.QueryError, match="nesting depth"):
        parse_text(deep)
    with pytest.raises(tet.QueryError, match="exceeds maximum size"):
        parse_text('{"dataset": "' + "a" * 1_100_000 + '"}')
    with pytest.raises(tet.QueryError, match="nesting depth"):
        parse_text('{"dataset": "a", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")


def test_mean_of_1e8_float32_values_matches_numpy(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    a = (1e6 + rng.uniform(-1.0, 1.0, 10**8)).astype(np.float32)
    want_mean = float(np.mean(a, dtype=np.float64))
    want_var = float(np.var(a.astype(np.float64)))
    path = tet.write_dataset(tmp_path / "big.tet", "a", a, chunk_shape=(2**22,))
    del a
    with tet.open(path) as f:
        assert f.mean("a") == pytest.approx(want_mean, rel=1e-12, abs=0)
        assert f.var("a") == pytest.approx(want_var, rel=1e-9, abs=0)


DTYPES = ["f4", "f8", "i2", "u1", "i8", "u8", "f2", "u4"]
OPS = ["sum", "mean", "min", "max", "var", "std", "arg_min", "arg_max", "nan_count",
       "norm_l1", "norm_l2", "nan_mean", "count", "product", "all_finite"]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES)
def test_folds_match_numpy_across_chunkings_and_parallelism(dtype: str) -> None:
    rng = np.random.default_rng(sum(map(ord, dtype)))
    a = (rng.standard_normal((9, 14, 5)) * 50).astype(dtype)
    if a.dtype.kind == "f":
        a.flat[[3, 100, 101]] = [np.nan, np.inf, -np.inf]
    x = a.astype(np.float64)
    sel = [{"start": 1, "step": 2}, {"stop": 13}, {}]
    xs = x[1::2, :13, :]
    with tempfile.TemporaryDirectory() as d:
        results: dict[tuple[str, tuple[int, ...]], list[np.ndarray[Any, Any]]] = {}
        for chunk in [(9, 14, 5), (2, 3, 2), (4, 5, 5), (1, 14, 1)]:
            path = tet.write_dataset(Path(d) / f"{chunk}.tet", "a", a, chunk_shape=chunk)
            with tet.open(path) as f:
                did, box = f.resolve("a", sel)
                table = f.reader.table(did)
                for op in OPS:
                    for axes in [(), (0,), (2,), (0, 2), (1,)]:
                        for sequential in (False, True):
                            got = fold(table, box, op, axes, sequential=sequential)
                            results.setdefault((op, axes), []).append(got)
        for (op, axes), gots in results.items():
            want = reference(xs, op, axes)
            for got in gots:
                assert got.shape == want.shape, (op, axes)
                if op in EXACT:
                    assert np.array_equal(got, want, equal_nan=True), (op, axes, dtype)
                else:
                    assert np.allclose(got, want, rtol=1e-9, atol=1e-9, equal_nan=True), (
                        op, axes, dtype)
