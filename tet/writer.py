"""Writing: `TetWriter` sessions and the one-shot `write_dataset`.

A session queues datasets (whole arrays, or streamed block by block with
bounded memory) and `commit` writes the complete file beside the target, fsyncs
it and renames it into place: a crash never leaves a torn file where a good one
was.  Payloads are written in index order, back to back; tiling and zstd run in
C across all cores, a window of chunks per call.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np

from tet import dtypes, kernels
from tet.errors import CatalogError, TetError
from tet.layout import (
    ENTRY_DTYPE,
    FLAG_FOOTER,
    WRITE_PREFIX,
    Catalog,
    DatasetRecord,
    encode_footer,
    encode_header,
    header_length,
    history_row,
    tile_counts,
)
from tet.selection import box_from_key

__all__ = ["DatasetStream", "TetWriter", "default_chunk_shape", "write_dataset"]

PathLike = str | os.PathLike[str]
CODECS = {"raw": 0, "zstd": 1}
TARGET_CHUNK_BYTES = 8 * 1024 * 1024
WINDOW_BYTES = 16 * 1024 * 1024
MAX_NAME_BYTES = 1024


def _now() -> str:
    return str(int(time.time()))


def _fail(msg: str) -> CatalogError:
    return CatalogError(WRITE_PREFIX + msg)


def default_chunk_shape(shape: Sequence[int], itemsize: int) -> tuple[int, ...]:
    """Chunks of at most 8 MiB (whole array when it fits): halve the longest axis
    until the tile fits, so tiles stay roughly square for hyperslab reads."""
    chunk = list(shape)
    while math.prod(chunk) * itemsize > TARGET_CHUNK_BYTES and max(chunk) > 1:
        d = chunk.index(max(chunk))
        chunk[d] = -(-chunk[d] // 2)
    return tuple(chunk)


def _grid(shape: Sequence[int], chunk: Sequence[int]) -> tuple[np.ndarray[Any, Any], ...]:
    """(coords, origin, extent) of every tile, in linear grid order ([n, ndim] each)."""
    counts = tile_counts(shape, chunk)
    coords = np.indices(counts, dtype=np.int64).reshape(len(counts), -1).T
    origin = coords * np.asarray(chunk, dtype=np.int64)
    extent = np.minimum(origin + np.asarray(chunk), np.asarray(shape)) - origin
    return coords, origin, extent


def _windows(raw: np.ndarray[Any, Any]) -> list[slice]:
    """Split tiles into runs of about WINDOW_BYTES (at least one tile each)."""
    edges = np.searchsorted(np.cumsum(raw), np.arange(WINDOW_BYTES, int(raw.sum()), WINDOW_BYTES))
    bounds = sorted({0, *[int(e) + 1 for e in edges], len(raw)})
    return [slice(a, b) for a, b in itertools.pairwise(bounds) if a < b]


def _entries(dataset_id: int, coords: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    e = np.zeros(len(coords), dtype=ENTRY_DTYPE)
    e["dataset_id"] = dataset_id
    e["chunk_index"][:, : coords.shape[1]] = coords
    return e


def _write_all(out: IO[bytes], data: np.ndarray[Any, Any]) -> None:
    """Write every byte (a raw file's write may be partial)."""
    view = memoryview(data.data).cast("B")
    while len(view):
        done = out.write(view)
        if not done:
            raise OSError(f"short write to {getattr(out, 'name', 'file')}")
        view = view[done:]


def _copy_runs(src_fd: int, out: IO[bytes], offsets: np.ndarray[Any, Any],
               lengths: np.ndarray[Any, Any]) -> None:
    """Append byte spans of another file to `out`, merging adjacent spans."""
    if not len(offsets):
        return
    breaks = np.flatnonzero(offsets[1:] != offsets[:-1] + lengths[:-1]) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [len(offsets)]))
    for a, b in zip(starts, ends):
        pos, left = int(offsets[a]), int(offsets[b - 1] + lengths[b - 1] - offsets[a])
        out.flush()
        while left > 0:
            n = min(left, WINDOW_BYTES)
            try:
                done = os.copy_file_range(src_fd, out.fileno(), n, pos)
            except OSError:
                chunk = os.pread(src_fd, n, pos)
                _write_all(out, np.frombuffer(chunk, np.uint8))
                done = len(chunk)
            if done <= 0:
                raise CatalogError(f"{WRITE_PREFIX}source file ended early at offset {pos}")
            pos += done
            left -= done


