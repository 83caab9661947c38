"""Transforms (ops.md §6): pass 1 takes each fold cell's statistics with the tier A/B
fold, pass 2 rewrites every element in one C call, into RAM, a spill file or a
sidecar `.tet` (query.md §8).

Inputs f32/f64 keep their dtype; integers and f16 are promoted to f64 output (the
upstream engine refuses them; promoting is what NumPy's arithmetic would do).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tet import dtypes, kernels
from tet.errors import validation as _v
from tet.paths import path_text
from tet.query.allow import Allowlist, Target
from tet.query.budget import allocate
from tet.query.folds import SKIP_NAN, fold_many
from tet.remote import RemoteName
from tet.selection import Box
from tet.wire import is_axis_index

if TYPE_CHECKING:
    from tet.file import TetFile
    from tet.query.document import QueryDocument

__all__ = ["METHODS", "Transformed", "output_dtype", "run_transform"]

Arr = np.ndarray[Any, Any]

# method -> (statistics it reports, statistics passes `total_bytes_read_from_disk` counts:
# the reference engine's figures, so responses agree whatever our fold fuses)
METHODS: dict[str, tuple[tuple[str, ...], int]] = {
    "zscore": (("mean", "std"), 2),
    "center": (("mean",), 1),
    "scale": (("std",), 1),
    "minmax": (("min", "max"), 2),
    "l1": (("norm_l1",), 1),
    "l2": (("norm_l2",), 1),
    "log1p": (("min",), 1),
    "sqrt": (("min",), 1),
    "softmax": (("max",), 2),
}
STAT_FIELDS = ("mean", "std", "min", "max", "norm_l1", "norm_l2")


@dataclass
class Transformed:
    """What a transform produced: response fields and, for `ram`, the array itself."""

    fields: dict[str, Any]
    array: Arr | None      # the `ram` target's result
    preview_source: Arr     # where the preview is read from (the output, or its file)


def output_dtype(source: dtypes.DType) -> np.dtype[Any]:
    """f32 and f64 keep their dtype; integers and f16 are promoted to float64."""
    return source.numpy if source.name in ("f32", "f64") else np.dtype("<f8")


def _parameters(method: str, stats: dict[str, Arr], cells: int) -> tuple[Arr, Arr]:
    """Per-cell (a, b) of the C kernel's formula for `method` (fresh float64 arrays; for
    log1p/sqrt the kernel itself fills `a` with each cell's finite minimum)."""
    one, zero = np.ones(cells), np.zeros(cells)

    def flat(name: str) -> Arr:
        return np.array(stats[name], dtype=np.float64).reshape(-1)

    if method == "zscore":
        return flat("mean"), flat("std")
    if method == "center":
        return flat("mean"), one
    if method == "scale":
        return zero, flat("std")
    if method == "minmax":
        return flat("min"), flat("max") - flat("min")
    if method in ("l1", "l2"):
        return zero, flat(f"norm_{method}")
    if method in ("log1p", "sqrt"):
        return zero, one
    return flat("max"), one  # softmax


def _destination(allow: Allowlist, doc: QueryDocument, source: Path, method: str) -> Target:
    write = doc.write
    assert write is not None
    if write.path is not None:
        return allow.target(write.path, what="sidecar")
    if isinstance(source, RemoteName):
        raise _v(f"a sidecar of the remote file `{source}` needs `write.path`, a local path "
                 "(sidecars are never written beside a remote object)")
    stem = source.stem
    if write.timestamp is False:
        name = f"{stem}.{method}.tet"
    else:
        name = f"{stem}.{method}.{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.tet"
    return allow.target(name, what="sidecar")


