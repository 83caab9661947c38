"""Durable replacement of a file or directory: the one "temp beside target, fsync, rename"
every writer uses (`tet.writer`, `tet.safeio.NewFile` and through it repair, allowlisted
query outputs and the query history, and `tet export`), and flushing a directory after a
rename for writers that build a tree by path (`tet export`).

`atomic_replace` works on an open directory (`tet.safedir.Dir`): both names are relative
to its descriptor, so the directory cannot be swapped in between, and neither end of the
rename follows a symlink."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from tet.errors import FileChangedError

if TYPE_CHECKING:
    from tet.safedir import Dir


def atomic_replace(directory: Dir, temp: str, name: str, *, identity: tuple[int, int] | None,
                   action: str, shown: object, fsync: bool = True) -> None:
    """Rename `temp` onto `name`, both in `directory`, replacing what is there.

    The caller has written and (when durability matters) fsynced what `temp` names.
    With `identity` (the ``(st_dev, st_ino)`` of the caller's open file), what `name`
    holds after the rename must be that file: another process may have renamed
    something over the temp name meanwhile, which is `FileChangedError`
    (``"{action} {shown}: the temp file was replaced ..."``).  With `fsync`, the
    directory is flushed so the rename survives a crash.  OS failures are raised as
    they are (`OSError`), for the caller to word."""
    directory.rename(temp, directory, name)
    if identity is not None:
        there = directory.lstat(name)
        if there is None or (there.st_dev, there.st_ino) != identity:
            raise FileChangedError(
                f"{action} {shown}: the temp file was replaced by another process while "
                "it was written; the output is not there")
    if fsync:
        directory.fsync()


def identity_of(fd: int) -> tuple[int, int]:
    """``(st_dev, st_ino)`` of an open file, what `atomic_replace` checks against."""
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


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
