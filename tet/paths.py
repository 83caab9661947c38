"""Paths users give, checked and shown, and the files opened read-only from them.

`checked_path` refuses what no file can be named (a NUL, text the file system encoding
cannot encode); `path_text` shows any path as text UTF-8 can store; `open_regular`
opens a regular file without blocking on a FIFO and refuses anything else; and
`map_readonly` maps it so a truncation under the map is an error, not SIGBUS.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
import sys

from tet.errors import (
    FileChangedError,
    InvalidPathError,
    NotRegularFileError,
    TetIsADirectoryError,
    os_error,
)
from tet.safedir import BINARY, CLOEXEC, NONBLOCK, kind_of

__all__ = ["checked_path", "map_readonly", "open_regular", "path_text"]


def path_text(path: str | os.PathLike[str]) -> str:
    """A path as text UTF-8 can store: bytes that are not UTF-8 (surrogates from
    ``os.fsdecode``) become ``\\xNN`` escapes, for history rows and messages; text no
    file name can hold (a lone surrogate outside that range) becomes ``\\uXXXX``."""
    try:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return os.fspath(path).encode("utf-8", "backslashreplace").decode("utf-8")


def checked_path(path: str | os.PathLike[str], action: str) -> str:
    """``os.fspath(path)`` (``~`` not expanded), checked: a NUL byte, or text the file
    system encoding cannot encode (a lone surrogate that is not one of
    ``os.fsdecode``'s escapes), is `InvalidPathError` ``"{action} {path!r}: ..."``.
    A ``bytes`` path is decoded as ``os.fsdecode`` does.  Every entry point that takes
    a path from a user runs it through here first."""
    raw: str | bytes = os.fspath(path)  # TypeError for what is not a path
    text = os.fsdecode(raw) if isinstance(raw, bytes) else raw
    if "\0" in text:
        raise InvalidPathError(f"{action} {text!r}: the path contains a NUL byte")
    try:
        os.fsencode(text)
    except UnicodeEncodeError as exc:
        bad = text[exc.start:exc.end]
        raise InvalidPathError(
            f"{action} {text!r}: the path contains {bad!r}, which the file system encoding "
            f"({sys.getfilesystemencoding()}) cannot encode; no file can have this name"
            ) from None
    return text


def open_regular(path: str | os.PathLike[str], *, action: str = "cannot open",
                 refusal: str | None = None, what: str = "a .tet file"
                 ) -> tuple[int, os.stat_result]:
    """(read-only descriptor, its fstat) of a regular file.  It is opened with
    ``O_NONBLOCK`` so a FIFO cannot block, and anything but a regular file is refused
    (`NotRegularFileError`, `TetIsADirectoryError`: ``"{refusal} {path}: is a FIFO, not
    {what}"``, `refusal` defaulting to `action`); OS failures and a NUL in the path are
    `TetError` subclasses naming the path (``"{action} {path}: {strerror}"``)."""
    refusal = action if refusal is None else refusal
    checked_path(path, action)
    try:
        fd = os.open(path, os.O_RDONLY | NONBLOCK | CLOEXEC | BINARY
                     | getattr(os, "O_NOCTTY", 0))
    except IsADirectoryError:
        raise TetIsADirectoryError(f"{refusal} {path}: is a directory, not {what}",
                                   errno=errno.EISDIR, strerror=os.strerror(errno.EISDIR),
                                   filename=os.fspath(path)) from None
    except OSError as exc:
        raise os_error(exc, action, path) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = kind_of(st.st_mode)
            cls = TetIsADirectoryError if stat.S_ISDIR(st.st_mode) else NotRegularFileError
            code = errno.EISDIR if stat.S_ISDIR(st.st_mode) else None
            raise cls(f"{refusal} {path}: is {kind}, not {what}", errno=code,
                      strerror=f"is {kind}", filename=os.fspath(path))
        if NONBLOCK and hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def map_readonly(fd: int, size: int, path: object) -> mmap.mmap | None:
    """A read-only mapping of exactly `size` bytes (None for an empty file); a file that
    shrank since it was measured is `FileChangedError`, not a short map.  The map is a
    `tet.guard.GuardedMap`: a file truncated later, while it is mapped, is reported by
    its readers (`FileChangedError`) instead of ending the process with SIGBUS."""
    if size == 0:
        return None
    from tet.guard import GuardedMap  # loads the extension: not needed by writers' paths

    try:
        return GuardedMap(fd, size, path)
    except ValueError:  # "mmap length is greater than file size": truncated meanwhile
        try:
            now: object = os.fstat(fd).st_size
        except OSError:
            now = "unknown"
        raise FileChangedError(f"{path} changed while it was being opened: it was {size} "
                               f"bytes, now {now}; open it again") from None
    except OSError as exc:
        raise os_error(exc, "cannot map", path) from None
