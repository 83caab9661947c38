"""The write session's Python API: what `TetWriter` refuses, what it stores, and
what it does when its writer thread cannot start.

Covers:

- writer validation (names, duplicates in session and in file, 0-d, dtypes, chunk
  shapes, dim names, coords, codecs, metadata limits, empty commit) with exact texts and
  nothing left behind; the context manager discarding on an exception; bool as uint8;
- attrs stored as strings, dataset and file metadata, the default history row (and the
  file metadata keys beside it), pushed rows, ``history_op``, history and ``created_at``
  kept by an append;
- default chunk shapes (one chunk when small, tiles of at most 8 MiB when large);
- a writer thread that cannot start (``threading.Thread.start`` raising) is a `TetError`
  naming the output, for the session's output file and for a whole array's encode
  pipeline, and nothing is left behind.

A second ``commit()`` is pinned in test_atomic_commit.py (d); streamed datasets in
test_writer_stream.py.
"""

from __future__ import annotations

import math
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tet

A = np.arange(12, dtype=np.float64).reshape(3, 4)


# ---------------------------------------------------------------------------
# writer validation


def catalog_error(message: str) -> Any:
    return pytest.raises(tet.CatalogError, match=re.escape("invalid one-chunk write spec: "
                                                           + message))


def test_writer_name_checks(tmp_path: Path) -> None:
    w = tet.TetWriter.create(tmp_path / "w.tet")
    with catalog_error("dataset name must be a non-empty string"):
        w.write_dataset("", A)
    w.write_dataset("a", A)
    with catalog_error("dataset name already queued in session"):
        w.write_dataset("a", A)
    with catalog_error("dataset name already queued in session"):
        w.create_dataset("a", (2,), np.float32)
    assert w.dataset_count == 1
    w.commit()
    with tet.TetWriter.open_append(tmp_path / "w.tet") as w2:
        with catalog_error("dataset name already exists in file"):
            w2.write_dataset("a", A)
        w2.write_dataset("b", A)


def test_writer_array_checks(tmp_path: Path) -> None:
    w = tet.TetWriter.create(tmp_path / "w.tet")
    with pytest.raises(ValueError) as info:
        w.write_dataset("z", np.float64(1.0))
    assert str(info.value) == "write_dataset requires an array with at least one dimension"
    for bad in (np.int8, np.complex64, np.complex128, np.dtype("U3")):
        with pytest.raises(TypeError):
            w.write_dataset("z", np.zeros(3, dtype=bad))
    with pytest.raises(TypeError):
        w.create_dataset("z", (3,), np.int8)
    with catalog_error("chunk_shape"):
        w.write_dataset("z", A, chunk_shape=(3,))
    with catalog_error("chunk_shape"):
        w.write_dataset("z", A, chunk_shape=(3, 4, 1))
    with catalog_error("chunk_shape"):
        w.write_dataset("z", A, chunk_shape=(0, 4))
    with catalog_error("dim_names has 1 names for a rank-2 dataset"):
        w.write_dataset("z", A, dim_names=["x"])
    with catalog_error("coords key 'q' is neither a dim name nor an axis index"):
        w.write_dataset("z", A, coords={"q": ["a"]})
    with pytest.raises(ValueError, match="unknown codec 'lz4'"):
        w.write_dataset("z", A, codec="lz4")
    with pytest.raises(tet.CatalogError):
        w.write_dataset("z", np.zeros((0, 3)))
    with pytest.raises(tet.CatalogError):
        w.write_dataset("z", np.zeros((1,) * 9))
    assert w.dataset_count == 0                     # nothing refused was queued
    with catalog_error("at least one dataset is required"):
        w.commit()
    assert not (tmp_path / "w.tet").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"coords": {"0": [str(i) for i in range(65)]}},
         "coord_labels_per_axis limit (65 > 64)"),
        ({"attrs": {str(i): "x" for i in range(65)}}, "dataset_attrs limit (65 > 64)"),
        ({"attrs": {"k": "x" * 1025}}, "attr_string_bytes limit"),
        ({"coords": {"0": ["a"] * 101}}, "101 labels for an axis of 100"),
    ],
)
def test_writer_metadata_limits(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    path = tmp_path / "l.tet"
    with pytest.raises(tet.CatalogError, match=re.escape(message)) as info:
        tet.write_dataset(path, "a", np.zeros(100), **kwargs)
    assert str(info.value).startswith("invalid one-chunk write spec: ")
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []           # no temporary file left behind


def test_context_manager_discards_on_exception(tmp_path: Path) -> None:
    path = tmp_path / "x.tet"
    with pytest.raises(KeyError), tet.TetWriter.create(path) as w:
        w.write_dataset("a", A)
        raise KeyError("boom")
    assert not path.exists()


def test_bool_is_stored_as_uint8(tmp_path: Path) -> None:
    b = np.array([[True, False, True], [False, False, True]])
    path = tet.write_dataset(tmp_path / "b.tet", "b", b)
    with tet.open(path) as f:
        assert f["b"].numpy_dtype == np.uint8
        got = f.read_numpy("b")
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, b.astype(np.uint8))


