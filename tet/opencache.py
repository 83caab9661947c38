"""The per-process cache of open ``.tet`` files (`tet.reader.Reader`) that dask workers
and the xarray backend read through.

Lazy arrays (dask graphs, xarray variables) hold a `FileKey` (path plus device, inode,
size and mtime), never an open handle, so they pickle and ship to other processes as
is.  Each process opens a file once, on first use, and keeps it in an LRU of
`CACHE_SIZE` files; a file replaced on disk after the key was taken is refused rather
than read.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from tet.errors import TetError, os_error
from tet.paths import checked_path
from tet.reader import Reader

__all__ = ["CACHE_SIZE", "FileKey", "cache_info", "clear_cache", "file_key", "open_cached"]

CACHE_SIZE = 64

PathLike = str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class FileKey:
    """Which file, exactly: a path and the identity of what it held when the graph (or
    the xarray dataset) was built.  A rewrite replaces the inode (writers rename into
    place), so a stale key never matches a new file."""

    path: str
    device: int
    inode: int
    size: int
    mtime_ns: int


def file_key(path: PathLike) -> FileKey:
    """The key of the file at `path` now.  A path no file can have is
    `InvalidPathError`; a missing file, a path under a regular file, no permission are
    the `TetOSError` classes (`TetFileNotFoundError` is a `FileNotFoundError`)."""
    p = os.path.abspath(os.path.expanduser(checked_path(path, "cannot open")))
    try:
        st = os.stat(p)
    except OSError as exc:
        raise os_error(exc, "cannot open", p) from None
    return FileKey(p, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


_lock = threading.Lock()
_cache: OrderedDict[FileKey, Reader] = OrderedDict()
_opens: dict[str, int] = {}


def open_cached(key: FileKey) -> Reader:
    """This process's open reader of `key`, opening it on first use (wrap it in a
    `TetFile` with ``TetFile.from_reader`` for the file API).

    The cache is an LRU of `CACHE_SIZE` files.  Evicted files are not closed here: a
    block being read in another thread may still use one; the mapping goes when the
    last reference does.

    Raises
    ------
    TetError
        The file at ``key.path`` is no longer the one the key describes.
    """
    with _lock:
        f = _cache.get(key)
        if f is not None:
            _cache.move_to_end(key)
            return f
    now = file_key(key.path)
    if now != key:
        raise TetError(
            f"{key.path} changed after it was opened for dask/xarray (it was {key.size} bytes, "
            f"mtime {key.mtime_ns} ns; now {now.size} bytes, mtime {now.mtime_ns} ns); "
            "open it again"
        )
    opened = Reader.open(Path(key.path))
    with _lock:
        f = _cache.setdefault(key, opened)
        if f is opened:
            _opens[key.path] = _opens.get(key.path, 0) + 1
        _cache.move_to_end(key)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return f


def cache_info() -> dict[str, int]:
    """Per path: how many times this process has opened it through the cache (a test
    and diagnostics hook: a dask worker should show 1 per file it read)."""
    with _lock:
        return dict(_opens)


def clear_cache() -> None:
    """Forget every cached file (each closes once no array or task still uses it)."""
    with _lock:
        _cache.clear()
        _opens.clear()
