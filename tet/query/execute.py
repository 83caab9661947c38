"""Run a validated query document against an open file: plan, choose a strategy,
make one C call, and build the response (query.md §9, §11–§14)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tet import dtypes, kernels, kernels_select
from tet.errors import validation as _fail
from tet.layout import RAW
from tet.query import materialize
from tet.query import response as resp
from tet.query.allow import Allowlist
from tet.query.budget import WORK_FLOOR, host_available_ram, require_memory, resolve_budget
from tet.query.document import QueryDocument, resolve_axes, resolve_operation
from tet.query.folds import fold
from tet.query.mask import MaskInfo, mask_fields, resolve_mask
from tet.query.ops import OPS
from tet.query.plan import ReadPlan, plan_read
from tet.query.transform import run_transform
from tet.query.zones import zone_fold
from tet.selection import Box
from tet.wire import is_axis_index

if TYPE_CHECKING:
    from tet.file import TetFile

__all__ = ["device_fallback", "execute_document"]

IN_CORE_HEADROOM = 0.85
LINEAR_SCAN_WINDOW = 64 << 20  # out-of-core linear scans read this far ahead (query.md §8)
AUTO_GPU_BYTES = 64 * 1024 * 1024
# what each §12 fallback reason means, in words (the warning a fallback prints)
FALLBACK_WORDS = {
    "preview_or_spill_only": "a document without an operation has no GPU route",
    "tier_c_materialize": "tier C operations run on the CPU",
    "gpu_unsupported_dtype": "the GPU route takes f32 and f16 datasets only",
    "gpu_unsupported_op": "the GPU route takes whole-selection sum, mean, min, max, count, "
                          "var and std only",
    "auto_below_size_threshold": "the selection is below the auto threshold",
    "gpu_feature_disabled": "this build of tet has no GPU support",
}


def execute_document(f: TetFile, doc: QueryDocument, *, preview: int | None,
                     tet_file: str | None = None,
                     sink: dict[str, Any] | None = None,
                     max_chunks: int | None = resp.MAX_CHUNKS) -> dict[str, Any]:
    """The response to `doc` against `f`: a plan when `preview` is None, else executed.

    Outputs go where `f.allowlist` (pinned when `f` was opened, with its
    ``spill_allow`` roots, CLI ``--spill-allow``) allows; a `sink` dict receives
    a ``ram`` transform's array under ``"array"`` and, when executed, the execution block
    with non-finite floats kept under ``"execution"`` (text formats print ``inf``).
    `max_chunks` caps the tiles ``read_plan.chunks`` lists (None: every one).
    """
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
    dim_names = list(ds.dim_names) if ds.dim_names else None
    axes: tuple[int, ...] = ()
    echoed: tuple[int, ...] = ()  # as the document wrote them (the response echoes these)
    fill: float | None = None
    matrix = op is not None and OPS[op.key].result == "matrix"
    if op is not None and matrix:
        axes = echoed = _observation_axis(op.axes, record.ndim, ds.dim_names)
    if op is not None and not matrix:
        (echoed, axes, fill), (dataset_id, box) = resolve_operation(
            op, record.ndim, dim_names, ds.attrs,
            lambda: f.resolve(doc.dataset, doc.selection), fold=preview is not None)
    else:
        dataset_id, box = f.resolve(doc.dataset, doc.selection)
    plan = plan_read(f.reader.table(dataset_id), record, box)
    rows = int((f.catalog.entries["dataset_id"] == index).sum())
    catalog = resp.catalog_block(index, record, rows, f.file_execution)
    echo = op.echo(echoed, fill) if op is not None else None
    if preview is None:
        return resp.response(**common, operation=echo, message=resp.MATCHED, catalog=catalog,
                             read_plan=resp.plan_block(plan, max_chunks))
    fields = _execute(f, doc, dataset_id, box, axes, fill, preview, plan, sink)
    if sink is not None:
        sink["execution"] = resp.execution_block(fields, finite=False)
    message = resp.MATCHED + (resp.EXECUTED if op is not None else resp.PREVIEWED)
    return resp.response(**common, operation=echo, message=message, catalog=catalog,
                         read_plan=resp.plan_block(plan, max_chunks),
                         execution=resp.execution_block(fields))


def _execute(f: TetFile, doc: QueryDocument, dataset_id: int, box: Box, axes: tuple[int, ...],
             fill: float | None, preview: int, plan: ReadPlan,
             sink: dict[str, Any] | None) -> dict[str, Any]:
    record = f.catalog.datasets[dataset_id]
    dt = dtypes.by_tag(record.dtype)
    op = doc.operation
    tier = OPS[op.key].tier if op is not None else None
    count = math.prod(box.shape)
    nbytes = count * dt.size
    ex = doc.execution
    available = host_available_ram()
    cat = f.catalog
    budget = resolve_budget(
        query_bytes=ex.memory_budget_bytes if ex else None,
        query_bps=ex.memory_budget_percent_bps if ex else None,
        file_bytes=cat.budget_bytes, file_bps=cat.budget_percent_bps, available=available)
    allow = f.allowlist if (tier in ("C", "T") or (op is None and doc.spill is not None)
                            ) else None
    stored, tiles = int(plan.stored.sum()), plan.chunk_count
    fields: dict[str, Any] = {"total_bytes_read_from_disk": stored}
    # execution.mask_fill: the dataset's fill values read as NaN everywhere below
    masked = resolve_mask(f, dataset_id) if ex is not None and ex.mask_fill else None
    mask = masked.mask if masked is not None else None
    preview_dtype, preview_values = dt.name, None
    if mask is not None:
        preview_dtype = dtypes.for_numpy(mask.out_dtype).name
    if op is None and doc.spill is not None:
        assert allow is not None
        f.reader.check(dataset_id, box)  # bad rows fail before the spill file is sized
        spilled, preview_values = _spill(f, dataset_id, box, doc.spill, allow, dt.numpy,
                                         preview, budget, masked)
        fields.update(spilled)
    elif op is None:
        if preview == 0:
            raise _fail(
                "preview limit 0 without `operation` or `spill` would attach an empty execution "
                "block; omit `--execute`, set `spill`, or use a positive `--preview`")
        fields["memory_strategy"] = "capped_in_memory"
    elif tier == "A":
        fields.update(_fold_fields(f, doc, dataset_id, box, axes,
                                   0.0 if fill is None else fill, nbytes, available, tiles,
                                   budget, masked))
        fields["memory_strategy"] = "streaming_fold"
    elif tier == "C":
        assert allow is not None
        fields.update(_tier_c(f, doc, dataset_id, box, axes, budget, allow, masked))
    else:
        assert allow is not None
        done = run_transform(f, doc, dataset_id, box, axes, budget=budget, allow=allow,
                             stored=stored, mask=mask)
        fields.update(done.fields)
        fields.update(_parallel_fields(tiles, nbytes, available))
        if sink is not None:
            sink["array"] = done.array
        preview_dtype = dtypes.for_numpy(done.preview_source.dtype).name
        preview_values = _head(done.preview_source, preview, budget)
    if preview_values is None and (op is None or tier != "T"):
        preview_values = _preview(f, dataset_id, box, preview, budget, masked)
    fields.update(resp.preview_fields(preview_dtype, preview_values, count, preview))
    if op is not None:
        fields["operation_element_count"] = count
    fields["memory_budget_bytes"] = budget
    if available is not None:
        fields["host_available_ram_bytes"] = available
    if dt.name == "f32":
        fields["logical_selection_f32_bytes"] = 4 * count
    fields["logical_selection_bytes"] = nbytes
    fields.update(_device(doc, op.key if op else None, bool(axes), dt.name, nbytes))
    if masked is not None:
        fields.update(mask_fields(masked))
    return fields


PREVIEW_VALUE_BYTES = 64  # one previewed value in the response: the value, its list slot, text


def _preview_memory(n: int, budget: int) -> None:
    require_memory(n * PREVIEW_VALUE_BYTES, budget,
                   f"a preview of {n} values (about {PREVIEW_VALUE_BYTES} bytes each in the "
                   f"response)", "ask for a shorter preview (--preview N) or raise the budget "
                   "(execution.memory_budget_bytes)")


def _head(values: np.ndarray[Any, Any], limit: int, budget: int) -> np.ndarray[Any, Any] | None:
    """The first `limit` values in row-major order (a copy: the source may be a mapping)."""
    if limit <= 0:
        return None
    _preview_memory(min(limit, values.size), budget)
    return np.array(values.reshape(-1)[:limit])


def _spill(f: TetFile, dataset_id: int, box: Box, target: str, allow: Allowlist,
           dtype: np.dtype[Any], preview: int, budget: int, masked: MaskInfo | None = None
           ) -> tuple[dict[str, Any], np.ndarray[Any, Any] | None]:
    """Top-level `spill`: the selection, row-major, dtype-native little-endian (§7), and
    its first `preview` values (read from what was written, not from the path again).
    Masked, fills are NaN and an integer dataset is written as float64."""
    mask = masked.mask if masked is not None else None
    if mask is not None:
        dtype = mask.out_dtype
    with allow.create(target, what="spill") as out:
        values = out.map(dtype.newbyteorder("<"), box.shape)
        f.reader.fill(dataset_id, box, values, mask=mask)
        head = _head(values, preview, budget)
    return ({"memory_strategy": "mmap_spill", "spill_f32_path": str(out.shown),
             "spill_f32_bytes": box.size * dtype.itemsize}, head)


def _tier_c(f: TetFile, doc: QueryDocument, dataset_id: int, box: Box, axes: tuple[int, ...],
            budget: int, allow: Allowlist, masked: MaskInfo | None = None) -> dict[str, Any]:
    """Median, quantile, histogram, covariance, correlation (ops.md §5)."""
    mask = masked.mask if masked is not None else None
    op = doc.operation
    assert op is not None
    key, params = op.key, op.params
    kept = [n for d, n in enumerate(box.shape) if d not in axes]
    out: dict[str, Any] = {}
    if key == "histogram":
        lo, hi = params.get("min"), params.get("max")
        counts, edges = materialize.histogram(
            f, dataset_id, box, int(params["bins"]), axes,
            None if lo is None or hi is None else (float(lo), float(hi)), budget=budget,
            mask=mask)
        out["memory_strategy"] = "streaming_fold"
        if axes:
            out["operation_reduced_shape"] = kept
            out["operation_reduced_histogram_counts"] = counts.astype(np.float64).ravel()
        else:
            out["operation_histogram_counts"] = counts[0].astype(np.float64)
            out["operation_histogram_edges"] = edges[0]
        return out
    if OPS[key].result == "matrix":
        (obs,) = axes
        if box.shape[1 - obs] > materialize.MAX_VARIABLES:
            raise _fail(f"variable axis length {box.shape[1 - obs]} exceeds maximum "
                        f"{materialize.MAX_VARIABLES}")
    if OPS[key].result == "float" and not axes and box.start and all(
            e > s for s, e in zip(box.start, box.stop)):  # a scalar answer: no copy
        table = f.reader.table(dataset_id)
        out["memory_strategy"] = kernels_select.STRATEGY
        out[f"operation_{key}"] = kernels_select.quantile_of(
            table, box.start, box.stop, box.step, 0.5 if key == "median" else float(params["q"]),
            median=key == "median", budget=budget, mask=mask)
        return out
    with materialize.materialized(f, dataset_id, box, budget=budget, allow=allow,
                                  mask=mask) as (x, how):
        out["memory_strategy"] = how
        if OPS[key].result == "float":  # median, quantile: one number per cell
            q = 0.5 if key == "median" else float(params["q"])
            values = materialize.quantile(x, q, axes, median=key == "median", budget=budget,
                                          allow=allow)
            if axes:
                out["operation_reduced_shape"] = kept
                out[f"operation_reduced_{key}"] = values.ravel()
            else:
                out[f"operation_{key}"] = float(values.reshape(-1)[0])
        else:
            matrix = materialize.covariance(x, axes[0], correlation=key == "correlation",
                                            budget=budget)
            out[f"operation_{key}"] = matrix.ravel()
            out[f"operation_{key}_order"] = matrix.shape[0]
    return out


def _io_regime(nbytes: int, available: int | None) -> str:
    """query.md §11: in core when the selection fits 85 % of available RAM."""
    if available is None:
        return "unknown"
    return "in_core" if nbytes <= IN_CORE_HEADROOM * available else "out_of_core"


def _parallel_fields(tiles: int, nbytes: int, available: int | None) -> dict[str, Any]:
    """The fold-policy fields a transform reports for its statistics pass."""
    return {
        "fold_parallel": tiles > 1,
        "fold_workers": min(kernels.thread_count(), tiles),
        "io_regime": _io_regime(nbytes, available),
        "fold_linear_scan": False,
    }


def _observation_axis(tokens: Sequence[str], ndim: int,
                      dim_names: Sequence[str] | None) -> tuple[int, ...]:
    """Covariance/correlation: the rank rule first, then the one axis (ops.md §5)."""
    if ndim != 2:
        raise _fail(f"covariance/correlation require a rank-2 logical selection (got rank {ndim})")
    (token,) = tokens
    if is_axis_index(token) and int(token) >= 2:
        raise _fail(f"observation axis index {int(token)} out of range for rank 2")
    return resolve_axes(tokens, ndim, list(dim_names) if dim_names else None,
                        fold_checks=False)


def _fold_fields(f: TetFile, doc: QueryDocument, dataset_id: int, box: Box,
                 axes: tuple[int, ...], fill: float, nbytes: int, available: int | None,
                 tiles: int, budget: int, masked: MaskInfo | None = None) -> dict[str, Any]:
    assert doc.operation is not None
    key = doc.operation.key
    ex = doc.execution
    hint = ex.fold_parallel if ex else None
    record = f.catalog.datasets[dataset_id]
    table = f.reader.table(dataset_id)
    regime = _io_regime(nbytes, available)
    linear = (regime == "out_of_core" and box.is_full(record.shape) and hint is not True
              and _contiguous_raw(table))
    sequential = linear or hint is False
    mask = masked.mask if masked is not None else None

    def run(sub: Box) -> np.ndarray[Any, Any]:
        return fold(table, sub, key, axes, fill=fill, sequential=sequential,
                    scan_window=LINEAR_SCAN_WINDOW if linear else 0, budget=budget, mask=mask)

    zoned = zone_fold(f, dataset_id, box, key, axes, run, masked=mask is not None)
    values = run(box) if zoned is None else zoned.values
    spec = OPS[key]
    out: dict[str, Any] = {} if zoned is None else {
        "zone_map": zoned.field(),
        "total_bytes_read_from_disk": sum(int(plan_read(table, record, s).stored.sum())
                                          for s in zoned.slabs)}
    out |= {
        "fold_parallel": (not sequential) and tiles > 1,
        "fold_workers": 1 if sequential else min(kernels.thread_count(), tiles),
        "io_regime": regime,
        "fold_linear_scan": linear,
    }
    assert spec.scalar_field is not None and spec.reduced_field is not None
    if axes:
        out["operation_reduced_shape"] = list(values.shape)
        flat = values.ravel()
        out[spec.reduced_field] = flat.astype(np.float64) if key == "count" else flat
    else:
        out[spec.scalar_field] = values.item()
    return out


def _contiguous_raw(table: kernels.TileTable) -> bool:
    """Layout §4.4: raw tiles back to back in grid order."""
    if (table.codec != RAW).any():
        return False
    ends = table.offset[:-1] + table.raw[:-1]
    return bool((ends == table.offset[1:]).all())


def _preview(f: TetFile, dataset_id: int, box: Box, limit: int,
             budget: int, masked: MaskInfo | None = None) -> np.ndarray[Any, Any] | None:
    """The first `limit` values of the selection in row-major order, reading at most
    about 2 × limit elements (the smallest leading sub-box that holds them)."""
    if limit <= 0:
        return None
    shape = box.shape
    count = math.prod(shape)
    n = min(limit, count)
    _preview_memory(n, budget)
    last = np.unravel_index(n - 1, shape)
    start, stop = list(box.start), list(box.stop)
    for d, i in enumerate(last):
        if i > 0:
            stop[d] = box.start[d] + (int(i) + 1) * box.step[d]
            break
        stop[d] = box.start[d] + 1
    stop = [min(e, s) for e, s in zip(stop, box.stop)]
    sub = Box(tuple(start), tuple(stop), box.step)
    # at most 2 n values: within what _preview_memory allowed for the response
    values = f.reader.read(dataset_id, sub, copy=True, budget=max(budget, WORK_FLOOR),
                     mask=masked.mask if masked is not None else None)
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
        elif partial or not OPS[key].gpu_scalar:
            reason = "gpu_unsupported_op"
        elif token == "auto" and nbytes < AUTO_GPU_BYTES:
            reason = "auto_below_size_threshold"
        else:
            reason = "gpu_feature_disabled"
        if reason is not None:
            out["device_fallback_reason"] = reason
    out.update(device_gpu_reduce=False, device_gpu_pipeline=False, device_gpu_multi=False)
    return out


def device_fallback(execution: Any) -> str | None:
    """The one-line note for an execution block whose requested GPU device was not used
    (query.md §12), e.g. ``device `cuda` requested; ran on the CPU: this build of tet has
    no GPU support (gpu_feature_disabled)``; None when nothing was requested, the token
    was ``cpu`` or ``auto`` (which may choose the CPU), or the device ran."""
    if not isinstance(execution, dict):
        return None
    token = execution.get("device_requested")
    reason = execution.get("device_fallback_reason")
    if not isinstance(token, str) or token in ("cpu", "auto") or not isinstance(reason, str):
        return None
    words = FALLBACK_WORDS.get(reason)
    why = f"{words} ({reason})" if words else reason
    return f"device `{token}` requested; ran on the CPU: {why}"
