"""What a pickled `tet.TetFile` records, and how its copy reopens the file.

A handle pickles as its absolute path, its options and a `FileKey` taken when it
opened the file (device, inode, size, mtime).  The copy opens the file on first use,
and only if the path still holds that file: a file replaced, rewritten or truncated
since is `FileChangedError`, never a read of other bytes.  `checked_mode` is the one
place the read-only modes of ``tet.open`` are decided.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from tet.errors import FileChangedError, TetError, UnsupportedModeError
from tet.opencache import FileKey, RemoteKey, file_key, open_remote, remote_reader
from tet.query.allow import Allowlist, cache_roots
from tet.reader import Reader
from tet.remote import RangedSource, RemoteName
from tet.tilecache import DEFAULT_CACHE_BYTES

__all__ = ["RemoteKey", "allow_for", "checked_mode", "key_of", "name_of",
           "open_remote", "reopen", "url_of"]


def url_of(key: FileKey | RemoteKey) -> str | None:
    """The (redacted) URL a handle reads, None for a local file."""
    return key.loc.url if isinstance(key, RemoteKey) else None


def name_of(key: FileKey | RemoteKey, path: str) -> Path:
    return RemoteName.of(key.loc.url) if isinstance(key, RemoteKey) else Path(path)


def allow_for(path: Path, extra: Sequence[str | os.PathLike[str]]) -> Allowlist:
    """The output allowlist of a file: its directory tree (none for a remote file: its
    outputs go to the cache roots and ``spill_allow``), the caches, `extra`."""
    if isinstance(path, RemoteName):
        roots = cache_roots()
        if not roots:
            raise TetError(f"{path}: no usable cache directory for the outputs of a remote "
                           "file; pass spill_allow=[a local directory]")
        return Allowlist.pin(roots[0] / path.name, extra)
    return Allowlist.pin(path, extra)


def checked_mode(mode: object) -> None:
    """Refuse every mode but ``"r"``, before the path is looked at."""
    if mode == "r":
        return
    if mode in ("w", "w-", "x"):
        hint = "write a new file with tet.TetWriter.create(path) or tet.write_dataset"
    elif mode in ("a", "r+"):
        hint = ("add datasets or update attributes with tet.TetWriter.open_append(path), "
                "which commits a new version of the file atomically")
    else:
        hint = ("write with tet.TetWriter.create(path), append with "
                "tet.TetWriter.open_append(path)")
    raise UnsupportedModeError(f"mode {mode!r} is not supported: tet.open only reads "
                               f"(mode 'r'); {hint}")


def key_of(path: Path, reader: Reader) -> FileKey | RemoteKey:
    """The identity of the file `reader` opened at `path`.  When the path no longer holds
    that file (replaced or removed since), the key has mtime -1, which no file matches.
    A remote file's key is its location, ETag and size."""
    source = reader.source
    if isinstance(source, RangedSource):
        return RemoteKey(source.loc, source.tuning, source.etag, source.size)
    try:
        key: FileKey | None = file_key(path)
    except TetError:
        key = None
    dev, ino = reader.source.identity
    if key is None or (key.device, key.inode, key.size) != (dev, ino, reader.size):
        return FileKey(os.path.abspath(path), dev, ino, reader.size, -1)
    return key


def reopen(key: FileKey | RemoteKey, cache_bytes: int = DEFAULT_CACHE_BYTES) -> Reader:
    """A reader of ``key.path`` if it still holds the file `key` describes; else
    `FileChangedError` (a missing file: `TetFileNotFoundError`).  Its tile cache is new
    (of `cache_bytes`)."""
    if isinstance(key, RemoteKey):
        remote = remote_reader(key.loc, key.tuning, cache_bytes)
        etag = remote.source.etag if isinstance(remote.source, RangedSource) else None
        if (etag, remote.size) == (key.etag, key.size):
            return remote
        remote.close()
        raise FileChangedError(
            f"`{key.loc.url}` changed since this handle was pickled (then {key.size} bytes, "
            f"ETag {key.etag}; now {remote.size} bytes, ETag {etag}); open it again")
    now = file_key(key.path)
    reader: Reader | None = (Reader.open(Path(key.path), cache_bytes=cache_bytes)
                             if now == key else None)
    if reader is not None and (reader.source.identity, reader.size) == (
            (key.device, key.inode), key.size):
        return reader
    if reader is not None:  # replaced between the stat and the open
        reader.close()
    raise FileChangedError(
        f"{key.path} changed since this handle was pickled (then {key.size} bytes, inode "
        f"{key.inode}, mtime {key.mtime_ns} ns; now {now.size} bytes, inode {now.inode}, "
        f"mtime {now.mtime_ns} ns); open it again")
