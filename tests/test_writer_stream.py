"""Streamed datasets (`TetWriter.create_dataset`) and where their payloads go.

Direct placement: once every dataset is declared, complete tiles are written straight
to the session's output file at their final offsets (nothing is copied), so a file
streamed in index order is byte-identical to the same arrays given whole, with
payloads back to back (no `payload_order` warning).  Covered: long (1000-byte)
names; tiles completing out of order (valid, with the warning); whole arrays and
copied datasets placed between streams in catalog order; datasets declared after
the first streamed tile (the header grows: the file is rebuilt in index order);
open_append then stream; abort / exception mid-stream (old target intact, no temp
file, writes refused afterwards); file systems without O_TMPFILE and hosts without
/proc; a failed background write; streams written from several threads; the
injectable clock (history `at`, `created_at`) of TetWriter and `convert`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py  # type: ignore[import-untyped]
import numpy as np
import pytest

import tet
import tet.writer
import tet.writer_store
import tet.writer_stream
from tet.convert import convert
from tet.verify import verify

NOW = "1700000000"
A = np.arange(40 * 30, dtype=np.float32).reshape(40, 30) / 7
B = (np.arange(9 * 10 * 11, dtype=np.int64) - 500).reshape(9, 10, 11)
C = np.linspace(-1, 1, 23, dtype=np.float64)


def clock() -> str:
    return NOW


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith("."))


def findings(path: Path) -> dict[str, str]:
    """check -> severity of everything deep verify reports that is not plain ok."""
    report = verify(path, deep=True)
    assert report.ok, [f.to_dict() for f in report.findings if not f.ok]
    return {f.check: f.severity for f in report.findings if f.severity != "info"}


def rows_in_tile_order(shape: tuple[int, ...], chunk: tuple[int, ...],
                       rows_per_block: int) -> Iterator[tuple[slice, ...]]:
    """Blocks of whole tile rows along axis 0: tiles complete in index order."""
    step = chunk[0] * rows_per_block
    for lo in range(0, shape[0], step):
        yield (slice(lo, min(lo + step, shape[0])), *(slice(0, n) for n in shape[1:]))


def whole(path: Path, arrays: list[tuple[str, np.ndarray[Any, Any], tuple[int, ...], str]]
          ) -> bytes:
    """The reference: the same arrays given whole to `write_dataset`."""
    w = tet.TetWriter.create(path, clock=clock)
    for name, a, chunk, codec in arrays:
        w.write_dataset(name, a, chunk_shape=chunk, codec=codec)
    w.push_history_event("make", "test")
    w.commit()
    return path.read_bytes()


def stream_in_order(w: tet.TetWriter, name: str, a: np.ndarray[Any, Any],
                    chunk: tuple[int, ...], codec: str) -> None:
    s = w.create_dataset(name, a.shape, a.dtype, chunk_shape=chunk, codec=codec)
    for box in rows_in_tile_order(a.shape, chunk, 2):
        s[box] = a[box]


@pytest.fixture
def no_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if any payload is copied from one file to another (the spool path)."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("payloads were copied")

    for module in (tet.writer_store, tet.writer_stream):  # every caller
        monkeypatch.setattr(module, "copy_runs", refuse)


ARRAYS = [("a", A, (8, 7), "raw"), ("b", B, (4, 3, 11), "zstd"), ("c", C, (5,), "raw")]


# ---------------------------------------------------------------------------
# Names


@pytest.mark.parametrize("name", ["n" * 1000, "é" * 512, "g/" + "x" * 1022])
def test_long_dataset_names_stream(tmp_path: Path, name: str) -> None:
    """Nothing is named after the dataset: a name of up to 1024 UTF-8 bytes streams."""
    path = tmp_path / "long.tet"
    with tet.TetWriter.create(path) as w:
        s = w.create_dataset(name, A.shape, A.dtype, chunk_shape=(8, 7))
        s[:20] = A[:20]
        s[20:] = A[20:]
    with tet.open(path) as f:
        assert f.dataset_names() == [name]
        np.testing.assert_array_equal(f.read_numpy(name), A)
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------
# Direct placement


@pytest.mark.usefixtures("no_copies")
def test_streamed_in_index_order_is_byte_identical_to_whole_arrays(tmp_path: Path) -> None:
    ref = whole(tmp_path / "ref.tet", ARRAYS)
    path = tmp_path / "s.tet"
    w = tet.TetWriter.create(path, clock=clock)
    streams = [(name, w.create_dataset(name, a.shape, a.dtype, chunk_shape=chunk, codec=codec),
                a, chunk) for name, a, chunk, codec in ARRAYS]
    for _, s, a, chunk in streams:
        for box in rows_in_tile_order(a.shape, chunk, 2):
            s[box] = a[box]
            assert leftovers(tmp_path) == []  # the output is anonymous until commit
    w.push_history_event("make", "test")
    w.commit()
    assert path.read_bytes() == ref
    assert "payload_order" not in findings(path)
    assert leftovers(tmp_path) == []


@pytest.mark.usefixtures("no_copies")
def test_tiles_land_in_completion_order(tmp_path: Path) -> None:
    """Tiles written back to front: the file is valid and reads back; payloads follow
    completion order, which verify reports as a warning only."""
    path = tmp_path / "rev.tet"
    with tet.TetWriter.create(path) as w:
        s = w.create_dataset("a", A.shape, A.dtype, chunk_shape=(8, 30))
        for lo in range(32, -1, -8):
            s[lo:lo + 8] = A[lo:lo + 8]
    with tet.open(path) as f:
        np.testing.assert_array_equal(f.read_numpy("a"), A)
        offsets = f.catalog.entries["payload_offset"].tolist()
    assert offsets == sorted(offsets, reverse=True)
    assert findings(path)["payload_order"] == "warning"


@pytest.mark.usefixtures("no_copies")
def test_leftover_tiles_are_written_at_commit_in_index_order(tmp_path: Path) -> None:
    """Partly written and never written tiles are encoded at commit, in index order."""
    path = tmp_path / "left.tet"
    want = np.zeros_like(A)
    with tet.TetWriter.create(path) as w:
        s = w.create_dataset("a", A.shape, A.dtype, chunk_shape=(8, 7))
        s[0:8] = A[0:8]          # a complete tile row: placed now
        s[10:13, 3:9] = A[10:13, 3:9]  # parts of four tiles: wait for commit
    want[0:8] = A[0:8]
    want[10:13, 3:9] = A[10:13, 3:9]
    with tet.open(path) as f:
        np.testing.assert_array_equal(f.read_numpy("a"), want)
    assert "payload_order" not in findings(path)


@pytest.mark.usefixtures("no_copies")
def test_whole_arrays_are_placed_between_streams_in_catalog_order(tmp_path: Path) -> None:
    """Arrays declared before the first streamed tile go in as soon as the datasets
    before them are complete: the file is the same as with whole arrays, no copy."""
    ref = whole(tmp_path / "ref.tet", ARRAYS)
    path = tmp_path / "mix.tet"
    w = tet.TetWriter.create(path, clock=clock)
    w.write_dataset("a", A, chunk_shape=(8, 7))
    s = w.create_dataset("b", B.shape, B.dtype, chunk_shape=(4, 3, 11), codec="zstd")
    w.write_dataset("c", C, chunk_shape=(5,))
    for box in rows_in_tile_order(B.shape, (4, 3, 11), 1):
        s[box] = B[box]
    w.push_history_event("make", "test")
    w.commit()
    assert path.read_bytes() == ref
    assert "payload_order" not in findings(path)


def test_dataset_declared_after_first_tile_rebuilds_in_index_order(tmp_path: Path) -> None:
    """A later dataset grows the header past the space reserved for it: commit
    copies what was placed into a new file, still in index order."""
    ref = whole(tmp_path / "ref.tet", ARRAYS)
    path = tmp_path / "late.tet"
    w = tet.TetWriter.create(path, clock=clock)
    stream_in_order(w, "a", A, (8, 7), "raw")
    w.write_dataset("b", B, chunk_shape=(4, 3, 11), codec="zstd")  # after the first tile
    stream_in_order(w, "c", C, (5,), "raw")
    w.push_history_event("make", "test")
    w.commit()
    assert path.read_bytes() == ref
    assert "payload_order" not in findings(path)
    assert leftovers(tmp_path) == []


def test_open_append_then_stream(tmp_path: Path) -> None:
    path = tmp_path / "app.tet"
    whole(path, ARRAYS[:2])
    with tet.open(path) as f:
        old = {n: f.read_numpy(n) for n in f.dataset_names()}
        old_rows = f.catalog.entries.copy()
        old_bytes = path.read_bytes()
    with tet.TetWriter.open_append(path, clock=clock) as w:
        sc = w.create_dataset("c", C.shape, C.dtype, chunk_shape=(5,))
        sd = w.create_dataset("d", (17, 4), np.uint16, chunk_shape=(5, 4))
        sc[:10] = C[:10]  # the old payloads are copied in first, then the new tiles follow
        sc[10:] = C[10:]
        sd[:] = np.arange(68, dtype=np.uint16).reshape(17, 4)
    with tet.open(path) as f:
        assert f.dataset_names() == ["a", "b", "c", "d"]
        for n, a in old.items():
            np.testing.assert_array_equal(f.read_numpy(n), a)
        np.testing.assert_array_equal(f.read_numpy("c"), C)
        np.testing.assert_array_equal(f.read_numpy("d"), np.arange(68).reshape(17, 4))
        new = path.read_bytes()
        for o, r in zip(old_rows, f.catalog.entries[: len(old_rows)]):
            at, to = int(o["payload_offset"]), int(r["payload_offset"])
            size = int(o["stored_byte_len"])
            assert new[to : to + size] == old_bytes[at : at + size]  # copied verbatim
        assert [h["op"] for h in f.history] == ["make", "write"]
    assert "payload_order" not in findings(path)
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------
# Failure and abort


def test_abort_mid_stream_leaves_old_target_and_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "t.tet"
    old = whole(path, ARRAYS[:1])
    w = tet.TetWriter.create(path)
    s = w.create_dataset("a", A.shape, A.dtype, chunk_shape=(8, 7))
    s[:16] = A[:16] + 1
    w.abort()
    assert path.read_bytes() == old
    assert leftovers(tmp_path) == []
    with pytest.raises(RuntimeError, match=r"^TetWriterSession already committed or aborted$"):
        s[16:24] = A[16:24]
    with pytest.raises(RuntimeError, match="already committed"):
        w.commit()


def test_exception_in_with_block_mid_stream(tmp_path: Path) -> None:
    path = tmp_path / "t.tet"
    old = whole(path, ARRAYS[:1])
    with pytest.raises(KeyError), tet.TetWriter.open_append(path) as w:
        stream_in_order(w, "c", C, (5,), "raw")
        s = w.create_dataset("d", A.shape, A.dtype, chunk_shape=(8, 7))
        s[:8] = A[:8]
        raise KeyError("boom")
    assert path.read_bytes() == old
    assert leftovers(tmp_path) == []


def test_without_o_tmpfile_the_temp_file_is_named_and_removed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "O_TMPFILE")
    ref = whole(tmp_path / "ref.tet", ARRAYS[:1])
    path = tmp_path / "n.tet"
    w = tet.TetWriter.create(path, clock=clock)
    stream_in_order(w, "a", A, (8, 7), "raw")
    (tmp,) = leftovers(tmp_path)
    assert tmp.startswith(".n.tet.") and tmp.endswith(".tmp")
    w.push_history_event("make", "test")
    w.commit()
    assert path.read_bytes() == ref
    assert leftovers(tmp_path) == []
    w2 = tet.TetWriter.create(tmp_path / "gone.tet")
    stream_in_order(w2, "a", A, (8, 7), "raw")
    assert len(leftovers(tmp_path)) == 1
    w2.abort()
    assert leftovers(tmp_path) == []


def test_without_proc_link_commit_copies_into_a_named_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = whole(tmp_path / "ref.tet", ARRAYS)
    path = tmp_path / "p.tet"

    def no_proc(*args: Any, **kwargs: Any) -> None:
        raise FileNotFoundError(2, "No such file or directory", "/proc/self/fd/3")

    monkeypatch.setattr(os, "link", no_proc)
    w = tet.TetWriter.create(path, clock=clock)
    for name, a, chunk, codec in ARRAYS:
        stream_in_order(w, name, a, chunk, codec)
    w.push_history_event("make", "test")
    w.commit()
    assert path.read_bytes() == ref
    assert leftovers(tmp_path) == []


def test_failed_background_write_fails_the_session(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that failed on the writer thread surfaces at a later block; the file
    (which has a hole) is never committed, even if the caller carries on."""
    path = tmp_path / "t.tet"
    old = whole(path, ARRAYS[:1])
    real: Callable[[int, Any, int], int] = tet.writer_store._write_out
    calls = [0]

    def flaky(fd: int, data: Any, pos: int) -> int:
        calls[0] += 1
        if calls[0] == 2:
            raise OSError(28, "No space left on device")
        return real(fd, data, pos)

    monkeypatch.setattr(tet.writer_store, "_write_out", flaky)
    monkeypatch.setattr(tet.writer_store, "WRITE_AHEAD_BYTES", 0)  # one write in flight
    w = tet.TetWriter.create(path)
    s = w.create_dataset("a", A.shape, A.dtype, chunk_shape=(8, 30))
    s[0:8] = A[0:8]
    s[8:16] = A[8:16]  # queued; its write fails on the writer thread
    with pytest.raises(tet.DiskFullError) as info:
        s[16:24] = A[16:24]
    assert str(info.value) == f"cannot write {path}: No space left on device"
    assert info.value.errno == 28 and info.value.filename == str(path)
    text = (f"cannot write {path}: an earlier write to the output failed: "
            "No space left on device")
    with pytest.raises(tet.DiskFullError) as info:
        s[24:32] = A[24:32]
    assert str(info.value) == text
    with pytest.raises(tet.DiskFullError) as info:
        w.commit()
    assert str(info.value) == text
    assert path.read_bytes() == old
    assert leftovers(tmp_path) == []


