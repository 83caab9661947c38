"""Run a validated query document against an open file: plan, choose a strategy,
make one C call, and build the response (query.md §9, §11–§14)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from tet import dtypes, kernels
from tet.errors import QueryError
from tet.query import response as resp
from tet.query.budget import host_available_ram, resolve_budget
from tet.query.document import QueryDocument, resolve_axes, resolve_fill
from tet.query.folds import fold
from tet.query.ops import OPS
from tet.selection import Box

if TYPE_CHECKING:
    from tet.file import TetFile

__all__ = ["execute_document"]

IN_CORE_HEADROOM = 0.85
LINEAR_SCAN_WINDOW = 64 << 20  # out-of-core linear scans read this far ahead (query.md §8)
GPU_SCALAR_OPS = frozenset({"sum", "mean", "min", "max", "count", "var", "std"})
AUTO_GPU_BYTES = 64 * 1024 * 1024


def _fail(msg: str) -> QueryError:
    return QueryError(f"validation: {msg}")


def execute_document(f: TetFile, doc: QueryDocument, *, preview: int | None,
                     tet_file: str | None = None) -> dict[str, Any]:
    """The response to `doc` against `f`: a plan when `preview` is None, else executed."""
    op = doc.operation
    names = f.datasets()
    common: dict[str, Any] = {
        "layout_version": doc.layout_version,
        "dataset": doc.dataset,
        "selection_axes": len(doc.selection) if doc.selection is not None else None,
        "tet_file": tet_file,
    }
    if doc.dataset not in names:
        return resp.response(
            **common, operation=op.echo() if op else None, message=resp.UNMATCHED,
            catalog=resp.unmatched_catalog(names, f.file_execution))
    index = names.index(doc.dataset)
    record = f.catalog.datasets[index]
    ds = f.dataset(index)
    axes: tuple[int, ...] = ()
    fill: float | None = None
    if op is not None:
        axes = resolve_axes(op.axes, record.ndim, list(ds.dim_names) if ds.dim_names else None)
        if op.key == "null_count":
            fill = resolve_fill(op.params, dict(ds.attrs))
    dataset_id, box = f.resolve(doc.dataset, doc.selection)
    plan = f.plan(doc.dataset, doc.selection)
    rows = int((f.catalog.entries["dataset_id"] == index).sum())
    catalog = resp.catalog_block(index, record, rows, f.file_execution)
    echo = op.echo(axes, fill) if op is not None else None
    if preview is None:
        return resp.response(**common, operation=echo, message=resp.MATCHED, catalog=catalog,
                             read_plan=resp.plan_block(plan))
    fields = _execute(f, doc, dataset_id, box, axes, fill, preview, int(plan.stored.sum()))
    message = resp.MATCHED + (resp.EXECUTED if op is not None else resp.PREVIEWED)
    return resp.response(**common, operation=echo, message=message, catalog=catalog,
                         read_plan=resp.plan_block(plan), execution=resp.execution_block(fields))


def _execute(f: TetFile, doc: QueryDocument, dataset_id: int, box: Box, axes: tuple[int, ...],
             fill: float | None, preview: int, stored: int) -> dict[str, Any]:
    record = f.catalog.datasets[dataset_id]
    dt = dtypes.by_tag(record.dtype)
    op = doc.operation
    count = math.prod(box.shape)
    nbytes = count * dt.size
    ex = doc.execution
    available = host_available_ram()
    cat = f.catalog
    budget = resolve_budget(
        query_bytes=ex.memory_budget_bytes if ex else None,
        query_bps=ex.memory_budget_percent_bps if ex else None,
        file_bytes=cat.budget_bytes, file_bps=cat.budget_percent_bps, available=available)
    fields: dict[str, Any] = {"total_bytes_read_from_disk": stored}
    if op is None:
        if doc.spill is not None:
            raise _fail("top-level `spill` export is not available in this version of tet")
        if preview == 0:
            raise _fail(
                "preview limit 0 without `operation` or `spill` would attach an empty execution "
                "block; omit `--execute`, set `spill`, or use a positive `--preview`")
    elif OPS[op.key].tier != "A":
        raise _fail(f"operation `{op.key}` (tier {OPS[op.key].tier}) is not available in this "
                    "version of tet")
    fields.update(resp.preview_fields(dt.name, _preview(f, dataset_id, box, preview), count,
                                      preview))
    fields["operation_element_count"] = count
    if op is not None:
        fields.update(_fold_fields(f, doc, dataset_id, box, axes, fill or 0.0, nbytes, available))
        fields["memory_strategy"] = "streaming_fold"
    else:
        fields["memory_strategy"] = "capped_in_memory"
    fields["memory_budget_bytes"] = budget
    if available is not None:
        fields["host_available_ram_bytes"] = available
    fields["logical_selection_f32_bytes"] = 4 * count
    fields["logical_selection_bytes"] = nbytes
    fields.update(_device(doc, op.key if op else None, bool(axes), dt.name, nbytes))
    return fields


def _fold_fields(f: TetFile, doc: QueryDocument, dataset_id: int, box: Box,
                 axes: tuple[int, ...], fill: float, nbytes: int,
                 available: int | None) -> dict[str, Any]:
    assert doc.operation is not None
    key = doc.operation.key
    ex = doc.execution
    hint = ex.fold_parallel if ex else None
    record = f.catalog.datasets[dataset_id]
    table = f._table(dataset_id)
    regime = ("unknown" if available is None
              else "in_core" if nbytes <= IN_CORE_HEADROOM * available else "out_of_core")
    linear = (regime == "out_of_core" and box.is_full(record.shape) and hint is not True
              and _contiguous_raw(table))
    sequential = linear or hint is False
    tiles = len(table.touch(box.start, box.stop, box.step))
    values = fold(table, box, key, axes, fill=fill, sequential=sequential,
                  scan_window=LINEAR_SCAN_WINDOW if linear else 0,
                  describe=lambda t: f"chunk_index={list(np.unravel_index(t, table.grid))}")
    spec = OPS[key]
    out: dict[str, Any] = {
        "fold_parallel": (not sequential) and tiles > 1,
        "fold_workers": 1 if sequential else min(kernels.thread_count(), tiles),
        "io_regime": regime,
        "fold_linear_scan": linear,
    }
    assert spec.scalar_field is not None and spec.reduced_field is not None
    if axes:
        out["operation_reduced_shape"] = list(values.shape)
        flat = values.ravel()
        out[spec.reduced_field] = (flat.astype(np.float64) if key == "count" else flat).tolist()
    else:
        out[spec.scalar_field] = values.item()
    return out


def _contiguous_raw(table: kernels.TileTable) -> bool:
    """Layout §4.4: raw tiles back to back in grid order."""
    if (table.codec != 0).any():
        return False
    ends = table.offset[:-1] + table.raw[:-1]
    return bool((ends == table.offset[1:]).all())


def _preview(f: TetFile, dataset_id: int, box: Box, limit: int) -> np.ndarray[Any, Any] | None:
    """The first `limit` values of the selection in row-major order, reading at most
    about 2 × limit elements (the smallest leading sub-box that holds them)."""
    if limit <= 0:
        return None
    shape = box.shape
    count = math.prod(shape)
    n = min(limit, count)
    last = np.unravel_index(n - 1, shape)
    start, stop = list(box.start), list(box.stop)
    for d, i in enumerate(last):
        if i > 0:
            stop[d] = box.start[d] + (int(i) + 1) * box.step[d]
            break
        stop[d] = box.start[d] + 1
    stop = [min(e, s) for e, s in zip(stop, box.stop)]
    sub = Box(tuple(start), tuple(stop), box.step)
    values = f._read(dataset_id, sub, copy=True, budget=None)
    return values.ravel()[:n]


def _device(doc: QueryDocument, key: str | None, partial: bool, dtype: str,
            nbytes: int) -> dict[str, Any]:
    """Device routing (§12): every token runs on the CPU here, with the reason."""
    token = doc.execution.device if doc.execution else None
    out: dict[str, Any] = {}
    if token is not None:
        out["device_requested"] = token
    out["device_used"] = "cpu"
    if token is not None:
        reason = None
        if key is None:
            reason = "preview_or_spill_only"
        elif OPS[key].tier == "C":
            reason = "tier_c_materialize"
        elif token == "cpu":
            reason = None
        elif dtype not in ("f32", "f16"):
            reason = "gpu_unsupported_dtype"
        elif partial or key not in GPU_SCALAR_OPS:
            reason = "gpu_unsupported_op"
        elif token == "auto" and nbytes < AUTO_GPU_BYTES:
            reason = "auto_below_size_threshold"
        else:
            reason = "gpu_feature_disabled"
        if reason is not None:
            out["device_fallback_reason"] = reason
    out.update(device_gpu_reduce=False, device_gpu_pipeline=False, device_gpu_multi=False)
    return out