# ---------------------------------------------------------------------------
# Pending datasets: each writes its payloads in index order and returns its rows.


@dataclass
class _Pending:
    record: DatasetRecord
    meta: dict[str, Any]

    def emit(self, out: IO[bytes], dataset_id: int, at: int) -> np.ndarray[Any, Any]:
        raise NotImplementedError

    def close(self) -> None:
        """Release anything held (spool files)."""


@dataclass
class _ArraySource(_Pending):
    array: np.ndarray[Any, Any] = field(default_factory=lambda: np.zeros(0))
    codec: int = 0
    level: int = 0

    def emit(self, out: IO[bytes], dataset_id: int, at: int) -> np.ndarray[Any, Any]:
        r = self.record
        coords, origin, extent = _grid(r.shape, r.chunk_shape)
        entries = _entries(dataset_id, coords)
        raw = np.prod(extent, axis=1) * self.array.dtype.itemsize
        stored = np.zeros(len(coords), dtype=np.uint64)
        windows = _windows(raw)
        cap = max(kernels.encode_capacity(self.codec, raw[w]) for w in windows)
        # Two buffers: C encodes window k+1 while a writer thread writes window k.
        buffers = [np.empty(cap, dtype=np.uint8) for _ in range(min(2, len(windows)))]
        busy: list[Future[None] | None] = [None] * len(buffers)
        with ThreadPoolExecutor(max_workers=1) as writer:
            for k, w in enumerate(windows):
                slot = k % len(buffers)
                if busy[slot] is not None:
                    busy[slot].result()  # type: ignore[union-attr]
                payload, lens = kernels.encode(self.array, origin[w], extent[w], codec=self.codec,
                                               level=self.level, scratch=buffers[slot])
                busy[slot] = writer.submit(_write_all, out, payload)
                stored[w] = lens
            for f in busy:
                if f is not None:
                    f.result()
        ends = np.cumsum(stored, dtype=np.uint64)
        entries["payload_offset"] = np.uint64(at) + ends - stored
        entries["raw_byte_len"] = raw
        entries["stored_byte_len"] = stored
        entries["codec"] = self.codec
        return entries


@dataclass
class _CopiedSource(_Pending):
    """A dataset of the file being appended to: payload bytes copied verbatim."""

    old: np.ndarray[Any, Any] = field(default_factory=lambda: np.zeros(0, ENTRY_DTYPE))
    fd: int = -1

    def emit(self, out: IO[bytes], dataset_id: int, at: int) -> np.ndarray[Any, Any]:
        entries = self.old.copy()
        entries["dataset_id"] = dataset_id
        stored = entries["stored_byte_len"]
        _copy_runs(self.fd, out, entries["payload_offset"], stored)
        entries["payload_offset"] = np.uint64(at) + np.cumsum(stored, dtype=np.uint64) - stored
        return entries


