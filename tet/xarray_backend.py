"""xarray backend: ``xr.open_dataset("x.tet", engine="tet")``.

Every dataset of the file (or of one ``group``: the datasets named ``group/…``)
becomes a variable.  Dimensions come from the footer ``dim_names``; a dataset
without them gets ``dim_0``, ``dim_1``, … (prefixed with its own name where an
earlier dataset already uses ``dim_i`` with another length).  Footer ``coords``
labels become coordinates: string labels as they are (padded with ``""`` where the
footer labels only the first positions of an axis), typed labels (numbers, dates)
back in their dtype when `from_xarray` recorded it.  Attributes are the footer
attrs; ``_FillValue``, ``missing_value``, ``scale_factor`` and ``add_offset`` text
is turned into numbers so xarray's CF decoding (``mask_and_scale``) applies.

Data stays on disk until used: each variable is a `TetBackendArray` that turns
every (outer) index key into one `TetFile.read_numpy` of its bounding box, read
through the per-process file cache of `tet.dask` (one open file per process, also
on dask workers).  ``chunks={}`` gives dask arrays on the file's chunks (grouped
into larger blocks, whole chunks each, where the grid has more than
`tet.dask.MAX_BLOCKS` tiles).  Opening checks each variable's geometry and tile table
(a hostile grid is a `CatalogError` at open, not a huge graph later); a read checks
the index rows it touches before it allocates, within the memory budget.

Conventions shared with `tet.xarray_write.from_xarray` (reserved attr keys):

- ``_tet_types``: JSON object, attr key -> type of an attr that is not a string
  (``"json"`` for Python values, a NumPy dtype name, ``"<dtype>[]"`` for arrays,
  ``"tuple"``); the attr's value is its JSON text.
- ``_tet_global:<key>``: an attr of the xarray Dataset itself (the footer has no
  file-level attrs), stored on the first dataset written.
- ``_tet_coord:<dim>``: JSON ``{"dtype", "attrs", "types"}`` of the index
  coordinate whose values are the labels of axis ``<dim>``.
- ``_tet_scalar``: the dataset holds a 0-d variable (stored with shape ``(1,)``).
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr
from xarray.backends import BackendArray, BackendEntrypoint
from xarray.backends.common import AbstractDataStore
from xarray.backends.store import StoreBackendEntrypoint
from xarray.core import indexing

from tet.dask import FileKey, file_key, grouped_chunk_shape, open_cached
from tet.errors import CatalogError, TetError, TetOSError
from tet.file import Dataset
from tet.layout import MAGIC
from tet.query.budget import require_memory, resolve_budget
from tet.safeio import checked_path, open_regular

__all__ = [
    "COORD_PREFIX",
    "GLOBAL_PREFIX",
    "SCALAR_ATTR",
    "TYPES_ATTR",
    "TetBackendArray",
    "TetBackendEntrypoint",
    "TetDataStore",
    "XarrayLayoutError",
    "decode_attrs",
    "encode_attrs",
]

TYPES_ATTR = "_tet_types"
GLOBAL_PREFIX = "_tet_global:"
COORD_PREFIX = "_tet_coord:"
SCALAR_ATTR = "_tet_scalar"
CF_NUMERIC = ("_FillValue", "missing_value", "scale_factor", "add_offset")


class XarrayLayoutError(CatalogError, ValueError):
    """The file's datasets cannot form one xarray Dataset: a dimension with two lengths,
    or one dataset naming two of its axes alike (duplicate footer ``dim_names``)."""


# ---------------------------------------------------------------------------
# Attributes: footer attrs are strings; other values travel as JSON text plus a type.


def encode_attrs(attrs: Mapping[Any, Any], where: str) -> tuple[dict[str, str], dict[str, str]]:
    """(string attrs, types of those that were not strings) for the footer.

    Raises
    ------
    TypeError
        A key that is not a string, or a value that is neither a string, a JSON value
        nor a numeric NumPy scalar/array.
    """
    out: dict[str, str] = {}
    types: dict[str, str] = {}
    for key, value in attrs.items():
        if not isinstance(key, str):
            raise TypeError(f"{where}: attribute names must be strings, got {key!r}")
        if isinstance(value, str) and value:
            out[key] = str(value)
            continue
        tag, text = _encode_value(value, f"{where}: attribute {key!r}")
        out[key], types[key] = text, tag
    return out, types


def _encode_value(value: Any, where: str) -> tuple[str, str]:
    if isinstance(value, np.ndarray | np.generic):
        if value.dtype.kind not in "biuf":
            raise TypeError(f"{where}: cannot store a {value.dtype} value in the footer")
        tag = value.dtype.name + ("[]" if isinstance(value, np.ndarray) else "")
        return tag, json.dumps(value.tolist())
    if isinstance(value, tuple):
        return "tuple", _json(list(value), where)
    return "json", _json(value, where)


def _json(value: Any, where: str) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"{where}: cannot store {type(value).__name__} {value!r} in the footer "
            "(strings, numbers, booleans, lists of them, numeric NumPy values)"
        ) from None


def _decode_value(text: str, tag: str) -> Any:
    value = json.loads(text)
    if tag == "json":
        return value
    if tag == "tuple":
        return tuple(value)
    if tag.endswith("[]"):
        return np.asarray(value, dtype=np.dtype(tag[:-2]))
    return np.dtype(tag).type(value)


def decode_attrs(raw: Mapping[str, str], types: Mapping[str, str]) -> dict[str, Any]:
    """Attrs with the typed ones turned back into their values (a value that does not
    parse stays the footer text)."""
    out: dict[str, Any] = {}
    for key, text in raw.items():
        tag = types.get(key)
        if tag is None:
            out[key] = text
            continue
        try:
            out[key] = _decode_value(text, tag)
        except (ValueError, TypeError):
            out[key] = text
    return out


def _load_types(raw: Mapping[str, str]) -> dict[str, str]:
    try:
        types = json.loads(raw.get(TYPES_ATTR, "{}"))
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in types.items()} if isinstance(types, dict) else {}


def _cf_number(text: str, dtype: np.dtype[Any]) -> Any:
    """Footer text of a CF attr as a number (None when it is not one)."""
    try:
        value = float(text.strip())
    except ValueError:
        return None
    if dtype.kind in "iu":
        return dtype.type(int(value)) if value.is_integer() else value
    return dtype.type(value) if dtype.kind == "f" else value


# ---------------------------------------------------------------------------
# Coordinate labels


def labels_to_values(labels: Sequence[str], length: int, meta: Mapping[str, Any] | None
                     ) -> np.ndarray[Any, Any] | None:
    """The coordinate values of an axis's footer labels (None when they cannot be).

    Without a recorded dtype the labels are strings; footers may label only the first
    positions of an axis, the rest read as ``""``.
    """
    dtype = meta.get("dtype") if meta else None
    if dtype is None:
        return np.array(list(labels) + [""] * (length - len(labels)), dtype=str)
    if len(labels) != length:
        return None
    try:
        dt = np.dtype(str(dtype))
        if dt.kind == "b":
            return np.array([label == "True" for label in labels], dtype=bool)
        if dt.kind in "UO":
            return np.array(list(labels), dtype=dt)
        return np.array(list(labels)).astype(dt)
    except (TypeError, ValueError):
        return None


def _date_unit(values: np.ndarray[Any, Any]) -> Any:
    """The coarsest ISO unit that writes every date exactly (one format for all)."""
    valid = values[~np.isnat(values)]
    for unit in ("D", "m", "s", "ms", "us", "ns"):
        if unit == "ns" or (valid.astype(f"M8[{unit}]") == valid).all():
            return unit
    return "ns"


def values_to_labels(values: np.ndarray[Any, Any]) -> tuple[list[str], str | None] | None:
    """Footer labels of 1-D coordinate values and the dtype to record (None for plain
    strings); None when they cannot be labels (object values that are not strings,
    empty strings)."""
    kind = values.dtype.kind
    if kind == "M":
        return list(np.datetime_as_string(values, unit=_date_unit(values))), values.dtype.name
    if kind == "m":
        return [str(v) for v in values.astype(np.int64).tolist()], values.dtype.name
    if kind in "biuf":
        return [str(v) for v in values], values.dtype.name
    if kind in "UO" and all(isinstance(v, str) and v for v in values.tolist()):
        return [str(v) for v in values.tolist()], None
    return None


# ---------------------------------------------------------------------------
# Lazy arrays


class TetBackendArray(BackendArray):
    """One dataset on disk; picklable (it holds the file's key, not the file)."""

    def __init__(self, key: FileKey, name: str, shape: tuple[int, ...],
                 dtype: np.dtype[Any]) -> None:
        self.key = key
        self.name = name
        self.shape = shape
        self.dtype = dtype

    def __getitem__(self, key: indexing.ExplicitIndexer) -> Any:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER, self._outer)

    def _outer(self, key: tuple[Any, ...]) -> np.ndarray[Any, Any]:
        """An outer key (ints, positive-step slices, sorted int arrays) -> one read of
        the bounding box with the largest common step, then NumPy picks the arrays'
        elements and drops the integer axes."""
        start, stop, step, out_shape = [], [], [], []
        picks: list[tuple[int, np.ndarray[Any, Any]]] = []
        drop: list[int] = []
        for d, (k, n) in enumerate(zip(key, self.shape)):
            if isinstance(k, slice):
                s, e, st = k.indices(n)
                count = len(range(s, e, st))
                start.append(s)
                stop.append(s + max(count - 1, 0) * st + 1)
                step.append(st)
                out_shape.append(count)
            elif isinstance(k, np.ndarray):
                idx = np.asarray(k, dtype=np.int64)
                out_shape.append(idx.size)
                if idx.size == 0:
                    start.append(0)
                    stop.append(1)
                    step.append(1)
                    continue
                lo, hi = int(idx.min()), int(idx.max())
                gaps = np.diff(np.unique(idx))
                st = int(np.gcd.reduce(gaps)) if gaps.size else 1
                start.append(lo)
                stop.append(hi + 1)
                step.append(st)
                picks.append((d, (idx - lo) // st))
            else:
                i = int(k)
                start.append(i)
                stop.append(i + 1)
                step.append(1)
                drop.append(d)
                out_shape.append(1)
        if any(n == 0 for n in out_shape):
            return np.empty([n for d, n in enumerate(out_shape) if d not in drop], self.dtype)
        f = open_cached(self.key)
        sel = {"start": start, "stop": stop, "step": step}
        dataset_id, box = f.resolve(self.name, sel)
        f._check(dataset_id, box)  # the rows it touches, before its buffer is allocated
        data = f.read_numpy(self.name, sel)  # within the memory budget, as every read
        for d, idx in picks:
            data = np.take(data, idx, axis=d)
        if drop:
            data = data[tuple(0 if d in drop else slice(None) for d in range(data.ndim))]
        return np.asarray(data)


# ---------------------------------------------------------------------------
# The store


def _group_names(names: Sequence[str], group: str | None) -> dict[str, str]:
    """dataset name -> variable name for the datasets of `group` (None: every dataset,
    by its full name; ``""`` or ``"/"``: the datasets without a ``/``)."""
    if group is None:
        return {n: n for n in names}
    prefix = group.strip("/")
    if not prefix:
        return {n: n for n in names if "/" not in n}
    head = prefix + "/"
    return {n: n[len(head):] for n in names if n.startswith(head) and "/" not in n[len(head):]}


class TetDataStore(AbstractDataStore):
    """The variables and attrs of one file (or group), built from its catalog and
    footer once; data is read later, through `TetBackendArray`."""

    def __init__(self, path: str | os.PathLike[str], *, group: str | None = None,
                 drop_variables: Iterable[str] = ()) -> None:
        self.key = file_key(path)
        self.group = group
        self.drop = set(drop_variables)

    def load(self) -> tuple[dict[str, xr.Variable], dict[str, Any]]:
        f = open_cached(self.key)
        names = _group_names(f.datasets(), self.group)
        if not names and self.group is not None:
            groups = sorted({n.rsplit("/", 1)[0] for n in f.datasets() if "/" in n})
            raise TetOSError(f"group {self.group!r} not found in {self.key.path} "
                             f"(groups: {', '.join(repr(g) for g in groups) or 'none'})",
                             errno=errno.ENOENT, filename=self.key.path)
        datasets = [f.dataset(n) for n in names]
        for ds in datasets:
            if names[ds.name] not in self.drop:  # the geometry and the tile table, now:
                f.resolve(ds.name)  # a grid the index cannot hold fails at open
        dims = _assign_dims(datasets, names)
        global_attrs: dict[str, Any] = {}
        variables: dict[str, xr.Variable] = {}
        coords: dict[str, xr.Variable] = {}
        for ds in datasets:
            var_name = names[ds.name]
            raw = dict(ds.attrs)
            types = _load_types(raw)
            attrs = decode_attrs({k: v for k, v in raw.items() if not _reserved(k)}, types)
            for key, value in decode_attrs(raw, types).items():
                if key.startswith(GLOBAL_PREFIX):
                    global_attrs.setdefault(key[len(GLOBAL_PREFIX):], value)
            for key in CF_NUMERIC:
                if isinstance(attrs.get(key), str):
                    number = _cf_number(attrs[key], ds.numpy_dtype)
                    if number is not None:
                        attrs[key] = number
            if var_name in self.drop:
                continue
            if len(set(dims[ds.name])) != len(dims[ds.name]):
                raise XarrayLayoutError(
                    f"{self.key.path}: dataset {ds.name!r} has duplicate dim_names "
                    f"{list(dims[ds.name])} in its footer; xarray needs one name per axis "
                    f"(open the file without it: drop_variables=[{var_name!r}])")
            for axis, labels in ds.coords.items() if dims[ds.name] else ():
                dim = _axis_dim(axis, ds, dims[ds.name])
                if dim is None or dim in coords or dim in names.values():
                    continue  # first labels win; a dataset named like the dim wins
                meta = _coord_meta(raw.get(COORD_PREFIX + dim))
                length = ds.shape[dims[ds.name].index(dim)]
                if meta is None or meta.get("dtype") is None:  # padded to the axis length
                    width = 4 * max([1, *map(len, labels)])  # bytes per NumPy str element
                    require_memory(
                        length * width, resolve_budget(file_bytes=f.catalog.budget_bytes,
                                                       file_bps=f.catalog.budget_percent_bps),
                        f"the coordinate {dim!r} of {self.key.path} ({len(labels)} labels "
                        f"padded to its {length} positions)",
                        "drop the dataset (drop_variables=[...]) or read it with tet.open")
                values = labels_to_values(labels, length, meta)
                if values is not None:
                    cattrs = decode_attrs(meta.get("attrs", {}), meta.get("types", {})
                                          ) if meta else {}
                    coords[dim] = xr.Variable((dim,), values, cattrs)
            if _is_scalar(ds):
                variables[var_name] = xr.Variable((), f.read_numpy(ds.name).reshape(()), attrs)
                continue
            array = TetBackendArray(self.key, ds.name, ds.shape, ds.numpy_dtype)
            blocks = grouped_chunk_shape(ds.shape, ds.chunk_shape)  # at most MAX_BLOCKS
            encoding = {"preferred_chunks": dict(zip(dims[ds.name], blocks)),
                        "chunksizes": ds.chunk_shape, "source": self.key.path}
            variables[var_name] = xr.Variable(dims[ds.name], indexing.LazilyIndexedArray(array),
                                              attrs, encoding)
        variables.update(coords)
        _check_sizes(variables, self.key.path)
        return variables, global_attrs

    def get_encoding(self) -> dict[str, Any]:
        return {"source": self.key.path}

    def close(self) -> None:
        """Nothing to release: files stay in the per-process cache."""


def _is_scalar(ds: Dataset) -> bool:
    return ds.attrs.get(SCALAR_ATTR) == "true" and ds.shape == (1,)


def _reserved(key: str) -> bool:
    return key in (TYPES_ATTR, SCALAR_ATTR) or key.startswith((GLOBAL_PREFIX, COORD_PREFIX))


def _coord_meta(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        meta = json.loads(text)
    except ValueError:
        return None
    return meta if isinstance(meta, dict) else None


def _axis_dim(axis: str, ds: Dataset, dims: tuple[str, ...]) -> str | None:
    """The dimension a footer coords key names (a dim name or a decimal axis index)."""
    if ds.dim_names is not None and axis in ds.dim_names:
        return dims[ds.dim_names.index(axis)]
    if axis.isdigit() and int(axis) < len(dims):
        return dims[int(axis)]
    return None


def _assign_dims(datasets: Sequence[Dataset], names: Mapping[str, str]
                 ) -> dict[str, tuple[str, ...]]:
    """Dimension names per dataset: footer ``dim_names``, else ``dim_i`` (or
    ``<variable>_dim_i`` where ``dim_i`` is taken with another length)."""
    sizes: dict[str, int] = {}
    out: dict[str, tuple[str, ...]] = {}
    for ds in datasets:
        if _is_scalar(ds):
            out[ds.name] = ()
        elif ds.dim_names is not None and len(ds.dim_names) == ds.ndim:
            out[ds.name] = ds.dim_names
            for dim, n in zip(ds.dim_names, ds.shape):
                sizes.setdefault(dim, n)
    for ds in datasets:
        if ds.name in out:
            continue
        dims = []
        for i, n in enumerate(ds.shape):
            dim = f"dim_{i}"
            if sizes.setdefault(dim, n) != n:
                dim = f"{names[ds.name]}_dim_{i}"
                sizes.setdefault(dim, n)
            dims.append(dim)
        out[ds.name] = tuple(dims)
    return out


def _check_sizes(variables: Mapping[str, xr.Variable], path: str) -> None:
    seen: dict[str, tuple[int, str]] = {}
    for name, var in variables.items():
        for dim, n in zip(var.dims, var.shape):
            first = seen.setdefault(str(dim), (n, name))
            if first[0] != n:
                raise XarrayLayoutError(
                    f"{path}: dimension {dim!r} has length {first[0]} in {first[1]!r} but {n} "
                    f"in {name!r}; open them apart with drop_variables=[...] or group=...")


# ---------------------------------------------------------------------------


def _is_tet(path: str) -> bool:
    try:
        fd, _ = open_regular(path)  # a FIFO is not waited on
    except TetError:
        return False
    try:
        return os.pread(fd, 4, 0) == MAGIC
    except OSError:
        return False
    finally:
        os.close(fd)


class TetBackendEntrypoint(BackendEntrypoint):
    """``engine="tet"``: lazy, CF-decoded datasets from ``.tet`` files."""

    description = "Open .tet files (tet-arrays) in xarray"
    open_dataset_parameters = (
        "filename_or_obj", "mask_and_scale", "decode_times", "concat_characters",
        "decode_coords", "drop_variables", "use_cftime", "decode_timedelta", "group",
    )

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """A path whose file starts with the ``TETR`` magic (a ``.tet`` name that
        cannot be read yet, e.g. not created, also counts)."""
        if not isinstance(filename_or_obj, str | os.PathLike):
            return False
        try:  # a probe: whatever the path is, the answer is yes or no, never an error
            path = os.path.expanduser(checked_path(filename_or_obj, "cannot open"))
            if os.path.isfile(path):
                return _is_tet(path)
            return path.endswith(".tet")
        except (TetError, OSError, ValueError, TypeError):
            return False

    def open_dataset(
        self,
        filename_or_obj: Any,
        *,
        mask_and_scale: bool = True,
        decode_times: bool = True,
        concat_characters: bool = True,
        decode_coords: bool = True,
        drop_variables: str | Iterable[str] | None = None,
        use_cftime: bool | None = None,
        decode_timedelta: bool | None = None,
        group: str | None = None,
    ) -> xr.Dataset:
        if not isinstance(filename_or_obj, str | os.PathLike):
            raise TypeError(f"the tet engine opens files by path, not {type(filename_or_obj)}")
        drop = [drop_variables] if isinstance(drop_variables, str) else list(drop_variables or ())
        store = TetDataStore(filename_or_obj, group=group, drop_variables=drop)
        return StoreBackendEntrypoint().open_dataset(
            store, mask_and_scale=mask_and_scale, decode_times=decode_times,
            concat_characters=concat_characters, decode_coords=decode_coords,
            drop_variables=drop, use_cftime=use_cftime, decode_timedelta=decode_timedelta)


def open_tet(path: str | os.PathLike[str], **kwargs: Any) -> xr.Dataset:
    """``xr.open_dataset(path, engine=TetBackendEntrypoint, **kwargs)``."""
    return xr.open_dataset(path, engine=TetBackendEntrypoint, **kwargs)

