"""The one table of query operations: wire key, tier, response fields, parameters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["OPS", "QUERY_OP_KEYS", "REDUCTION_OPS", "OpSpec"]


@dataclass(frozen=True, slots=True)
class OpSpec:
    """tier: "A" (tier A/B folds), "C" (materialize-required) or "T" (transform).
    params: the keys its object form may carry besides ``axis``/``axes``."""

    key: str
    tier: str
    scalar_field: str | None
    reduced_field: str | None
    params: frozenset[str] = frozenset()


_FOLD_KEYS = ("sum", "mean", "min", "max", "count", "var", "std", "product", "norm_l1",
              "norm_l2", "all_finite", "any_nan", "any_inf", "arg_min", "arg_max", "nan_count",
              "inf_count", "null_count", "nan_mean", "nan_std")
_RENAMED = {"count": "count", "arg_min": "argmin", "arg_max": "argmax"}


def _fold(key: str) -> OpSpec:
    scalar = {"count": "operation_element_count", "arg_min": "operation_argmin_index",
              "arg_max": "operation_argmax_index"}.get(key, f"operation_{key}")
    params = frozenset({"fill"}) if key == "null_count" else frozenset()
    return OpSpec(key, "A", scalar, f"operation_reduced_{_RENAMED.get(key, key)}", params)


OPS: Mapping[str, OpSpec] = MappingProxyType({
    **{k: _fold(k) for k in _FOLD_KEYS},
    "median": OpSpec("median", "C", "operation_median", "operation_reduced_median"),
    "quantile": OpSpec("quantile", "C", "operation_quantile", "operation_reduced_quantile",
                       frozenset({"q"})),
    "histogram": OpSpec("histogram", "C", "operation_histogram_counts",
                        "operation_reduced_histogram_counts", frozenset({"bins", "min", "max"})),
    "covariance": OpSpec("covariance", "C", "operation_covariance", None),
    "correlation": OpSpec("correlation", "C", "operation_correlation", None),
    "transform": OpSpec("transform", "T", None, None, frozenset({"method"})),
})

# python-api §1: the list-style ops (tier A/B plus median) with (scalar, reduced) fields.
REDUCTION_OPS: dict[str, tuple[str, str]] = {
    k: (s.scalar_field, s.reduced_field) for k, s in OPS.items()
    if (s.tier == "A" or k == "median") and s.scalar_field and s.reduced_field
}
QUERY_OP_KEYS = frozenset(REDUCTION_OPS) | {"quantile", "histogram", "covariance",
                                            "correlation", "transform"}
