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
    """The interesting parts of a response; ``raw`` keeps the whole document.

    ``reduced`` is a NumPy array shaped ``reduced_shape`` for partial reductions.
    """

    accepted: bool
    message: str | None
    scalar: Any = None
    reduced: np.ndarray[Any, Any] | None = None
    reduced_shape: list[int] | None = None
    plan: dict[str, Any] | None = None
    execution: dict[str, Any] | None = None
    matrix: list[float] | None = None
    matrix_order: int | None = None
    histogram_counts: list[float] | None = None
    histogram_edges: list[float] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_response(cls, raw: dict[str, Any], *, op: str | None = None, path: object = None,
                      require_execution: bool = False) -> QueryResult:
        """Check a response (unknown dataset, refusal, missing execution) and read it."""
        catalog = raw.get("catalog") or {}
        if catalog.get("matched") is False:
            raise UnknownDatasetError(str(raw.get("dataset")), path=path,
                                      available=catalog.get("available_datasets", ()))
        if raw.get("accepted") is False:
            raise TetError(raw.get("message") or "query not accepted")
        ex = raw.get("execution")
        if op is not None and ex is None and require_execution:
            raise TetError(raw.get("message") or "query has no execution block")
        ex = ex or {}
        spec = OPS.get(op) if op else None
        scalar = ex.get(spec.scalar_field) if spec and spec.scalar_field else None
        reduced = None
        shape = ex.get("operation_reduced_shape")
        if spec and spec.reduced_field and spec.reduced_field in ex:
            values = np.asarray([np.nan if v is None else v for v in ex[spec.reduced_field]])
            dims = list(shape or [])
            reduced = values.reshape([*dims, -1] if op == "histogram" else dims)
        order_key = f"operation_{op}_order" if op in ("covariance", "correlation") else None
        return cls(
            accepted=bool(raw.get("accepted", True)),
            message=raw.get("message"),
            scalar=scalar,
            reduced=reduced,
            reduced_shape=shape,
            plan=raw.get("read_plan"),
            execution=raw.get("execution"),
            matrix=ex.get(f"operation_{op}") if order_key else None,
            matrix_order=ex.get(order_key) if order_key else None,
            histogram_counts=ex.get("operation_histogram_counts"),
            histogram_edges=ex.get("operation_histogram_edges"),
            raw=raw,
        )

    @property
    def value(self) -> Any:
        if self.scalar is not None:
            return self.scalar
        if self.reduced is not None:
            return self.reduced
        raise TetError("query result has no scalar or reduced value")

    def _preview_key(self) -> str | None:
        ex = self.execution or {}
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
        return bool(name and (self.execution or {}).get(f"{name}_preview_truncated"))

    @property
    def preview(self) -> np.ndarray[Any, Any] | None:
        """The samples as a 1-d array of the dataset dtype (f16 bit patterns decoded)."""
        name = self._preview_key()
        return None if name is None else self.preview_array(name)

    def preview_array(self, name: str) -> np.ndarray[Any, Any]:
        values = (self.execution or {})[f"{name}_preview"]
        if name == "f16":
            return np.asarray(values, dtype=np.uint16).view(np.float16)
        dtype = dtypes.by_name(name).numpy
        return np.asarray([np.nan if v is None else v for v in values], dtype=dtype)
