"""One query document over many ``.tet`` files: `query_many`.

Each file is one task: on a `dask.distributed.Client` when one is given, else on a
local thread pool (the C kernels release the GIL).  Responses come back in the
order of the paths.

With ``combine=True`` the files are reduced together.  Every task folds its file
into the same accumulators a single query uses (count, compensated sums, shifted
moments, extremes, NaN/inf/fill counts), and the caller merges them in path order
with the engine's own merge between fold parts (`kernels.merge_cells`: Neumaier
sums, the Chan et al. merge of means and squared deviations), then finishes them
with the engine's own formulas.  The answer is the one a single file holding all
the data would give, up to the rounding of a different summation order.

What combines: the tier A/B folds except ``arg_min``/``arg_max`` (their indices
are positions inside one file).  Scalar reductions always combine.  A partial
reduction combines cell by cell, so every file must give the same reduced shape:
this is the answer for files that are pieces of one array split along a
*reduced* axis (e.g. a time series in daily files, reduced over time).  Pieces
split along a kept axis do not combine (concatenate the per-file responses
instead).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from tet import kernels
from tet.errors import OS_ERRORS, CatalogError, TetError, TetOSError, validation
from tet.file import TetFile
from tet.paths import checked_path
from tet.query import response as resp
from tet.query.budget import resolve_budget
from tet.query.document import QueryDocument, parse_text, parse_value, resolve_operation
from tet.query.folds import FOLDS
from tet.query.mask import resolve_mask
from tet.query.ops import OPS

__all__ = ["COMBINABLE_OPS", "query_many"]

PathLike = str | os.PathLike[str]
Acc = np.ndarray[Any, Any]

COMBINABLE_OPS = frozenset(k for k in FOLDS if OPS[k].result != "index")
"""Ops `query_many(..., combine=True)` merges across files: every fold but those answering
with an index (arg_min, arg_max), which points into one file's selection."""



# ---------------------------------------------------------------------------
# Failures cross process boundaries as plain data: some exception classes need
# keyword arguments to be rebuilt and would not unpickle on the client.


@dataclass(frozen=True, slots=True)
class _Failure:
    kind: str            # "catalog", "os" or "tet"
    message: str
    errno: int | None = None


def _capture(exc: BaseException) -> _Failure:
    if isinstance(exc, CatalogError):
        return _Failure("catalog", str(exc))
    if isinstance(exc, OSError):  # a TetOSError's text already names action and path
        text = str(exc) if isinstance(exc, TetError) else exc.strerror or str(exc)
        return _Failure("os", text, exc.errno)
    return _Failure("tet", str(exc))


def _raise(path: str, failure: _Failure) -> None:
    text = failure.message if path in failure.message else f"{path}: {failure.message}"
    if failure.kind == "catalog":
        raise CatalogError(text)
    if failure.kind == "os":
        code = failure.errno
        cls = OS_ERRORS.get(code, TetOSError) if code else TetOSError
        raise cls(text, errno=code, strerror=os.strerror(code) if code else text, filename=path)
    raise TetError(text)


def _query_one(path: str, doc: dict[str, Any], preview: int | None,
               options: dict[str, Any] | None = None) -> Any:
    """One file's response (task body; runs in a worker, which opens a URL itself)."""
    try:
        with TetFile(path, storage_options=options) as f:
            return f.query(doc, preview=preview)
    except (TetError, CatalogError, OSError) as exc:
        return _capture(exc)


@dataclass(frozen=True, slots=True)
class FilePartial:
    """One file's fold accumulators, shaped like its reduced result."""

    cells: Acc               # kernels.ACC_DTYPE, one per output cell, row-major
    shape: tuple[int, ...]   # the reduced (kept) shape; () for a scalar
    axes: tuple[int, ...]    # the resolved axes in the document's order (the echo's)
    count: int               # elements in the file's logical selection
    fill: float              # null_count's resolved fill (0.0 otherwise)
    stored: int              # payload bytes of the chunks the selection touches


def _partial_one(path: str, doc: dict[str, Any],
                 options: dict[str, Any] | None = None) -> FilePartial | _Failure:
    """Fold one file into raw accumulators (task body; runs in a worker)."""
    try:
        return file_partial(path, parse_value(doc), storage_options=options)
    except (TetError, CatalogError, OSError) as exc:
        return _capture(exc)


def file_partial(path: PathLike, doc: QueryDocument, *,
                 storage_options: Mapping[str, Any] | None = None) -> FilePartial:
    """The accumulators of `doc`'s fold over one file or URL (same validation as a
    query)."""
    op = doc.operation
    assert op is not None and op.key in COMBINABLE_OPS
    with TetFile(path, storage_options=storage_options) as f:
        ds = f.dataset(doc.dataset)
        names = list(ds.dim_names) if ds.dim_names else None
        (written, axes, null_fill), (dataset_id, box) = resolve_operation(
            op, ds.ndim, names, ds.attrs, lambda: f.resolve(doc.dataset, doc.selection))
        fill = 0.0 if null_fill is None else null_fill
        table = f.reader.table(dataset_id)
        reduce = list(axes) if axes else list(range(ds.ndim))
        what = FOLDS[op.key][0]
        ex = doc.execution
        budget = resolve_budget(
            query_bytes=ex.memory_budget_bytes if ex else None,
            query_bps=ex.memory_budget_percent_bps if ex else None,
            file_bytes=f.catalog.budget_bytes, file_bps=f.catalog.budget_percent_bps)
        mask = resolve_mask(f, dataset_id).mask if ex and ex.mask_fill else None
        cells = table.fold(box.start, box.stop, box.step, reduce=reduce, what=what, fill=fill,
                           budget=budget, mask=mask)
        touched = table.touch(box.start, box.stop, box.step).astype(np.int64)
        kept = tuple(n for d, n in enumerate(box.shape) if d not in reduce)
        return FilePartial(cells, kept, written, box.size, fill,
                           int(table.stored[touched].sum()))