class DatasetStream:
    """A dataset written block by block: ``stream[a:b, :] = block``.

    Blocks may have any position and size; tiles they cover completely are
    encoded at once and spooled beside the target, tiles they cover partly wait
    in memory until the rest arrives.  Memory stays bounded by the blocks in
    flight.  Elements never written read as 0 (as in h5py and zarr).
    """

    def __init__(self, record: DatasetRecord, dtype: np.dtype[Any], codec: int, level: int,
                 spool_dir: Path) -> None:
        self.record = record
        self._dtype = dtype
        self._codec = codec
        self._level = level
        self._spool_dir = spool_dir
        self._spool: IO[bytes] | None = None
        self._done: dict[int, tuple[int, int]] = {}  # linear tile -> (spool offset, length)
        self._partial: dict[int, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]] = {}
        self._counts = tile_counts(record.shape, record.chunk_shape)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.record.shape

    def _spool_file(self) -> IO[bytes]:
        if self._spool is None:
            path = self._spool_dir / f".{self.record.name.replace('/', '_')}.{os.getpid()}.spool"
            self._spool = path.open("w+b")
            path.unlink()  # anonymous: nothing is left behind if the process dies
        return self._spool

    def __setitem__(self, key: Any, block: Any) -> None:
        sel = box_from_key(key, self.shape)
        data = np.broadcast_to(np.asarray(block), sel.shape).astype(self._dtype, copy=False)
        if sel.box is None:
            return
        if any(k != 1 for k in sel.box.step):
            raise ValueError("streamed writes take unit-step regions")
        self.write(np.ascontiguousarray(data.reshape(sel.box.shape)), sel.box.start)

    def write(self, block: np.ndarray[Any, Any], offset: Sequence[int]) -> None:
        """Write a dense block whose first element lands at `offset`."""
        r = self.record
        block = np.ascontiguousarray(block, dtype=self._dtype)
        if block.ndim != r.ndim or len(offset) != r.ndim:
            raise ValueError(f"block of rank {block.ndim} for a rank-{r.ndim} dataset")
        lo = np.asarray(offset, dtype=np.int64)
        hi = lo + np.asarray(block.shape)
        if (lo < 0).any() or (hi > np.asarray(r.shape)).any():
            raise ValueError(f"block {block.shape} at {tuple(offset)} exceeds shape {r.shape}")
        chunk = np.asarray(r.chunk_shape)
        first, last = lo // chunk, (hi - 1) // chunk
        coords = np.indices(tuple(last - first + 1)).reshape(r.ndim, -1).T + first
        t0 = coords * chunk
        t1 = np.minimum(t0 + chunk, np.asarray(r.shape))
        full = np.all((t0 >= lo) & (t1 <= hi), axis=1)
        linear = np.ravel_multi_index(coords.T, self._counts)
        clash = [int(x) for x in linear if int(x) in self._done]
        if clash:
            c = np.unravel_index(clash[0], self._counts)
            raise ValueError(f"tile {[int(v) for v in c]} of {r.name!r} was already written")
        partial = np.flatnonzero(~full)
        regions = [self._partial_region(int(linear[i]), t0[i], t1[i], lo, hi) for i in partial]
        if full.any():
            payload, lens = kernels.encode(block, t0[full] - lo, t1[full] - t0[full],
                                           codec=self._codec, level=self._level)
            self._spool_tiles(linear[full], payload, lens)
        for i, (dst, src) in zip(partial, regions):
            self._write_partial(int(linear[i]), t0[i], t1[i], dst, block[src])

    def _spool_tiles(self, linear: np.ndarray[Any, Any], payload: np.ndarray[Any, Any],
                     lens: np.ndarray[Any, Any]) -> None:
        spool = self._spool_file()
        spool.seek(0, os.SEEK_END)
        at = spool.tell()
        _write_all(spool, payload)
        for key, off, n in zip(linear, np.cumsum(lens) - lens, lens):
            self._done[int(key)] = (at + int(off), int(n))

    def _partial_region(self, key: int, t0: np.ndarray[Any, Any], t1: np.ndarray[Any, Any],
                        lo: np.ndarray[Any, Any], hi: np.ndarray[Any, Any]) -> tuple[Any, Any]:
        """(slices in the tile, slices in the block) of a partly covered tile; refuses
        overlap with what the tile already holds before anything is written."""
        a, b = np.maximum(lo, t0), np.minimum(hi, t1)
        dst = tuple(slice(int(x), int(y)) for x, y in zip(a - t0, b - t0))
        src = tuple(slice(int(x), int(y)) for x, y in zip(a - lo, b - lo))
        if key in self._partial and self._partial[key][1][dst].any():
            c = [int(v) for v in np.unravel_index(key, self._counts)]
            raise ValueError(f"part of tile {c} of {self.record.name!r} was already written")
        return dst, src

    def _write_partial(self, key: int, t0: np.ndarray[Any, Any], t1: np.ndarray[Any, Any],
                       dst: Any, values: np.ndarray[Any, Any]) -> None:
        if key not in self._partial:
            shape = tuple(int(v) for v in t1 - t0)
            self._partial[key] = (np.zeros(shape, self._dtype), np.zeros(shape, bool))
        tile, mask = self._partial[key]
        tile[dst] = values
        mask[dst] = True
        if mask.all():
            del self._partial[key]
            self._encode_tiles([key], [tile])

    def _encode_tiles(self, keys: Sequence[int], tiles: Sequence[np.ndarray[Any, Any]]) -> None:
        for key, tile in zip(keys, tiles):
            origin = np.zeros((1, tile.ndim), dtype=np.int64)
            extent = np.asarray([tile.shape], dtype=np.int64)
            payload, lens = kernels.encode(tile, origin, extent, codec=self._codec,
                                           level=self._level)
            self._spool_tiles(np.asarray([key]), payload, lens)

    def _finish(self) -> None:
        """Encode what is left: partly written tiles, then never written ones (zeros)."""
        keys = list(self._partial)
        self._encode_tiles(keys, [self._partial[k][0] for k in keys])
        self._partial.clear()
        r = self.record
        coords, _, extent = _grid(r.shape, r.chunk_shape)
        missing = np.asarray([k for k in range(len(coords)) if k not in self._done], np.int64)
        if len(missing):
            zeros = np.zeros(r.chunk_shape, self._dtype)
            payload, lens = kernels.encode(zeros, np.zeros((len(missing), r.ndim), np.int64),
                                           extent[missing], codec=self._codec, level=self._level)
            self._spool_tiles(missing, payload, lens)


