"""What a pickled `tet.TetFile` records, and how its copy reopens the file.

A handle pickles as its absolute path, its options and a `FileKey` taken when it
opened the file (device, inode, size, mtime).  The copy opens the file on first use,
and only if the path still holds that file: a file replaced, rewritten or truncated
since is `FileChangedError`, never a read of other bytes.  `checked_mode` is the one
place the read-only modes of ``tet.open`` are decided.
"""

from __future__ import annotations

import os
from pathlib import Path

from tet.errors import FileChangedError, TetError, UnsupportedModeError
from tet.opencache import FileKey, file_key
from tet.reader import Reader

__all__ = ["checked_mode", "key_of", "reopen"]


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


def key_of(path: Path, reader: Reader) -> FileKey:
    """The identity of the file `reader` opened at `path`.  When the path no longer holds
    that file (replaced or removed since), the key has mtime -1, which no file matches."""
    try:
        key: FileKey | None = file_key(path)
    except TetError:
        key = None
    dev, ino = reader.source.identity
    if key is None or (key.device, key.inode, key.size) != (dev, ino, reader.size):
        return FileKey(os.path.abspath(path), dev, ino, reader.size, -1)
    return key


def reopen(key: FileKey) -> Reader:
    """A reader of ``key.path`` if it still holds the file `key` describes; else
    `FileChangedError` (a missing file: `TetFileNotFoundError`)."""
    now = file_key(key.path)
    reader = Reader.open(Path(key.path)) if now == key else None
    if reader is not None and (reader.source.identity, reader.size) == (
            (key.device, key.inode), key.size):
        return reader
    if reader is not None:  # replaced between the stat and the open
        reader.close()
    raise FileChangedError(
        f"{key.path} changed since this handle was pickled (then {key.size} bytes, inode "
        f"{key.inode}, mtime {key.mtime_ns} ns; now {now.size} bytes, inode {now.inode}, "
        f"mtime {now.mtime_ns} ns); open it again")
