"""Temp names that say who made them, and the sweep of those whose owner is gone.

Temp names come from one table (`TEMP_NAMES`).  Those beside a target carry its name,
the owner (pid, the process start time from ``/proc`` where there is one, and a token
of the host and pid namespace) and the creation time, so a later writer can tell a
stale temp (dead owner, or a pid reused by another process) from one still being
written (`stale_temps`, `remove_stale`).  A temp is never removed while its owner may
be alive.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import stat
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from tet.safedir import AT_CALLS, CLOEXEC, Dir

__all__ = ["TEMP_NAMES", "StaleTemp", "TempKind", "nanos", "remove_stale", "stale_temps",
           "temp_name"]


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
    "upload": TempKind(".{target}.{owner}.{nanos}.upload", True),      # a remote write's build dir
    "publish": TempKind(".{target}.{owner}.{nanos}.publish", True),  # a generation being sealed
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
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | CLOEXEC, dir_fd=dir_fd)
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
        entries = list(os.scandir(directory.fd if AT_CALLS else directory.path))
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
        size = _tree_bytes(directory.fd, entry.name) if is_dir and AT_CALLS else st.st_size
        out.append(StaleTemp(entry.name, kind, size, is_dir, int(groups["nanos"])))
    return sorted(out, key=lambda s: s.name)


def _opened(directory: str | os.PathLike[str] | Dir,
            run: Callable[[Dir], list[StaleTemp]]) -> list[StaleTemp]:
    """`run` on `directory`, opened for the call when it is given as a path (a directory
    that cannot be opened holds nothing to list or remove)."""
    if isinstance(directory, Dir):
        return run(directory)
    try:
        d = Dir.of(Path(os.fspath(directory)))
    except OSError:
        return []
    with d:
        return run(d)


def stale_temps(directory: str | os.PathLike[str] | Dir, target: str | None) -> list[StaleTemp]:
    """Stale temps in `directory` made for the file named `target` (None: the cache
    roots' own temps, which name no target)."""
    return _opened(directory, lambda d: _scan(d, target))


def remove_stale(directory: str | os.PathLike[str] | Dir, target: str | None
                 ) -> list[StaleTemp]:
    """Remove what `stale_temps` finds; returns what was removed (best effort: a temp
    that cannot be removed is left and not listed)."""
    return _opened(directory, lambda d: _remove(d, target))


def _remove(directory: Dir, target: str | None) -> list[StaleTemp]:
    removed = []
    for temp in _scan(directory, target):
        try:
            if temp.directory:
                if AT_CALLS:
                    shutil.rmtree(temp.name, dir_fd=directory.fd)
                else:
                    shutil.rmtree(directory.path / temp.name)
            else:
                directory.unlink(temp.name)
        except OSError:
            continue
        removed.append(temp)
    return removed
