"""Files written without a window.

A new file is created exclusively in an open directory (`tet.safedir.Dir`): anonymous
with ``O_TMPFILE`` where the file system has it, else under a hidden temp name
(`tet.tempnames`) with ``O_EXCL | O_NOFOLLOW``.  It is written through its own
descriptor only (mapped or ``pwrite``), flushed, and renamed onto its target relative
to the same descriptor (`NewFile`; `move` for a finished file, `scratch_array` for
one that never gets a name).  Another process that swaps a directory or the temp file
for a symlink meanwhile changes nothing outside: no path is looked up twice.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import stat
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import numpy as np

from tet.durable import atomic_replace, identity_of
from tet.errors import FileChangedError, TetError, os_error
from tet.safedir import AT_CALLS, NOFOLLOW, Dir
from tet.tempnames import remove_stale, temp_name

__all__ = ["NewFile", "move", "reserve", "scratch_array", "write_error"]

Arr = np.ndarray[Any, Any]

_ZEROS = bytes(1 << 20)


def reserve(fd: int, size: int) -> None:
    """Allocate `size` bytes of the file now, so writing them through a mapping cannot
    meet a full disk (SIGBUS): ``posix_fallocate``, or, where the file system refuses
    it, zeros written with ``pwrite`` (a full disk is then an OSError here)."""
    if size <= 0:
        return
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is not None:
        try:
            fallocate(fd, 0, size)
            return
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS,
                                 getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)):
                raise
    pos = 0
    while pos < size:
        n = os.pwrite(fd, memoryview(_ZEROS)[:min(len(_ZEROS), size - pos)], pos)
        if n <= 0:
            raise OSError(errno.EIO, f"short write at offset {pos}")
        pos += n


def _map_fd(fd: int, dtype: np.dtype[Any], shape: Sequence[int]) -> Arr:
    """A writable array backed by the file (which `reserve` sized).  The mapping lives as
    long as the array or any view of it; nothing unmaps it under a view."""
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if nbytes == 0:
        return np.empty(tuple(shape), dtype)
    buf = mmap.mmap(fd, nbytes, access=mmap.ACCESS_WRITE)
    return np.ndarray(tuple(shape), dtype, buffer=buf)


def _copy_fd(src: int, dst: int) -> int:
    """Append all of `src` (from offset 0) to `dst`; returns the byte count."""
    total = 0
    while True:
        try:
            n = os.copy_file_range(src, dst, 1 << 24, total, total)
        except (AttributeError, OSError):
            block = os.pread(src, 1 << 20, total)
            if not block:
                return total
            _pwrite_all(dst, block, total)
            n = len(block)
        if n == 0:
            return total
        total += n


def _pwrite_all(fd: int, data: bytes | memoryview, pos: int) -> None:
    view = memoryview(data)
    while len(view):
        n = os.pwrite(fd, view, pos)
        if n <= 0:
            raise OSError(errno.EIO, f"short write at offset {pos}")
        view = view[n:]
        pos += n


class NewFile:
    """A whole file being written beside `name` in `directory` and renamed onto it at
    `commit` (a context manager: commit on a clean exit, `discard` on any exception,
    which leaves nothing behind and the previous file untouched).

    Created exclusively: anonymous (``O_TMPFILE``) where possible, else under a hidden
    temp name of `kind` with ``O_EXCL | O_NOFOLLOW``.  Written only through `fd`
    (`map`, `write`), never reopened by path.  OS failures become `TetError` subclasses
    whose message is ``"{action} {shown}: ..."`` (a full disk adds the size).  Stale temps
    of the same target are removed when the file is created (`sweep`).
    """

    def __init__(self, directory: Dir, name: str, *, shown: object, action: str,
                 kind: str = "output", anonymous: bool = True, sweep: bool = True,
                 own_dir: bool = False) -> None:
        self.dir = directory
        self._own_dir = own_dir
        self.name = name
        self.shown = shown
        self.action = action
        self.kind = kind
        self.size: int | None = None
        self.temp: str | None = None  # the hidden name, once the file has one
        self.fd = -1
        self._done = False
        if sweep:
            with contextlib.suppress(OSError):
                remove_stale(directory, name)
        try:
            if anonymous and AT_CALLS and hasattr(os, "O_TMPFILE"):
                with contextlib.suppress(OSError):  # no O_TMPFILE here: a named file
                    self.fd = directory.open(".", os.O_TMPFILE | os.O_RDWR, 0o666)
            if self.fd < 0:
                self.fd = self._create_named()
        except OSError as exc:
            err = self.error(exc)  # before closing: it may look at the directory
            self._done = True
            self._close()
            raise err from exc

    @staticmethod
    def describe(exc: OSError, action: str, shown: object, size: int | None = None
                 ) -> TetError:
        """The error a write failure is raised as (`tet.errors.os_error`)."""
        return os_error(exc, action, shown, size=size)

    def _create_named(self) -> int:
        temp = temp_name(self.kind, self.name)
        fd = self.dir.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o666)
        self.temp = temp
        return fd

    def error(self, exc: OSError) -> TetError:
        return write_error(exc, self.dir, self.action, self.shown, self.size)

    # -- writing ---------------------------------------------------------------
    def reserve(self, size: int) -> None:
        """Allocate `size` bytes now (a full disk fails here, naming path and size)."""
        self.size = size
        try:
            reserve(self.fd, size)
        except OSError as exc:
            raise self.error(exc) from exc

    def map(self, dtype: np.dtype[Any], shape: Sequence[int]) -> Arr:
        """The whole file as a writable C-ordered array, space reserved first."""
        self.reserve(int(np.prod(shape, dtype=object)) * dtype.itemsize)
        try:
            return _map_fd(self.fd, dtype, shape)
        except OSError as exc:
            raise self.error(exc) from exc

    def write(self, data: bytes | memoryview, pos: int) -> None:
        try:
            _pwrite_all(self.fd, data, pos)
        except OSError as exc:
            raise self.error(exc) from exc

    def copy_from(self, src_fd: int) -> None:
        """The whole content of another open file, copied in."""
        try:
            self.size = os.fstat(src_fd).st_size
            _copy_fd(src_fd, self.fd)
        except OSError as exc:
            raise self.error(exc) from exc

    # -- finishing -------------------------------------------------------------
    def commit(self, *, fsync: bool = True) -> None:
        """Flush, give the file its temp name if it has none, rename it onto the target
        and check that what is there now is this file."""
        if self._done:
            return
        try:
            self._keep_mode()
            if fsync:
                os.fsync(self.fd)
            if self.temp is None:
                self._name_it()
            assert self.temp is not None
            # the temp name stays known until the rename is done, for `discard`
            atomic_replace(self.dir, self.temp, self.name, identity=identity_of(self.fd),
                           action=self.action, shown=self.shown, fsync=fsync)
            self.temp = None
        except OSError as exc:
            err = self.error(exc)
            self.discard()
            raise err from exc
        except BaseException:
            self.discard()
            raise
        self._done = True
        self._close()

    def _keep_mode(self) -> None:
        """An existing target's permission bits carry over to its replacement."""
        st = self.dir.lstat(self.name)
        if st is not None and stat.S_ISREG(st.st_mode) and hasattr(os, "fchmod"):
            with contextlib.suppress(OSError):
                os.fchmod(self.fd, stat.S_IMODE(st.st_mode))

    def _name_it(self) -> None:
        """Link the anonymous file in under a temp name; where /proc cannot link it,
        copy it into a named temp file instead."""
        temp = temp_name(self.kind, self.name)
        try:
            self.dir.link(self.fd, temp)
            self.temp = temp
            return
        except OSError:
            pass
        old = self.fd
        self.fd = self._create_named()
        try:
            _copy_fd(old, self.fd)
            os.fsync(self.fd)
        finally:
            os.close(old)

    def discard(self) -> None:
        """Remove the temp name (if it is still this file) and close (idempotent)."""
        if self.temp is not None:
            with contextlib.suppress(OSError):
                mine, there = os.fstat(self.fd), self.dir.lstat(self.temp)
                if there is not None and (there.st_ino, there.st_dev) == (mine.st_ino,
                                                                          mine.st_dev):
                    self.dir.unlink(self.temp)
            self.temp = None
        self._done = True
        self._close()

    def _close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self._own_dir:
            self.dir.close()

    def __enter__(self) -> NewFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.commit()
            return
        err = self.error(exc) if isinstance(exc, OSError) else None
        self.discard()
        if err is not None and err is not exc:
            raise err from exc

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if not self._done:
                self.discard()


