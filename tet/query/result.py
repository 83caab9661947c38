"""`QueryResult`: a response document read back into Python values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tet import dtypes
from tet.errors import TetError, UnknownDatasetError
from tet.query.ops import OPS
from tet.query.response import PREVIEW_ORDER

__all__ = ["QueryResult"]


@dataclass(frozen=True)
class QueryResult:
    """The interesting parts of a response; ``raw`` keeps the whole wire document.

    ``reduced`` is a NumPy array shaped ``reduced_shape`` (bins last for a histogram).
    ``matrix`` (covariance, correlation) is a ``(matrix_order, matrix_order)`` float64
    array; ``histogram_counts`` is an int64 array and ``histogram_edges`` a float64 array
    (``bins + 1`` edges). ``raw`` keeps the wire's lists unchanged.
    Results read from the engine directly keep NaN and ±inf where the wire has ``null``.
    """

    accepted: bool
    message: str | None
    scalar: Any = None
    reduced: np.ndarray[Any, Any] | None = None
    reduced_shape: list[int] | None = None
    plan: dict[str, Any] | None = None
    execution: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    matrix: np.ndarray[Any, Any] | None = None
    matrix_order: int | None = None
    histogram_counts: np.ndarray[Any, Any] | None = None
    histogram_edges: np.ndarray[Any, Any] | None = None
    exact: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_response(cls, raw: dict[str, Any], *, op: str | None = None, path: object = None,
                      require_execution: bool = False,
                      exact: dict[str, Any] | None = None) -> QueryResult:
        """Check a response (unknown dataset, refusal, missing execution) and read it.

        `op` defaults to the operation the response echoes; `exact` is the execution block
        with its non-finite floats kept (the engine hands it over beside the wire form).
        """
        catalog = _block(raw, "catalog") or {}
        if catalog.get("matched") is False:
            raise UnknownDatasetError(str(raw.get("dataset")), path=path,
                                      available=catalog.get("available_datasets", ()))
        if raw.get("accepted") is not True:
            raise TetError(raw.get("message") or "query not accepted")
        if op is None and isinstance(raw.get("operation"), dict) and len(raw["operation"]) == 1:
            (op,) = raw["operation"]
        wire = _block(raw, "execution")
        if op is not None and wire is None and require_execution:
            raise TetError(raw.get("message") or "query has no execution block")
        ex = exact if exact is not None else (wire or {})
        spec = OPS.get(op) if op else None
        # `scalar` is the one number of a whole-selection result (python-api.md §4)
        key = spec.scalar_field if spec and spec.scalar_type is not None else None
        scalar = ex.get(key) if key else None  # None where the wire says null
        reduced = None
        shape = ex.get("operation_reduced_shape")
        if spec and spec.reduced_field and spec.reduced_field in ex:
            values = np.asarray(ex[spec.reduced_field])
            if values.dtype == object:  # the wire's nulls
                values = np.asarray([np.nan if v is None else v for v in values])
            dims = list(shape or [])
            reduced = values.reshape([*dims, -1] if op == "histogram" else dims)
            if op == "histogram":  # counts: whole numbers, as `histogram_counts`
                reduced = reduced.astype(np.int64)
        order_key = f"operation_{op}_order" if spec and spec.result == "matrix" else None
        order = ex.get(order_key) if order_key else None
        matrix = _floats(ex.get(f"operation_{op}")) if order_key else None
        if matrix is not None and isinstance(order, int) and matrix.size == order * order:
            matrix = matrix.reshape(order, order)
        counts = _floats(ex.get("operation_histogram_counts"))
        return cls(
            accepted=True,
            message=raw.get("message"),
            scalar=scalar,
            reduced=reduced,
            reduced_shape=shape,
            plan=raw.get("read_plan"),
            execution=wire,
            raw=raw,
            matrix=matrix,
            matrix_order=order,
            histogram_counts=None if counts is None else counts.astype(np.int64),
            histogram_edges=_floats(ex.get("operation_histogram_edges")),
            exact=exact,
        )

    @property
    def value(self) -> Any:
        if self.scalar is not None:
            return self.scalar
        if self.reduced is not None:
            return self.reduced
        raise TetError("query result has no scalar or reduced value")

    def _preview_key(self) -> str | None:
        ex = self.exact or self.execution or {}
        for name in PREVIEW_ORDER:
            if ex.get(f"{name}_preview"):
                return name
        return None

    @property
    def preview_samples(self) -> list[float] | None:
        name = self._preview_key()
        if name is None:
            return None
        return [float(v) for v in self.preview_array(name)]

    @property
    def preview_truncated(self) -> bool:
        name = self._preview_key()
        return bool(name and (self.exact or self.execution or {}).get(
            f"{name}_preview_truncated"))

    @property
    def preview(self) -> np.ndarray[Any, Any] | None:
        """The samples as a 1-d array of the dataset dtype (f16 bit patterns decoded)."""
        name = self._preview_key()
        return None if name is None else self.preview_array(name)

    def preview_array(self, name: str) -> np.ndarray[Any, Any]:
        values = (self.exact or self.execution or {})[f"{name}_preview"]
        if name == "f16":
            return np.asarray(values, dtype=np.uint16).view(np.float16)
        dtype = dtypes.by_name(name).numpy
        return np.asarray([np.nan if v is None else v for v in values], dtype=dtype)


def _floats(values: Any) -> np.ndarray[Any, Any] | None:
    """A 1-d float64 array of a wire list (``null`` → NaN) or an engine array; None stays."""
    if values is None:
        return None
    if isinstance(values, np.ndarray):
        return np.asarray(values, dtype=np.float64).ravel()
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


def _block(raw: dict[str, Any], key: str) -> dict[str, Any] | None:
    """A response object; anything else (a hand-made or damaged response) counts as absent."""
    value = raw.get(key)
    return value if isinstance(value, dict) else None
