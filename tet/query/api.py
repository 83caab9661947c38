"""The query API of an open file: documents in (dict, JSON or TOML text), responses or
`QueryResult` out, and one helper per tier A/B operation (``f.mean(name, axis=0)``).

`QueryAPI` wraps one `TetFile`; the file declares each method as a `via_api` or
`reduction` descriptor, so ``f.mean`` is a bound method that builds a `QueryAPI` of `f`
and mypy sees its exact signature (a `Reduction` of the helper's scalar type)."""

from __future__ import annotations

import dataclasses
import types
import warnings
from collections.abc import Callable, Sequence
from os import PathLike
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Generic,
    Literal,
    ParamSpec,
    Protocol,
    TypeVar,
    cast,
    overload,
)

import numpy as np

from tet.errors import QueryError, TetError, UnknownDatasetError
from tet.query.document import (
    JSON_SYNTAX,
    Execution,
    QueryDocument,
    load_text,
    parse_device,
    parse_value,
)
from tet.query.execute import device_fallback, execute_document
from tet.query.ops import OPS, REDUCTION_OPS
from tet.query.response import MAX_CHUNKS
from tet.query.result import QueryResult
from tet.query.sinks import (
    SidecarTransformResult,
    SpillReadResult,
    SpillTransformResult,
    TransformNamespace,
    TransformWrite,
)

if TYPE_CHECKING:
    from tet.file import Dataset, TetFile

__all__ = ["HELPER_OPS", "QueryAPI", "Reduction", "reduction", "via_api"]

AxisArg = int | str | Sequence[int | str] | None

# Python helper name -> wire op; `numel` is an alias of `count`.
HELPER_OPS = {name: name for name in REDUCTION_OPS if name != "null_count"}  # own signature
HELPER_OPS["numel"] = "count"

# the device fallbacks already warned about in this process (one RuntimeWarning each)
_WARNED_FALLBACKS: set[str] = set()


def _warn_fallback(response: dict[str, Any]) -> None:
    """A `RuntimeWarning` the first time a requested GPU device falls back to the CPU
    for a given token and reason (query.md §12: the response says why)."""
    note = device_fallback(response.get("execution"))
    if note is not None and note not in _WARNED_FALLBACKS:
        _WARNED_FALLBACKS.add(note)
        warnings.warn(note, RuntimeWarning, stacklevel=4)


def _with_mask(doc: dict[str, Any], mask_fill: Any) -> dict[str, Any]:
    """`doc` with ``execution.mask_fill`` when the helper was asked for it (anything but
    False is written, so a non-bool is refused by validation like in a document)."""
    if mask_fill is not False:
        doc["execution"] = {"mask_fill": mask_fill}
    return doc


