"""xarray backend: ``xr.open_dataset("x.tet", engine="tet")``, ``xr.open_datatree`` and
``xr.open_groups``.

Every dataset of the file (or of one ``group``: the datasets named ``group/…``)
becomes a variable.  Dimensions come from the footer ``dim_names``; a dataset
without them gets ``dim_0``, ``dim_1``, … (prefixed with its own name where an
earlier dataset already uses ``dim_i`` with another length).  Footer ``coords``
labels become coordinates: string labels as they are (padded with ``""`` where the
footer labels only the first positions of an axis), typed labels (numbers, dates)
back in the dtype the footer's typed metadata records for that dimension.

What the v1 footer cannot say is read from its typed metadata, ``metadata.tet``
(`tet.attrs`):

- attributes: the footer's text overlaid with the typed values (`Dataset.typed_attrs`);
  the Dataset's attrs are the file attributes (`TetFile.file_attrs`), a group's are
  those recorded for it (``tet.groups``);
- ``encoding``: keys the writer marked as on-disk encoding (a CF-decoded variable's
  ``_FillValue``, ``missing_value``, ``scale_factor``, ``add_offset``, source
  ``dtype``) go to ``Variable.encoding``, never to attrs, so data decoded once is not
  decoded again; an integer dataset whose ``encoding["dtype"]`` is a narrower integer
  type (int8 stored as i16) reads back in that type;
- ``shape: []``: the one-element dataset is a 0-d variable;
- ``text``: a ``u8`` dataset whose last axis holds fixed-width text reads as ``U``
  strings (kind ``str``) or ``S`` bytes (kind ``bytes``; as ``U`` when it carries an
  ``_Encoding`` attr); the char axis is never a dimension;
- ``tet.coords[dim]``: the dtype and attrs of the index coordinate held as labels.

Other attributes are left to xarray's CF decoding (``mask_and_scale``, times); the
``_FillValue``, ``missing_value``, ``scale_factor`` and ``add_offset`` text of the v1
footer is turned into numbers so it applies.  Files written by the reference's
``tet convert`` (no typed metadata) hold float data already CF-decoded where
``scale_factor``/``add_offset`` are listed: those keys are encoding there too.  Files
written by earlier versions of `from_xarray` carry reserved ``_tet_*`` attrs instead
of the typed metadata; they are still read.  These rules are `tet.xrmodel`'s, which the
Zarr export (`tet.export_zarr`) follows too.

Each variable's encoding has ``source``, ``dtype``, ``original_shape``, ``chunksizes``
and ``preferred_chunks`` (the file's chunks), as the netCDF backends give, so
``open_mfdataset(...).to_netcdf(...)`` works.

Data stays on disk until used: each variable is a `TetBackendArray` that declares
`IndexingSupport.OUTER` (any number of axes indexed by arrays at once, as `Dataset`
reads them) and turns every outer key into one orthogonal read of exactly the elements
it names (`Reader.read_key`: a box read for slices, one C gather for index arrays, so
``isel(x=[5, 1, 3])`` reads three rows, not a bounding box).  xarray sorts the arrays
and flips negative steps before the key reaches the backend and reorders the result
in NumPy; a vectorized (pointwise) key becomes an outer read of its bounding indices
there too.  Reads go through the per-process file cache of `tet.dask` (one open file
per process, also on dask workers).  ``chunks={}`` gives dask arrays on the file's chunks (grouped
into larger blocks, whole chunks each, where the grid has more than
`tet.dask.MAX_BLOCKS` tiles).  Opening checks each variable's geometry and tile table
(a hostile grid is a `CatalogError` at open, not a huge graph later); a read checks
the index rows it touches before it allocates, within the memory budget.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import xarray as xr
from xarray.backends import BackendArray, BackendEntrypoint
from xarray.backends.common import AbstractDataStore, datatree_from_dict_with_io_cleanup
from xarray.backends.store import StoreBackendEntrypoint
from xarray.core import indexing

from tet.attrs import ext_of, labels_to_values
from tet.dask import grouped_chunk_shape
from tet.errors import CatalogError, TetError, TetOSError
from tet.file import Dataset, TetFile
from tet.layout import MAGIC
from tet.objstore import is_url
from tet.opencache import FileKey, RemoteKey, open_cached, open_key
from tet.paths import checked_path, open_regular
from tet.query.budget import require_memory, resolve_budget
from tet.selection import box_from_key
from tet.text import decode_text
from tet.xrmodel import (
    COORD_PREFIX,
    GLOBAL_PREFIX,
    SCALAR_ATTR,
    TYPES_ATTR,
    Variable,
    all_groups,
    assign_dims,
    axis_dim,
    converted,
    coord_meta,
    decode_attrs,
    describe,
    group_attrs,
    group_names,
    legacy_globals,
)

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
]


class XarrayLayoutError(CatalogError, ValueError):
    """The file's datasets cannot form one xarray Dataset: a dimension with two lengths,
    or one dataset naming two of its axes alike (duplicate footer ``dim_names``)."""


# ---------------------------------------------------------------------------
# Lazy arrays


class TetBackendArray(BackendArray):
    """One dataset on disk; picklable (it holds the file's key, not the file).

    `shape` and `dtype` are the variable's: for a text dataset (`text` = its kind) the
    stored array has one more axis, the fixed width; `dtype` may also be a narrower
    integer type than the stored one (int8 kept as i16)."""

    def __init__(self, key: FileKey | RemoteKey, name: str, shape: tuple[int, ...],
                 dtype: np.dtype[Any], *, text: str | None = None,
                 width: int = 0) -> None:
        self.key = key
        self.name = name
        self.shape = shape
        self.dtype = dtype
        self.text = text
        self.width = width

    def __getitem__(self, key: indexing.ExplicitIndexer) -> Any:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER, self._outer)

    def _outer(self, key: tuple[Any, ...]) -> np.ndarray[Any, Any]:
        """An outer key (ints, positive-step slices, non-decreasing int arrays, one per
        axis) -> one orthogonal read of exactly those elements (`Reader.read_key`: a box
        read when every axis is a range, else one C gather of the indices, tile by tile);
        the integer axes are dropped."""
        f = _cached(self.key)
        reader = f.reader
        dataset_id = reader.dataset_id(self.name)
        shape = tuple(reader.catalog.datasets[dataset_id].shape)  # text: the width last
        if self.text is not None:
            key = (*key, slice(None))
        sel = box_from_key(key, shape)
        if sel.empty:
            return np.empty(sel.shape[:-1] if self.text is not None else sel.shape, self.dtype)
        if sel.box is not None:  # the rows it touches, before its buffer is allocated
            reader.check(dataset_id, sel.box)
        data = reader.read_key(dataset_id, sel)  # within the memory budget, as every read
        if self.text is not None:
            return _decode_text(f, data, self.dtype, self.name)
        return _narrow(f, data, self.dtype, self.name)


def _cached(key: FileKey | RemoteKey) -> TetFile:
    """The file API over this process's cached reader of `key` (`tet.opencache`)."""
    return TetFile.from_reader(open_cached(key))


def _fail(f: TetFile, ds: Dataset) -> Callable[[str], CatalogError]:
    """How a dataset whose marks do not fit its stored shape is refused."""
    return lambda what: CatalogError(f"{f.path}: dataset {ds.name!r} {what}")


def _narrow(f: TetFile, data: np.ndarray[Any, Any], dtype: np.dtype[Any],
            name: str) -> np.ndarray[Any, Any]:
    """`data` in the variable's `dtype`: as it is, or integers stored wider (int8 as
    i16) checked to fit before the cast (a value that does not is a `CatalogError`)."""
    if data.dtype == dtype:
        return data
    info = np.iinfo(dtype)
    if data.size and (int(data.min()) < info.min or int(data.max()) > info.max):
        raise CatalogError(f"{f.path}: dataset {name!r} is marked as {dtype} but holds "
                           f"values from {int(data.min())} to {int(data.max())}")
    return data.astype(dtype)


def _decode_text(f: TetFile, data: np.ndarray[Any, Any], dtype: np.dtype[Any],
                 name: str) -> np.ndarray[Any, Any]:
    """Strings (`dtype` ``U``) or bytes (``S``) of a text read (its last axis the
    width), within the memory budget."""
    count = data.size // max(data.shape[-1], 1) if data.ndim else 1
    require_memory(count * dtype.itemsize,
                   resolve_budget(file_bytes=f.catalog.budget_bytes,
                                  file_bps=f.catalog.budget_percent_bps),
                   f"the text of {name!r} ({count} values as {dtype})",
                   "read fewer values at a time")
    return decode_text(data, "str" if dtype.kind == "U" else "bytes").astype(dtype, copy=False)


def _variable(key: FileKey | RemoteKey, v: Variable) -> xr.Variable:
    encoding = {"source": key.path, "dtype": v.dtype, "original_shape": v.shape}
    if v.shape:
        blocks = grouped_chunk_shape(v.ds.shape, v.ds.chunk_shape)  # at most MAX_BLOCKS
        encoding["chunksizes"] = v.chunks
        encoding["preferred_chunks"] = dict(zip(v.dims, blocks[:len(v.shape)]))
    encoding.update(v.encoding)
    if v.shape:
        array = TetBackendArray(key, v.ds.name, v.shape, v.dtype, text=v.text, width=v.width)
        return xr.Variable(v.dims, indexing.LazilyIndexedArray(array), v.attrs, encoding)
    f = _cached(key)  # one value: read now
    data = f.read_numpy(v.ds.name)
    if v.text is not None:
        data = _decode_text(f, data, v.dtype, v.ds.name)
    return xr.Variable((), _narrow(f, data, v.dtype, v.ds.name).reshape(()), v.attrs, encoding)


# ---------------------------------------------------------------------------
# The store


class TetDataStore(AbstractDataStore):
    """The variables and attrs of one file (or group), built from its catalog and
    footer once; data is read later, through `TetBackendArray`."""

    def __init__(self, path: str | os.PathLike[str], *, group: str | None = None,
                 drop_variables: Iterable[str] = (),
                 storage_options: Mapping[str, Any] | None = None) -> None:
        self.key: FileKey | RemoteKey = open_key(path, storage_options)[1]
        self.group = group
        self.drop = set(drop_variables)
        self._loaded: tuple[dict[str, xr.Variable], dict[str, Any]] | None = None
        self.text_variables: set[str] = set()

    def load(self) -> tuple[dict[str, xr.Variable], dict[str, Any]]:
        if self._loaded is None:
            self._loaded = self._load()
        variables, attrs = self._loaded
        return dict(variables), dict(attrs)

    def _load(self) -> tuple[dict[str, xr.Variable], dict[str, Any]]:
        f = _cached(self.key)
        names = group_names(f.datasets(), self.group)
        if not names and self.group is not None and self.group.strip("/") not in all_groups(
                f.datasets()):
            groups = sorted(all_groups(f.datasets()) - {""})
            raise TetOSError(f"group {self.group!r} not found in {self.key.path} "
                             f"(groups: {', '.join(repr(g) for g in groups) or 'none'})",
                             errno=errno.ENOENT, filename=self.key.path)
        ext = ext_of(f.catalog.metadata)
        typed = ext.get("datasets", {})
        from_convert = converted(f)
        described = []
        for name in names:
            ds = f.dataset(name)
            if names[name] not in self.drop:  # the geometry and the tile table, now:
                f.resolve(name)  # a grid the index cannot hold fails at open
            described.append(describe(ds, names[name], has_ext=name in typed,
                                      converted=from_convert, fail=_fail(f, ds),
                                      strict=names[name] not in self.drop))
        assign_dims(described)
        global_attrs = legacy_globals(described)
        global_attrs.update(group_attrs(f, self.group or ""))
        variables: dict[str, xr.Variable] = {}
        coords: dict[str, xr.Variable] = {}
        for v in described:
            if v.name in self.drop:
                continue
            if len(set(v.dims)) != len(v.dims):
                raise XarrayLayoutError(
                    f"{self.key.path}: dataset {v.ds.name!r} has duplicate dim_names "
                    f"{list(v.dims)} in its footer; xarray needs one name per axis "
                    f"(open the file without it: drop_variables=[{v.name!r}])")
            self._label_coords(f, ext, v, names, coords)
            variables[v.name] = _variable(self.key, v)
            if v.text is not None:
                self.text_variables.add(v.name)
        variables.update(coords)
        _check_sizes(variables, self.key.path)
        return variables, global_attrs

    def _label_coords(self, f: TetFile, ext: Mapping[str, Any], v: Variable,
                      names: Mapping[str, str], coords: dict[str, xr.Variable]) -> None:
        """The coordinates the footer labels of `v` give (the first labels of a dim win;
        a dataset named like the dim wins over labels)."""
        ds = v.ds
        for axis, labels in ds.coords.items() if v.dims else ():
            dim = axis_dim(axis, v)
            if dim is None or dim in coords or dim in names.values():
                continue
            meta, cattrs = coord_meta(v, dim, ext)
            length = v.shape[v.dims.index(dim)]
            values = labels_to_values(
                labels, length, meta,
                resolve_budget(file_bytes=f.catalog.budget_bytes,
                               file_bps=f.catalog.budget_percent_bps),
                f"the coordinate {dim!r} of {self.key.path}",
                "drop the dataset (drop_variables=[...]) or read it with tet.open")
            if values is not None:
                coords[dim] = xr.Variable((dim,), values, cattrs)

    def get_encoding(self) -> dict[str, Any]:
        return {"source": self.key.path}

    def close(self) -> None:
        """Nothing to release: files stay in the per-process cache."""


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


def _drop_list(drop_variables: str | Iterable[str] | None) -> list[str]:
    return [drop_variables] if isinstance(drop_variables, str) else list(drop_variables or ())


class TetBackendEntrypoint(BackendEntrypoint):
    """``engine="tet"``: lazy, CF-decoded datasets (and trees of groups) from ``.tet``
    files."""

    description = "Open .tet files (tet-arrays) in xarray"
    supports_groups = True
    open_dataset_parameters = (
        "filename_or_obj", "mask_and_scale", "decode_times", "concat_characters",
        "decode_coords", "drop_variables", "use_cftime", "decode_timedelta", "group",
        "storage_options",
    )

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """A path whose file starts with the ``TETR`` magic (a ``.tet`` name that
        cannot be read yet, e.g. not created, also counts); a URL whose name ends in
        ``.tet`` (not fetched: a probe makes no request)."""
        if not isinstance(filename_or_obj, str | os.PathLike):
            return False
        if isinstance(filename_or_obj, str) and is_url(filename_or_obj):
            return filename_or_obj.split("?")[0].endswith(".tet")
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
        storage_options: Mapping[str, Any] | None = None,
    ) -> xr.Dataset:
        """A path or a URL (``s3://``, ``gs://``, ``az://``, ``https://``, with
        `storage_options` as for `tet.open`): the variables read lazily; the URL and its
        options travel with them (dask workers open it themselves)."""
        if not isinstance(filename_or_obj, str | os.PathLike):
            raise TypeError(f"the tet engine opens files by path, not {type(filename_or_obj)}")
        drop = _drop_list(drop_variables)
        store = TetDataStore(filename_or_obj, group=group, drop_variables=drop,
                             storage_options=storage_options)
        variables, _ = store.load()  # text is whole strings already: never stacked again
        concat: Any = concat_characters
        if store.text_variables:
            concat = {name: (name not in store.text_variables
                             and _item(concat_characters, name)) for name in variables}
        return StoreBackendEntrypoint().open_dataset(
            store, mask_and_scale=mask_and_scale, decode_times=decode_times,
            concat_characters=concat, decode_coords=decode_coords,
            drop_variables=drop, use_cftime=use_cftime, decode_timedelta=decode_timedelta)

    def open_groups_as_dict(
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        group: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, xr.Dataset]:
        """``xr.open_groups(path, engine="tet")``: one Dataset per group of the file (the
        ``/``-separated prefixes of its dataset names; ``"/"`` the root, whose attrs are
        the file attributes), below `group` when given.  Other keywords are
        `open_dataset`'s; `drop_variables` names variables within each group."""
        if not isinstance(filename_or_obj, str | os.PathLike):
            raise TypeError(f"the tet engine opens files by path, not {type(filename_or_obj)}")
        reader, key = open_key(filename_or_obj, storage_options)
        names = reader.names()
        for name in names:
            if "" in name.split("/"):
                raise XarrayLayoutError(
                    f"{key.path}: dataset {name!r} has an empty group name in its path, which "
                    "a tree of groups cannot hold; open it with xr.open_dataset (no group=)")
        parent = (group or "").strip("/")
        groups = all_groups(names)
        if parent not in groups:
            listed = sorted(groups - {""})
            raise TetOSError(f"group {group!r} not found in {key.path} "
                             f"(groups: {', '.join(repr(g) for g in listed) or 'none'})",
                             errno=errno.ENOENT, filename=key.path)
        out: dict[str, xr.Dataset] = {}
        for path in sorted(groups):
            if parent and path != parent and not path.startswith(parent + "/"):
                continue
            rel = path[len(parent):].strip("/") if parent else path
            out["/" + rel] = self.open_dataset(filename_or_obj, group="/" + path,
                                               drop_variables=drop_variables,
                                               storage_options=storage_options, **kwargs)
        return out

    def open_datatree(
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        group: str | None = None,
        **kwargs: Any,
    ) -> xr.DataTree:
        """``xr.open_datatree(path, engine="tet")``: the groups of `open_groups_as_dict`
        as one tree (xarray checks that children align with their parents)."""
        groups = self.open_groups_as_dict(filename_or_obj, drop_variables=drop_variables,
                                          group=group, **kwargs)
        return datatree_from_dict_with_io_cleanup(groups)


def _item(value: bool | Mapping[str, bool], name: str) -> bool:
    return bool(value.get(name, True)) if isinstance(value, Mapping) else bool(value)


def open_tet(path: str | os.PathLike[str], **kwargs: Any) -> xr.Dataset:
    """``xr.open_dataset(path, engine=TetBackendEntrypoint, **kwargs)``."""
    return xr.open_dataset(path, engine=TetBackendEntrypoint, **kwargs)
