"""Round trips through the writer and the reader, checked against NumPy.

Matrix (all drawn by Hypothesis):

- dtype: the ten wire dtypes (float32, float64, int32, int64, uint8, uint16,
  int16, uint32, float16, uint64) plus bool (stored as uint8 0/1); floats carry
  NaN, ±inf and -0.0, integers span their full range;
- shape: rank 1..8, at most 4000 elements;
- chunk shape: each axis 1..extent+2, so edge chunks (partial tiles) and chunks
  larger than the whole array both occur;
- codec: raw and zstd.

Each written array must read back bit for bit (``read_numpy()`` with no
selection), every wire selection (start/stop/step per axis, keys sometimes
omitted) and box-form selection must equal ``a[start:stop:step, ...]``, and every
h5py-style key on ``f[name][key]`` (ints including negative ones, slices with
negative bounds and steps >= 1, ``...``) must equal ``a[key]``.

Streaming (``TetWriter.create_dataset`` + ``stream[...] = block`` /
``stream.write``): random block partitions, not aligned to chunks, written in
random order, with some blocks left out (they read as 0); rewriting any part of
a written region raises ValueError and a refused write changes nothing.

Also: several datasets of mixed dtype/codec in one file, and
``TetWriter.open_append`` keeping every old dataset, its metadata and history.
"""

from __future__ import annotations

import itertools
import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import tet

WIRE_DTYPES = ("float32", "float64", "int32", "int64", "uint8", "uint16", "int16",
               "uint32", "float16", "uint64")
ALL_DTYPES = (*WIRE_DTYPES, "bool")
CODECS = ("raw", "zstd")
MAX_ELEMENTS = 4000
# Largest extent per axis for each rank, so that a full draw stays <= MAX_ELEMENTS.
MAX_EXTENT = {1: 300, 2: 60, 3: 15, 4: 7, 5: 5, 6: 3, 7: 3, 8: 2}

# Example counts come from the profile in conftest.py; file I/O can be slow on CI.
FAST = settings(suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------
# strategies and helpers


def make_array(dtype: str, shape: tuple[int, ...], seed: int) -> np.ndarray[Any, Any]:
    """Values of `dtype` covering the awkward cases (NaN, inf, -0.0, extremes)."""
    rng = np.random.default_rng(seed)
    n = math.prod(shape)
    if dtype == "bool":
        return rng.integers(0, 2, size=shape).astype(bool)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        a = (rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4, size=n)).astype(dt)
        specials = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, np.finfo(dt).max,
                             np.finfo(dt).tiny], dtype=dt)
        pick = rng.random(n) < 0.1
        a[pick] = rng.choice(specials, size=int(pick.sum()))
        return a.reshape(shape)
    info = np.iinfo(dt)
    a = rng.integers(info.min, info.max, size=n, dtype=dt, endpoint=True)
    pick = rng.random(n) < 0.05
    a[pick] = rng.choice(np.array([info.min, info.max, 0], dtype=dt), size=int(pick.sum()))
    return a.reshape(shape)


