"""Flushing to disk, the same way for every writer (`.tet` commits, spills, repairs,
exports, query history): a file's bytes before its rename, the directory after it."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fsync_file(path: Path) -> None:
    """Flush a file's bytes (Windows needs a writable handle to flush)."""
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """Persist a rename or a new entry in `directory`.  Best effort: Windows and some
    filesystems cannot flush a directory, and by now the rename has happened, so
    failing the operation would misreport it."""
    if os.name == "nt":
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
