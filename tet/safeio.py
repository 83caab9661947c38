"""Files written without a window, and temp names that say who made them.

Every output `tet` writes goes through one directory descriptor: the directory is
reached from a root without following symlinks (`Dir.walk`) or opened once (`Dir.of`),
the new file is created in it exclusively (anonymous with ``O_TMPFILE`` where the file
system has it, else under a hidden temp name, ``O_EXCL | O_NOFOLLOW``), written through
its own descriptor only (mapped or ``pwrite``), flushed, and renamed onto its target
relative to the same descriptor (`NewFile`).  Another process that swaps a directory
or the temp file for a symlink meanwhile changes nothing outside: no path is looked
up twice.

Temp names come from one table (`TEMP_NAMES`).  Those beside a target carry its name,
the owner (pid, the process start time from ``/proc`` where there is one, and a token
of the host and pid namespace) and the creation time, so a later writer can tell a
stale temp (dead owner, or a pid reused by another process) from one still being
written (`stale_temps`, `remove_stale`).  A temp is never removed while its owner may
be alive.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import mmap
import os
import re
import shutil
import socket
import stat
import string
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import numpy as np

from tet.durable import atomic_replace, identity_of
from tet.errors import (
    FileChangedError,
    InvalidPathError,
    NotRegularFileError,
    TetError,
    TetIsADirectoryError,
    os_error,
)

__all__ = [
    "TEMP_NAMES",
    "Dir",
    "NewFile",
    "StaleTemp",
    "TempKind",
    "checked_path",
    "kind_of",
    "map_readonly",
    "move",
    "nanos",
    "open_regular",
    "path_text",
    "remove_stale",
    "reserve",
    "scratch_array",
    "stale_temps",
    "temp_name",
    "write_error",
]

Arr = np.ndarray[Any, Any]


class TempKind(NamedTuple):
    """How one kind of temp file is named, and whether a stale one may be removed."""

    pattern: str     # fields: {target} {owner} {pid} {nanos}
    removable: bool  # False: the name is also given to kept outputs (engine spill files)


# The one table of temp names.  Beside a target, hidden: "{owner}" is pid-start-host.
# In a cache root: the names the query spec fixes (query.md §10).
TEMP_NAMES: dict[str, TempKind] = {
    "write": TempKind(".{target}.{owner}.{nanos}.tmp", True),        # TetWriter output
    "output": TempKind(".{target}.{owner}.{nanos}.part", True),      # spills, sidecars, copies
    "repair": TempKind(".{target}.{owner}.{nanos}.repair", True),    # tet repair's new image
    "backup": TempKind(".{target}.{owner}.{nanos}.bak", True),       # tet repair's old image
    "export": TempKind(".{target}.{owner}.{nanos}.export", True),    # tet export's store dir
    "unpacked": TempKind(".{target}.{owner}.{nanos}.unpacked", True),  # convert's unpacked input
    "spill": TempKind("spill-{pid}-{nanos}.bin", False),             # engine spill (often kept)
    "sidecar-draft": TempKind("sidecar-draft-{pid}-{nanos}.tet", True),  # sidecar before its move
}

_FIELDS = {
    "target": r"(?P<target>.+)",
    "owner": r"(?P<pid>[0-9]{1,10})-(?P<start>[0-9]{1,20})-(?P<host>[0-9a-f]{8})",
    "pid": r"(?P<pid>[0-9]{1,10})",
    "nanos": r"(?P<nanos>[0-9]{1,20})",
}


def _regex(pattern: str) -> re.Pattern[str]:
    out = []
    for literal, name, _, _ in string.Formatter().parse(pattern):
        out.append(re.escape(literal))
        if name:
            out.append(_FIELDS[name])
    return re.compile("".join(out), re.DOTALL)


_MATCHERS = {kind: _regex(k.pattern) for kind, k in TEMP_NAMES.items()}
_MAX_TARGET_BYTES = 150  # NAME_MAX is 255: room for the owner, time and suffix

_ns_lock = threading.Lock()
_last_ns = 0


def nanos() -> int:
    """Wall-clock nanoseconds, strictly increasing in this process (unique temp names)."""
    global _last_ns
    with _ns_lock:
        _last_ns = max(time.time_ns(), _last_ns + 1)
        return _last_ns


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


# ---------------------------------------------------------------------------
# owners


class _Owner(NamedTuple):
    pid: int
    start: int  # process start time in clock ticks since boot; 0 where there is no /proc
    host: str   # host name and pid namespace, hashed: pids compare only within one


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start ticks) of a process from /proc, None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
        rest = data[data.rindex(b")") + 2:].split()
        return rest[0].decode("ascii", "replace"), int(rest[19])
    except (OSError, ValueError, IndexError):
        return None


def _host_token() -> str:
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    text = f"{socket.gethostname()}\0{namespace}".encode("utf-8", "surrogateescape")
    return hashlib.blake2b(text, digest_size=4).hexdigest()


_owners: dict[int, _Owner] = {}


def _me() -> _Owner:
    pid = os.getpid()  # a forked child is another owner
    owner = _owners.get(pid)
    if owner is None:
        info = _proc_stat(pid)
        owner = _owners[pid] = _Owner(pid, info[1] if info else 0, _host_token())
    return owner


def _alive(pid: int, start: int | None, host: str | None) -> bool:
    """Whether the owner of a temp may still be running (True when it cannot be told)."""
    if host is not None and host != _me().host:
        return True  # another host or pid namespace: its pids mean nothing here
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        pass  # exists (another user's), or not a pid we can ask about
    info = _proc_stat(pid)
    if info is None:
        return True
    state, now = info
    if state in ("Z", "X"):
        return False  # a zombie holds no files and writes nothing more
    return not start or now == start


def _target_part(target: str) -> str:
    """The target's name as it appears in a temp name (shortened with a hash when long)."""
    raw = os.fsencode(target)
    if len(raw) <= _MAX_TARGET_BYTES:
        return target
    digest = hashlib.blake2b(raw, digest_size=8).hexdigest()
    cut = raw[:_MAX_TARGET_BYTES - 17].decode("utf-8", "ignore")
    return f"{cut}~{digest}"