@dataclass
class _StreamSource(_Pending):
    stream: DatasetStream | None = None

    def emit(self, out: IO[bytes], dataset_id: int, at: int) -> np.ndarray[Any, Any]:
        assert self.stream is not None
        s = self.stream
        s._finish()
        coords, _, extent = _grid(s.record.shape, s.record.chunk_shape)
        entries = _entries(dataset_id, coords)
        spans = np.asarray([s._done[k] for k in range(len(coords))], dtype=np.uint64)
        spool = s._spool_file()
        spool.flush()
        _copy_runs(spool.fileno(), out, spans[:, 0], spans[:, 1])
        stored = spans[:, 1]
        entries["payload_offset"] = np.uint64(at) + np.cumsum(stored, dtype=np.uint64) - stored
        entries["raw_byte_len"] = np.prod(extent, axis=1) * s._dtype.itemsize
        entries["stored_byte_len"] = stored
        entries["codec"] = s._codec
        return entries

    def close(self) -> None:
        if self.stream is not None and self.stream._spool is not None:
            self.stream._spool.close()


# ---------------------------------------------------------------------------


class TetWriter:
    """A write session: queue datasets and history, then `commit` the whole file.

    Use `create` for a new file or `open_append` to add datasets to an existing
    one (its payload bytes are copied verbatim).  As a context manager the
    session commits on a clean exit and discards everything on an exception.
    """

    def __init__(self, path: PathLike, *, _append: bool = False, tool: str = "tet-py") -> None:
        from tet.file import TetFile  # the reader sits beside us, not below

        self._path = Path(os.path.expanduser(os.fspath(path)))
        self._pending: list[_Pending] = []
        self._history: list[dict[str, Any]] = []
        self._old_history: list[dict[str, Any]] = []
        self._metadata: dict[str, Any] = {}
        self._budget = (0, 0)
        self._tool = tool
        self._committed = False
        self._source: TetFile | None = None
        self._queued = 0
        self._source_fd = -1
        if _append:
            self._source = TetFile(self._path)
            cat = self._source.catalog
            self._old_history = [dict(h) for h in cat.history]
            self._metadata = _deep_copy(cat.metadata)
            self._budget = (cat.budget_percent_bps, cat.budget_bytes)
            self._take_existing(cat)

    def _take_existing(self, cat: Catalog) -> None:
        fd = self._source_fd = os.open(self._path, os.O_RDONLY)
        for i, record in enumerate(cat.datasets):
            rows = cat.entries[cat.entries["dataset_id"] == i]
            self._pending.append(_CopiedSource(record, {}, old=rows, fd=fd))

    @classmethod
    def create(cls, path: PathLike, *, tool: str = "tet-py") -> TetWriter:
        """A session for a new file (created or replaced at `commit`); `tool` is recorded
        as the footer's ``file.tool``."""
        return cls(path, tool=tool)

    @classmethod
    def open_append(cls, path: PathLike) -> TetWriter:
        """A session that keeps the datasets, history, metadata and settings of `path`."""
        return cls(path, _append=True)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def dataset_count(self) -> int:
        """Datasets queued in this session (not counting those already in the file)."""
        return self._queued

    def __enter__(self) -> TetWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None and not self._committed:
            self.commit()
        else:
            self.abort()

    # -- queueing -----------------------------------------------------------
    def _check_name(self, name: str) -> None:
        if not isinstance(name, str) or not name.strip():
            raise _fail("dataset name must be a non-empty string")
        if len(name.encode("utf-8")) > MAX_NAME_BYTES:
            raise _fail(f"dataset name exceeds {MAX_NAME_BYTES} bytes")
        for p in self._pending:
            if p.record.name == name:
                which = "exists in file" if isinstance(p, _CopiedSource) else "queued in session"
                raise _fail(f"dataset name already {which}: {name!r}")

    def _geometry(self, name: str, shape: Sequence[int], itemsize: int,
                  chunk_shape: Sequence[int] | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
        shape = tuple(int(n) for n in shape)
        if not 1 <= len(shape) <= 8:
            if len(shape) == 0:
                raise ValueError("write_dataset requires an array with at least one dimension")
            raise _fail(f"dataset {name!r} has rank {len(shape)}; the format allows 1..8")
        if any(n < 1 for n in shape):
            raise _fail(f"dataset {name!r} has an empty axis (shape {shape}); every extent >= 1")
        chunk = (default_chunk_shape(shape, itemsize) if chunk_shape is None
                 else tuple(int(c) for c in chunk_shape))
        if len(chunk) != len(shape) or any(c < 1 for c in chunk):
            raise _fail(f"chunk_shape {chunk} does not fit shape {shape} (one extent >= 1 each)")
        return shape, chunk

    def _dataset_meta(self, name: str, shape: Sequence[int], attrs: Mapping[str, Any] | None,
                      dim_names: Sequence[str] | None,
                      coords: Mapping[str, Sequence[str]] | None) -> dict[str, Any]:
        meta: dict[str, Any] = {}
        if attrs:
            meta["attrs"] = {str(k): _attr_value(k, v) for k, v in attrs.items()}
        if dim_names is not None:
            dims = [str(d) for d in dim_names]
            if len(dims) != len(shape):
                raise _fail(f"dim_names has {len(dims)} names for a rank-{len(shape)} dataset")
            if dims:
                meta["dim_names"] = dims
        if coords:
            keys = meta.get("dim_names", [])
            out = {}
            for axis, labels in coords.items():
                d = keys.index(axis) if axis in keys else (int(axis) if str(axis).isdigit() else -1)
                if not 0 <= d < len(shape):
                    raise _fail(f"coords key {axis!r} is neither a dim name nor an axis index")
                labels = [str(x) for x in labels]
                if len(labels) > shape[d]:
                    raise _fail(f"coords {axis!r}: {len(labels)} labels for an axis of {shape[d]}")
                out[str(axis)] = {"labels": labels}
            meta["coords"] = out
        return meta

    def write_dataset(
        self,
        name: str,
        array: Any,
        *,
        chunk_shape: Sequence[int] | None = None,
        attrs: Mapping[str, Any] | None = None,
        dim_names: Sequence[str] | None = None,
        coords: Mapping[str, Sequence[str]] | None = None,
        codec: str = "raw",
        level: int = 0,
    ) -> None:
        """Queue a whole array (any of the ten dtypes; bool is stored as u8).

        Parameters
        ----------
        chunk_shape : tile extent per axis; default tiles of at most 8 MiB.
        attrs : string attributes (numbers are stored as their decimal text).
        dim_names, coords : axis names, and per-axis coordinate labels.
        codec : "raw" or "zstd"; level is the zstd level (0 = library default).
        """
        arr = np.asarray(array)
        wire = dtypes.for_numpy(arr.dtype)
        self._check_name(name)
        shape, chunk = self._geometry(name, arr.shape, wire.size, chunk_shape)
        codec_id = _codec(codec)
        data = arr.view(np.uint8) if arr.dtype.kind == "b" else arr.astype(wire.numpy, copy=False)
        meta = self._dataset_meta(name, shape, attrs, dim_names, coords)
        record = DatasetRecord(name, wire.tag, shape, chunk)
        self._pending.append(_ArraySource(record, meta, array=np.ascontiguousarray(data),
                                          codec=codec_id, level=int(level)))
        self._queued += 1

    def create_dataset(
        self,
        name: str,
        shape: Sequence[int],
        dtype: Any,
        *,
        chunk_shape: Sequence[int] | None = None,
        attrs: Mapping[str, Any] | None = None,
        dim_names: Sequence[str] | None = None,
        coords: Mapping[str, Sequence[str]] | None = None,
        codec: str = "raw",
        level: int = 0,
    ) -> DatasetStream:
        """Declare a dataset by shape and dtype and return a stream to write it
        block by block (``stream[i:j] = block``) with bounded memory."""
        wire = dtypes.for_numpy(dtype)
        self._check_name(name)
        shape_t, chunk = self._geometry(name, shape, wire.size, chunk_shape)
        meta = self._dataset_meta(name, shape_t, attrs, dim_names, coords)
        record = DatasetRecord(name, wire.tag, shape_t, chunk)
        stream = DatasetStream(record, wire.numpy, _codec(codec), int(level), self._path.parent)
        self._pending.append(_StreamSource(record, meta, stream=stream))
        self._queued += 1
        return stream

    def push_history_event(self, op: str, source: str, *, parents: Iterable[str] = (),
                           params: Mapping[str, str] | None = None) -> None:
        """Queue a history row (``at`` = now, Unix seconds)."""
        self._history.append(history_row(op, source, _now(), parents, params))

    def set_execution(self, *, memory_budget_bytes: int = 0,
                      memory_budget_percent_bps: int = 0) -> None:
        """The file's default memory budget (TIDX fields; 0 = engine default)."""
        if not 0 <= memory_budget_bytes < 2**32:
            raise ValueError("memory_budget_bytes must fit in u32")
        if not 0 <= memory_budget_percent_bps <= 10_000:
            raise ValueError("memory_budget_percent_bps must be in 0..10000")
        self._budget = (memory_budget_percent_bps, memory_budget_bytes)

    # -- commit -------------------------------------------------------------
    def commit(self, *, fsync: bool = True) -> Path:
        """Write the file beside the target and rename it into place; returns its path."""
        if self._committed:
            raise RuntimeError("TetWriterSession already committed")
        if not self._pending:
            raise _fail("at least one dataset is required")
        self._committed = True
        tmp = self._path.parent / f".{self._path.name}.{os.getpid()}.{time.time_ns()}.tmp"
        try:
            self._write(tmp, fsync)
            os.replace(tmp, self._path)
            if fsync:
                _fsync_dir(self._path.parent)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            self._release()
        return self._path

    def abort(self) -> None:
        """Discard the session; nothing is written."""
        self._committed = True
        self._release()

    def _release(self) -> None:
        for p in self._pending:
            p.close()
        if self._source_fd >= 0:
            os.close(self._source_fd)
            self._source_fd = -1
        if self._source is not None:
            self._source.close()
            self._source = None

    def _footer_parts(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        history = self._old_history + (
            self._history or [history_row("write", str(self._path), _now())]
        )
        meta = _deep_copy(self._metadata)
        for p in self._pending:
            if p.meta:
                meta.setdefault("datasets", {})[p.record.name] = p.meta
        file_meta = meta.setdefault("file", {})
        from tet import __version__

        file_meta["tool"] = self._tool
        file_meta["library_version"] = __version__
        file_meta.setdefault("created_at", _now())
        return history, meta

    def _write(self, tmp: Path, fsync: bool) -> None:
        records = [p.record for p in self._pending]
        counts = [math.prod(tile_counts(r.shape, r.chunk_shape)) for r in records]
        head_len = header_length(records, sum(counts))
        history, meta = self._footer_parts()
        with tmp.open("wb", buffering=0) as out:
            out.seek(head_len)
            at = head_len
            parts = []
            for i, p in enumerate(self._pending):
                e = p.emit(out, i, at)
                if len(e) != counts[i]:
                    raise TetError(f"{p.record.name!r}: {len(e)} tiles, expected {counts[i]}")
                at += int(e["stored_byte_len"].sum())
                parts.append(e)
            footer = encode_footer(history, meta, at)
            _write_all(out, np.frombuffer(footer, np.uint8))
            entries = np.concatenate(parts)
            bps, budget = self._budget
            out.seek(0)
            header = encode_header(records, entries, flags=FLAG_FOOTER if footer else 0,
                                   budget_percent_bps=bps, budget_bytes=budget)
            _write_all(out, np.frombuffer(header, np.uint8))
            if fsync:
                os.fsync(out.fileno())


def _codec(name: str) -> int:
    try:
        return CODECS[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r} (use 'raw' or 'zstd')") from None


def _attr_value(key: Any, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return str(value.item() if isinstance(value, np.generic) else value)
    raise TypeError(f"attr {key!r}: values are strings or numbers, got {type(value).__name__}")


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_dataset(
    path: PathLike,
    name: str,
    array: Any,
    *,
    chunk_shape: Sequence[int] | None = None,
    attrs: Mapping[str, Any] | None = None,
    dim_names: Sequence[str] | None = None,
    coords: Mapping[str, Sequence[str]] | None = None,
    history_op: str | None = None,
    history_source: str | None = None,
    codec: str = "raw",
    level: int = 0,
) -> Path:
    """Write a one-dataset file (replacing `path`) and return its path."""
    w = TetWriter.create(path)
    if history_op is not None:
        w.push_history_event(history_op, history_source or str(w.path))
    w.write_dataset(name, array, chunk_shape=chunk_shape, attrs=attrs, dim_names=dim_names,
                    coords=coords, codec=codec, level=level)
    return w.commit()
