"""The output file of a write session: `Store`, a file beside the target that payloads
are appended to by a writer thread (anonymous until commit), and the byte-copying helpers
the session and the pending datasets share.  `Store.publish` renames it over the target
(`tet.durable.atomic_replace`)."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from io import FileIO
from pathlib import Path
from typing import IO, Any

import numpy as np

from tet.durable import atomic_replace, identity_of
from tet.errors import CatalogError, FileChangedError, TetError, os_error
from tet.footer import WRITE_PREFIX
from tet.layout import RAW
from tet.safedir import Dir
from tet.tempnames import temp_name

COPY_BYTES = 16 * 1024 * 1024  # one copy_file_range call at most
WRITE_AHEAD_BYTES = 64 * 1024 * 1024  # queued appends a session's writer thread may hold
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class _WriteFailed(OSError):
    """A write to the output that failed; `size` is the bytes it was to write (what a
    full disk's `DiskFullError` reports)."""

    def __init__(self, exc: OSError, size: int) -> None:
        super().__init__(exc.errno, exc.strerror or str(exc))
        self.size = size


def failed_size(exc: BaseException, otherwise: int | None = None) -> int | None:
    return exc.size if isinstance(exc, _WriteFailed) else otherwise


def write_all(out: IO[bytes], data: np.ndarray[Any, Any]) -> None:
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
    raw = np.asarray(codec) == RAW
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


def copy_runs(src_fd: int, out: IO[bytes], offsets: np.ndarray[Any, Any],
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
            write_all(out, np.zeros(int(dest[a]) - at, np.uint8))
        at = int(dest[a]) + left
        out.flush()
        while left > 0:
            n = min(left, COPY_BYTES)
            try:
                done = os.copy_file_range(src_fd, out.fileno(), n, pos)
            except OSError:
                chunk = os.pread(src_fd, n, pos)
                write_all(out, np.frombuffer(chunk, np.uint8))
                done = len(chunk)
            if done <= 0:
                raise CatalogError(f"{WRITE_PREFIX}source file ended early at offset {pos}")
            pos += done
            left -= done


# ---------------------------------------------------------------------------
# The output file


def pwrite_all(fd: int, data: Any, pos: int) -> int:
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
    end = pwrite_all(fd, data, pos)
    start_writeback = _sync_file_range()
    if start_writeback is not None:
        start_writeback(fd, pos, end - pos, 2)
    return end


def _idle() -> None:
    pass


def writer_pool(what: object, **options: Any) -> ThreadPoolExecutor:
    """A one-thread pool for the writes to `what` (a path, or a phrase naming the
    output), its thread started now.  A thread that cannot start (threading's
    RuntimeError "can't start new thread") is a `TetError` of the call that opened the
    output, not a RuntimeError from whichever write would have started it."""
    pool = ThreadPoolExecutor(max_workers=1, **options)
    try:
        pool.submit(_idle)  # its one thread, reused by every later submit
    except RuntimeError as exc:
        pool.shutdown(wait=False, cancel_futures=True)
        raise TetError(f"cannot write {what}: could not start the writer thread: {exc}") from exc
    return pool


_worker = threading.local()


def _mark_worker(token: object) -> None:
    _worker.token = token


def _drop(file: FileIO, directory: Dir, names: list[str], writer: ThreadPoolExecutor,
          token: object) -> None:
    """Close a store once no write to its descriptor can still run (a write after the
    close could land in a file that reused the number), and remove its temp name."""

    if getattr(_worker, "token", None) is token:  # collected on its own writer thread
        writer.submit(_drop_now, file, directory, names)
        writer.shutdown(wait=False)
        return
    writer.shutdown(wait=True, cancel_futures=True)
    _drop_now(file, directory, names)


def _drop_now(file: FileIO, directory: Dir, names: list[str]) -> None:
    """Remove a store's temp names and close its file and directory."""
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            directory.unlink(name)
    names.clear()
    file.close()
    directory.close()


class Store:
    """A file beside the target that payloads are appended to, `base` bytes reserved
    for the header.  Anonymous (O_TMPFILE) where the file system allows, so a crash
    while blocks stream in leaves nothing behind; `name` links it in as a hidden
    ``.tmp`` file (`tet.tempnames.TEMP_NAMES`) at commit, to be renamed over the target.
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
        try:
            self._writer = writer_pool(target, thread_name_prefix="tet-write",
                                       initializer=_mark_worker, initargs=(token,))
        except BaseException:
            _drop_now(self.file, self.dir, self._names)
            raise
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
                           "cannot write", self.target, size=failed_size(failed))

    def _wait_one(self) -> None:
        done, n = self._ahead.popleft()
        self._ahead_bytes -= n
        try:
            done.result()
        except BaseException as exc:
            self._failed = exc
            if isinstance(exc, OSError):
                raise os_error(exc, "cannot write", self.target, size=failed_size(exc)) from exc
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

    def copy_rows(self, src: Store, rows: np.ndarray[Any, Any],
                  elem: int) -> np.ndarray[Any, Any]:
        """Append the payloads of `rows` (offsets in `src`; one dataset's, of `elem`-byte
        elements) in row order, raw tiles element-aligned; returns the rows with their
        offsets here (the bytes, and so their checksums, are the same)."""
        src.flush()
        at = self.end
        stored = rows["stored_byte_len"]
        dest = aligned_offsets(at, stored, rows["codec"], elem)
        copy_runs(src.fileno(), self.at_end(), rows["payload_offset"], stored, dest, at)
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

    def named(self, fsync: bool, stores: list[Store]) -> Store:
        """This file with its temp name; where an anonymous file cannot be linked in (no
        /proc), a named copy of it (added to `stores`, which a failure discards)."""
        try:
            self.name()
            return self
        except OSError:
            pass
        named = Store(self.target, 0, anonymous=False, directory=self.dir)
        stores.append(named)
        self.flush()
        copy_runs(self.fileno(), named.at_end(), np.zeros(1, np.uint64),
                  np.asarray([self.end], np.uint64))
        named.end = self.end
        named.flush()
        if fsync:
            os.fsync(named.fileno())
        return named

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
