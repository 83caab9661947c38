"""Writing: `TetWriter` sessions and the one-shot `write_dataset`.

A session queues datasets (whole arrays, or streamed block by block with
bounded memory) and `commit` finishes the file beside the target, fsyncs it and
renames it into place: a crash never leaves a torn file where a good one was.
Tiling and zstd run in C across all cores, a window of chunks per call.

Payload bytes are written once.  The header's length depends only on the
datasets (one index row per tile), so when the first streamed tile is complete
the session opens its output file (anonymous until commit), reserves the header
and from then on appends every complete tile at its final offset; whole arrays
and copied datasets are placed between the streams in catalog order.  Tiles land
in completion order, so a caller that writes in index order gets payloads back
to back in index order.  `commit` adds what is left, the footer, and the header
at offset 0 last.  A dataset declared after the first streamed tile grows the
header: `commit` then rebuilds the file in index order by copying, which costs
what a spool file would (every payload written twice).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import math
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from io import FileIO
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np

from tet import dtypes, kernels
from tet.attrs import EXT_KEY, display, encode_value, validate_ext
from tet.durable import atomic_replace, identity_of
from tet.errors import CatalogError, FileChangedError, InvalidTextError, TetError, os_error
from tet.guard import watching
from tet.integrity import encode_table, read_table
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
from tet.limits import LIMITS
from tet.safeio import Dir, checked_path, open_regular, path_text, remove_stale, temp_name
from tet.selection import box_from_key

__all__ = ["DatasetStream", "TetWriter", "default_chunk_shape", "write_dataset"]

PathLike = str | os.PathLike[str]
Clock = Callable[[], str]
CODECS = {"raw": 0, "zstd": 1}
TARGET_CHUNK_BYTES = 8 * 1024 * 1024
WINDOW_BYTES = 16 * 1024 * 1024
WRITE_AHEAD_BYTES = 64 * 1024 * 1024  # queued appends a session's writer thread may hold
MAX_NAME_BYTES = 1024
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _now() -> str:
    """The default clock: Unix seconds as a decimal string."""
    return str(int(time.time()))


def _fail(msg: str) -> CatalogError:
    return CatalogError(WRITE_PREFIX + msg)


def _text(value: str, what: str) -> str:
    """`value`, if UTF-8 can store it; a lone surrogate (what ``os.fsdecode`` makes of
    bytes that are not UTF-8) is `InvalidTextError` naming the field and the index."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidTextError(f"{WRITE_PREFIX}{what} {value!r} is not valid text: "
                               f"{exc.reason} (index {exc.start})") from None
    return value


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


class _WriteFailed(OSError):
    """A write to the output that failed; `size` is the bytes it was to write (what a
    full disk's `DiskFullError` reports)."""

    def __init__(self, exc: OSError, size: int) -> None:
        super().__init__(exc.errno, exc.strerror or str(exc))
        self.size = size


def _size(exc: BaseException, otherwise: int | None = None) -> int | None:
    return exc.size if isinstance(exc, _WriteFailed) else otherwise


def _write_all(out: IO[bytes], data: np.ndarray[Any, Any]) -> None:
    """Write every byte (a raw file's write may be partial)."""
    view = memoryview(data.data).cast("B")
    try:
        while len(view):
            done = out.write(view)
            if not done:
                raise OSError(f"short write to {getattr(out, 'name', 'file')}")
            view = view[done:]
    except OSError as exc:
        raise _WriteFailed(exc, memoryview(data.data).nbytes) from exc