# ---------------------------------------------------------------------------
# metadata and history


def test_attrs_are_stored_as_strings(tmp_path: Path) -> None:
    attrs = {"units": "K", "n": 3, "scale": 1.5, "big": np.int64(7), "half": np.float32(0.5)}
    path = tet.write_dataset(tmp_path / "m.tet", "a", A, attrs=attrs)
    with tet.open(path) as f:
        assert dict(f["a"].attrs) == {"units": "K", "n": "3", "scale": "1.5", "big": "7",
                                      "half": "0.5"}


def test_metadata_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "m.tet"
    with tet.TetWriter.create(path) as w:
        w.write_dataset("t", A, dim_names=("time", "x"), attrs={"units": "K"},
                        coords={"time": ["t0", "t1", "t2"]})
        w.write_dataset("bare", A)
    with tet.open(path) as f:
        t = f["t"]
        assert t.dim_names == ("time", "x")
        assert dict(t.attrs) == {"units": "K"}
        assert {k: tuple(v) for k, v in t.coords.items()} == {"time": ("t0", "t1", "t2")}
        meta = f.metadata
        assert meta["datasets"] == {
            "t": {"attrs": {"units": "K"}, "dim_names": ["time", "x"],
                  "coords": {"time": {"labels": ["t0", "t1", "t2"]}}},
        }
        bare = f["bare"]
        assert bare.dim_names is None and dict(bare.attrs) == {} and dict(bare.coords) == {}
        file_meta = meta["file"]
        assert file_meta["tool"] == "tet-py"
        assert file_meta["library_version"] == tet.__version__
        assert file_meta["created_at"].isdigit()
        meta["datasets"]["t"]["attrs"]["units"] = "C"   # a copy: the file is unchanged
        assert f.metadata["datasets"]["t"]["attrs"]["units"] == "K"


def test_default_history_row(tmp_path: Path) -> None:
    path = tet.write_dataset(tmp_path / "h.tet", "a", A)
    with tet.open(path) as f:
        (row,) = f.history
        file_meta = f.metadata["file"]
    assert (row["op"], row["source"]) == ("write", str(path))
    assert row["at"].isdigit()
    assert set(row) == {"op", "source", "at"}
    assert set(file_meta) == {"tool", "library_version", "created_at"}


def test_pushed_history_rows(tmp_path: Path) -> None:
    path = tmp_path / "h.tet"
    with tet.TetWriter.create(path) as w:
        w.write_dataset("a", A)
        w.push_history_event("ingest", "raw.csv")
        w.push_history_event("clean", "step2", parents=["raw.csv"], params={"z": "1", "a": "2"})
    with tet.open(path) as f:
        history = f.history
    assert [(h["op"], h["source"]) for h in history] == [("ingest", "raw.csv"), ("clean", "step2")]
    assert history[1]["parents"] == ["raw.csv"]
    assert history[1]["params"] == {"a": "2", "z": "1"}
    assert all(h["at"].isdigit() for h in history)


def test_write_dataset_history_op(tmp_path: Path) -> None:
    path = tet.write_dataset(tmp_path / "h.tet", "a", A, history_op="convert")
    with tet.open(path) as f:
        assert [(h["op"], h["source"]) for h in f.history] == [("convert", str(path))]
    path = tet.write_dataset(tmp_path / "h2.tet", "a", A, history_op="convert",
                             history_source="in.h5")
    with tet.open(path) as f:
        assert [(h["op"], h["source"]) for h in f.history] == [("convert", "in.h5")]


