"""Read-only file mappings that survive the file being truncated under them.

A ``.tet`` file is read through a shared memory map.  When another process truncates
it (or truncates and rewrites it in place) while it is mapped, touching a page past the
new end raises SIGBUS, which would end the process wherever the touch happens: in the
kernels, in NumPy, in the catalog parse.  Layout v1 does not support reading a file
while it is rewritten (layout.md §8), but that must be an error, never a crash.

`GuardedMap` is an `mmap.mmap` registered with the SIGBUS handler of ``csrc/guard.c``:
a fault inside it maps zero pages over the rest of the mapping and raises the map's
"changed" flag, so the access reads zeros instead of killing the process.  Everything
that reads through the map checks the flag afterwards (`GuardedMap.check`, `watching`,
one load of a C flag) and raises `FileChangedError` instead of returning what it read.
The flag stays set: a file seen changing is not read through that map again.

Limits: a zero-copy view (``read_numpy(copy=None)``) handed out before the file is
truncated cannot be checked later; reading it then gives zeros for the truncated part
(no crash).  When a process holds more mappings than the handler's table
(`GUARD_SLOTS`), further maps are read unguarded, as before this guard existed.
Platforms without POSIX signals are never guarded (``GuardedMap.guarded`` is False).
"""

from __future__ import annotations

import contextlib
import faulthandler
import mmap
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tet.errors import FileChangedError
from tet.native import ffi, lib

__all__ = ["GUARD_SLOTS", "GuardedMap", "absorbed_faults", "rearm", "watching"]

GUARD_SLOTS: int = int(lib.TET_GUARD_SLOTS)
SUPPORTED: bool = bool(lib.tet_guard_supported())

_faulthandler_on = [faulthandler.is_enabled()]


def rearm() -> None:
    """Put the SIGBUS handler back on top when faulthandler was enabled or disabled since
    it was last installed (enabling it installs faulthandler's own handler over ours, and
    disabling may restore one from before tet was imported).  One call and a compare."""
    now = faulthandler.is_enabled()
    if now is not _faulthandler_on[0]:
        _faulthandler_on[0] = now
        lib.tet_guard_install()


def absorbed_faults() -> int:
    """How many faults the handler has turned into zero pages in this process."""
    return int(lib.tet_guard_absorbed())


def _register(buf: mmap.mmap) -> int:
    rearm()
    view = ffi.from_buffer("uint8_t[]", buf)
    try:
        return int(lib.tet_guard_add(view, len(buf)))
    finally:
        ffi.release(view)


class GuardedMap(mmap.mmap):
    """A read-only map of `size` bytes of `fd` whose truncation is reported, not fatal.

    ``path`` names the file in `FileChangedError`.  `close` releases the guard before
    the pages are unmapped; a map that cannot close yet (a zero-copy view still uses
    it) stays guarded until the last view is gone.
    """

    __slots__ = ("_changed", "_slot", "path")
    _changed: bool
    _slot: int
    path: object
    _remove = staticmethod(lib.tet_guard_remove)  # kept for use during interpreter exit
    arm = staticmethod(rearm)  # call before a read: the handler must be on top

    def __new__(cls, fd: int, size: int, path: object) -> GuardedMap:
        self = super().__new__(cls, fd, size, access=mmap.ACCESS_READ)
        self.path = path
        self._changed = False
        self._slot = _register(self)
        return self

    @property
    def guarded(self) -> bool:
        """Whether faults in this map are absorbed (False: unsupported, table full, closed)."""
        return self._slot >= 0

    @property
    def changed(self) -> bool:
        """Whether a fault showed the file shorter than when it was mapped."""
        return self._changed or (self._slot >= 0 and bool(lib.tet_guard_hit(self._slot)))

    def check(self) -> None:
        """`FileChangedError` if the file was truncated under a read of this map."""
        if self._changed or (self._slot >= 0 and lib.tet_guard_hit(self._slot)):
            self._changed = True
            raise self.error()

    def error(self) -> FileChangedError:
        return FileChangedError(
            f"{self.path} changed (truncated or rewritten in place) while it was being "
            f"read; what was read from it was discarded; open it again")

    def _release(self) -> None:
        slot, self._slot = self._slot, -1
        if slot >= 0:
            self._changed = self._changed or bool(lib.tet_guard_hit(slot))
            self._remove(slot)

    def close(self) -> None:
        if self.closed:
            return
        self._release()  # before the pages go: the address range may be reused
        try:
            super().close()
        except BufferError:  # still exported (a zero-copy view): keep guarding it
            self._slot = _register(self)
            raise

    def __del__(self) -> None:
        # runs before the base type unmaps the pages; AttributeError: __new__ failed
        # before the slot was set
        with contextlib.suppress(AttributeError):
            self._release()


@contextmanager
def watching(buf: Any) -> Iterator[None]:
    """Run a block that reads `buf`; when `buf` is a `GuardedMap` whose file was
    truncated meanwhile, raise `FileChangedError` instead of whatever the block
    returned or raised (reading zeros may well have failed it)."""
    if not isinstance(buf, GuardedMap):
        yield
        return
    rearm()
    try:
        yield
    except Exception:
        if buf.changed:
            buf._changed = True
            raise buf.error() from None
        raise
    buf.check()
