"""The one table of query operations (ops.md §3): wire key, tier, object parameters and
response fields.

Document validation, the engine, `QueryResult` and the Python helpers all read this
table, so an operation is added or renamed in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

__all__ = ["OPS", "QUERY_OP_KEYS", "REDUCTION_OPS", "TRANSFORM_METHODS", "OpSpec", "ResultKind"]

TRANSFORM_METHODS = ("zscore", "minmax", "l1", "l2", "center", "scale", "log1p", "sqrt",
                     "softmax")

ResultKind = Literal["float", "int", "index", "bool", "histogram", "matrix", "transform"]
"""What an operation answers with: one number (``float``; ``int`` a count; ``index`` a
position; ``bool`` a flag) per cell, histogram counts, a covariance/correlation matrix with
its order, or a rewritten array with its statistics."""
_SCALAR_TYPES: Mapping[str, type[float] | type[int] | type[bool]] = MappingProxyType(
    {"float": float, "int": int, "index": int, "bool": bool})


@dataclass(frozen=True, slots=True)
class OpSpec:
    """One wire operation and what it answers with.

    Parameters
    ----------
    key
        The top-level document key (``"mean"``).
    tier
        ``"A"`` streaming fold (tiers A and B), ``"C"`` materialise-required, ``"T"``
        transform: the tier picks the execution strategy.
    scalar_field, reduced_field
        Response fields of a scalar (``[]``) and of a partial result; None where the op
        has no such result.
    params
        Keys its object form may carry besides ``axis`` / ``axes``.
    object_only
        The op has a required parameter, so it must be written as an object.
    object_example
        The example the "must be a JSON object" error quotes.
    single_axis
        The op takes exactly one (observation) axis.
    extra_fields
        Further response fields of a scalar result (histogram edges, matrix order).
    summary
        What it computes, in one sentence (`tet-ops(7)` prints it).
    result
        The kind of its answer (`ResultKind`): what the Python helpers return, how the
        CLI formats show it and which ops combine across files follow from it.
    gpu_scalar
        A whole-selection result the device path can reduce (f32/f16 data); every other
        op falls back with ``gpu_unsupported_op``.
    """

    key: str
    tier: str
    scalar_field: str | None
    reduced_field: str | None
    params: frozenset[str] = frozenset()
    object_only: bool = False
    object_example: str | None = None
    single_axis: bool = False
    extra_fields: tuple[str, ...] = ()
    summary: str = ""
    result: ResultKind = "float"
    gpu_scalar: bool = False

    @property
    def scalar_type(self) -> type[float] | type[int] | type[bool] | None:
        """The Python type of one whole-selection value (`float`, `int` or `bool`), what
        ``f.mean(name)`` and the other helpers return; None where the result is not one
        number (histogram, matrix, transform)."""
        return _SCALAR_TYPES.get(self.result)


_FOLD_KEYS = ("sum", "mean", "min", "max", "count", "var", "std", "product", "norm_l1",
              "norm_l2", "all_finite", "any_nan", "any_inf", "arg_min", "arg_max", "nan_count",
              "inf_count", "null_count", "nan_mean", "nan_std")
_SCALAR_NAME = {"count": "operation_element_count", "arg_min": "operation_argmin_index",
                "arg_max": "operation_argmax_index"}
_REDUCED_NAME = {"arg_min": "operation_reduced_argmin", "arg_max": "operation_reduced_argmax"}
_FOLD_RESULT: Mapping[str, ResultKind] = {
    "count": "int", "arg_min": "index", "arg_max": "index", "all_finite": "bool",
    "any_nan": "bool", "any_inf": "bool"}
_GPU_SCALAR = frozenset({"sum", "mean", "min", "max", "count", "var", "std"})


_FOLD_SUMMARY = {
    "sum": "Sum of the values (NaN propagates).",
    "mean": "Arithmetic mean (NaN propagates).",
    "min": "Smallest value; a NaN in the cell makes the result NaN, as NumPy's min does.",
    "max": "Largest value; a NaN in the cell makes the result NaN, as NumPy's max does.",
    "count": "Number of elements, NaN and infinities included.",
    "var": "Population variance (ddof 0), computed stably with blocked sums.",
    "std": "Population standard deviation (ddof 0).",
    "product": "Product of the values, starting at 1.",
    "norm_l1": "Sum of absolute values.",
    "norm_l2": "Euclidean norm: the square root of the sum of squares.",
    "all_finite": "True when no value is NaN or infinite.",
    "any_nan": "True when at least one value is NaN.",
    "any_inf": "True when at least one value is +inf or -inf.",
    "arg_min": "Index of the first smallest value (the first NaN if any): the flat index into "
               "the selection, or the position within each cell's fiber when partial.",
    "arg_max": "Index of the first largest value (the first NaN if any), indexed like arg_min.",
    "nan_count": "Number of NaN values.",
    "inf_count": "Number of infinite values.",
    "null_count": "Number of values bit-identical to the fill value (`fill` in the query, else "
                  "the dataset's _FillValue, missing_value or fill_value attribute; a NaN fill "
                  "counts NaN).",
    "nan_mean": "Mean of the values that are not NaN (infinities are kept).",
    "nan_std": "Population standard deviation of the values that are not NaN.",
}


def _fold(key: str) -> OpSpec:
    params = frozenset({"fill"}) if key == "null_count" else frozenset()
    return OpSpec(key, "A", _SCALAR_NAME.get(key, f"operation_{key}"),
                  _REDUCED_NAME.get(key, f"operation_reduced_{key}"), params,
                  summary=_FOLD_SUMMARY[key], result=_FOLD_RESULT.get(key, "float"),
                  gpu_scalar=key in _GPU_SCALAR)


OPS: Mapping[str, OpSpec] = MappingProxyType({
    **{k: _fold(k) for k in _FOLD_KEYS},
    "median": OpSpec("median", "C", "operation_median", "operation_reduced_median",
                     summary="Median (NumPy's rule: the mean of the two middle values for an "
                             "even count; NaN when the cell holds a NaN)."),
    "quantile": OpSpec("quantile", "C", "operation_quantile", "operation_reduced_quantile",
                       frozenset({"q"}), object_only=True,
                       object_example='{ "q": 0.95, "axis": 0 }',
                       summary="The q-th quantile, q in [0, 1], by linear interpolation "
                               "between the closest ranks (NumPy's default method)."),
    "histogram": OpSpec("histogram", "C", "operation_histogram_counts",
                        "operation_reduced_histogram_counts", frozenset({"bins", "min", "max"}),
                        object_only=True, object_example='{ "bins": 16, "axis": 0 }',
                        extra_fields=("operation_histogram_edges",), result="histogram",
                        summary="Counts in `bins` equal-width bins (at most 4096) over min..max "
                                "(both or neither; default the data range); values outside the "
                                "range and NaN are not counted, as in NumPy's histogram."),
    "covariance": OpSpec("covariance", "C", "operation_covariance", None, single_axis=True,
                         extra_fields=("operation_covariance_order",), result="matrix",
                         summary="Population covariance matrix of a rank-2 selection; the "
                                 "given axis holds the observations, the other the variables "
                                 "(at most 1024)."),
    "correlation": OpSpec("correlation", "C", "operation_correlation", None, single_axis=True,
                          extra_fields=("operation_correlation_order",), result="matrix",
                          summary="Pearson correlation matrix of a rank-2 selection, axes as "
                                  "for covariance."),
    "transform": OpSpec("transform", "T", None, None, frozenset({"method"}), object_only=True,
                        object_example='{ "method": "zscore", "axis": 0 }',
                        extra_fields=("transform_method",), result="transform",
                        summary="Element-wise rewrite of a selection by `method` "
                                "(zscore, minmax, l1, l2, center, scale, log1p, sqrt, softmax) "
                                "with statistics taken over the given axes; the output goes "
                                "where `write` says (ram, switch, spill, sidecar). f32 and f64 "
                                "keep their dtype; integers and f16 give f64."),
})
"""Every wire operation key (26), in the order of ops.md §3."""

_REDUCTION_ORDER = ("sum", "mean", "min", "max", "var", "std", "product", "norm_l1", "norm_l2",
                    "all_finite", "any_nan", "median", "nan_count", "inf_count", "null_count",
                    "nan_mean", "nan_std", "any_inf", "count", "arg_min", "arg_max")
REDUCTION_OPS: dict[str, tuple[str, str]] = {
    k: (s.scalar_field, s.reduced_field) for k, s in ((k, OPS[k]) for k in _REDUCTION_ORDER)
    if s.scalar_field is not None and s.reduced_field is not None
}
"""python-api.md §1: list-style ops (tier A/B plus median) -> (scalar, reduced) field, in
the order the Python binding has always listed them."""

QUERY_OP_KEYS = frozenset(REDUCTION_OPS) | {"quantile", "histogram", "covariance",
                                            "correlation", "transform"}
"""Every key `build_query` accepts: `REDUCTION_OPS` plus the object and matrix ops."""