def test_append_history_and_created_at(tmp_path: Path) -> None:
    path = tet.write_dataset(tmp_path / "h.tet", "a", A, attrs={"x": "1"})
    with tet.open(path) as f:
        before = f.history
        created = f.metadata["file"]["created_at"]
    with tet.TetWriter.open_append(path) as w:
        w.write_dataset("b", A, attrs={"y": "2"})
    with tet.open(path) as f:
        assert f.history[:1] == before
        assert [(h["op"], h["source"]) for h in f.history[1:]] == [("write", str(path))]
        assert f.metadata["file"]["created_at"] == created
        assert f.metadata["datasets"] == {"a": {"attrs": {"x": "1"}}, "b": {"attrs": {"y": "2"}}}


# ---------------------------------------------------------------------------
# default chunk shapes


def test_small_array_is_one_chunk(tmp_path: Path) -> None:
    a = np.zeros((300, 200), dtype=np.float32)
    path = tet.write_dataset(tmp_path / "s.tet", "a", a)
    with tet.open(path) as f:
        assert f["a"].chunk_shape == (300, 200)
        assert len(f.summary()["chunks"]) == 1


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((1200, 1000), np.float64), ((3, 1_100_000), np.float32), ((2_200_000,), np.int32),
     ((40, 50, 600), np.uint64)],
)
def test_large_array_gets_chunks_of_at_most_8_mib(tmp_path: Path, shape: tuple[int, ...],
                                                   dtype: Any) -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 100, size=shape).astype(dtype)
    assert a.nbytes > 8 * 1024 * 1024
    path = tet.write_dataset(tmp_path / "l.tet", "a", a)
    with tet.open(path) as f:
        chunk = f["a"].chunk_shape
        assert len(chunk) == a.ndim
        assert all(1 <= c <= n for c, n in zip(chunk, shape))
        assert math.prod(chunk) * a.itemsize <= 8 * 1024 * 1024
        assert len(f.summary()["chunks"]) == math.prod(-(-n // c) for n, c in zip(shape, chunk))
        assert len(f.summary()["chunks"]) > 1
        np.testing.assert_array_equal(f.read_numpy("a"), a)


# ---------------------------------------------------------------------------
# a writer thread that cannot start


def _no_threads(monkeypatch: pytest.MonkeyPatch, spare: str | None = None) -> None:
    """Make every `threading.Thread.start` raise as CPython does when the OS refuses a
    thread, except for threads whose name starts with `spare`."""
    start = threading.Thread.start

    def refuse(self: threading.Thread) -> None:
        if spare is not None and self.name.startswith(spare):
            start(self)
            return
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)


def test_an_output_whose_writer_thread_cannot_start_is_a_tet_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "t.tet"
    _no_threads(monkeypatch)
    with pytest.raises(tet.TetError) as info:
        tet.write_dataset(target, "a", A)
    monkeypatch.undo()
    assert type(info.value) is tet.TetError
    assert str(info.value) == (f"cannot write {target}: could not start the writer thread: "
                               "can't start new thread")
    assert isinstance(info.value.__cause__, RuntimeError)
    assert list(tmp_path.iterdir()) == []  # no temp file left behind
    assert tet.write_dataset(target, "a", A) == target  # with threads again, it works
    with tet.open(target) as f:
        np.testing.assert_array_equal(f.read_numpy("a"), A)


def test_an_array_whose_encode_writer_cannot_start_is_a_tet_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The output's own writer thread starts; the second one, that writes a whole
    array's encoded windows, does not."""
    target = tmp_path / "t.tet"
    old = tet.write_dataset(target, "a", A).read_bytes()
    _no_threads(monkeypatch, spare="tet-write")
    w = tet.TetWriter.create(target)
    w.write_dataset("big", np.ones((4, 5)), codec="zstd")
    with pytest.raises(tet.TetError) as info:
        w.commit()
    monkeypatch.undo()
    assert type(info.value) is tet.TetError
    assert str(info.value) == ("cannot write dataset 'big': could not start the writer thread: "
                               "can't start new thread")
    assert target.read_bytes() == old  # the target is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.tet"]