def aligned_offsets(at: int, stored: np.ndarray[Any, Any], codec: np.ndarray[Any, Any],
                    elem: int) -> np.ndarray[Any, Any]:
    """Where rows of one dataset land when laid out from `at` in order: back to back,
    except that a raw tile starts at a multiple of its element size (readers that view
    a raw tile in place as its dtype, tet-py 0.8.3 among them, need that), so a gap of
    at most ``elem - 1`` zero bytes may precede it."""
    stored = np.asarray(stored, dtype=np.uint64)
    raw = np.asarray(codec) == 0
    ends = np.cumsum(stored, dtype=np.uint64)
    if not raw.any() or elem == 1:
        return np.asarray(np.uint64(at) + ends - stored)
    if raw.all() and not np.any(stored % np.uint64(elem)):  # one pad before the first
        return np.asarray(np.uint64(-(-at // elem) * elem) + ends - stored)
    out = np.empty(len(stored), dtype=np.uint64)  # mixed codecs: rare, row by row
    for i, (n, is_raw) in enumerate(zip(stored.tolist(), raw.tolist())):
        if is_raw:
            at = -(-at // elem) * elem
        out[i] = at
        at += n
    return out


def _copy_runs(src_fd: int, out: IO[bytes], offsets: np.ndarray[Any, Any],
               lengths: np.ndarray[Any, Any], dest: np.ndarray[Any, Any] | None = None,
               at: int = 0) -> None:
    """Append byte spans of another file to `out` (positioned at offset `at`), merging
    spans adjacent in both files; with `dest`, span i lands at ``dest[i]`` and the gaps
    before it are zero-filled."""
    if not len(offsets):
        return
    if dest is None:
        dest = np.uint64(at) + np.cumsum(lengths, dtype=np.uint64) - lengths
    joined = (offsets[1:] == offsets[:-1] + lengths[:-1]) & (dest[1:] == dest[:-1] + lengths[:-1])
    breaks = np.flatnonzero(~joined) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [len(offsets)]))
    for a, b in zip(starts, ends):
        pos, left = int(offsets[a]), int(offsets[b - 1] + lengths[b - 1] - offsets[a])
        if int(dest[a]) > at:
            _write_all(out, np.zeros(int(dest[a]) - at, np.uint8))
        at = int(dest[a]) + left
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
# The output file


def _pwrite_all(fd: int, data: Any, pos: int) -> int:
    """Write every byte of `data` at `pos`; returns the end offset."""
    view = memoryview(data).cast("B")
    size = len(view)
    try:
        while len(view):
            done = os.pwrite(fd, view, pos)
            if done <= 0:
                raise OSError(f"short write at offset {pos}")
            view = view[done:]
            pos += done
    except OSError as exc:
        raise _WriteFailed(exc, size) from exc
    return pos


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's sync_file_range(2), where there is one (Linux)."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    out: Callable[[int, int, int, int], int] = fn
    return out


def _write_out(fd: int, data: Any, pos: int) -> int:
    """Write `data` at `pos` and start writing it back to disk without waiting
    (SYNC_FILE_RANGE_WRITE), so the disk works while the next blocks are encoded
    and the commit's fsync finds little left to do."""
    end = _pwrite_all(fd, data, pos)
    start_writeback = _sync_file_range()
    if start_writeback is not None:
        start_writeback(fd, pos, end - pos, 2)
    return end


_worker = threading.local()


def _mark_worker(token: object) -> None:
    _worker.token = token


def _drop(file: FileIO, directory: Dir, names: list[str], writer: ThreadPoolExecutor,
          token: object) -> None:
    """Close a store once no write to its descriptor can still run (a write after the
    close could land in a file that reused the number), and remove its temp name."""

    def close() -> None:
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                directory.unlink(name)
        names.clear()
        file.close()
        directory.close()

    if getattr(_worker, "token", None) is token:  # collected on its own writer thread
        writer.submit(close)
        writer.shutdown(wait=False)
        return
    writer.shutdown(wait=True, cancel_futures=True)
    close()


class _Store:
    """A file beside the target that payloads are appended to, `base` bytes reserved
    for the header.  Anonymous (O_TMPFILE) where the file system allows, so a crash
    while blocks stream in leaves nothing behind; `name` links it in as a hidden
    ``.tmp`` file (`tet.safeio.TEMP_NAMES`) at commit, to be renamed over the target.
    Every name is relative to the target's directory, opened once."""

    def __init__(self, target: Path, base: int, *, anonymous: bool,
                 directory: Dir | None = None) -> None:
        self.target = target
        self.base = self.end = base
        self._names: list[str] = []
        self.dir = directory.dup() if directory is not None else Dir.of(target.parent)
        fd = -1
        try:
            if anonymous and hasattr(os, "O_TMPFILE"):
                with contextlib.suppress(OSError):  # no O_TMPFILE here: a named file
                    fd = self.dir.open(".", os.O_TMPFILE | os.O_RDWR, 0o666)
            if fd < 0:
                name = temp_name("write", target.name)
                fd = self.dir.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666)
                self._names.append(name)
        except BaseException:
            self.dir.close()
            raise
        self.file = FileIO(fd, "r+")
        token = object()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tet-write",
                                          initializer=_mark_worker, initargs=(token,))
        self._ahead: deque[tuple[Future[int], int]] = deque()
        self._ahead_bytes = 0
        self._failed: BaseException | None = None
        self._finalizer = weakref.finalize(self, _drop, self.file, self.dir, self._names,
                                           self._writer, token)

    def fileno(self) -> int:
        return self.file.fileno()

    def append(self, data: Any) -> int:
        """Queue `data` (contiguous bytes, left unchanged until written) for the end and
        return where it starts.  A writer thread writes it while the caller encodes
        the next block; a failed write raises from a later `append` or `flush`, and
        from every call after that."""
        self._check()
        n = memoryview(data).nbytes
        at = self.end
        self.end += n
        self._ahead.append((self._writer.submit(_write_out, self.fileno(), data, at), n))
        self._ahead_bytes += n
        while len(self._ahead) > 1 and self._ahead_bytes > WRITE_AHEAD_BYTES:
            self._wait_one()
        return at

    def _check(self) -> None:
        if self._failed is not None:  # the file has a hole: it must never be committed
            failed = self._failed
            code = failed.errno if isinstance(failed, OSError) else None
            text = (failed.strerror if isinstance(failed, OSError) and failed.strerror
                    else str(failed))
            raise os_error(OSError(code, f"an earlier write to the output failed: {text}"),
                           "cannot write", self.target, size=_size(failed))

    def _wait_one(self) -> None:
        done, n = self._ahead.popleft()
        self._ahead_bytes -= n
        try:
            done.result()
        except BaseException as exc:
            self._failed = exc
            if isinstance(exc, OSError):
                raise os_error(exc, "cannot write", self.target, size=_size(exc)) from exc
            raise

    def flush(self) -> None:
        """Wait for every queued append."""
        self._check()
        while self._ahead:
            self._wait_one()

    def at_end(self) -> FileIO:
        """The file positioned at the end, for writers that append (`emit`); they
        move `end` themselves."""
        self.flush()
        self.file.seek(self.end)
        return self.file

    def copy_rows(self, src: _Store, rows: np.ndarray[Any, Any],
                  elem: int) -> np.ndarray[Any, Any]:
        """Append the payloads of `rows` (offsets in `src`; one dataset's, of `elem`-byte
        elements) in row order, raw tiles element-aligned; returns the rows with their
        offsets here (the bytes, and so their checksums, are the same)."""
        src.flush()
        at = self.end
        stored = rows["stored_byte_len"]
        dest = aligned_offsets(at, stored, rows["codec"], elem)
        _copy_runs(src.fileno(), self.at_end(), rows["payload_offset"], stored, dest, at)
        out = rows.copy()
        out["payload_offset"] = dest
        if len(rows):
            self.end = int(dest[-1] + stored[-1])
        return out

    def align(self, elem: int) -> None:
        """Pad the end with zeros to a multiple of `elem` (before a raw tile)."""
        pad = (-self.end) % elem
        if pad:
            self.append(np.zeros(pad, np.uint8))

    def name(self) -> str:
        """The hidden temp name beside the target (linked in now if anonymous; an
        OSError where /proc is not mounted)."""
        if not self._names:
            name = temp_name("write", self.target.name)
            # linkat(AT_SYMLINK_FOLLOW): plain link() cannot take /proc links
            os.link(f"/proc/self/fd/{self.fileno()}", name, dst_dir_fd=self.dir.fd,
                    follow_symlinks=True)
            self._names.append(name)
        return self._names[0]

    def publish(self, fsync: bool) -> None:
        """Rename the temp name over the target, relative to the directory, and check
        that what is there now is this file (another process may have renamed something
        over the temp name meanwhile); with `fsync`, flush the directory."""
        try:
            atomic_replace(self.dir, self.name(), self.target.name,
                           identity=identity_of(self.fileno()), action="cannot write",
                           shown=self.target, fsync=fsync)
        except FileChangedError:
            self._names.clear()  # renamed: the temp name is not this file's any more
            raise
        self._names.clear()

    def discard(self) -> None:
        """Close the file and remove its temp name, if any (idempotent)."""
        self._finalizer()


