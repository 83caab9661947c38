"""Exact order statistics of a selection without a copy: a streaming radix selection.

Each value, promoted to float64 as tier C answers are (fills of a mask read as NaN),
becomes an order-preserving 64-bit key (``tet_select_key``).  The first pass over the
selection counts the top 16 bits of every key in 65,536 buckets (per worker, merged) and
counts the NaNs; the bucket holding each wanted rank is kept and the next pass counts
the next 16 bits of only the keys under that prefix, until the rank is one key, or, once
a bucket holds at most `COLLECT_MAX` keys (and a 32nd of the memory budget), one pass
copies them out and NumPy selects among them.  Memory is a few buckets per worker and
the candidates: no spill, whatever the selection's size.  Results do not depend on the
thread count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tet.errors import FileChangedError
from tet.kernels import FillMask, TileTable, thread_count
from tet.native import ffi, lib
from tet.query.budget import WORK_FLOOR, allocate, require_memory

__all__ = ["COLLECT_MAX", "STRATEGY", "key_of", "lerp", "linear_ranks", "order_statistics",
           "quantile_of", "value_of"]

BITS: int = int(lib.TET_SELECT_BITS)
BUCKETS: int = int(lib.TET_SELECT_BUCKETS)
TARGETS: int = int(lib.TET_SELECT_TARGETS)
# candidates copied out (8 bytes each, at most a 32nd of the budget) instead of another
# pass: selecting among 2^23 keys costs a tenth of a pass over a GiB
COLLECT_MAX = 1 << 23
STRATEGY = "streaming_select"  # execution.memory_strategy of a scalar median/quantile
WORKER_BYTES = 2 * BUCKETS * 8  # one target's two interleaved bucket sets, per worker


def linear_ranks(n: int, q: float) -> tuple[int, int, float]:
    """NumPy's linear quantile of `n` sorted values: the two ranks it reads and the weight
    `t` of the upper one (at the top both clamp to the last, with NumPy's `t`)."""
    pos = (n - 1) * q
    lo = math.floor(pos)
    hi = lo + 1
    if pos >= n - 1:
        lo = hi = -1
    return lo % n, hi % n, pos - lo


def lerp(a: Any, b: Any, t: float) -> Any:
    """NumPy's interpolation between `a` and `b`: from below for t < 0.5, from above
    otherwise (arrays or float64 scalars)."""
    diff = b - a
    return a + diff * t if t < 0.5 else b - diff * (1 - t)


def key_of(x: float) -> int:
    """The order-preserving key of a float64 value."""
    return int(lib.tet_select_key(x))


def value_of(key: int) -> float:
    """The float64 value of a key."""
    return float(lib.tet_select_value(key))


class _Rank:
    """One wanted rank: the key prefix found so far, its rank among the keys under it,
    and how the next pass treats it."""

    __slots__ = ("collect", "key", "pmask", "prefix", "shift", "within")

    def __init__(self, rank: int) -> None:
        self.prefix = self.pmask = 0
        self.shift = 64 - BITS
        self.within = rank
        self.collect: int | None = None  # keys under the prefix, when they are copied out
        self.key: int | None = None


def order_statistics(table: TileTable, start: Sequence[int], stop: Sequence[int],
                     step: Sequence[int], ranks: Sequence[int], *, budget: int | None = None,
                     mask: FillMask | None = None) -> tuple[list[float] | None, int]:
    """The values of the given ranks (0-based, ascending order) among the box's float64
    promoted values, and the passes it took; None (after one pass) when a value is NaN.

    The box must select at least one element and every rank must be below its size."""
    n = math.prod(-(-(e - s) // k) for s, e, k in zip(start, stop, step))
    if n == 0 or any(not 0 <= r < n for r in ranks):
        raise ValueError(f"ranks {list(ranks)} outside a selection of {n} values")
    budget = table.budget(budget)
    wanted = {r: _Rank(r) for r in sorted(set(ranks))}
    passes = 0
    while any(w.key is None for w in wanted.values()):
        groups: dict[tuple[int, int, int, bool], list[_Rank]] = {}
        for w in wanted.values():
            if w.key is None:
                groups.setdefault((w.prefix, w.pmask, w.shift, w.collect is not None),
                                  []).append(w)
        assert len(groups) <= TARGETS
        nan = _pass(table, start, stop, step, groups, n if passes == 0 else None,
                    budget=budget, mask=mask)
        passes += 1
        if nan:
            return None, passes
    return [value_of(wanted[r].key or 0) for r in ranks], passes


def _pass(table: TileTable, start: Sequence[int], stop: Sequence[int], step: Sequence[int],
          groups: dict[tuple[int, int, int, bool], list[_Rank]], total: int | None, *,
          budget: int, mask: FillMask | None) -> int:
    """One C pass for the groups of ranks (one target each), each rank refined after it;
    the NaN count. `total` (first pass): the keys plus NaNs the pass must see."""
    threads = thread_count()
    counting = sum(1 for (_, _, _, c) in groups if not c)
    collected = sum(g[0].collect or 0 for g in groups.values() if g[0].collect is not None)
    what = (f"a streaming quantile pass ({max(counting, 1)} bucket sets of {WORKER_BYTES} "
            f"bytes per worker, {collected} candidate keys)")
    tile = table.zstd_tile_bytes
    per_thread = max(len(groups), 1) * WORKER_BYTES + tile  # C gives each target its sets
    fixed = counting * BUCKETS * 8 + collected * 8
    limit = max(budget, WORK_FLOOR)
    fit = (limit - fixed) // per_thread if limit > fixed else 0
    if fit < 1:
        require_memory(fixed + per_thread, budget, what,
                       "raise the budget (execution.memory_budget_bytes)")
    threads = max(1, min(threads, fit))
    require_memory(fixed + threads * per_thread, budget, what,
                   "raise the budget (execution.memory_budget_bytes)")
    spec = ffi.new("tet_select_spec *")
    spec.n_targets = len(groups)
    spec.threads = threads
    spec.mask = mask.struct if mask is not None else ffi.NULL
    keep: list[Any] = []
    outs: list[np.ndarray[Any, Any]] = []
    for i, ((prefix, pmask, shift, collect), _) in enumerate(groups.items()):
        t = spec.target[i]
        t.prefix, t.pmask, t.shift = prefix, pmask, shift
        if collect:
            cap = groups[(prefix, pmask, shift, collect)][0].collect or 0
            out = allocate(max(cap, 1), np.uint64, budget=budget, what=what)
            t.collect, t.cap = 1, cap
            buf = ffi.from_buffer("uint64_t[]", out, require_writable=True)
            t.keys = buf
        else:
            out = allocate(BUCKETS, np.uint64, budget=budget, what=what)
            out[:] = 0
            buf = ffi.from_buffer("uint64_t[]", out, require_writable=True)
            t.counts = buf
        keep.append(buf)
        outs.append(out)
    table.run(lambda tiles, box, report: lib.tet_select_pass(tiles, box, spec, report),
              start, stop, step)
    nan = int(spec.nan_count)
    if nan:
        return nan
    for i, ((_, _, _, collect), ranks) in enumerate(groups.items()):
        got = outs[i]
        if collect:
            cap = ranks[0].collect or 0
            if int(spec.target[i].n_keys) != cap:
                raise _changed()
            keys = got[:cap]
            for w in ranks:
                w.key = int(np.partition(keys, w.within)[w.within])
            continue
        if total is not None and int(got.sum()) != total:
            raise _changed()
        cum = np.cumsum(got)
        for w in ranks:
            b = int(np.searchsorted(cum, w.within, side="right"))
            if b >= BUCKETS:
                raise _changed()
            w.within -= int(cum[b - 1]) if b else 0
            w.prefix |= b << w.shift
            w.pmask |= (BUCKETS - 1) << w.shift
            count = int(got[b])
            if w.shift == 0:
                w.key = w.prefix
            elif count <= min(COLLECT_MAX, limit // 32):
                w.collect = count
            else:
                w.shift -= BITS
    return 0


def _changed() -> FileChangedError:
    return FileChangedError("the selection's values changed between the passes of a "
                            "streaming quantile; run the query again")


def quantile_of(table: TileTable, start: Sequence[int], stop: Sequence[int],
                step: Sequence[int], q: float, *, median: bool = False,
                budget: int | None = None, mask: FillMask | None = None) -> float:
    """`np.quantile(x.astype(np.float64), q)` (linear) or `np.median` of the box's values,
    bit for bit (a signed zero among equal zeros aside), without a copy of them."""
    n = math.prod(-(-(e - s) // k) for s, e, k in zip(start, stop, step))
    if median:
        lo, hi = (n - 1) // 2, n // 2
        got, _ = order_statistics(table, start, stop, step, [lo, hi], budget=budget,
                                  mask=mask)
        if got is None:
            return math.nan
        a = np.float64(got[0])
        with np.errstate(invalid="ignore", over="ignore"):  # inf - inf, 1e308 + 1e308
            return float(a if hi == lo else (a + np.float64(got[1])) / 2)
    lo, hi, t = linear_ranks(n, q)
    got, _ = order_statistics(table, start, stop, step, [lo, hi], budget=budget, mask=mask)
    if got is None:
        return math.nan
    with np.errstate(invalid="ignore", over="ignore"):
        return float(lerp(np.float64(got[0]), np.float64(got[1]), t))