def run_transform(f: TetFile, doc: QueryDocument, dataset_id: int, box: Box,
                  axes: tuple[int, ...], *, budget: int, allow: Allowlist,
                  stored: int, mask: kernels.FillMask | None = None) -> Transformed:
    """Both passes and the write target; returns the response fields.  With `mask`
    its fill values are NaN in both passes (statistics skip them, output keeps NaN)."""
    assert doc.operation is not None
    method = str(doc.operation.params["method"])
    reported, passes = METHODS[method]
    record = f.catalog.datasets[dataset_id]
    src = dtypes.by_tag(record.dtype)
    out_dtype = output_dtype(src)
    count = box.size
    target = doc.write.target if doc.write else "switch"
    src_bytes = count * src.size
    if target == "ram" and src_bytes > budget:
        raise _v(f"logical selection ({count} elements, {src_bytes} bytes) exceeds "
                 f"memory_budget_bytes ({budget}); use `write`: `switch` or `spill`, or raise "
                 "execution.memory_budget_bytes")
    if target == "switch":  # a promoted (float64) result must fit as well
        target = "ram" if max(src_bytes, count * out_dtype.itemsize) <= budget else "spill"

    # pass 1: statistics per fold cell (log1p/sqrt: the kernel finds its own minimum)
    kept = [n for d, n in enumerate(box.shape) if axes and d not in axes]
    from_fold = [s for s in reported if method not in ("log1p", "sqrt")]
    stats = (fold_many(f.reader.table(dataset_id), box, from_fold, axes, table_of=SKIP_NAN,
                       budget=budget, mask=mask) if from_fold else {})
    with np.errstate(all="ignore"):  # inf - inf ranges become NaN: pass 2 reports them
        a, b = _parameters(method, stats, math.prod(kept))

    # pass 2: the selection, rewritten in place where it lands
    def fill_and_transform(out: Arr) -> tuple[int, list[int]]:
        if mask is not None:  # f32/f64 in place, every other dtype promoted to float64
            f.reader.fill(dataset_id, box, out, budget=budget, mask=mask)
        elif out.dtype == src.numpy:
            f.reader.fill(dataset_id, box, out, budget=budget)
        else:
            out[...] = f.reader.read(dataset_id, box, copy=True, budget=budget)
        return kernels.transform(out, method, axes or tuple(range(out.ndim)), a, b)

    fields: dict[str, Any] = {"total_bytes_read_from_disk": stored * (passes + 1)}
    array: Arr | None = None
    if target == "spill":
        f.reader.check(dataset_id, box)  # bad rows fail before the spill file is sized
        given = (doc.write.path if doc.write and doc.write.path
                 else allow.temp_path("spill"))
        with allow.create(given, what="write.path") as out:
            preview_source: Arr = out.map(out_dtype, box.shape)  # stays mapped after commit
            n_bad, bad = fill_and_transform(preview_source)
        path = Path(str(out.shown))
        fields["memory_strategy"] = "transform_spill"
    else:
        preview_source = allocate(
            box.shape, out_dtype, budget=budget,
            what=f"the {out_dtype.name} result of {method} over {list(box.shape)}",
            hint="write it to a spill (`write`: `spill`) or raise execution.memory_budget_bytes")
        n_bad, bad = fill_and_transform(preview_source)
        if target == "ram":
            array = preview_source
            fields["memory_strategy"] = "transform_ram"
        else:
            with _destination(allow, doc, f.path, method) as dest:
                _publish_sidecar(f, dataset_id, box, method, preview_source, dest, allow)
            path = dest.path
            fields["memory_strategy"] = "transform_sidecar"
    if target != "ram":
        fields["spill_f32_path"] = str(path)
        fields["spill_f32_bytes"] = count * out_dtype.itemsize
    if method in ("log1p", "sqrt"):
        stats = {"min": a.reshape(kept)}

    fields["transform_method"] = method
    if n_bad:
        fields["transform_div_by_zero_indices"] = bad
        fields["transform_div_by_zero_count"] = n_bad
    if axes:
        fields["operation_reduced_shape"] = kept
        for name in STAT_FIELDS:
            fields[f"operation_reduced_{name}"] = (
                stats[name].ravel().tolist() if name in reported else [])
    else:
        for name in reported:
            fields[f"operation_{name}"] = float(stats[name])
    return Transformed(fields, array, preview_source)


def _publish_sidecar(f: TetFile, dataset_id: int, box: Box, method: str, values: Arr,
                     dest: Target, allow: Allowlist) -> None:
    """A one-chunk `.tet` (query.md §8.4) written by the writer's own atomic commit
    straight into the destination's directory, relative to its verified descriptor: the
    file is made beside the destination (anonymous, or under a hidden temp name), and
    renamed onto it only when complete, so it appears whole or not at all and nothing
    is left behind.  (The reference drafts it in the cache and moves it; the result is
    the same, without a second directory to trust.)"""
    from tet.writer import TetWriter  # the writer sits beside the reader, above us

    def joined(v: Sequence[int]) -> str:
        return "x".join(str(n) for n in v)

    record = f.catalog.datasets[dataset_id]
    ds = f.dataset(dataset_id)
    source = path_text(f.path)
    out_name = f"{record.name}-{method}"
    params = {"method": method, "dataset": record.name, "output_dataset": out_name,
              "logical_selection_shape": joined(box.shape)}
    if not box.is_full(record.shape):
        params["selection_box_start"] = joined(box.start)
        params["selection_box_stop_exclusive"] = joined(box.stop)
        if any(k != 1 for k in box.step):
            params["selection_step"] = joined(box.step)
    attrs = {**dict(ds.attrs), "derived_from": record.name}
    dims = list(ds.dim_names) if ds.dim_names else None
    coords: dict[str, list[str]] = {}
    for key, labels in (ds.coords or {}).items():  # labels follow the selection
        d = dims.index(key) if dims and key in dims else int(key) if is_axis_index(key) else -1
        if 0 <= d < len(box.shape) and len(labels) == record.shape[d]:
            coords[key] = list(labels[box.start[d]:box.stop[d]:box.step[d]])
    allow.sweep_temps()  # what killed queries left in the cache goes, as it always did
    w = TetWriter.create(dest.path, tool="tet query transform", _dir=dest.dir)
    try:
        w.write_dataset(out_name, values, chunk_shape=values.shape, attrs=attrs,
                        dim_names=dims, coords=coords or None)
        w.push_history_event("transform", source, parents=[source], params=params)
        w.commit()
    except BaseException:
        w.abort()
        raise