# ---------------------------------------------------------------------------
# Pending datasets.  Each places its payloads in a store (at commit, or earlier
# while streams fill the output) and knows its index rows there, and the crc32c
# of each row's stored bytes for the file's checksum table (tet/integrity.py).


@dataclass
class _Pending:
    record: DatasetRecord
    meta: dict[str, Any]
    store: _Store | None = field(default=None, repr=False)
    rows: np.ndarray[Any, Any] | None = field(default=None, repr=False)
    crc: np.ndarray[Any, Any] | None = field(default=None, repr=False)  # uint32, per row
    ext: dict[str, Any] = field(default_factory=dict)  # its `metadata.tet` entry (tet.attrs)

    def emit(self, out: IO[bytes], dataset_id: int,
             at: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """Write every payload at `out`'s position (offset `at`), in index order;
        returns the index rows and their checksums."""
        raise NotImplementedError

    def place(self, store: _Store, dataset_id: int) -> None:
        """Write the payloads at the end of `store`."""
        at = store.end
        rows, crc = self.emit(store.at_end(), dataset_id, at)
        if len(rows):
            store.end = int(rows["payload_offset"][-1] + rows["stored_byte_len"][-1])
        self.store, self.rows, self.crc = store, rows, crc

    def rows_in(self, out: _Store, dataset_id: int) -> np.ndarray[Any, Any]:
        """This dataset's index rows with its payloads in `out`: written there now,
        copied from where they were placed earlier, or already there."""
        if self.store is None:
            self.place(out, dataset_id)
        elif self.store is not out:
            assert self.rows is not None
            self.rows = out.copy_rows(self.store, self.rows,
                                      dtypes.by_tag(self.record.dtype).size)
            self.store = out
        assert self.rows is not None
        rows = self.rows.copy()
        rows["dataset_id"] = dataset_id
        return rows


@dataclass
class _ArraySource(_Pending):
    array: np.ndarray[Any, Any] = field(default_factory=lambda: np.zeros(0))
    codec: int = 0
    level: int = 0

    def emit(self, out: IO[bytes], dataset_id: int,
             at: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        r = self.record
        coords, origin, extent = _grid(r.shape, r.chunk_shape)
        entries = _entries(dataset_id, coords)
        elem = self.array.dtype.itemsize
        raw = np.prod(extent, axis=1) * elem
        pad = (-at) % elem if self.codec == 0 else 0  # raw tiles start element-aligned
        if pad:
            _write_all(out, np.zeros(pad, np.uint8))
            at += pad
        stored = np.zeros(len(coords), dtype=np.uint64)
        crc = np.zeros(len(coords), dtype=np.uint32)
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
                                               level=self.level, scratch=buffers[slot],
                                               checksums=crc[w])
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
        return entries, crc

    def place(self, store: _Store, dataset_id: int) -> None:
        super().place(store, dataset_id)
        self.array = self.array[:0]  # written: no need to hold the caller's array


@dataclass
class _CopiedSource(_Pending):
    """A dataset of the file being appended to: payload bytes copied verbatim, with
    the checksums the old file's table recorded for them (`old_crc`), so damage done
    to them since is still seen; computed from the old file (mapped as `buf`) when
    it has no usable table."""

    old: np.ndarray[Any, Any] = field(default_factory=lambda: np.zeros(0, ENTRY_DTYPE))
    fd: int = -1
    old_crc: np.ndarray[Any, Any] | None = field(default=None, repr=False)
    buf: Any = field(default=b"", repr=False)

    def emit(self, out: IO[bytes], dataset_id: int,
             at: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        entries = self.old.copy()
        entries["dataset_id"] = dataset_id
        stored = entries["stored_byte_len"]
        crc = self.old_crc
        if crc is None:
            with watching(self.buf):  # never record checksums of zeros
                crc = kernels.crc32c_spans(self.buf, len(self.buf), entries["payload_offset"],
                                           stored)
        dest = aligned_offsets(at, stored, entries["codec"], dtypes.by_tag(self.record.dtype).size)
        _copy_runs(self.fd, out, entries["payload_offset"], stored, dest, at)
        entries["payload_offset"] = dest
        return entries, crc


class DatasetStream:
    """A dataset written block by block: ``stream[a:b, :] = block``.

    Blocks may have any position and size; tiles they cover completely are
    encoded at once and written to the session's output file (in the order they
    complete: write in index order to get payloads in index order), tiles they
    cover partly wait in memory until the rest arrives.  Memory stays bounded by
    the blocks in flight.  Elements never written read as 0 (as in h5py and zarr).
    """

    def __init__(self, record: DatasetRecord, dtype: np.dtype[Any], codec: int, level: int,
                 session: TetWriter) -> None:
        self.record = record
        self._dtype = dtype
        self._codec = codec
        self._level = level
        self._owner = weakref.ref(session)  # no cycle: a dropped session is freed at once
        self._store: _Store | None = None  # where this dataset's tiles go
        self._done: dict[int, tuple[int, int, int]] = {}  # tile -> (offset, length, crc32c)
        self._partial: dict[int, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]] = {}
        self._counts = tile_counts(record.shape, record.chunk_shape)
        self._tiles = math.prod(self._counts)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.record.shape

    @property
    def _session(self) -> TetWriter:
        session = self._owner()
        if session is None:
            raise RuntimeError(f"the TetWriter session of {self.record.name!r} is gone")
        return session

    @property
    def complete(self) -> bool:
        """Every tile is encoded and placed."""
        return len(self._done) == self._tiles

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
        self._session._check_open()
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
            crc = np.empty(int(full.sum()), np.uint32)
            payload, lens = kernels.encode(block, t0[full] - lo, t1[full] - t0[full],
                                           codec=self._codec, level=self._level, checksums=crc)
            self._session._put_tiles(self, linear[full], payload, lens, crc)
        for i, (dst, src) in zip(partial, regions):
            self._write_partial(int(linear[i]), t0[i], t1[i], dst, block[src])

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
            self._encode_tile(key, tile)
            del self._partial[key]

    def _encode_tile(self, key: int, tile: np.ndarray[Any, Any]) -> None:
        origin = np.zeros((1, tile.ndim), dtype=np.int64)
        extent = np.asarray([tile.shape], dtype=np.int64)
        crc = np.empty(1, np.uint32)
        payload, lens = kernels.encode(tile, origin, extent, codec=self._codec, level=self._level,
                                       checksums=crc)
        self._session._put_tiles(self, np.asarray([key]), payload, lens, crc)

    def _finish(self) -> None:
        """Encode what is left, in index order: partly written tiles as they are, never
        written ones as zeros (a window of them per encode call)."""
        if self.complete:
            return
        r = self.record
        _, _, extent = _grid(r.shape, r.chunk_shape)
        raw = np.prod(extent, axis=1) * self._dtype.itemsize
        zeros = np.zeros(r.chunk_shape, self._dtype)
        run: list[int] = []
        run_bytes = 0

        def flush() -> None:
            if run:
                keys = np.asarray(run, np.int64)
                crc = np.empty(len(keys), np.uint32)
                payload, lens = kernels.encode(zeros, np.zeros((len(keys), r.ndim), np.int64),
                                               extent[keys], codec=self._codec,
                                               level=self._level, checksums=crc)
                self._session._put_tiles(self, keys, payload, lens, crc)
                run.clear()

        for key in range(self._tiles):
            if key in self._done:
                continue
            if key in self._partial:
                flush()
                run_bytes = 0
                self._encode_tile(key, self._partial.pop(key)[0])
                continue
            if run and run_bytes + int(raw[key]) > WINDOW_BYTES:
                flush()
                run_bytes = 0
            run.append(key)
            run_bytes += int(raw[key])
        flush()

    def _rows(self, dataset_id: int) -> np.ndarray[Any, Any]:
        """Index rows of the finished stream, offsets in its store."""
        r = self.record
        coords, _, extent = _grid(r.shape, r.chunk_shape)
        entries = _entries(dataset_id, coords)
        spans = np.asarray([self._done[k] for k in range(len(coords))], dtype=np.uint64)
        entries["payload_offset"] = spans[:, 0]
        entries["raw_byte_len"] = np.prod(extent, axis=1) * self._dtype.itemsize
        entries["stored_byte_len"] = spans[:, 1]
        entries["codec"] = self._codec
        return entries

    def _checksums(self) -> np.ndarray[Any, Any]:
        """crc32c of the finished stream's tiles, in index order."""
        return np.asarray([self._done[k][2] for k in range(self._tiles)], dtype=np.uint32)


@dataclass
class _StreamSource(_Pending):
    stream: DatasetStream | None = None

    def rows_in(self, out: _Store, dataset_id: int) -> np.ndarray[Any, Any]:
        assert self.stream is not None
        s = self.stream
        if self.rows is None:
            s._finish()  # into its store, or into `out` if it has none yet
            self.store, self.rows, self.crc = s._store, s._rows(dataset_id), s._checksums()
        return super().rows_in(out, dataset_id)


# ---------------------------------------------------------------------------


class TetWriter:
    """A write session: queue datasets and history, then `commit` the whole file.

    Use `create` for a new file or `open_append` to add datasets to an existing
    one (its payload bytes are copied verbatim).  As a context manager the
    session commits on a clean exit and discards everything on an exception.
    Streams of one session may be written from several threads.
    """

    def __init__(self, path: PathLike, *, _append: bool = False, tool: str = "tet-py",
                 clock: Clock | None = None, _dir: Dir | None = None) -> None:
        from tet.file import TetFile  # the reader sits beside us, not below

        self._path = Path(os.path.expanduser(checked_path(path, "cannot write")))
        # `_dir`: the target's directory, already opened (and verified) by the caller;
        # every name is then made, renamed and removed relative to it (sidecars)
        self._dir = _dir
        self._clock = clock
        self._pending: list[_Pending] = []
        # Output: opened at the first streamed tile, for the datasets declared so far
        # (`_frozen` of them); `_next` is the first of those not yet placed in order.
        self._lock = threading.RLock()
        self._store: _Store | None = None
        self._stores: list[_Store] = []
        self._frozen = 0
        self._next = 0
        self._in_order = True
        self._closed = False
        self._history: list[dict[str, Any]] = []
        self._old_history: list[dict[str, Any]] = []
        self._metadata: dict[str, Any] = {}
        self._file_attrs: dict[str, Any] | None = None
        self._coord_types: dict[str, dict[str, Any]] = {}
        self._group_attrs: dict[str, dict[str, Any]] = {}
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
        assert self._source is not None
        fd, st = open_regular(self._path)
        if (st.st_dev, st.st_ino) != self._source._identity:  # replaced since it was parsed
            os.close(fd)
            self._source.close()
            raise FileChangedError(f"{self._path} was replaced while it was being opened for "
                                   "appending; open it again")
        self._source_fd = fd
        buf = self._source._buffer()
        with watching(buf):  # truncated under us: FileChangedError
            table = read_table(buf, cat)
        old_crc = table.crc if table is not None else None
        for i, record in enumerate(cat.datasets):
            mine = cat.entries["dataset_id"] == i
            rows = cat.entries[mine]
            crc = old_crc[mine] if old_crc is not None else None
            self._pending.append(_CopiedSource(record, {}, old=rows, fd=fd, old_crc=crc, buf=buf))

    @classmethod
    def create(cls, path: PathLike, *, tool: str = "tet-py",
               clock: Clock | None = None, _dir: Dir | None = None) -> TetWriter:
        """A session for a new file (created or replaced at `commit`); `tool` is recorded
        as the footer's ``file.tool``.  `clock` gives the time stamped on history rows
        and ``file.created_at`` (Unix seconds as a decimal string; default: now), so a
        caller can make output reproducible."""
        return cls(path, tool=tool, clock=clock, _dir=_dir)

    @classmethod
    def open_append(cls, path: PathLike, *, clock: Clock | None = None) -> TetWriter:
        """A session that keeps the datasets, history, metadata and settings of `path`."""
        return cls(path, _append=True, clock=clock)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def dataset_count(self) -> int:
        """Datasets queued in this session (not counting those already in the file)."""
        return self._queued

    def _stamp(self) -> str:
        return self._clock() if self._clock is not None else _now()

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
        if len(_text(name, "dataset name").encode("utf-8")) > MAX_NAME_BYTES:
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
        texts = {k: _attr_text(v) for k, v in (attrs or {}).items()}
        if any(t is not None for t in texts.values()):
            meta["attrs"] = {_text(str(k), "attr name"): _text(t, f"attr {k!r}")
                             for k, t in texts.items() if t is not None}
        if dim_names is not None:
            dims = [_text(str(d), "dim name") for d in dim_names]
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
                labels = [_text(str(x), f"coords {axis!r} label") for x in labels]
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
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue a whole array (any of the ten dtypes; bool is stored as u8).

        Parameters
        ----------
        chunk_shape : tile extent per axis; default tiles of at most 8 MiB.
        attrs : the footer attributes (layout.md §5.2 limits: 64 keys, 1024 bytes);
            strings as they are, other values (numbers, arrays, bytes, lists) as their
            display text, their typed values kept beside it (`tet.attrs`).
        dim_names, coords : axis names, and per-axis coordinate labels.
        codec : "raw" or "zstd"; level is the zstd level (0 = library default).
        extra : the dataset's typed-metadata fields (`tet.attrs`): ``attrs`` (typed
            attributes the footer's string map cannot hold: longer strings, past 64
            keys; any values), ``encoding``, ``shape`` (``[]``: 0-d), ``text``.
        """
        arr = np.asarray(array)
        wire = dtypes.for_numpy(arr.dtype)
        self._check_name(name)
        shape, chunk = self._geometry(name, arr.shape, wire.size, chunk_shape)
        codec_id = _codec(codec)
        data = arr.view(np.uint8) if arr.dtype.kind == "b" else arr.astype(wire.numpy, copy=False)
        meta = self._dataset_meta(name, shape, attrs, dim_names, coords)
        record = DatasetRecord(name, wire.tag, shape, chunk)
        source = _ArraySource(record, meta, array=np.ascontiguousarray(data), codec=codec_id,
                              level=int(level))
        source.ext = _dataset_ext(name, attrs, extra)
        self._queue(source)

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
        extra: Mapping[str, Any] | None = None,
    ) -> DatasetStream:
        """Declare a dataset by shape and dtype and return a stream to write it
        block by block (``stream[i:j] = block``) with bounded memory.  The other
        parameters are `write_dataset`'s."""
        wire = dtypes.for_numpy(dtype)
        self._check_name(name)
        shape_t, chunk = self._geometry(name, shape, wire.size, chunk_shape)
        meta = self._dataset_meta(name, shape_t, attrs, dim_names, coords)
        record = DatasetRecord(name, wire.tag, shape_t, chunk)
        stream = DatasetStream(record, wire.numpy, _codec(codec), int(level), self)
        self._queue(_StreamSource(record, meta, stream=stream,
                                  ext=_dataset_ext(name, attrs, extra)))
        return stream

    def _queue(self, source: _Pending) -> None:
        with self._lock:  # streams of this session may be writing on other threads
            self._check_name(source.record.name)
            self._pending.append(source)
            self._queued += 1

    def set_file_attrs(self, attrs: Mapping[str, Any]) -> None:
        """Replace the file-level attributes (any values `tet.attrs` can type: strings,
        numbers, arrays, bytes, lists), kept in the footer's typed metadata."""
        typed = {}
        for key, value in attrs.items():
            if not isinstance(key, str) or not key:
                raise TypeError(f"file attribute names must be non-empty strings, got {key!r}")
            typed[key] = encode_value(value, f"file attribute {key!r}")
        validate_ext({"attrs": typed})
        with self._lock:
            self._check_open()
            self._file_attrs = typed

    def set_coord_types(self, coords: Mapping[str, Mapping[str, Any]]) -> None:
        """How the footer ``coords`` labels of each dimension read back, kept in the
        footer's typed metadata (``tet.coords``): ``{dim: {"dtype": "<numpy dtype name>",
        "attrs": {...}}}`` (both optional; attrs typed as `set_file_attrs`'s; an empty entry:
        plain string labels).  Replaces the entries of the dimensions named; the others
        are kept."""
        entries: dict[str, dict[str, Any]] = {}
        for dim, spec in coords.items():
            entry: dict[str, Any] = {}
            if spec.get("dtype") is not None:
                entry["dtype"] = str(spec["dtype"])
            if spec.get("attrs"):
                entry["attrs"] = {k: encode_value(v, f"coordinate {dim!r} attribute {k!r}")
                                  for k, v in spec["attrs"].items()}
            entries[str(dim)] = entry
        validate_ext({"coords": entries})
        with self._lock:
            self._check_open()
            self._coord_types.update(entries)

    def set_group_attrs(self, group: str, attrs: Mapping[str, Any]) -> None:
        """Replace the attributes of the group `group` (the datasets named
        ``group/...``), kept in the footer's typed metadata (``tet.groups``)."""
        path = str(group).strip("/")
        if not path:
            self.set_file_attrs(attrs)
            return
        typed = {}
        for key, value in attrs.items():
            if not isinstance(key, str) or not key:
                raise TypeError(f"group {path!r} attribute names must be non-empty strings, "
                                f"got {key!r}")
            typed[key] = encode_value(value, f"group {path!r} attribute {key!r}")
        validate_ext({"groups": {path: {"attrs": typed}}})
        with self._lock:
            self._check_open()
            self._group_attrs[path] = typed

    def push_history_event(self, op: str, source: str, *, parents: Iterable[str] = (),
                           params: Mapping[str, str] | None = None) -> None:
        """Queue a history row (``at`` = now, Unix seconds)."""
        for what, text in (("history op", op), ("history source", source),
                           *(("history parent", str(p)) for p in parents),
                           *(("history param", f"{k}={v}") for k, v in (params or {}).items())):
            if isinstance(text, str):
                _text(text, what)
        self._history.append(history_row(op, source, self._stamp(), parents, params))

    def set_execution(self, *, memory_budget_bytes: int = 0,
                      memory_budget_percent_bps: int = 0) -> None:
        """The file's default memory budget (TIDX fields; 0 = engine default)."""
        if not 0 <= memory_budget_bytes < 2**32:
            raise ValueError("memory_budget_bytes must fit in u32")
        if not 0 <= memory_budget_percent_bps <= 10_000:
            raise ValueError("memory_budget_percent_bps must be in 0..10000")
        self._budget = (memory_budget_percent_bps, memory_budget_bytes)

    # -- placement ----------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("TetWriterSession already committed or aborted")

    def _freeze(self) -> _Store:
        """Open the output for the datasets declared so far: their header length is
        known (one index row per tile), so payloads can go to their final offsets."""
        records = [p.record for p in self._pending]
        tiles = sum(math.prod(tile_counts(r.shape, r.chunk_shape)) for r in records)
        with contextlib.suppress(OSError):
            remove_stale(self._dir or self._path.parent, self._path.name)
        store = self._store = _Store(self._path, header_length(records, tiles), anonymous=True,
                                     directory=self._dir)
        self._stores.append(store)
        self._frozen = len(self._pending)
        self._advance()
        return store

    def _advance(self) -> None:
        """Place whole arrays and copied datasets as soon as every dataset before them
        in catalog order is complete, so payloads written in index order stay in
        index order."""
        while self._in_order and self._store is not None and self._next < self._frozen:
            p = self._pending[self._next]
            if isinstance(p, _StreamSource):
                assert p.stream is not None
                if not p.stream.complete:
                    return
            elif p.store is None:
                p.place(self._store, self._next)
            self._next += 1

    def _put_tiles(self, stream: DatasetStream, keys: np.ndarray[Any, Any],
                   payload: np.ndarray[Any, Any], lens: np.ndarray[Any, Any],
                   crc: np.ndarray[Any, Any]) -> None:
        """Append encoded tiles of `stream` to its store and record where they are
        (and their checksums)."""
        try:
            self._put_tiles_locked(stream, keys, payload, lens, crc)
        except OSError as exc:
            raise os_error(exc, "cannot write", self._path, size=_size(exc)) from exc

    def _put_tiles_locked(self, stream: DatasetStream, keys: np.ndarray[Any, Any],
                          payload: np.ndarray[Any, Any], lens: np.ndarray[Any, Any],
                          crc: np.ndarray[Any, Any]) -> None:
        with self._lock:
            self._check_open()
            store = stream._store
            if store is None:
                store = stream._store = self._store or self._freeze()
            if stream._codec == 0:  # raw tiles start element-aligned
                store.align(stream._dtype.itemsize)
            at = store.append(payload)
            starts = np.cumsum(lens) - lens
            for key, off, n, c in zip(keys, starts, lens, crc):
                stream._done[int(key)] = (at + int(off), int(n), int(c))
            self._advance()

    # -- commit -------------------------------------------------------------
    def commit(self, *, fsync: bool = True) -> Path:
        """Finish the file beside the target and rename it into place; returns its path.
        `fsync=False` skips the file and directory syncs (faster; not crash safe)."""
        if self._committed:
            raise RuntimeError("TetWriterSession already committed")
        if not self._pending:
            raise _fail("at least one dataset is required")
        self._committed = True
        try:
            with self._lock:
                self._in_order = False
                out = self._write(fsync)
                out = self._named(out, fsync)
                out.publish(fsync)
        except OSError as exc:
            # a full disk: the bytes of the write that failed, else the whole output
            size = _size(exc, self._stores[-1].end if self._stores else None)
            self._release()
            raise os_error(exc, "cannot write", self._path, size=size) from exc
        except BaseException:
            self._release()
            raise
        self._release()
        return self._path

    def abort(self) -> None:
        """Discard the session; nothing is written (and nothing is left behind)."""
        self._committed = True
        self._release()

    def _release(self) -> None:
        with self._lock:
            self._closed = True
            for store in self._stores:
                store.discard()
            self._stores.clear()
            self._store = None
            if self._source_fd >= 0:
                os.close(self._source_fd)
                self._source_fd = -1
            if self._source is not None:
                self._source.close()
                self._source = None

    def _footer_parts(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        history = self._old_history + (
            self._history or [history_row("write", path_text(self._path), self._stamp())]
        )
        meta = _deep_copy(self._metadata)
        ext = meta.pop(EXT_KEY, {})
        old = ext.get("datasets", {})
        ext["datasets"] = {}
        for p in self._pending:
            if p.meta:
                meta.setdefault("datasets", {})[p.record.name] = p.meta
            entry = old.get(p.record.name) if isinstance(p, _CopiedSource) else p.ext
            if entry:
                ext["datasets"][p.record.name] = entry
        if self._file_attrs is not None:
            ext["attrs"] = self._file_attrs
        if self._coord_types:
            coords = {**ext.get("coords", {}), **self._coord_types}
            ext["coords"] = {d: e for d, e in coords.items() if e}  # {}: plain string labels
        if self._group_attrs:
            groups = {**ext.get("groups", {}), **{g: {"attrs": a} for g, a in
                                                   self._group_attrs.items()}}
            ext["groups"] = {g: e for g, e in groups.items() if e.get("attrs")}
        if any(ext.values()):
            meta[EXT_KEY] = ext
        file_meta = meta.setdefault("file", {})
        from tet import __version__

        file_meta["tool"] = self._tool
        file_meta["library_version"] = __version__
        file_meta.setdefault("created_at", self._stamp())
        return history, meta

    def _output(self, head_len: int) -> _Store:
        """The file to finish: the one streams filled, when its reserved header is
        still right; else a new one, into which what was placed is copied in index
        order.  Stale temps of the target (their writers gone) are removed first."""
        old = self._store
        if old is not None and old.base == head_len:
            return old
        if old is None:
            with contextlib.suppress(OSError):
                remove_stale(self._dir or self._path.parent, self._path.name)
        out = self._store = _Store(self._path, head_len, anonymous=True, directory=self._dir)
        self._stores.append(out)
        return out

    def _named(self, out: _Store, fsync: bool) -> _Store:
        """`out` with its temp name; where an anonymous file cannot be linked in (no
        /proc), a named copy of it."""
        try:
            out.name()
            return out
        except OSError:
            pass
        named = _Store(self._path, 0, anonymous=False, directory=self._dir)
        self._stores.append(named)
        out.flush()
        _copy_runs(out.fileno(), named.at_end(), np.zeros(1, np.uint64),
                   np.asarray([out.end], np.uint64))
        named.end = out.end
        named.flush()
        if fsync:
            os.fsync(named.fileno())
        return named

    def _write(self, fsync: bool) -> _Store:
        records = [p.record for p in self._pending]
        counts = [math.prod(tile_counts(r.shape, r.chunk_shape)) for r in records]
        head_len = header_length(records, sum(counts))
        history, meta = self._footer_parts()
        out = self._output(head_len)
        parts, crcs = [], []
        for i, p in enumerate(self._pending):
            e = p.rows_in(out, i)
            if len(e) != counts[i]:
                raise TetError(f"{p.record.name!r}: {len(e)} tiles, expected {counts[i]}")
            assert p.crc is not None and len(p.crc) == len(e)
            parts.append(e)
            crcs.append(p.crc)
        entries = np.concatenate(parts)
        table = encode_table(np.concatenate(crcs), entries)
        try:
            footer = encode_footer(history, meta, out.end, table)
        except UnicodeEncodeError as exc:  # text the appended file's footer carried
            raise InvalidTextError(f"{WRITE_PREFIX}footer text is not valid UTF-8: "
                                   f"{exc.reason} in {exc.object[:80]!r}") from None
        out.append(footer)
        out.flush()
        bps, budget = self._budget
        header = encode_header(records, entries, flags=FLAG_FOOTER if footer else 0,
                               budget_percent_bps=bps, budget_bytes=budget)
        assert len(header) == head_len
        _pwrite_all(out.fileno(), header, 0)
        if fsync:
            os.fsync(out.fileno())
        return out


def _codec(name: str) -> int:
    try:
        return CODECS[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r} (use 'raw' or 'zstd')") from None


def _attr_text(value: Any) -> str | None:
    """The v1 text of an ``attrs=`` value: a string as it is (the v1 limits apply); any
    other value's display text when it has one that fits (its type is kept in the typed
    metadata either way)."""
    if isinstance(value, str):
        return value
    text = display(value)
    return text if text is not None and len(text.encode("utf-8")) <= LIMITS[
        "attr_string_bytes"] else None


def _dataset_ext(name: str, attrs: Mapping[str, Any] | None,
                 extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """The `metadata.tet` entry of a new dataset: its typed attrs and `extra` fields."""
    entry: dict[str, Any] = {k: _deep_copy(v) for k, v in (extra or {}).items()}
    for field_ in ("attrs", "encoding"):
        if field_ in entry:
            entry[field_] = {k: encode_value(v, f"dataset {name!r} {field_} {k!r}")
                             for k, v in entry[field_].items()}
    typed = {k: encode_value(v, f"dataset {name!r}: attribute {k!r}")
             for k, v in (attrs or {}).items() if not isinstance(v, str)}
    if typed:
        entry["attrs"] = {**typed, **entry.get("attrs", {})}
    validate_ext({"datasets": {name: entry}})
    return entry


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value



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
        w.push_history_event(history_op, history_source or path_text(w.path))
    w.write_dataset(name, array, chunk_shape=chunk_shape, attrs=attrs, dim_names=dim_names,
                    coords=coords, codec=codec, level=level)
    return w.commit()