def test_streams_written_from_several_threads(tmp_path: Path) -> None:
    path = tmp_path / "th.tet"
    arrays = {f"v{i}": np.arange(64 * 33, dtype=np.int32).reshape(64, 33) * (i + 1)
              for i in range(6)}
    with tet.TetWriter.create(path) as w:
        streams = {n: w.create_dataset(n, a.shape, a.dtype, chunk_shape=(4, 11))
                   for n, a in arrays.items()}

        def fill(name: str) -> None:
            a = arrays[name]
            for lo in range(0, 64, 12):
                streams[name][lo:lo + 12] = a[lo:lo + 12]

        threads = [threading.Thread(target=fill, args=(n,)) for n in arrays]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    with tet.open(path) as f:
        for n, a in arrays.items():
            np.testing.assert_array_equal(f.read_numpy(n), a)
    findings(path)


# ---------------------------------------------------------------------------
# Clock


def test_clock_sets_history_at_and_created_at(tmp_path: Path) -> None:
    path = tmp_path / "c.tet"
    ticks = iter(["100", "200", "300"])
    w = tet.TetWriter.create(path, clock=lambda: next(ticks))
    w.push_history_event("first", "x")
    stream_in_order(w, "a", A, (8, 7), "raw")
    w.commit()
    with tet.open(path) as f:
        assert f.history == [{"op": "first", "source": "x", "at": "100"}]
        assert f.metadata["file"]["created_at"] == "200"
    with tet.TetWriter.open_append(path, clock=lambda: "400") as w2:
        w2.write_dataset("c", C)
    with tet.open(path) as f:
        assert [h["at"] for h in f.history] == ["100", "400"]
        assert f.metadata["file"]["created_at"] == "200"  # kept from the first session


