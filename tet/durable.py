"""Flushing a directory after a rename, for writers that build a tree by path (`tet
export`); files written through `tet.safeio` flush their directory descriptor instead."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


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
