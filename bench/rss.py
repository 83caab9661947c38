"""Peak resident memory of this process; shared by the bench and its reference child
(which runs in another interpreter, so this module imports nothing from tet)."""

from __future__ import annotations

import resource


def peak_rss() -> int:
    """This process's high-water RSS in bytes (Linux VmHWM; else ru_maxrss)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
