"""Directories reached without following symlinks, and names used relative to them.

Every output `tet` writes goes through one directory descriptor: the directory is
reached from a root without following symlinks (`Dir.walk`) or opened once (`Dir.of`),
and names in it are opened, created, renamed and removed relative to that descriptor,
so another process that swaps a directory for a symlink meanwhile changes nothing
outside: no path is looked up twice.  Where the platform has no ``*at`` calls
(`AT_CALLS` False) the same methods work by path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from tet.errors import TetError

__all__ = ["AT_CALLS", "BINARY", "CLOEXEC", "DIRECTORY", "NOFOLLOW", "NONBLOCK", "Dir",
           "kind_of"]

# Whether names can be opened and renamed relative to a directory descriptor here.
AT_CALLS = os.open in os.supports_dir_fd and os.rename in os.supports_dir_fd
CLOEXEC = getattr(os, "O_CLOEXEC", 0)
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
DIRECTORY = getattr(os, "O_DIRECTORY", 0)
NONBLOCK = getattr(os, "O_NONBLOCK", 0)
BINARY = getattr(os, "O_BINARY", 0)  # each flag: this platform's, or 0 where it has none

_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link"))


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words ("a FIFO", "a directory", ...)."""
    for test, words in _KINDS:
        if test(mode):
            return words
    return "not a regular file"


class Dir:
    """An open directory: names in it are opened, created, renamed and removed relative
    to its descriptor, so the directory cannot be swapped in between.  `path` is what
    messages show."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path

    @classmethod
    def of(cls, path: Path) -> Dir:
        """Open a directory the caller named (its own path: symlinks on it are followed)."""
        if not AT_CALLS:
            if not path.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
            return cls(-1, path)
        return cls(os.open(path, os.O_RDONLY | DIRECTORY | CLOEXEC), path)

    @classmethod
    def walk(cls, root: Path, parts: Sequence[str], *, root_id: tuple[int, int] | None,
             create: bool, on_symlink: Callable[[Path], TetError],
             on_root: Callable[[Path], TetError] | None = None) -> Dir:
        """`root/parts...` reached one component at a time with ``O_NOFOLLOW`` from
        `root`, whose (st_dev, st_ino) must be `root_id`; missing directories are made
        when `create`.  A component that is not a directory (a symlink swapped in
        meanwhile) raises ``on_symlink(path so far)``; a root that is another directory
        now, or gone, raises ``on_root(root)`` (default `on_symlink`); other OS failures
        raise OSError."""
        moved = on_symlink if on_root is None else on_root
        try:
            d = cls.of(root)
        except OSError as exc:
            if root_id is not None and exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                raise moved(root) from None
            raise
        try:
            if root_id is not None and AT_CALLS:
                st = os.fstat(d.fd)
                if (st.st_dev, st.st_ino) != root_id:
                    raise moved(root)
            for name in parts:
                d = d._child(name, create, on_symlink)
        except BaseException:
            d.close()
            raise
        return d

    def _child(self, name: str, create: bool, on_symlink: Callable[[Path], TetError]) -> Dir:
        where = self.path / name
        if not AT_CALLS:
            if create:
                where.mkdir(exist_ok=True)
            if where.is_symlink() or not where.is_dir():
                raise on_symlink(where)
            return Dir(-1, where)
        flags = os.O_RDONLY | DIRECTORY | NOFOLLOW | CLOEXEC
        try:
            fd = os.open(name, flags, dir_fd=self.fd)
        except FileNotFoundError:
            if not create:
                raise
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o777, dir_fd=self.fd)
            fd = self._open_child(name, flags, where, on_symlink)
        except OSError as exc:
            self._refuse(name, where, exc, on_symlink)
            raise
        self.close()
        return Dir(fd, where)

    def _open_child(self, name: str, flags: int, where: Path,
                    on_symlink: Callable[[Path], TetError]) -> int:
        try:
            return os.open(name, flags, dir_fd=self.fd)
        except FileNotFoundError:  # made (or found) a moment ago, gone now: moved away
            raise on_symlink(where) from None
        except OSError as exc:
            self._refuse(name, where, exc, on_symlink)
            raise

    def _refuse(self, name: str, where: Path, exc: OSError,
                on_symlink: Callable[[Path], TetError]) -> None:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            # a symlink, or something that is a directory again (or gone) by now: either
            # way not what was resolved; only a plain file there is the caller's ENOTDIR
            st = self.lstat(name)
            if st is None or stat.S_ISLNK(st.st_mode) or stat.S_ISDIR(st.st_mode):
                raise on_symlink(where) from None

    def dup(self) -> Dir:
        """Another handle on the same open directory (closed on its own)."""
        return Dir(os.dup(self.fd) if self.fd >= 0 else -1, self.path)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Dir:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- names relative to the descriptor --------------------------------------
    def _at(self, name: str) -> tuple[str, int | None]:
        return (name, self.fd) if AT_CALLS else (str(self.path / name), None)

    def lstat(self, name: str) -> os.stat_result | None:
        """The entry itself (a symlink is not followed); None when there is none."""
        where, fd = self._at(name)
        try:
            return os.stat(where, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def open(self, name: str, flags: int, mode: int = 0o666) -> int:
        where, fd = self._at(name)
        return os.open(where, flags | CLOEXEC | BINARY, mode, dir_fd=fd)

    def unlink(self, name: str) -> None:
        where, fd = self._at(name)
        os.unlink(where, dir_fd=fd)

    def rename(self, name: str, dst: Dir, dst_name: str) -> None:
        """Rename `name` here onto `dst_name` in `dst` (replacing it; never following a
        symlink at either end)."""
        if AT_CALLS:
            os.replace(name, dst_name, src_dir_fd=self.fd, dst_dir_fd=dst.fd)
        else:
            os.replace(self.path / name, dst.path / dst_name)

    def removed(self) -> bool:
        """Whether the directory was deleted (or replaced by a rename) since it was opened."""
        try:
            return self.fd >= 0 and os.fstat(self.fd).st_nlink == 0
        except OSError:
            return False

    def link(self, fd: int, name: str) -> None:
        """Give an anonymous (``O_TMPFILE``) file, open as `fd`, the name `name` here."""
        where, dir_fd = self._at(name)
        os.link(f"/proc/self/fd/{fd}", where, dst_dir_fd=dir_fd, follow_symlinks=True)

    def fsync(self) -> None:
        """Persist renames and new entries (best effort, as `tet.durable.fsync_dir`)."""
        if self.fd >= 0 and os.name != "nt":
            with contextlib.suppress(OSError):
                os.fsync(self.fd)
