"""The response document (query.md §13): keys in the spec's order, NaN/±inf as
JSON null (Python None), previews in the dataset dtype's own field."""

from __future__ import annotations

import gc
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tet import dtypes
from tet.layout import DatasetRecord
from tet.query.plan import ReadPlan

__all__ = [
    "EXECUTION_ORDER",
    "MAX_CHUNKS",
    "PREVIEW_ORDER",
    "catalog_block",
    "clean",
    "execution_block",
    "plan_block",
    "response",
    "unmatched_catalog",
]

MATCHED = "query accepted; dataset matched; read_plan lists mmap payload regions for touched chunks"
EXECUTED = "; operation executed (see execution.memory_strategy and operation_*)"
PREVIEWED = "; mmap f32 preview attached (see execution)"
UNMATCHED = ("query accepted; dataset name not found in this file "
             "(see catalog.available_datasets)")
DENSE = "dense_half_open_intervals_per_axis_json_step_ignored_for_chunk_touch_list"
STRIDED = "strided_half_open_per_axis_json_step_applied_to_chunk_touch_list"
MAX_CHUNKS = 4096
"""Default cap on the tiles `read_plan.chunks` lists (`chunk_count` is always the total)."""

PREVIEW_ORDER = ("f32", "f64", "i32", "i64", "u8", "u16", "i16", "u32", "u64", "f16")
# The dtypes whose `catalog.dataset_<dtype>_bytes` key the wire has (query.md §13).
_SIZED = frozenset(PREVIEW_ORDER[:7])
_SCALARS = (
    "operation_element_count", "operation_sum", "operation_mean", "operation_median",
    "operation_quantile", "operation_histogram_counts", "operation_histogram_edges",
    "operation_min", "operation_max", "operation_var", "operation_std", "operation_nan_mean",
    "operation_nan_std", "operation_product", "operation_norm_l1", "operation_norm_l2",
    "operation_all_finite", "operation_any_nan", "operation_any_inf", "operation_nan_count",
    "operation_inf_count", "operation_null_count", "operation_argmin_index",
    "operation_argmax_index",
)
_REDUCED = tuple(f"operation_reduced_{k}" for k in (
    "shape", "sum", "mean", "median", "quantile", "histogram_counts", "min", "max", "count",
    "var", "std", "nan_mean", "nan_std", "product", "norm_l1", "norm_l2", "all_finite",
    "any_nan", "any_inf", "nan_count", "inf_count", "null_count", "argmin", "argmax"))
EXECUTION_ORDER: tuple[str, ...] = (
    "total_bytes_read_from_disk",
    *[f"{d}_preview{s}" for d in PREVIEW_ORDER for s in ("", "_truncated")],
    *_SCALARS,
    "memory_strategy", "spill_f32_path", "spill_f32_bytes", "memory_budget_bytes",
    "host_available_ram_bytes", "logical_selection_f32_bytes", "logical_selection_bytes",
    "fold_parallel", "fold_workers", "io_regime", "fold_linear_scan", "device_requested",
    "device_used", "device_fallback_reason", "device_gpu_reduce", "device_gpu_pipeline",
    "device_gpu_multi", *_REDUCED, "operation_covariance", "operation_covariance_order",
    "operation_correlation", "operation_correlation_order", "transform_method",
    "transform_div_by_zero_indices", "transform_div_by_zero_count",
    "mask_fill", "mask_fill_values", "mask_fill_dtype",  # our extension (tet.query.mask)
)
_RANK = {k: i for i, k in enumerate(EXECUTION_ORDER)}


def clean(value: Any, *, finite: bool = True) -> Any:
    """JSON-ready: NumPy scalars and arrays to Python, non-finite floats to None (the
    wire's rule; ``finite=False`` keeps them, for text output that prints ``inf``)."""
    if isinstance(value, np.ndarray):  # whole arrays at once: results can hold millions
        if value.dtype.kind == "f" and finite and not np.isfinite(value).all():
            out = value.astype(object)
            out[~np.isfinite(value)] = None
            return out.tolist()
        if value.dtype.kind in "biuf":
            return value.tolist()
        return clean(value.tolist(), finite=finite)
    if isinstance(value, (list, tuple)):
        return [clean(v, finite=finite) for v in value]
    if isinstance(value, dict):
        return {k: clean(v, finite=finite) for k, v in value.items()}
    if isinstance(value, np.generic):
        value = value.item()
    if finite and isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def catalog_block(index: int, record: DatasetRecord, rows: int,
                  file_execution: Mapping[str, int]) -> dict[str, Any]:
    block: dict[str, Any] = {
        "matched": True,
        "dataset_index": index,
        "dtype": record.dtype,
        "shape": list(record.shape),
        "chunk_shape": list(record.chunk_shape),
        "chunk_index_rows": rows,
    }
    dt = dtypes.by_tag(record.dtype) if dtypes.is_known_tag(record.dtype) else None
    if dt is not None and dt.name in _SIZED:
        block[f"dataset_{dt.name}_bytes"] = dt.size * math.prod(record.shape)
    block["file_execution"] = dict(file_execution)
    return block


