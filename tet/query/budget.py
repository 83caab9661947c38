"""Memory budget resolution (query.md §6) and the host RAM probe."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from tet.errors import MemoryBudgetError

__all__ = [
    "DEFAULT_BPS",
    "FALLBACK_BUDGET",
    "WORK_FLOOR",
    "allocate",
    "host_available_ram",
    "require_memory",
    "resolve_budget",
]

DEFAULT_BPS = 2500                 # 25 % of available RAM
FALLBACK_BUDGET = 256 * 1024 * 1024  # when RAM cannot be probed
WORK_FLOOR = 64 * 1024 * 1024      # working memory always allowed (a tiny budget still streams)


_PROBE_TTL = 0.5  # seconds a probe stays fresh: reads in a tight loop must not reread /proc
_probe: tuple[float, int | None] = (-1.0, None)


def host_available_ram() -> int | None:
    """Bytes of RAM available to new work (Linux ``MemAvailable``); None when unknown."""
    global _probe
    now = time.monotonic()
    if now - _probe[0] > _PROBE_TTL:
        _probe = (now, _read_available())
    return _probe[1]


def _read_available() -> int | None:
    if sys.platform.startswith("linux"):
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            return None
    return None


def resolve_budget(
    *,
    query_bytes: int | None = None,
    query_bps: int | None = None,
    file_bytes: int = 0,
    file_bps: int = 0,
    available: int | None = None,
) -> int:
    """The first rule that applies wins: query bytes, file bytes, then a percentage
    (query, file, default 25 %) of available RAM, or 256 MiB when RAM is unknown."""
    if query_bytes is not None:
        return max(1, query_bytes)
    if file_bytes > 0:
        return file_bytes
    bps = query_bps if query_bps else (file_bps if file_bps else DEFAULT_BPS)
    if available is None:
        available = host_available_ram()
    if available is None:
        return FALLBACK_BUDGET
    return max(1, available * bps // 10_000)


BUDGET_HINT = ("raise the budget (execution.memory_budget_bytes in a query, "
               "memory_budget_bytes= for read_numpy)")


def require_memory(needed: int, budget: int, what: str, hint: str = BUDGET_HINT) -> None:
    """Refuse work whose memory, sized from the file or the query, exceeds the budget.

    Working memory (accumulators, decode scratch, tile tables, previews) may always use
    `WORK_FLOOR` bytes, so a tiny budget set to force a spill still lets small work run.
    """
    if needed > max(budget, WORK_FLOOR):
        raise MemoryBudgetError(
            f"{what} needs {needed} bytes, over the memory budget of {budget} bytes; {hint}")


def allocate(shape: Any, dtype: Any, *, budget: int, what: str, fill: Any = None,
             hint: str = BUDGET_HINT) -> np.ndarray[Any, Any]:
    """`np.empty` (or `np.full` with `fill`) after `require_memory`; an allocation the
    system still refuses is a `MemoryBudgetError` naming the size, never a bare
    ``MemoryError`` or ``ValueError: array is too big``."""
    dt = np.dtype(dtype)
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    count = 1
    for n in dims:
        count *= int(n)
    needed = count * dt.itemsize
    require_memory(needed, budget, what, hint)
    try:
        return np.empty(dims, dt) if fill is None else np.full(dims, fill, dt)
    except (MemoryError, ValueError) as exc:
        raise MemoryBudgetError(
            f"{what} needs {needed} bytes, within the memory budget of {budget} bytes, but "
            f"the system could not allocate them ({exc}); lower the budget or free memory"
        ) from None