def temp_name(kind: str, target: str = "") -> str:
    """A fresh temp name of `kind` (a key of `TEMP_NAMES`) for the file named `target`."""
    try:
        pattern = TEMP_NAMES[kind].pattern
    except KeyError:
        raise ValueError(f"unknown temp file kind {kind!r}; "
                         f"expected one of {sorted(TEMP_NAMES)}") from None
    me = _me()
    return pattern.format(target=_target_part(target), owner=f"{me.pid}-{me.start}-{me.host}",
                          pid=me.pid, nanos=nanos())


@dataclass(frozen=True)
class StaleTemp:
    """A temp file (or export directory) whose owner is gone."""

    name: str
    kind: str
    size: int        # bytes (a directory: the bytes of the files in it)
    directory: bool
    created_ns: int

    def describe(self) -> str:
        return f"{self.name} ({self.size} bytes)"


def _parse(name: str) -> tuple[str, re.Match[str]] | None:
    for kind, matcher in _MATCHERS.items():
        m = matcher.fullmatch(name)
        if m is not None:
            return kind, m
    return None


def _tree_bytes(dir_fd: int, name: str) -> int:
    total = 0
    with contextlib.suppress(OSError):
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC, dir_fd=dir_fd)
        try:
            for _, _, files, rfd in os.fwalk(".", dir_fd=fd):
                for f in files:
                    with contextlib.suppress(OSError):
                        total += os.stat(f, dir_fd=rfd, follow_symlinks=False).st_size
        finally:
            os.close(fd)
    return total


def _scan(directory: Dir, target: str | None) -> list[StaleTemp]:
    out: list[StaleTemp] = []
    want = None if target is None else _target_part(target)
    try:
        entries = list(os.scandir(directory.fd if _AT else directory.path))
    except OSError:
        return out
    for entry in entries:
        parsed = _parse(entry.name)
        if parsed is None:
            continue
        kind, m = parsed
        groups = m.groupdict()
        if not TEMP_NAMES[kind].removable:
            continue
        if want is not None and groups.get("target") != want:
            continue
        if "target" not in groups and target is not None:
            continue  # cache-root names belong to no target
        start = groups.get("start")
        if _alive(int(groups["pid"]), int(start) if start is not None else None,
                  groups.get("host")):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        is_dir = stat.S_ISDIR(st.st_mode)
        size = _tree_bytes(directory.fd, entry.name) if is_dir and _AT else st.st_size
        out.append(StaleTemp(entry.name, kind, size, is_dir, int(groups["nanos"])))
    return sorted(out, key=lambda s: s.name)


def stale_temps(directory: str | os.PathLike[str] | Dir, target: str | None) -> list[StaleTemp]:
    """Stale temps in `directory` made for the file named `target` (None: the cache
    roots' own temps, which name no target)."""
    if isinstance(directory, Dir):
        return _scan(directory, target)
    try:
        d = Dir.of(Path(os.fspath(directory)))
    except OSError:
        return []
    with d:
        return _scan(d, target)


