"""Orthogonal indexing on `Dataset` (``ds[...]`` and ``ds.oindex[...]``): integers,
slices with any step, integer arrays and boolean masks per axis, checked against
NumPy's ``a[np.ix_(...)]`` on random shapes, chunkings, codecs and dtypes; the errors
of bad indices; the memory budget; bad index rows reached through the gather."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tet
from tests.keys import axis_keys
from tests.test_hostile import crafted
from tests.test_roundtrip import assert_same, make_array

FAST = settings(suppress_health_check=[HealthCheck.too_slow])
DTYPES = ("float32", "float64", "int16", "uint8", "uint64", "float16", "bool")


@contextmanager
def opened(a: np.ndarray[Any, Any], chunk: tuple[int, ...], codec: str) -> Iterator[tet.Dataset]:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "a.tet"
        tet.write_dataset(path, "x", a, chunk_shape=chunk, codec=codec)
        with tet.open(path) as f:
            yield f["x"]


@st.composite
def cases(draw: st.DrawFn) -> tuple[np.ndarray[Any, Any], tuple[int, ...], str]:
    rank = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, (40, 14, 7)[rank - 1])) for _ in range(rank))
    chunk = tuple(draw(st.integers(1, n + 2)) for n in shape)
    dtype = draw(st.sampled_from(DTYPES))
    codec = draw(st.sampled_from(("raw", "zstd")))
    return make_array(dtype, shape, draw(st.integers(0, 2**32 - 1))), chunk, codec


def expected(a: np.ndarray[Any, Any], key: list[Any]) -> np.ndarray[Any, Any]:
    """``a[np.ix_(...)]`` over the per-axis indices, integer axes then dropped."""
    per_axis = [np.atleast_1d(np.arange(n)[k]) for k, n in zip(key, a.shape)]
    got = np.asarray(a[np.ix_(*per_axis)])
    return got[tuple(0 if isinstance(k, int) else slice(None) for k in key)]


@FAST
@given(case=cases(), data=st.data())
def test_orthogonal_keys_equal_numpy_ix(
    case: tuple[np.ndarray[Any, Any], tuple[int, ...], str], data: st.DataObject
) -> None:
    a, chunk, codec = case
    with opened(a, chunk, codec) as ds:
        for _ in range(4):
            key = [data.draw(axis_keys(n)) for n in a.shape]
            want = expected(a, key)
            for got in (ds[tuple(key)], ds.oindex[tuple(key)]):
                if want.ndim == 0:
                    assert np.ndim(got) == 0
                assert_same(got, want)
            # omitted trailing axes and '...' read whole axes
            cut = data.draw(st.integers(0, a.ndim))
            whole = key[:cut] + [slice(None)] * (a.ndim - cut)
            assert_same(ds[tuple(key[:cut])], expected(a, whole))
            assert_same(ds[(*key[:cut], Ellipsis)], expected(a, whole))


@FAST
@given(case=cases(), data=st.data())
def test_negative_steps_equal_numpy(
    case: tuple[np.ndarray[Any, Any], tuple[int, ...], str], data: st.DataObject
) -> None:
    a, chunk, codec = case
    with opened(a, chunk, codec) as ds:
        assert_same(ds[::-1], a[::-1])
        n = a.shape[0]
        s, e = data.draw(st.integers(-n - 2, n + 2)), data.draw(st.integers(-n - 2, n + 2))
        k = data.draw(st.integers(-n - 1, -1))
        assert_same(ds[s:e:k], a[s:e:k])
        key = tuple(slice(None, None, -data.draw(st.integers(1, 3))) for _ in a.shape)
        assert_same(ds[key], a[key])


def test_examples_from_h5py_and_zarr_habits(tmp_path: Path) -> None:
    a = np.arange(10 * 6, dtype=np.float32).reshape(10, 6)
    tet.write_dataset(tmp_path / "a.tet", "x", a, chunk_shape=(3, 4), codec="zstd")
    with tet.open(tmp_path / "a.tet") as f:
        ds = f["x"]
        assert_same(ds[[0, 2, 5]], a[[0, 2, 5]])
        assert_same(ds[[5, 0, 0, -1], 1:5:2], a[[5, 0, 0, -1], 1:5:2])
        assert_same(ds[a[:, 0] > 20], a[a[:, 0] > 20])
        assert_same(ds[:, np.array([True, False] * 3)], a[:, ::2])
        assert_same(ds.oindex[[1, 3], [4, 0]], a[np.ix_([1, 3], [4, 0])])
        assert_same(ds[5:1:-2], a[5:1:-2])
        assert_same(ds[::-1, ::-1], a[::-1, ::-1])
        assert_same(ds[[], 2], a[[], 2])
        assert_same(ds[np.zeros(10, bool)], a[np.zeros(10, bool)])
        assert_same(ds[np.int64(3), [2]], a[3, [2]])
        assert ds.oindex[...].shape == (10, 6)


@pytest.mark.parametrize(("key", "message"), [
    (10, "index 10 is out of bounds for axis 0 with size 10"),
    (-11, "index -11 is out of bounds for axis 0 with size 10"),
    ((0, 6), "index 6 is out of bounds for axis 1 with size 6"),
    ([0, 10], "index 10 is out of bounds for axis 0 with size 10"),
    ((slice(None), [3, -7, 1]), "index -7 is out of bounds for axis 1 with size 6"),
    (np.array([2, 99], dtype=np.uint64), "index 99 is out of bounds for axis 0 with size 10"),
    (np.ones(9, bool), "boolean index on axis 0 has length 9, but the axis has size 10"),
    ((..., [True] * 7), "boolean index on axis 1 has length 7, but the axis has size 6"),
])
def test_out_of_range_indices_and_wrong_masks(tmp_path: Path, key: Any, message: str) -> None:
    tet.write_dataset(tmp_path / "a.tet", "x", np.zeros((10, 6), np.int32), chunk_shape=(4, 4))
    with tet.open(tmp_path / "a.tet") as f:
        for ds in (f["x"], f["x"].oindex):
            with pytest.raises(tet.TetIndexError) as info:
                ds[key]
            assert str(info.value) == message
            assert isinstance(info.value, IndexError)
            assert isinstance(info.value, tet.SelectionError)


@pytest.mark.parametrize(("key", "message"), [
    ([[0, 1]], "unsupported index on axis 0: index arrays and masks must be 1-D (one per "
               "axis, orthogonal indexing), got shape (1, 2)"),
    (np.array([0.0]), "unsupported index on axis 0: index arrays must hold integers or "
                      "booleans, got float64"),
    (True, "unsupported index True on axis 0: use integers, slices, 1-D integer arrays, "
           "boolean masks and '...'"),
])
def test_unsupported_indices_are_type_errors(tmp_path: Path, key: Any, message: str) -> None:
    tet.write_dataset(tmp_path / "a.tet", "x", np.zeros((10, 6), np.int32))
    with tet.open(tmp_path / "a.tet") as f:
        with pytest.raises(TypeError) as info:
            f["x"][key]
        assert str(info.value) == message


def test_streamed_writes_refuse_fancy_keys(tmp_path: Path) -> None:
    with tet.TetWriter(tmp_path / "a.tet") as w:
        stream = w.create_dataset("x", shape=(4, 4), dtype="float32", chunk_shape=(2, 2))
        for key in ([1, 0], (slice(None, None, -1),), np.array([True, False, True, True])):
            with pytest.raises(TypeError, match="streamed writes take integers, unit-step"):
                stream[key] = 1.0
        with pytest.raises(ValueError, match="streamed writes take unit-step regions"):
            stream[[0, 2]] = 1.0
        stream[[0, 1]] = 2.0  # a sorted run is the box 0:2
        stream[np.array([False, False, True, True])] = 3.0
    with tet.open(tmp_path / "a.tet") as f:
        assert_same(f["x"][[3, 0]], np.array([[3.0] * 4, [2.0] * 4], np.float32))


def test_the_read_is_sized_against_the_budget_first(tmp_path: Path) -> None:
    """A [4, 2**31] f32 dataset declared in 240 bytes: three whole rows need 24 GiB
    read plus the index tables, over the file's 1 GiB budget, before anything is read."""
    path = tmp_path / "big.tet"
    path.write_bytes(crafted([4, 2**31], [1, 2**31], [((0, 0), 0, 8, 8, 0)],
                             payload=b"\0" * 8, budget_bytes=1 << 30))
    with tet.open(path) as f:
        for key, needed in (([0, 2, 3], 3 * 2**33 + 24 * (3 + 2**31)),  # gathered
                            ([2, 0, 1], 2 * 3 * 2**33)):  # the box 0:3, then reordered
            with pytest.raises(tet.MemoryBudgetError) as info:
                f["x"][key]
            assert str(info.value) == (
                f"reading 'x' [3, 2147483648] (float32) needs {needed} bytes, over the memory "
                "budget of 1073741824 bytes; read a smaller selection and process it in "
                "pieces, or raise the budget")


def test_bad_index_rows_fail_as_the_box_read_does(tmp_path: Path) -> None:
    """Row (0, 0) present, row (1, 0) absent: the gather names the same tile as the box
    read of the same elements, and reads nothing it did not check."""
    path = tmp_path / "rows.tet"
    path.write_bytes(crafted([2, 4], [1, 4], [((0, 0), 0, 16, 16, 0)],
                             payload=np.arange(4, dtype=np.float32).tobytes()))
    with tet.open(path) as f:
        assert_same(f["x"][[0, 0], [3, 1]], np.array([[3, 1], [3, 1]], np.float32))
        with pytest.raises(tet.CatalogError) as box:
            f["x"][0:2, 1:4:2]
        with pytest.raises(tet.CatalogError) as gather:
            f["x"][[0, 1], [3, 1]]
        assert type(gather.value) is type(box.value)
        assert str(gather.value) == str(box.value)
        assert "chunk_index=[1, 0]" in str(gather.value)
