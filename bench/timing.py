"""The timing rules of the benchmarks: best of `reps` runs after one untimed warm-up, or,
for two sides compared on a noisy machine, the medians of alternating runs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def best(fn: Callable[[], Any], reps: int = 3) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def alternate(ours: Callable[[], Any], theirs: Callable[[], Any],
              reps: int = 3) -> tuple[float, float, Any, Any]:
    """Median seconds of each side over `reps` rounds that run them in turn (after one
    untimed warm-up each, whose answers are returned for checking)."""
    got, want = ours(), theirs()
    t_ours: list[float] = []
    t_theirs: list[float] = []
    for _ in range(reps):
        for fn, out in ((ours, t_ours), (theirs, t_theirs)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(t_ours), statistics.median(t_theirs), got, want
