"""The per-process cache of open ``.tet`` files (`tet.reader.Reader`) that dask workers
and the xarray backend read through.

Lazy arrays (dask graphs, xarray variables) hold a `FileKey` (path plus device, inode,
size and mtime) or, for an object in a store or on a web server, a `RemoteKey` (URL and
storage options, ETag and size), never an open handle, so they pickle and ship to other
processes as is: a worker opens the file or the URL itself.  Each process opens a file
once, on first use, and keeps it in an LRU of `CACHE_SIZE` files; a file replaced on
disk (an object replaced in its store) after the key was taken is refused rather than
read.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from tet.errors import FileChangedError, TetError, os_error
from tet.objstore import head, is_url, local_target, locate
from tet.paths import checked_path
from tet.reader import Reader
from tet.remote import RangedSource, RemoteName, Tuning, split_options
from tet.remote_tiles import RemoteTiles
from tet.tilecache import DEFAULT_CACHE_BYTES

__all__ = ["CACHE_SIZE", "FileKey", "RemoteKey", "cache_info", "clear_cache", "file_key",
           "open_cached", "open_key", "open_remote", "remote_reader"]

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


class RemoteKey(NamedTuple):
    """Which remote object, exactly: where it is (a `tet.objstore.Location`: URL and
    options, never a live connection), how to fetch it, and the ETag and size it had when
    the key was taken.  A worker reopens it; a different ETag or size is
    `FileChangedError`.  The options travel with the key (credentials included, as a
    worker needs them); ``path`` is the redacted URL, safe to print."""

    loc: Any
    tuning: Tuning
    etag: str | None
    size: int

    @property
    def path(self) -> str:
        return str(self.loc.url)


def _slot(key: FileKey | RemoteKey) -> Hashable:
    """What the cache files `key` under (a remote key's options are a dict)."""
    if isinstance(key, FileKey):
        return key
    options = json.dumps(dict(key.loc.options), sort_keys=True, default=repr)
    return (key.loc.url, key.loc.key, options, key.tuning, key.etag, key.size)


def remote_reader(loc: Any, tuning: Tuning, cache_bytes: int = DEFAULT_CACHE_BYTES) -> Reader:
    """A reader of the object at `loc` (one ranged request for its head, one for its tail,
    one more for a catalog or spilled metadata outside them)."""
    return Reader(RangedSource(loc, tuning, tiles=RemoteTiles), RemoteName.of(loc.url),
                  cache_bytes=cache_bytes)


def open_remote(target: Any, storage_options: Mapping[str, Any] | None = None,
                store: Any = None, *, cache_bytes: int = DEFAULT_CACHE_BYTES) -> Reader | None:
    """A reader of a remote object (a URL, or a key inside `store`), or None when
    `target` is a local path or `file://` URL."""
    if store is None and not is_url(target):
        if storage_options:
            raise TetError(f"storage_options were given but {target!r} is a local path; "
                           "they apply to remote URLs (s3://, gs://, az://, https://) only")
        return None
    if not isinstance(target, str):
        raise TetError(f"a key inside a store is a string, not {type(target).__name__}")
    options, tuning = split_options(storage_options)
    return remote_reader(locate(target, options, store), tuning, cache_bytes)


def open_key(target: Any, storage_options: Mapping[str, Any] | None = None,
             store: Any = None) -> tuple[Reader, FileKey | RemoteKey]:
    """This process's cached reader of a path, a `file://` URL or a remote URL (a key
    inside `store`), and the key a graph or a lazy array carries to reach it again.  A
    remote object is opened here (its ETag is part of its key) and the reader cached."""
    remote = open_remote(target, storage_options, store)
    if remote is None:
        key: FileKey | RemoteKey = file_key(local_target(target))
        return open_cached(key), key
    assert isinstance(remote.source, RangedSource)
    source = remote.source
    key = RemoteKey(source.loc, source.tuning, source.etag, source.size)
    return _keep(key, remote), key


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
_cache: OrderedDict[Hashable, Reader] = OrderedDict()
_opens: dict[str, int] = {}


def open_cached(key: FileKey | RemoteKey) -> Reader:
    """This process's open reader of `key`, opening it on first use (wrap it in a
    `TetFile` with ``TetFile.from_reader`` for the file API).

    The cache is an LRU of `CACHE_SIZE` files.  Evicted files are not closed here: a
    block being read in another thread may still use one; the mapping goes when the
    last reference does.

    Raises
    ------
    TetError
        The file at ``key.path`` is no longer the one the key describes
        (`FileChangedError` for a remote object whose ETag or size differs).
    """
    slot = _slot(key)
    with _lock:
        f = _cache.get(slot)
        if f is not None:
            _cache.move_to_end(slot)
            return f
    if isinstance(key, RemoteKey):
        return _keep(key, _reopen_remote(key))
    now_key = file_key(key.path)
    if now_key != key:
        raise TetError(
            f"{key.path} changed after it was opened for dask/xarray (it was {key.size} bytes, "
            f"mtime {key.mtime_ns} ns; now {now_key.size} bytes, mtime {now_key.mtime_ns} ns); "
            "open it again")
    return _keep(key, Reader.open(Path(key.path)))


def _reopen_remote(key: RemoteKey) -> Reader:
    """A reader of the object `key` names, if it still has the key's ETag and size."""
    try:
        opened = remote_reader(key.loc, key.tuning)
    except TetError:  # what is there now does not open: is it another object?
        meta = head(key.loc)
        if (meta.etag, meta.size) == (key.etag, key.size):
            raise
        opened = None
        now = (meta.etag, meta.size)
    if opened is not None:
        source = opened.source
        now = (source.etag if isinstance(source, RangedSource) else None, opened.size)
        if now == (key.etag, key.size):
            return opened
        opened.close()
    raise FileChangedError(
        f"`{key.path}` changed after it was opened for dask/xarray (it was {key.size} "
        f"bytes, ETag {key.etag}; now {now[1]} bytes, ETag {now[0]}); open it again")


def _keep(key: FileKey | RemoteKey, opened: Reader) -> Reader:
    """`opened` filed under `key` (or the reader another thread filed first)."""
    slot = _slot(key)
    with _lock:
        f = _cache.setdefault(slot, opened)
        if f is opened:
            _opens[key.path] = _opens.get(key.path, 0) + 1
        _cache.move_to_end(slot)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    if f is not opened:
        opened.close()
    return f


def cache_info() -> dict[str, int]:
    """Per path (a remote file: its URL): how many times this process has opened it
    through the cache (a test and diagnostics hook: a dask worker should show 1 per
    file it read)."""
    with _lock:
        return dict(_opens)


def clear_cache() -> None:
    """Forget every cached file (each closes once no array or task still uses it)."""
    with _lock:
        _cache.clear()
        _opens.clear()