def remove_stale(directory: str | os.PathLike[str] | Dir, target: str | None
                 ) -> list[StaleTemp]:
    """Remove what `stale_temps` finds; returns what was removed (best effort: a temp
    that cannot be removed is left and not listed)."""
    if not isinstance(directory, Dir):
        try:
            d = Dir.of(Path(os.fspath(directory)))
        except OSError:
            return []
        with d:
            return remove_stale(d, target)
    removed = []
    for temp in _scan(directory, target):
        try:
            if temp.directory:
                if _AT:
                    shutil.rmtree(temp.name, dir_fd=directory.fd)
                else:
                    shutil.rmtree(directory.path / temp.name)
            else:
                directory.unlink(temp.name)
        except OSError:
            continue
        removed.append(temp)
    return removed


# ---------------------------------------------------------------------------
# directories

_AT = os.open in os.supports_dir_fd and os.rename in os.supports_dir_fd
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_BINARY = getattr(os, "O_BINARY", 0)

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
        if not _AT:
            if not path.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
            return cls(-1, path)
        return cls(os.open(path, os.O_RDONLY | _DIRECTORY | _CLOEXEC), path)

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
            if root_id is not None and _AT:
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
        if not _AT:
            if create:
                where.mkdir(exist_ok=True)
            if where.is_symlink() or not where.is_dir():
                raise on_symlink(where)
            return Dir(-1, where)
        flags = os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC
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
        return (name, self.fd) if _AT else (str(self.path / name), None)

    def lstat(self, name: str) -> os.stat_result | None:
        """The entry itself (a symlink is not followed); None when there is none."""
        where, fd = self._at(name)
        try:
            return os.stat(where, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def open(self, name: str, flags: int, mode: int = 0o666) -> int:
        where, fd = self._at(name)
        return os.open(where, flags | _CLOEXEC | _BINARY, mode, dir_fd=fd)

    def unlink(self, name: str) -> None:
        where, fd = self._at(name)
        os.unlink(where, dir_fd=fd)

    def rename(self, name: str, dst: Dir, dst_name: str) -> None:
        """Rename `name` here onto `dst_name` in `dst` (replacing it; never following a
        symlink at either end)."""
        if _AT:
            os.replace(name, dst_name, src_dir_fd=self.fd, dst_dir_fd=dst.fd)
        else:
            os.replace(self.path / name, dst.path / dst_name)

    def removed(self) -> bool:
        """Whether the directory was deleted (or replaced by a rename) since it was opened."""
        try:
            return self.fd >= 0 and os.fstat(self.fd).st_nlink == 0
        except OSError:
            return False

    def fsync(self) -> None:
        """Persist renames and new entries (best effort, as `tet.durable.fsync_dir`)."""
        if self.fd >= 0 and os.name != "nt":
            with contextlib.suppress(OSError):
                os.fsync(self.fd)


# ---------------------------------------------------------------------------
# reading


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
        fd = os.open(path, os.O_RDONLY | _NONBLOCK | _CLOEXEC | _BINARY
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
        if _NONBLOCK and hasattr(os, "set_blocking"):
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
    from tet.guard import GuardedMap  # imports the kernels: not needed by writers' paths

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


# ---------------------------------------------------------------------------
# writing

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


def _link_fd(fd: int, d: Dir, name: str) -> None:
    """Give an anonymous (``O_TMPFILE``) file the name `name` in `d`."""
    where, dir_fd = d._at(name)
    os.link(f"/proc/self/fd/{fd}", where, dst_dir_fd=dir_fd, follow_symlinks=True)


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
            if anonymous and _AT and hasattr(os, "O_TMPFILE"):
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
        fd = self.dir.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666)
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
            _link_fd(self.fd, self.dir, temp)
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
        fd = src.open(src_name, os.O_RDONLY | _NOFOLLOW)
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
        if _AT and hasattr(os, "O_TMPFILE"):
            with contextlib.suppress(OSError):
                fd = directory.open(".", os.O_TMPFILE | os.O_RDWR, 0o600)
        if fd < 0:
            name = temp_name("spill")
            shown = directory.path / name
            fd = directory.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
            directory.unlink(name)
        reserve(fd, size)
        array = _map_fd(fd, dtype, shape)
    except OSError as exc:
        if fd >= 0:
            os.close(fd)
        raise os_error(exc, action, shown, size=size) from exc
    os.close(fd)  # the mapping keeps the file until the array and its views are gone
    return array
