"""Progress bars on stderr, only when stderr is a terminal (pipes and logs stay clean)."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Progress(Protocol):
    def update(self, n: int = 1) -> object: ...


class _Silent:
    def update(self, n: int = 1) -> object:
        return None


def wanted() -> bool:
    """A bar is drawn when stderr is a terminal and `TET_NO_PROGRESS` is unset."""
    return sys.stderr.isatty() and not os.environ.get("TET_NO_PROGRESS")


@contextmanager
def progress(total: int, desc: str, unit: str = "chunk") -> Iterator[Progress]:
    """A `tqdm` bar over `total` units, or a silent stand-in when nobody is watching."""
    if not wanted():
        yield _Silent()
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False,
              dynamic_ncols=True) as bar:
        yield bar


@contextmanager
def busy(desc: str, *, after: float = 2.0) -> Iterator[None]:
    """An elapsed-time line for one long call that cannot report its own progress (a
    query is one C call): drawn on a terminal once the call has run `after` seconds."""
    if not wanted():
        yield
        return
    done = threading.Event()

    def tick() -> None:
        if done.wait(after):
            return
        from tqdm import tqdm

        with tqdm(desc=desc, total=None, bar_format="{desc}: {elapsed}", file=sys.stderr,
                  leave=False) as bar:
            while not done.wait(0.2):
                bar.refresh()

    thread = threading.Thread(target=tick, name="tet-busy", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
