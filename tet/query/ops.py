"""The one table of query operations (ops.md §3): wire key, tier, object parameters and
response fields.

Document validation, the engine, `QueryResult` and the Python helpers all read this
table, so an operation is added or renamed in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["OPS", "QUERY_OP_KEYS", "REDUCTION_OPS", "TRANSFORM_METHODS", "OpSpec"]

TRANSFORM_METHODS = ("zscore", "minmax", "l1", "l2", "center", "scale", "log1p", "sqrt",
                     "softmax")


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


_FOLD_KEYS = ("sum", "mean", "min", "max", "count", "var", "std", "product", "norm_l1",
              "norm_l2", "all_finite", "any_nan", "any_inf", "arg_min", "arg_max", "nan_count",
              "inf_count", "null_count", "nan_mean", "nan_std")
_SCALAR_NAME = {"count": "operation_element_count", "arg_min": "operation_argmin_index",
                "arg_max": "operation_argmax_index"}
_REDUCED_NAME = {"arg_min": "operation_reduced_argmin", "arg_max": "operation_reduced_argmax"}


def _fold(key: str) -> OpSpec:
    params = frozenset({"fill"}) if key == "null_count" else frozenset()
    return OpSpec(key, "A", _SCALAR_NAME.get(key, f"operation_{key}"),
                  _REDUCED_NAME.get(key, f"operation_reduced_{key}"), params)


OPS: Mapping[str, OpSpec] = MappingProxyType({
    **{k: _fold(k) for k in _FOLD_KEYS},
    "median": OpSpec("median", "C", "operation_median", "operation_reduced_median"),
    "quantile": OpSpec("quantile", "C", "operation_quantile", "operation_reduced_quantile",
                       frozenset({"q"}), object_only=True,
                       object_example='{ "q": 0.95, "axis": 0 }'),
    "histogram": OpSpec("histogram", "C", "operation_histogram_counts",
                        "operation_reduced_histogram_counts", frozenset({"bins", "min", "max"}),
                        object_only=True, object_example='{ "bins": 16, "axis": 0 }',
                        extra_fields=("operation_histogram_edges",)),
    "covariance": OpSpec("covariance", "C", "operation_covariance", None, single_axis=True,
                         extra_fields=("operation_covariance_order",)),
    "correlation": OpSpec("correlation", "C", "operation_correlation", None, single_axis=True,
                          extra_fields=("operation_correlation_order",)),
    "transform": OpSpec("transform", "T", None, None, frozenset({"method"}), object_only=True,
                        object_example='{ "method": "zscore", "axis": 0 }',
                        extra_fields=("transform_method",)),
})
"""Every wire operation key (26), in the order of ops.md §3."""

REDUCTION_OPS: dict[str, tuple[str, str]] = {
    k: (s.scalar_field, s.reduced_field) for k, s in OPS.items()
    if not s.object_only and s.scalar_field is not None and s.reduced_field is not None
}
"""python-api.md §1: list-style ops (tier A/B plus median) -> (scalar, reduced) field."""

QUERY_OP_KEYS = frozenset(REDUCTION_OPS) | {"quantile", "histogram", "covariance",
                                            "correlation", "transform"}
"""Every key `build_query` accepts: `REDUCTION_OPS` plus the object and matrix ops."""
