"""`LocalStore`: the package storage interface (`tet.package_layout.PackageStore`) over a
local directory.

Every write goes beside its target, is fsynced and renamed into place, and the directory
is flushed; a generation is assembled in a hidden folder under ``publishing/`` (named by
`tet.tempnames`, so one whose owner died is swept by the next publish) and renamed to
``generations/<id>`` whole.  ``CURRENT`` is flipped under an exclusive ``fcntl`` lock on
``publishing/.lock`` after checking it still names the generation the publish started
from; the kernel drops the lock when its holder dies, so a killed publisher never
blocks the next one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from tet.durable import fsync_dir
from tet.errors import PackageError, PublishConflictError, os_error
from tet.package_layout import (
    CURRENT,
    PROTOCOL,
    PUBLISHING,
    STAGING,
    gen_key,
    gen_name,
    parse_current,
    part_file,
)
from tet.tempnames import remove_stale, temp_name

__all__ = ["LocalStore", "copy_range", "store_of"]

LOCK_NAME = ".lock"
_COPY_STEP = 1 << 30


def copy_range(src: int, dst: int, offset: int, length: int, dst_offset: int) -> None:
    """Copy `length` bytes at `offset` of `src` to `dst_offset` of `dst` in the kernel
    (``copy_file_range``: a filesystem with reflinks shares the blocks), falling back to
    ``pread``/``pwrite`` where the call is missing or refused across filesystems."""
    done = 0
    use_kernel = hasattr(os, "copy_file_range")
    while done < length:
        step = min(_COPY_STEP, length - done)
        n = 0
        if use_kernel:
            try:
                n = os.copy_file_range(src, dst, step, offset + done, dst_offset + done)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP,
                                     errno.EINVAL, errno.EPERM):
                    raise
                use_kernel = False
                continue
        else:
            data = os.pread(src, min(step, 8 << 20), offset + done)
            n = len(data)
            view = memoryview(data)
            while view:
                view = view[os.pwrite(dst, view, dst_offset + done + n - len(view)):]
        if n == 0:
            raise PackageError(f"tet package: source ended {length - done} bytes early while "
                               "copying a part (was it truncated?)")
        done += n


def _write_file(path: Path, data: bytes) -> None:
    tmp = path.with_name(temp_name("write", path.name))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_tree(folder: Path) -> None:
    for entry in os.scandir(folder):
        if entry.is_file(follow_symlinks=False):
            fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fsync_dir(folder)


class LocalStore:
    """A package directory on a local filesystem."""

    def __init__(self, root: Path) -> None:
        self.path = root
        self.root = str(root)

    def _p(self, key: str) -> Path:
        return self.path / key if key else self.path

    def read(self, key: str) -> bytes | None:
        try:
            return self._p(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise os_error(exc, "cannot read", self._p(key)) from None

    def exists(self, key: str) -> bool:
        return os.path.lexists(self._p(key))

    def list(self, prefix: str) -> list[str]:
        try:
            return sorted(os.listdir(self._p(prefix)))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise os_error(exc, "cannot list", self._p(prefix)) from None

    def write(self, key: str, data: bytes) -> None:
        try:
            _write_file(self._p(key), data)
        except OSError as exc:
            raise os_error(exc, "cannot write", self._p(key)) from None

    def create_session(self, session_id: str) -> None:
        where = self._p(f"{STAGING}/{session_id}")
        try:
            os.mkdir(where)
        except FileExistsError:
            raise PackageError(f"package path already exists: {where}") from None
        except OSError as exc:
            raise os_error(exc, "cannot create", where) from None
        fsync_dir(where.parent)

    def put_part(self, session_id: str, part_id: str, source: Path) -> Path:
        folder = self._p(f"{STAGING}/{session_id}")
        dest = folder / part_file(part_id)
        tmp = folder / temp_name("write", dest.name)
        try:
            src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
            try:
                size = os.fstat(src).st_size
                out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
                try:
                    copy_range(src, out, 0, size, 0)
                    os.fsync(out)
                finally:
                    os.close(out)
            finally:
                os.close(src)
            os.replace(tmp, dest)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                raise os_error(exc, "cannot stage", source) from None
            raise
        fsync_dir(folder)
        return dest

    def local_path(self, key: str) -> Path:
        return self._p(key)

    @contextlib.contextmanager
    def scratch(self, generation: int) -> Iterator[Path]:
        publishing = self._p(PUBLISHING)
        remove_stale(publishing, "generation")  # assemblies whose publisher died
        folder = publishing / temp_name("publish", "generation")
        try:
            os.mkdir(folder)
        except OSError as exc:
            raise os_error(exc, "cannot create", folder) from None
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        where = self._p(f"{PUBLISHING}/{LOCK_NAME}")
        try:
            fd = os.open(where, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise os_error(exc, "cannot lock", where) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def seal(self, generation: int, folder: Path) -> None:
        fsync_tree(folder)
        dest = self._p(gen_key(generation))
        try:
            os.rename(folder, dest)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise PublishConflictError(
                    f"package path already exists: {dest} (generation {generation} was "
                    "sealed by another publish; publish again for the next one)") from None
            raise os_error(exc, "cannot seal", dest) from None
        folder.mkdir()  # the scratch context removes its folder; leave it one to remove
        fsync_dir(dest.parent)

    def current(self) -> int | None:
        data = self.read(CURRENT)
        return None if data is None else parse_current(data)

    def flip_current(self, generation: int, expected: int | None) -> None:
        now = self.current()
        if now != expected:
            raise PublishConflictError(
                f"publish conflict: CURRENT moved from {_show(expected)} to {_show(now)} "
                f"while generation {generation} was assembled; the package stays at "
                f"generation {_show(now)}")
        self.write(CURRENT, f"{generation}\n".encode("ascii"))

    def remove(self, key: str) -> None:
        where = self._p(key)
        try:
            if where.is_dir() and not where.is_symlink():
                shutil.rmtree(where)
            else:
                where.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise os_error(exc, "cannot remove", where) from None

    def touch(self, key: str) -> None:
        where = self._p(key)
        with contextlib.suppress(OSError):
            where.parent.mkdir(exist_ok=True)
            fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            os.close(fd)
            os.utime(where)

    def age(self, key: str) -> float | None:
        try:
            return time.time() - os.stat(self._p(key)).st_mtime
        except OSError:
            return None


def _show(generation: int | None) -> str:
    return "none" if generation is None else gen_name(generation).lstrip("0") or "0"


def store_of(package: str | os.PathLike[str]) -> LocalStore:
    """The store of an existing package (`PackageError` when `package` is not one)."""
    root = Path(os.path.expanduser(os.fspath(package)))
    if not (root / PROTOCOL).is_file():
        raise PackageError(f"not a tet package (missing PROTOCOL): {root}")
    return LocalStore(root)
