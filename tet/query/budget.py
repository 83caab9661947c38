"""Memory budget resolution (query.md §6) and the host RAM probe."""

from __future__ import annotations

import sys
import time
from pathlib import Path

__all__ = ["DEFAULT_BPS", "FALLBACK_BUDGET", "host_available_ram", "resolve_budget"]

DEFAULT_BPS = 2500                 # 25 % of available RAM
FALLBACK_BUDGET = 256 * 1024 * 1024  # when RAM cannot be probed


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