def stored(a: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """What the file gives back for `a` (bool comes back as uint8 0/1)."""
    return a.astype(np.uint8) if a.dtype == np.bool_ else a


def assert_same(got: Any, want: Any) -> None:
    """Equal values, dtype and shape, and bit-identical (NaN payloads and -0.0 too)."""
    got, want = np.asarray(got), stored(np.asarray(want))
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_array_equal(got, want, strict=True)
    if want.dtype.kind == "f":
        assert np.array_equal(got, want, equal_nan=True)
    assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes()


@st.composite
def shapes(draw: st.DrawFn, max_rank: int = 8) -> tuple[int, ...]:
    rank = draw(st.integers(1, max_rank))
    shape = tuple(draw(st.integers(1, MAX_EXTENT[rank])) for _ in range(rank))
    assume(math.prod(shape) <= MAX_ELEMENTS)
    return shape


@st.composite
def chunk_shapes(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(draw(st.integers(1, n + 2)) for n in shape)


@st.composite
def cases(draw: st.DrawFn, max_rank: int = 8) -> tuple[np.ndarray[Any, Any], tuple[int, ...], str]:
    dtype = draw(st.sampled_from(ALL_DTYPES))
    shape = draw(shapes(max_rank))
    chunk = draw(chunk_shapes(shape))
    codec = draw(st.sampled_from(CODECS))
    seed = draw(st.integers(0, 2**32 - 1))
    return make_array(dtype, shape, seed), chunk, codec


@st.composite
def wire_axis(draw: st.DrawFn, n: int) -> tuple[dict[str, int], slice]:
    """One wire axis dict (keys sometimes omitted) and the equivalent slice."""
    start = draw(st.integers(0, n - 1))
    stop = draw(st.integers(start + 1, n))
    step = draw(st.integers(1, n + 1))
    axis: dict[str, int] = {}
    if start or draw(st.booleans()):
        axis["start"] = start
    if stop != n or draw(st.booleans()):
        axis["stop"] = stop
    if step != 1 or draw(st.booleans()):
        axis["step"] = step
    return axis, slice(start, stop, step)


@st.composite
def h5_keys(draw: st.DrawFn, shape: tuple[int, ...]) -> Any:
    """A basic index: ints (negative too), slices (negative bounds, step >= 1), '...'."""
    items: list[Any] = []
    for n in shape:
        kind = draw(st.sampled_from(("int", "slice", "slice", "full")))
        if kind == "int":
            items.append(draw(st.integers(-n, n - 1)))
        elif kind == "full":
            items.append(slice(None))
        else:
            bound = st.none() | st.integers(-n - 2, n + 2)
            step = st.none() | st.integers(1, n + 1)
            items.append(slice(draw(bound), draw(bound), draw(step)))
    # Trailing full axes may be left out, or a run of axes replaced by '...'.
    form = draw(st.sampled_from(("full", "short", "ellipsis")))
    if form == "short":
        keep = draw(st.integers(1, len(items)))
        items = items[:keep]
    elif form == "ellipsis":
        a = draw(st.integers(0, len(items)))
        b = draw(st.integers(a, len(items)))
        items = [*items[:a], Ellipsis, *items[b:]]
    if len(items) == 1 and draw(st.booleans()):
        return items[0]
    return tuple(items)


def is_empty(key: Any, shape: tuple[int, ...]) -> bool:
    """Whether a NumPy basic index selects nothing on some axis."""
    items = list(key) if isinstance(key, tuple) else [key]
    if Ellipsis in items:
        at = items.index(Ellipsis)
        items[at : at + 1] = [slice(None)] * (len(shape) - len(items) + 1)
    return any(isinstance(k, slice) and len(range(*k.indices(n))) == 0
               for k, n in zip(items, shape))


def write(path: Path, name: str, a: np.ndarray[Any, Any], chunk: tuple[int, ...],
          codec: str) -> None:
    tet.write_dataset(path, name, a, chunk_shape=chunk, codec=codec)


# ---------------------------------------------------------------------------
# whole arrays, selections and keys


@contextmanager
def opened(a: np.ndarray[Any, Any], chunk: tuple[int, ...], codec: str) -> Iterator[tet.TetFile]:
    """`a` written as dataset "x" to a fresh temporary file, opened for reading."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "a.tet"
        write(path, "x", a, chunk, codec)
        with tet.open(path) as f:
            yield f


@FAST
@given(case=cases())
def test_write_read_whole_array(case: tuple[np.ndarray[Any, Any], tuple[int, ...], str]) -> None:
    a, chunk, codec = case
    with opened(a, chunk, codec) as f:
        ds = f["x"]
        assert ds.shape == a.shape
        assert ds.chunk_shape == chunk
        assert ds.numpy_dtype == stored(a).dtype
        assert_same(f.read_numpy("x"), a)
        assert_same(f["x"][...], a)
        assert_same(np.asarray(ds), a)


@FAST
@given(case=cases(), data=st.data())
def test_wire_and_box_selections_equal_numpy_slicing(
    case: tuple[np.ndarray[Any, Any], tuple[int, ...], str], data: st.DataObject
) -> None:
    a, chunk, codec = case
    with opened(a, chunk, codec) as f:
        for _ in range(4):
            axes = [data.draw(wire_axis(n)) for n in a.shape]
            selection = [wire for wire, _ in axes]
            key = tuple(sl for _, sl in axes)
            assert_same(f.read_numpy("x", selection), a[key])
            box = {
                "start": [sl.start for sl in key],
                "stop": [sl.stop for sl in key],
                "step": [sl.step for sl in key],
            }
            assert_same(f.read_numpy("x", box), a[key])
            assert_same(f.read_numpy("x", tet.selection_slices(*selection)), a[key])


@FAST
@given(case=cases(), data=st.data())
def test_h5py_style_keys_equal_numpy_indexing(
    case: tuple[np.ndarray[Any, Any], tuple[int, ...], str], data: st.DataObject
) -> None:
    a, chunk, codec = case
    with opened(a, chunk, codec) as f:
        ds = f["x"]
        for _ in range(6):
            key = data.draw(h5_keys(a.shape))
            got, want = ds[key], a[key]
            if is_empty(key, a.shape):  # as in h5py and NumPy: an empty array
                assert got.shape == want.shape
                continue
            if np.ndim(want) == 0:
                assert np.ndim(got) == 0
            assert_same(got, want)


@FAST
@given(case=cases(max_rank=3), data=st.data())
def test_a_zero_step_is_refused(
    case: tuple[np.ndarray[Any, Any], tuple[int, ...], str], data: st.DataObject
) -> None:
    a, chunk, codec = case
    with opened(a, chunk, codec) as f:
        axis = data.draw(st.integers(0, a.ndim - 1))
        key: list[Any] = [slice(None)] * a.ndim
        key[axis] = slice(None, None, 0)
        with pytest.raises(tet.SelectionError, match=f"slice step cannot be zero on axis {axis}"):
            f["x"][tuple(key)]


@pytest.mark.parametrize("index", [True, np.True_, 1.5, "a", None, {0}],
                         ids=["bool", "np-bool", "float", "str", "none", "set"])
@pytest.mark.parametrize("where", ["alone", "tuple"])
def test_indices_that_are_not_integers_arrays_or_slices_raise_type_error(
    index: Any, where: str
) -> None:
    a = np.arange(16, dtype=np.int32).reshape(4, 4)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "a.tet"
        write(path, "x", a, (3, 3), "raw")
        with tet.open(path) as f:
            key = index if where == "alone" else (slice(None), index)
            with pytest.raises(TypeError, match=r"unsupported index .* on axis"):
                f["x"][key]


@FAST
@given(case=cases(), data=st.data())
def test_zero_copy_fast_path_equals_the_copying_path(
    case: tuple[np.ndarray[Any, Any], tuple[int, ...], str], data: st.DataObject
) -> None:
    """``copy=None`` (a view when the box is exactly one raw chunk) gives what
    ``copy=True`` gives, for exact single chunks and for any other selection."""
    a, chunk, codec = case
    with opened(a, chunk, codec) as f:
        tile = [data.draw(st.integers(0, -(-n // c) - 1)) for n, c in zip(a.shape, chunk)]
        one_chunk = [{"start": t * c, "stop": min((t + 1) * c, n)}
                     for t, c, n in zip(tile, chunk, a.shape)]
        key = tuple(slice(x["start"], x["stop"]) for x in one_chunk)
        view = f.read_numpy("x", one_chunk, copy=None)
        assert_same(view, a[key])
        assert_same(f.read_numpy("x", one_chunk, copy=True), a[key])
        assert view.flags.writeable is (codec != "raw")
        if codec == "raw":
            assert_same(f.read_numpy("x", one_chunk, copy=False), a[key])
        else:
            with pytest.raises(tet.TetError):
                f.read_numpy("x", one_chunk, copy=False)
        axes = [data.draw(wire_axis(n)) for n in a.shape]
        sel = [w for w, _ in axes]
        want = a[tuple(sl for _, sl in axes)]
        assert_same(f.read_numpy("x", sel, copy=None), want)


@pytest.mark.parametrize(
    "key",
    [
        np.s_[np.int64(1):np.int32(5)],
        np.s_[:: np.int64(2)],
        np.s_[np.intp(1) :: np.uint8(3), np.int16(-2)],
        (np.uint8(2), Ellipsis),
        np.s_[..., np.int64(-1)],
    ],
    ids=["bounds", "step", "mixed", "int-ellipsis", "ellipsis-negative"],
)
def test_numpy_integer_keys(key: Any) -> None:
    """NumPy integers work wherever Python ints do (bounds, steps, indices), as in NumPy."""
    a = np.arange(60, dtype=np.float64).reshape(6, 10)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "n.tet"
        write(path, "x", a, (4, 4), "raw")
        with tet.open(path) as f:
            assert_same(f["x"][key], a[key])


# ---------------------------------------------------------------------------
# streaming


def partition(draw: st.DrawFn, n: int) -> list[tuple[int, int]]:
    """Split [0, n) into consecutive non-empty intervals."""
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=min(n - 1, 4)))) if n > 1 else []
    bounds = [0, *cuts, n]
    return list(itertools.pairwise(bounds))


@st.composite
def stream_cases(draw: st.DrawFn) -> dict[str, Any]:
    a, chunk, codec = draw(cases(max_rank=4))
    blocks = list(itertools.product(*(partition(draw, n) for n in a.shape)))
    order = draw(st.permutations(range(len(blocks))))
    skip = draw(st.sets(st.sampled_from(range(len(blocks))), max_size=len(blocks) // 3))
    how = [draw(st.sampled_from(("setitem", "write"))) for _ in blocks]
    return {"a": a, "chunk": chunk, "codec": codec, "blocks": blocks, "order": order,
            "skip": skip, "how": how}


def put(stream: tet.DatasetStream, a: np.ndarray[Any, Any],
        block: tuple[tuple[int, int], ...], how: str) -> None:
    key = tuple(slice(lo, hi) for lo, hi in block)
    if how == "setitem":
        stream[key] = a[key]
    else:
        stream.write(stored(a[key]), [lo for lo, _ in block])


@FAST
@given(case=stream_cases(), data=st.data())
def test_streamed_blocks_in_any_order_read_back(case: dict[str, Any], data: st.DataObject) -> None:
    a, blocks = case["a"], case["blocks"]
    want = stored(a).copy()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "s.tet"
        with tet.TetWriter.create(path) as w:
            stream = w.create_dataset("s", a.shape, a.dtype, chunk_shape=case["chunk"],
                                      codec=case["codec"])
            assert stream.shape == a.shape
            written = []
            for i in case["order"]:
                key = tuple(slice(lo, hi) for lo, hi in blocks[i])
                if i in case["skip"]:
                    want[key] = 0
                    continue
                put(stream, a, blocks[i], case["how"][i])
                written.append(blocks[i])
            if written:
                # Any non-empty part of a written block may not be written again.
                block = data.draw(st.sampled_from(written))
                sub = []
                for lo, hi in block:
                    s = data.draw(st.integers(lo, hi - 1))
                    sub.append((s, data.draw(st.integers(s + 1, hi))))
                key = tuple(slice(lo, hi) for lo, hi in sub)
                with pytest.raises(ValueError):
                    stream[key] = a[key]
        with tet.open(path) as f:
            assert f["s"].chunk_shape == case["chunk"]
            assert_same(f.read_numpy("s"), want)


def test_stream_with_nothing_written_reads_zeros() -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "z.tet"
        with tet.TetWriter.create(path) as w:
            w.create_dataset("z", (7, 5), np.float32, chunk_shape=(3, 2), codec="zstd")
        with tet.open(path) as f:
            assert_same(f.read_numpy("z"), np.zeros((7, 5), np.float32))


def test_stream_integer_keys_and_broadcast_scalars() -> None:
    a = np.arange(6 * 4, dtype=np.int64).reshape(6, 4)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "k.tet"
        with tet.TetWriter.create(path) as w:
            s = w.create_dataset("k", a.shape, a.dtype, chunk_shape=(4, 3))
            for i in range(5):
                s[i] = a[i]          # an int drops the axis, as in NumPy
            s[5, ...] = 7            # a scalar broadcasts over the region
        want = a.copy()
        want[5] = 7
        with tet.open(path) as f:
            assert_same(f.read_numpy("k"), want)


def test_stream_rejects_strided_and_out_of_bounds_blocks() -> None:
    with tempfile.TemporaryDirectory() as d:
        w = tet.TetWriter.create(Path(d) / "r.tet")
        s = w.create_dataset("r", (10, 4), np.float64, chunk_shape=(3, 3))
        with pytest.raises(ValueError):
            s[::2] = np.zeros((5, 4))
        with pytest.raises(ValueError):
            s.write(np.zeros((4, 4)), (8, 0))
        with pytest.raises(ValueError):
            s.write(np.zeros((4,)), (0, 0))
        w.abort()


@pytest.mark.parametrize("codec", CODECS)
def test_refused_stream_write_changes_nothing(codec: str) -> None:
    """A write refused for overlap must leave the stream as it was, so the caller can
    retry with the part that was never written."""
    a = np.arange(10, dtype=np.float32)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "o.tet"
        with tet.TetWriter.create(path) as w:
            s = w.create_dataset("o", (10,), np.float32, chunk_shape=(4,), codec=codec)
            s[0:2] = a[0:2]                  # part of tile 0
            with pytest.raises(ValueError):
                s[1:8] = a[1:8] + 100        # overlaps [1:2]; also covers all of tile 1
            s[2:10] = a[2:10]                # the rest, never written before
        with tet.open(path) as f:
            assert_same(f.read_numpy("o"), a)


# ---------------------------------------------------------------------------
# several datasets, append


@FAST
@given(datasets=st.lists(cases(max_rank=3), min_size=1, max_size=4))
def test_many_datasets_in_one_file(
    datasets: list[tuple[np.ndarray[Any, Any], tuple[int, ...], str]],
) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.tet"
        with tet.TetWriter.create(path) as w:
            for i, (a, chunk, codec) in enumerate(datasets):
                w.write_dataset(f"d{i}", a, chunk_shape=chunk, codec=codec)
            assert w.dataset_count == len(datasets)
        with tet.open(path) as f:
            assert f.datasets() == [f"d{i}" for i in range(len(datasets))]
            assert len(f) == len(datasets)
            for i, (a, chunk, _) in enumerate(datasets):
                assert f[i].name == f"d{i}"
                assert f[f"d{i}"].chunk_shape == chunk
                assert_same(f.read_numpy(f"d{i}"), a)


@FAST
@given(first=st.lists(cases(max_rank=3), min_size=1, max_size=3),
       second=st.lists(cases(max_rank=3), min_size=1, max_size=3))
def test_append_keeps_old_datasets(
    first: list[tuple[np.ndarray[Any, Any], tuple[int, ...], str]],
    second: list[tuple[np.ndarray[Any, Any], tuple[int, ...], str]],
) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "p.tet"
        with tet.TetWriter.create(path) as w:
            for i, (a, chunk, codec) in enumerate(first):
                w.write_dataset(f"old{i}", a, chunk_shape=chunk, codec=codec,
                                attrs={"i": i}, dim_names=[f"ax{k}" for k in range(a.ndim)])
        with tet.open(path) as f:
            created = f.metadata["file"]["created_at"]
            history = f.history
        with tet.TetWriter.open_append(path) as w:
            assert w.dataset_count == 0
            for i, (a, chunk, codec) in enumerate(second):
                w.write_dataset(f"new{i}", a, chunk_shape=chunk, codec=codec)
            w.push_history_event("append", "test")
        with tet.open(path) as f:
            assert f.datasets() == [f"old{i}" for i in range(len(first))] + [
                f"new{i}" for i in range(len(second))]
            for i, (a, chunk, _) in enumerate(first):
                ds = f[f"old{i}"]
                assert ds.chunk_shape == chunk
                assert dict(ds.attrs) == {"i": str(i)}
                assert ds.dim_names == tuple(f"ax{k}" for k in range(a.ndim))
                assert_same(f.read_numpy(f"old{i}"), a)
            for i, (a, chunk, _) in enumerate(second):
                assert f[f"new{i}"].chunk_shape == chunk
                assert_same(f.read_numpy(f"new{i}"), a)
            assert f.metadata["file"]["created_at"] == created
            assert f.history[: len(history)] == history
            assert [h["op"] for h in f.history[len(history):]] == ["append"]


def test_append_twice_and_stream_into_append_session() -> None:
    a = np.arange(30, dtype=np.uint16).reshape(5, 6)
    b = np.linspace(0, 1, 17, dtype=np.float64)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.tet"
        tet.write_dataset(path, "a", a, chunk_shape=(2, 4), codec="zstd")
        with tet.TetWriter.open_append(path) as w:
            w.write_dataset("b", b, chunk_shape=(5,))
        with tet.TetWriter.open_append(path) as w:
            s = w.create_dataset("c", (4, 4), np.int16, chunk_shape=(3, 3))
            s[:, :] = np.full((4, 4), -3, np.int16)
        with tet.open(path) as f:
            assert f.datasets() == ["a", "b", "c"]
            assert_same(f.read_numpy("a"), a)
            assert_same(f.read_numpy("b"), b)
            assert_same(f.read_numpy("c"), np.full((4, 4), -3, np.int16))
            assert_same(f["a"][1:, ::3], a[1:, ::3])


# ---------------------------------------------------------------------------
# input memory layouts


def layouts(a: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
    """The same values as `a` in other memory layouts and byte orders."""
    wide = np.zeros((a.shape[0] * 2, *a.shape[1:-1], a.shape[-1] * 3), dtype=a.dtype)
    wide[::2, ..., 1::3] = a
    out = {
        "fortran": np.asfortranarray(a),
        "transposed": np.ascontiguousarray(a.T).T,
        "strided": wide[::2, ..., 1::3],
    }
    if a.dtype.itemsize > 1 and a.dtype != np.bool_:
        out["big-endian"] = a.astype(a.dtype.newbyteorder(">"))
    return out


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("codec", CODECS)
def test_non_contiguous_and_big_endian_inputs(dtype: str, codec: str) -> None:
    a = make_array(dtype, (5, 3, 7), seed=11)
    with tempfile.TemporaryDirectory() as d:
        for name, variant in layouts(a).items():
            assert np.array_equal(variant, a, equal_nan=dtype.startswith("float")), name
            path = Path(d) / f"{name}.tet"
            write(path, "x", variant, (2, 2, 3), codec)
            with tet.TetWriter.create(Path(d) / f"{name}-s.tet") as w:
                s = w.create_dataset("x", a.shape, variant.dtype, chunk_shape=(2, 2, 3),
                                     codec=codec)
                s[:, :2] = variant[:, :2]
                s.write(variant[:, 2:], (0, 2, 0))
            for p in (path, Path(d) / f"{name}-s.tet"):
                with tet.open(p) as f:
                    assert_same(f.read_numpy("x"), a)