class QueryAPI:
    """The query methods of one open `TetFile`; everything goes through
    `execute_document`."""

    __slots__ = ("file",)

    def __init__(self, file: TetFile) -> None:
        self.file = file

    def document(self, query: Any, device: str | None = None) -> QueryDocument:
        """Parse `query` (dict, JSON or TOML text); a string `dataset` the file does not
        have is an `UnknownDatasetError` before any other rule (python-api.md §2)."""
        f = self.file
        if isinstance(query, str):
            try:
                query = load_text(query)
            except QueryError as exc:
                text = str(exc)
                if text.startswith(JSON_SYNTAX):
                    raise QueryError("query string is not valid JSON: "
                                     + text[len(JSON_SYNTAX):]) from None
                raise
        elif not isinstance(query, dict):
            raise TypeError("query must be a dict or JSON string")
        name = query.get("dataset") if isinstance(query, dict) else None
        if isinstance(name, str) and name not in f.datasets():
            raise UnknownDatasetError(name, path=f.path, available=f.datasets())
        doc = parse_value(query)
        if device is not None:
            ex = doc.execution or Execution()
            ex = dataclasses.replace(ex, device=parse_device(device))
            doc = dataclasses.replace(doc, execution=ex)
        return doc

    def run(self, query: Any, *, device: str | None, preview: int | None, plan: bool,
             sink: dict[str, Any] | None = None, max_chunks: int | None = MAX_CHUNKS
             ) -> tuple[QueryDocument, dict[str, Any]]:
        f = self.file
        limit = _preview_limit(preview)
        cap = _count_or_none("max_chunks", max_chunks)
        doc = self.document(query, device)
        raw = execute_document(f, doc, preview=None if plan else limit,
                               tet_file=str(f.path), sink=sink, max_chunks=cap)
        _warn_fallback(raw)
        return doc, raw

    def query(self, query: Any, *, preview: int | None = None, raw: bool = True,
              max_chunks: int | None = MAX_CHUNKS) -> Any:
        """Execute a document (preview None = no samples; aggregates still run).

        ``read_plan.chunks`` lists at most `max_chunks` touched tiles (default 4096; None
        lists all); a longer plan says ``chunks_truncated: true`` and ``chunks_omitted``.
        """
        return self.query_execute(query, preview=preview, raw=raw, max_chunks=max_chunks)

    def query_execute(self, query: Any, *, device: str | None = None,
                      preview: int | None = None, raw: bool = True,
                      max_chunks: int | None = MAX_CHUNKS) -> Any:
        return self.execute(query, device=device, preview=preview, raw=raw,
                            max_chunks=max_chunks)

    def execute(self, query: Any, *, device: str | None = None, preview: int | None = None,
                raw: bool = False, plan: bool = False,
                max_chunks: int | None = MAX_CHUNKS) -> Any:
        """Like `query_execute` but a `QueryResult` by default; ``plan=True`` plans only."""
        sink: dict[str, Any] = {}
        doc, response = self.run(query, device=device, preview=preview, plan=plan, sink=sink,
                                 max_chunks=max_chunks)
        if raw:
            return response
        return self.result(doc, response, require_execution=not plan, sink=sink)

    def plan_only(self, query: Any, *, raw: bool = True,
                  max_chunks: int | None = MAX_CHUNKS) -> Any:
        """The catalog and read plan of a document, without executing it."""
        return self.execute(query, raw=raw, plan=True, max_chunks=max_chunks)

    def result(self, doc: QueryDocument, response: dict[str, Any], *,
                require_execution: bool, sink: dict[str, Any]) -> QueryResult:
        f = self.file
        op = doc.operation.key if doc.operation else None
        return QueryResult.from_response(response, op=op, path=f.path,
                                         require_execution=require_execution,
                                         exact=sink.get("execution"))

    def _axes(self, dataset: str, axes: AxisArg, axis: int | str | None) -> list[int]:
        if axes is not None and axis is not None:
            raise TypeError("pass only one of axes= or axis=")
        if axis is not None:
            axes = [axis]
        if axes is None:
            return []
        if isinstance(axes, (int, str)):
            axes = [axes]
        f = self.file
        ds: Dataset = f.dataset(dataset)
        return [ds.axis_index(a, path=f.path) for a in axes]

    def reduce(self, op: str, dataset: str, axes: AxisArg, axis: int | str | None, *,
                selection: Any, device: str | None, preview: int | None, raw: bool,
                body: Any = None, mask_fill: bool = False) -> Any:
        wire = HELPER_OPS.get(op, op)
        resolved = self._axes(dataset, axes, axis)
        spec = resolved if body is None else body(resolved)
        doc: dict[str, Any] = {"dataset": dataset, wire: spec}
        if selection is not None:
            doc["selection"] = selection
        _with_mask(doc, mask_fill)
        result = self.query_execute(doc, device=device, preview=preview, raw=False)
        if raw:
            return result.raw
        if resolved or preview is not None:
            return result
        if OPS[wire].scalar_field not in (result.execution or {}):
            raise TetError(f"missing scalar for op {wire!r}")
        kind = OPS[wire].scalar_type
        assert kind is not None, wire  # the helpers are those of one-number ops
        return kind(result.scalar)

    # -- tier C ---------------------------------------------------------------
    def quantile(self, dataset: str, q: float, axes: AxisArg = None, *,
                 axis: int | str | None = None, selection: Any = None, device: str | None = None,
                 preview: int | None = None, raw: bool = False, mask_fill: bool = False) -> Any:
        """`np.quantile` (linear) over `axes`; a float for scalar calls, else a `QueryResult`.

        ``mask_fill=True`` (every helper has it) reads the dataset's ``_FillValue`` /
        ``missing_value`` values as NaN (``execution.mask_fill``)."""

        def body(resolved: list[int]) -> Any:
            out: dict[str, Any] = {"q": q}
            if len(resolved) == 1:
                out["axis"] = resolved[0]
            elif resolved:
                out["axes"] = resolved
            return out

        return self.reduce("quantile", dataset, axes, axis, selection=selection, device=device,
                           preview=preview, raw=raw, body=body, mask_fill=mask_fill)

    def histogram(self, dataset: str, bins: int, axes: AxisArg = None, *,
                  axis: int | str | None = None, min: float | None = None,
                  max: float | None = None, selection: Any = None, device: str | None = None,
                  preview: int | None = None, raw: bool = False, mask_fill: bool = False) -> Any:
        """`np.histogram` counts (and edges when scalar) as a `QueryResult`."""
        resolved = self._axes(dataset, axes, axis)
        body: dict[str, Any] = {"bins": bins}
        if resolved:
            body["axes"] = resolved
        if min is not None:
            body["min"] = min
        if max is not None:
            body["max"] = max
        return self._matrix_like("histogram", dataset, body, selection, device, preview, raw,
                                 mask_fill)

    def covariance(self, dataset: str, axis: int | str, *, selection: Any = None,
                   device: str | None = None, preview: int | None = None,
                   raw: bool = False, mask_fill: bool = False) -> Any:
        """Population covariance (`np.cov(bias=True)`); observations along `axis`."""
        a = self._observation_axis("covariance", dataset, axis)
        return self._matrix_like("covariance", dataset, a, selection, device, preview, raw,
                                 mask_fill)

    def correlation(self, dataset: str, axis: int | str, *, selection: Any = None,
                    device: str | None = None, preview: int | None = None,
                    raw: bool = False, mask_fill: bool = False) -> Any:
        """`np.corrcoef`; observations along `axis`."""
        a = self._observation_axis("correlation", dataset, axis)
        return self._matrix_like("correlation", dataset, {"axis": a}, selection, device,
                                 preview, raw, mask_fill)

    def _observation_axis(self, op: str, dataset: str, axis: int | str | None) -> int:
        if axis is None or isinstance(axis, (list, tuple)):
            raise QueryError(f"{op} requires axis= (one observation axis, an index or a "
                             "dimension name)")
        (a,) = self._axes(dataset, None, axis)
        return a

    def _matrix_like(self, op: str, dataset: str, body: Any, selection: Any,
                     device: str | None, preview: int | None, raw: bool,
                     mask_fill: bool = False) -> Any:
        doc: dict[str, Any] = {"dataset": dataset, op: body}
        if selection is not None:
            doc["selection"] = selection
        _with_mask(doc, mask_fill)
        return self.query_execute(doc, device=device, preview=preview, raw=raw)

    # -- sinks ----------------------------------------------------------------
    def read_spill(self, dataset: str, path: str | PathLike[str] | None = None, *,
                   selection: Any = None, raw: bool = False, mask_fill: bool = False) -> Any:
        """Write the selection to a spill file (row-major, little-endian, no header);
        without `path`, a file in the platform cache that is kept for the caller.
        ``mask_fill=True``: fill values written as NaN (integers as float64)."""
        f = self.file
        target = (str(f.allowlist.temp_path("spill")) if path is None
                  else f.allowlist.beside(path, "spill"))
        doc: dict[str, Any] = {"dataset": dataset, "spill": target}
        if selection is not None:
            doc["selection"] = selection
        _with_mask(doc, mask_fill)
        response = self.query_execute(doc, raw=True)
        return response if raw else SpillReadResult.from_response(response)

    @property
    def transform(self) -> TransformNamespace:
        """``f.transform.to_numpy.zscore(name, axis=...)``, ``.to_spill``, ``.to_sidecar``."""
        return TransformNamespace(self.run_transform)

    def run_transform(self, sink: TransformWrite, method: str, dataset: str, axes: AxisArg, *,
                   axis: int | str | None, selection: Any, device: str | None, raw: bool,
                   path: str | PathLike[str] | None = None,
                   timestamp: bool | None = None, mask_fill: bool = False) -> Any:
        f = self.file
        resolved = self._axes(dataset, axes, axis)
        body: dict[str, Any] = {"method": method}
        if len(resolved) == 1:
            body["axis"] = resolved[0]
        elif resolved:
            body["axes"] = resolved
        write: dict[str, Any] = {"target": sink.value}
        if path is not None:
            write["path"] = f.allowlist.beside(
                path, "sidecar" if sink is TransformWrite.SIDECAR else "write.path")
        if timestamp is not None:
            write["timestamp"] = timestamp
        doc: dict[str, Any] = {"dataset": dataset, "transform": body, "write": write}
        if selection is not None:
            doc["selection"] = selection
        _with_mask(doc, mask_fill)
        out: dict[str, Any] = {}
        _, response = self.run(doc, device=device, preview=0, plan=False, sink=out)
        if raw:
            return response
        if sink is TransformWrite.NUMPY:
            return out["array"]
        if sink is TransformWrite.SPILL:
            return SpillTransformResult.from_response(response, method)
        return SidecarTransformResult.from_response(response, method)

    def null_count(self, dataset: str, axes: AxisArg = None, *, axis: int | str | None = None,
                   fill: float | None = None, selection: Any = None, device: str | None = None,
                   preview: int | None = None, raw: bool = False,
                   mask_fill: bool = False) -> Any:
        """Elements equal to `fill` (default: the dataset's _FillValue-style attr)."""

        def body(resolved: list[int]) -> Any:
            out: dict[str, Any] = {} if fill is None else {"fill": fill}
            if len(resolved) == 1:
                out["axis"] = resolved[0]
            elif resolved:
                out["axes"] = resolved
            return out or []

        return self.reduce("null_count", dataset, axes, axis, selection=selection,
                           device=device, preview=preview, raw=raw, body=body,
                           mask_fill=mask_fill)