def _same_fill(x: float, y: float) -> bool:
    return (math.isnan(x) and math.isnan(y)) or np.float64(x).tobytes() == np.float64(y).tobytes()


def combine_partials(doc: QueryDocument, paths: Sequence[str],
                     partials: Sequence[FilePartial]) -> dict[str, Any]:
    """The combined response (query.md §13 shape, ``tet_files`` listing the inputs)."""
    op = doc.operation
    assert op is not None
    first = partials[0]
    for path, p in zip(paths, partials):
        if p.shape != first.shape:
            raise validation(
                "combine=True needs the same reduced shape from every file; "
                f"{paths[0]} gives {list(first.shape)}, {path} gives {list(p.shape)} "
                "(run without combine and concatenate the responses)")
        if not _same_fill(p.fill, first.fill):
            raise validation(
                f"null_count fill differs between files ({first.fill} in "
                f"{paths[0]}, {p.fill} in {path}); pass `fill` in the query")
    what, finish = FOLDS[op.key]
    merged = first.cells.copy()
    for p in partials[1:]:
        kernels.merge_cells(merged, p.cells, what)
    values = finish(merged).reshape(first.shape)
    spec = OPS[op.key]
    assert spec.scalar_field is not None and spec.reduced_field is not None
    fields: dict[str, Any] = {
        "total_bytes_read_from_disk": sum(p.stored for p in partials),
        "memory_strategy": "streaming_fold",
        "operation_element_count": sum(p.count for p in partials),
    }
    if first.axes:
        fields["operation_reduced_shape"] = list(first.shape)
        flat = values.ravel()
        fields[spec.reduced_field] = flat.astype(np.float64) if op.key == "count" else flat
    else:
        fields[spec.scalar_field] = values.item()
    if doc.execution is not None and doc.execution.mask_fill:
        fields["mask_fill"] = True  # each file masked its own fill values
    fill = first.fill if op.key == "null_count" else None
    out = resp.response(
        layout_version=doc.layout_version, dataset=doc.dataset,
        selection_axes=len(doc.selection) if doc.selection is not None else None,
        operation=op.echo(first.axes, fill),
        message=f"query accepted; dataset matched in {len(paths)} files; operation executed "
                "per file and the fold accumulators combined (see execution.operation_*)",
        execution=resp.execution_block(fields))
    out["tet_files"] = list(paths)
    return out


# ---------------------------------------------------------------------------


def _document(doc: Any) -> QueryDocument:
    if isinstance(doc, dict):
        return parse_value(doc)
    if isinstance(doc, str):
        return parse_text(doc)
    raise TypeError("query must be a dict or JSON string")


def _run(client: Any, fn: Callable[..., Any], paths: list[str], args: tuple[Any, ...],
         max_workers: int | None) -> list[Any]:
    if client is not None:
        futures = client.map(fn, paths, *[[a] * len(paths) for a in args], pure=False)
        return list(client.gather(futures))
    if not paths:
        return []
    workers = max_workers or min(len(paths), kernels.thread_count())
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda p: fn(p, *args), paths))


def query_many(
    paths: Iterable[PathLike],
    doc: Any,
    client: Any = None,
    *,
    combine: bool = False,
    preview: int | None = None,
    max_workers: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Any:
    """Run one query document on many ``.tet`` files.

    Parameters
    ----------
    paths : the files, in the order the answers come back: paths or URLs (``s3://``,
        ``gs://``, ``az://``, ``https://``), which each task opens with ranged reads.
    doc : a query document (dict, or JSON/TOML text), as for `TetFile.query`.
    client : a ``dask.distributed.Client``: one task per file runs on its workers.
        None runs the files on a local thread pool of `max_workers` threads.
    combine : merge the per-file results into one response (tier A/B folds except
        arg_min/arg_max; a partial reduction needs the same reduced shape from every
        file); see the module docstring.
    preview : sample count per response, as in `TetFile.query` (not with combine).
    storage_options : for the URLs, as for `tet.open`.  They travel with every task
        (credentials included) to the worker that opens the URL; never an open handle.

    Returns
    -------
    A list of response dicts, one per path, or with ``combine=True`` one response
    whose ``execution`` holds the combined ``operation_*`` fields and whose
    ``tet_files`` lists the inputs.

    Raises
    ------
    QueryError
        The document is invalid (checked before anything runs), or does not combine.
    TetError, CatalogError, OSError
        A file failed; the message starts with its path.
    """
    parsed = _document(doc)
    wire = parsed.to_dict()
    options = dict(storage_options) if storage_options else None
    names = [os.path.expanduser(checked_path(p, "cannot query")) for p in paths]
    if combine:
        op = parsed.operation
        if op is None or op.key not in COMBINABLE_OPS:
            shown = "no operation" if op is None else f"{op.key!r}"
            raise validation(
                "combine=True works for the folds "
                f"{', '.join(sorted(COMBINABLE_OPS))}; the document has {shown}")
        if preview:
            raise ValueError("preview does not apply with combine=True")
        if not names:
            raise ValueError("combine=True needs at least one file")
        outcomes = _run(client, _partial_one, names, (wire, options), max_workers)
        for path, outcome in zip(names, outcomes):
            if isinstance(outcome, _Failure):
                _raise(path, outcome)
        return combine_partials(parsed, names, outcomes)
    outcomes = _run(client, _query_one, names, (wire, preview, options), max_workers)
    for path, outcome in zip(names, outcomes):
        if isinstance(outcome, _Failure):
            _raise(path, outcome)
    return outcomes