def test_default_clock_is_the_module_now(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "d.tet"
    w = tet.TetWriter.create(path)
    monkeypatch.setattr(tet.writer, "_now", lambda: "42")  # read when stamped, not at create
    w.write_dataset("c", C)
    w.commit()
    with tet.open(path) as f:
        assert f.history == [{"op": "write", "source": str(path), "at": "42"}]
        assert f.metadata["file"]["created_at"] == "42"


def test_convert_timestamp_and_payload_order(tmp_path: Path) -> None:
    """`convert(timestamp=...)` stamps the history row and created_at; a chunked HDF5
    source read in row-major tile order converts to payloads in index order."""
    src = tmp_path / "src.h5"
    a = np.random.default_rng(3).standard_normal((40, 24, 20)).astype(np.float32)
    with h5py.File(src, "w") as h:
        h.create_dataset("x", data=a, chunks=(4, 8, 10))
        h.create_dataset("g/y", data=np.arange(1000, dtype=np.int16), chunks=(64,))
    out = tmp_path / "out.tet"
    report = convert(src, out, jobs=2, timestamp=1234567890)
    assert [row["at"] for row in report.history] == ["1234567890"]
    with tet.open(out) as f:
        assert f.metadata["file"]["created_at"] == "1234567890"
        assert f.metadata["file"]["tool"] == "tet convert"
        np.testing.assert_array_equal(f.read_numpy("x"), a)
        np.testing.assert_array_equal(f.read_numpy("g/y"), np.arange(1000))
    assert findings(out) == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tet", "src.h5"]