T = TypeVar("T", float, int, bool)
T_co = TypeVar("T_co", float, int, bool, covariant=True)
P = ParamSpec("P")
R = TypeVar("R")


class Reduction(Protocol[T_co]):
    """A reduction helper (``f.mean``, ``f.count``, ...): its scalar type `T_co` (float,
    int or bool) when called without axes, preview or raw; a `QueryResult` (or that
    scalar, for ``axes=[]``) otherwise; the response document with ``raw=True``."""

    @overload
    def __call__(self, dataset: str, axes: None = None, *, axis: None = None,
                 selection: Any = None, device: str | None = None, preview: None = None,
                 raw: Literal[False] = False, mask_fill: bool = False) -> T_co: ...

    @overload
    def __call__(self, dataset: str, axes: AxisArg = None, *, axis: int | str | None = None,
                 selection: Any = None, device: str | None = None, preview: int | None = None,
                 raw: Literal[True], mask_fill: bool = False) -> dict[str, Any]: ...

    @overload
    def __call__(self, dataset: str, axes: AxisArg = None, *, axis: int | str | None = None,
                 selection: Any = None, device: str | None = None, preview: int | None = None,
                 raw: bool = False, mask_fill: bool = False
                 ) -> QueryResult | T_co | dict[str, Any]: ...