def write_error(exc: OSError, directory: Dir, action: str, shown: object,
                 size: int | None = None) -> TetError:
    """`os_error`, except that a name missing from a directory that was deleted meanwhile
    (another process renamed a directory over it) says so."""
    if exc.errno == errno.ENOENT and directory.removed():
        return FileChangedError(f"{action} {shown}: its directory was removed by another "
                                "process while the file was written")
    return os_error(exc, action, shown, size=size)


def move(src: Dir, src_name: str, dst: Dir, dst_name: str, *, shown: object,
         action: str) -> None:
    """Move a finished file onto `dst_name` relative to both descriptors: a rename on one
    file system, else a copy beside the target renamed in, then the source removed."""
    try:
        src.rename(src_name, dst, dst_name)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise write_error(exc, dst, action, shown) from exc
    else:
        dst.fsync()
        return
    try:
        fd = src.open(src_name, os.O_RDONLY | NOFOLLOW)
    except OSError as exc:
        raise os_error(exc, action, shown) from exc
    try:
        with NewFile(dst, dst_name, shown=shown, action=action) as out:
            out.copy_from(fd)
    finally:
        os.close(fd)
    try:
        src.unlink(src_name)
    except OSError as exc:
        raise os_error(exc, f"moved to {shown} but cannot remove the source", src.path / src_name
                       ) from exc


def scratch_array(directory: Dir, dtype: np.dtype[Any], shape: Sequence[int], *,
                  action: str) -> Arr:
    """A writable array backed by a file in `directory` that has no name: ``O_TMPFILE``,
    else created under a `TEMP_NAMES` "spill" name and unlinked at once.  Space is
    reserved first; nothing is left behind, whatever happens."""
    fd = -1
    shown: object = directory.path
    size = int(np.prod(shape, dtype=object)) * dtype.itemsize
    try:
        if AT_CALLS and hasattr(os, "O_TMPFILE"):
            with contextlib.suppress(OSError):
                fd = directory.open(".", os.O_TMPFILE | os.O_RDWR, 0o600)
        if fd < 0:
            name = temp_name("spill")
            shown = directory.path / name
            fd = directory.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600)
            directory.unlink(name)
        reserve(fd, size)
        array = _map_fd(fd, dtype, shape)
    except OSError as exc:
        if fd >= 0:
            os.close(fd)
        raise os_error(exc, action, shown, size=size) from exc
    os.close(fd)  # the mapping keeps the file until the array and its views are gone
    return array