def unmatched_catalog(names: Sequence[str], file_execution: Mapping[str, int]) -> dict[str, Any]:
    return {"matched": False, "file_execution": dict(file_execution),
            "available_datasets": list(names)}


def plan_block(plan: ReadPlan, max_chunks: int | None = MAX_CHUNKS) -> dict[str, Any]:
    """The read_plan object.  `chunks` lists the first `max_chunks` touched tiles in grid
    order (all of them when None); a longer plan adds ``chunks_truncated: true`` and
    ``chunks_omitted`` (how many were left out) after it, so a plan under the cap has
    exactly the reference's fields."""
    box, record = plan.box, plan.record
    count = math.prod(box.shape)
    ndim = record.ndim
    listed = plan.chunk_count if max_chunks is None else min(max_chunks, plan.chunk_count)
    gc_was_on = gc.isenabled()
    gc.disable()  # a million small acyclic dicts would trigger collections for nothing
    try:
        chunks = [
            {"chunk_index": c, "payload_offset": o, "stored_byte_len": s, "raw_byte_len": r,
             "codec": k}
            for c, o, s, r, k in zip(plan.coords(listed)[:, :ndim].tolist(),
                                     plan.offset[:listed].tolist(),
                                     plan.stored[:listed].tolist(), plan.raw[:listed].tolist(),
                                     plan.codec[:listed].tolist())
        ]
    finally:
        if gc_was_on:
            gc.enable()
    out: dict[str, Any] = {
        "chunk_touch_policy": STRIDED if any(k != 1 for k in box.step) else DENSE,
        "chunk_count": plan.chunk_count,
        "total_stored_bytes": int(plan.stored.sum()),
        "chunks": chunks,
    }
    if listed < plan.chunk_count:
        out["chunks_truncated"] = True
        out["chunks_omitted"] = plan.chunk_count - listed
    out.update({
        "dataset_shape": list(record.shape),
        "chunk_shape": list(record.chunk_shape),
        "selection_box_start": list(box.start),
        "selection_box_stop_exclusive": list(box.stop),
        "selection_step": list(box.step),
        "logical_selection_shape": list(box.shape),
        "logical_f32_element_count": count,
        "logical_element_count": count,
    })
    return out


def preview_fields(dtype_name: str, values: np.ndarray[Any, Any] | None,
                   total: int, limit: int) -> dict[str, Any]:
    """All 20 preview keys; only the dataset dtype's array is filled (f16 as bit patterns)."""
    out: dict[str, Any] = {}
    for name in PREVIEW_ORDER:
        mine = name == dtype_name
        out[f"{name}_preview"] = _wire_values(values) if mine and values is not None else []
        out[f"{name}_preview_truncated"] = mine and total > limit
    return out


def _wire_values(values: np.ndarray[Any, Any]) -> list[Any]:
    """f16 as bit patterns; f32 as the shortest decimal that reads back as the same f32
    (``0.1``, not the f64 widening ``0.10000000149011612``)."""
    if values.dtype == np.float16:
        return list(values.view(np.uint16).tolist())
    if values.dtype == np.float32:
        return list(values.astype(str).astype(np.float64).tolist())
    return list(values.tolist())


def execution_block(fields: Mapping[str, Any], *, finite: bool = True) -> dict[str, Any]:
    """The execution object in upstream serialisation order (unset keys omitted)."""
    return {k: clean(fields[k], finite=finite)
            for k in sorted(fields, key=lambda k: _RANK.get(k, len(_RANK)))}


def response(*, layout_version: int | None, dataset: str, selection_axes: int | None,
             operation: Any, message: str, tet_file: str | None = None,
             catalog: Mapping[str, Any] | None = None, read_plan: Mapping[str, Any] | None = None,
             execution: Mapping[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "status": "planned",
        "accepted": True,
        "layout_version": layout_version,
        "dataset": dataset,
        "selection_axes": selection_axes,
        "operation": operation,
        "message": message,
    }
    if tet_file is not None:
        out["tet_file"] = tet_file
    if catalog is not None:
        out["catalog"] = dict(catalog)
    if read_plan is not None:
        out["read_plan"] = dict(read_plan)
    if execution is not None:
        out["execution"] = dict(execution)
    return out