class reduction(Generic[T]):
    """Declares the helper of one reduction op on `TetFile` (``mean = reduction(float)``;
    the op is the attribute's name).  Reading it off a file gives a bound method."""

    def __init__(self, kind: type[T]) -> None:
        self.kind: type[T] = kind  # the scalar type mypy sees; the op's wire kind decides
        self.func: Callable[..., Any]  # the method, made once the attribute's name is known

    def __set_name__(self, owner: type, name: str) -> None:
        if name not in HELPER_OPS:
            raise TypeError(f"{name!r} is not a reduction helper (one of {sorted(HELPER_OPS)})")
        kind = OPS[HELPER_OPS[name]].scalar_type
        assert kind is not None, name  # every helper's op answers with one number
        if self.kind is not kind:  # what `QueryAPI.reduce` returns for a scalar call
            raise TypeError(f"the {name!r} helper returns {kind.__name__}, "
                            f"not {self.kind.__name__}")
        self.func = _helper(name)

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Callable[..., Any]: ...

    @overload
    def __get__(self, obj: TetFile, owner: type | None = None) -> Reduction[T]: ...

    def __get__(self, obj: TetFile | None, owner: type | None = None
                ) -> Callable[..., Any] | Reduction[T]:
        if obj is None:
            return self.func
        return cast("Reduction[T]", types.MethodType(self.func, obj))


class via_api(Generic[P, R]):
    """Declares a `TetFile` method that is the `QueryAPI` method `method` of the file
    (``query = via_api(QueryAPI.query)``), with its signature and documentation."""

    def __init__(self, method: Callable[Concatenate[QueryAPI, P], R]) -> None:
        self.method = method
        self.name = method.__name__

    @overload
    def __get__(self, obj: None, owner: type | None = None
                ) -> Callable[Concatenate[QueryAPI, P], R]: ...

    @overload
    def __get__(self, obj: TetFile, owner: type | None = None) -> Callable[P, R]: ...

    def __get__(self, obj: TetFile | None, owner: type | None = None
                ) -> Callable[Concatenate[QueryAPI, P], R] | Callable[P, R]:
        if obj is None:
            return self.method
        bound: Callable[P, R] = getattr(QueryAPI(obj), self.name)
        return bound


def _helper(op: str) -> Callable[..., Any]:
    def method(self: TetFile, dataset: str, axes: AxisArg = None, *,
               axis: int | str | None = None, selection: Any = None, device: str | None = None,
               preview: int | None = None, raw: bool = False, mask_fill: bool = False) -> Any:
        return QueryAPI(self).reduce(op, dataset, axes, axis, selection=selection,
                                     device=device, preview=preview, raw=raw,
                                     mask_fill=mask_fill)

    method.__name__ = method.__qualname__ = op
    method.__doc__ = (f"The `{HELPER_OPS.get(op, op)}` reduction over `axes` ([] or None: "
                      "every element); a bare value for scalar calls, else a `QueryResult`. "
                      "``mask_fill=True`` reads the dataset's ``_FillValue`` / "
                      "``missing_value`` values as NaN (``execution.mask_fill``).")
    return method


def _preview_limit(preview: Any) -> int:
    """None means no samples (limit 0); otherwise a non-negative integer."""
    limit = _count_or_none("preview", preview)
    return 0 if limit is None else limit


def _count_or_none(name: str, value: Any) -> int | None:
    """A non-negative integer argument, or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise QueryError(f"{name} must be a non-negative integer or None, got {value!r}")
    return int(value)
