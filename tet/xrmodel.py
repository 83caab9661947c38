"""The xarray-shaped view of a ``.tet`` file: which variable each dataset is, with which
dimensions, coordinates, attributes and encoding.

Two readers show a file as xarray does: the ``tet`` xarray backend
(`tet.xarray_backend`) and the Zarr export (`tet.export_zarr`, which needs no xarray).
The rules they share live here, once, so the two cannot disagree:

- `describe`: one dataset as a variable: its shape (a text dataset without its char
  axis, a 0-d one as ``()``), the type it reads back as (text as ``U``/``S``, integers
  stored wider in their narrower type), its attributes (the typed attributes, CF numbers
  that are footer text turned into numbers, never a key of its ``encoding``) and its
  encoding (the typed ``encoding``; in a file from the reference's ``tet convert``, a
  float dataset's CF keys, since it holds decoded values);
- `assign_dims`: dimension names of the variables of one group: the footer
  ``dim_names``, else ``dim_0``, ``dim_1``, … (``<variable>_dim_i`` where ``dim_i`` is
  taken with another length);
- `axis_dim` and `coord_meta`: the dimension a footer ``coords`` key labels, and the
  dtype and attributes its coordinate gets (`tet.attrs.labels_to_values` makes the
  values);
- `group_names`, `all_groups`, `group_attrs`, `legacy_globals`: datasets grouped by the
  ``/`` in their names, and the attributes of a group (the file attributes at the root);
- `Legacy`: files written by earlier versions of `from_xarray` carry reserved ``_tet_*``
  attributes instead of typed metadata; they are read here and never written again:

  - ``_tet_types``: JSON object, attr key -> type of an attr that is not a string
    (``"json"``, a NumPy dtype name, ``"<dtype>[]"`` for arrays, ``"tuple"``); the
    attr's value is its JSON text;
  - ``_tet_global:<key>``: an attr of the xarray Dataset (file- or group-level);
  - ``_tet_coord:<dim>``: JSON ``{"dtype", "attrs", "types"}`` of the index coordinate
    whose values are the labels of axis ``<dim>``;
  - ``_tet_scalar``: ``"true"``: the dataset holds a 0-d variable stored as ``(1,)``.

`values_to_labels` is the writer's side of the coordinate rule (`tet.xarray_write`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tet.attrs import ext_of, merge_attrs
from tet.wire import is_axis_index

if TYPE_CHECKING:
    from tet.file import Dataset, TetFile

__all__ = [
    "CF_NUMERIC",
    "COORD_PREFIX",
    "GLOBAL_PREFIX",
    "PACKING",
    "SCALAR_ATTR",
    "TYPES_ATTR",
    "Legacy",
    "Variable",
    "all_groups",
    "assign_dims",
    "axis_dim",
    "cf_number",
    "converted",
    "coord_meta",
    "decode_attrs",
    "describe",
    "group_attrs",
    "group_names",
    "legacy_globals",
    "reserved",
    "values_to_labels",
]

CF_NUMERIC = ("_FillValue", "missing_value", "scale_factor", "add_offset")
PACKING = ("scale_factor", "add_offset")
TYPES_ATTR = "_tet_types"
GLOBAL_PREFIX = "_tet_global:"
COORD_PREFIX = "_tet_coord:"
SCALAR_ATTR = "_tet_scalar"


# ---------------------------------------------------------------------------
# Legacy ``_tet_*`` attributes


def reserved(key: str) -> bool:
    """Whether `key` is one of the legacy ``_tet_*`` attribute keys."""
    return key in (TYPES_ATTR, SCALAR_ATTR) or key.startswith((GLOBAL_PREFIX, COORD_PREFIX))


def _decode_value(text: str, tag: str) -> Any:
    value = json.loads(text)
    if tag == "json":
        return value
    if tag == "tuple":
        return tuple(value)
    if tag.endswith("[]"):
        return np.asarray(value, dtype=np.dtype(tag[:-2]))
    return np.dtype(tag).type(value)


def decode_attrs(raw: Mapping[str, Any], types: Mapping[str, Any]) -> dict[str, Any]:
    """Legacy attrs with the typed ones turned back into their values (a value that
    does not parse stays as it is, the footer text)."""
    out: dict[str, Any] = {}
    for key, text in raw.items():
        tag = types.get(key)
        if tag is None or not isinstance(text, str):
            out[key] = text
            continue
        try:
            out[key] = _decode_value(text, str(tag))
        except (ValueError, TypeError, OverflowError):
            out[key] = text
    return out


def _json_object(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _legacy_coord(text: Any) -> dict[str, Any] | None:
    """A ``_tet_coord:<dim>`` value: {"dtype", "attrs", "types"} (None when it is not
    that shape: the coordinate is then read as if the mark were absent)."""
    meta = _json_object(text)
    if meta is None or not isinstance(meta.get("attrs", {}), dict) \
            or not isinstance(meta.get("types", {}), dict):
        return None
    return meta


@dataclass
class Legacy:
    """The reserved attributes of one dataset of an older file, decoded."""

    attrs: dict[str, Any]              # its attributes, typed ones decoded
    globals: dict[str, Any]            # attributes of the Dataset (``_tet_global:``)
    coords: dict[str, dict[str, Any]]  # dim -> {"dtype", "attrs", "types"}
    scalar: bool                       # a 0-d variable stored as (1,)

    @classmethod
    def of(cls, raw: Mapping[str, str]) -> Legacy:
        types = {str(k): str(v) for k, v in (_json_object(raw.get(TYPES_ATTR)) or {}).items()}
        decoded = decode_attrs(raw, types)
        coords = {k[len(COORD_PREFIX):]: _legacy_coord(v) for k, v in raw.items()
                  if k.startswith(COORD_PREFIX)}
        return cls(
            attrs={k: v for k, v in decoded.items() if not reserved(k)},
            globals={k[len(GLOBAL_PREFIX):]: v for k, v in decoded.items()
                     if k.startswith(GLOBAL_PREFIX)},
            coords={k: v for k, v in coords.items() if v is not None},
            scalar=raw.get(SCALAR_ATTR) == "true",
        )


# ---------------------------------------------------------------------------
# One dataset as a variable


def cf_number(text: str, dtype: np.dtype[Any]) -> Any:
    """Footer text of a CF attribute as a number in the dataset's type where it fits
    (None when it is not a number)."""
    try:
        value = float(text.strip())
    except ValueError:
        return None
    if dtype.kind in "iu":
        if not value.is_integer():
            return value
        number = int(value)
        info = np.iinfo(dtype)
        return dtype.type(number) if info.min <= number <= info.max else number
    if dtype.kind == "f":
        with np.errstate(over="ignore"):
            return dtype.type(value)
    return value


def converted(f: TetFile) -> bool:
    """Whether the footer says the file came from ``tet convert``."""
    meta = f.catalog.metadata.get("file")
    tool = meta.get("tool") if isinstance(meta, dict) else None
    return tool == "tet convert" or any(
        isinstance(h, Mapping) and h.get("op") == "convert" for h in f.catalog.history)


@dataclass
class Variable:
    """What one dataset is as an xarray variable; `dims` is set by `assign_dims`."""

    ds: Dataset
    name: str                              # the variable's name (within its group)
    shape: tuple[int, ...]                 # without the char axis of text; () for 0-d
    footer_dims: tuple[str, ...] | None    # the footer dim_names of those axes
    stored: np.dtype[Any]                  # the dataset's element type
    dtype: np.dtype[Any]                   # what it reads back as
    chunks: tuple[int, ...]                # of those axes
    attrs: dict[str, Any]
    encoding: dict[str, Any]
    text: str | None = None                # "str" | "bytes": a u8 dataset holding text
    width: int = 0                         # bytes per text value
    scalar: bool = False                   # a 0-d variable stored as (1,)
    legacy: Legacy | None = None
    dims: tuple[str, ...] = ()

    @property
    def narrow(self) -> np.dtype[Any] | None:
        """The integer type a number dataset stored wider reads back as (int8 kept as
        i16); None when it reads as stored."""
        return self.dtype if self.text is None and self.dtype != self.stored else None


def _attrs(ds: Dataset, legacy: Legacy | None) -> dict[str, Any]:
    """The typed attributes without the reserved keys; a legacy typed attribute whose
    value is still the footer text decoded."""
    raw = ds.attrs
    out: dict[str, Any] = {}
    for key, value in ds.typed_attrs.items():
        if reserved(key):
            continue
        if legacy is not None and isinstance(value, str) and value == raw.get(key):
            value = legacy.attrs.get(key, value)
        out[key] = value
    return out


def describe(ds: Dataset, name: str, *, has_ext: bool, converted: bool,
             fail: Callable[[str], Exception], strict: bool = True) -> Variable:
    """`ds` as the variable `name`.  `has_ext`: the dataset has typed metadata;
    `converted`: the file came from ``tet convert``.  A text or 0-d mark that does not
    fit the stored shape is ``fail(what)`` (ignored when not `strict`: a variable that
    is dropped)."""
    raw = ds.attrs
    legacy = Legacy.of(raw) if any(reserved(k) for k in raw) else None
    attrs = _attrs(ds, legacy)
    extra = ds.extra
    encoding: dict[str, Any] = dict(extra.get("encoding", {}))
    for key in encoding:
        attrs.pop(key, None)  # encoding, never an attribute (decoded already)
    if "dtype" in encoding:
        try:
            encoding["dtype"] = np.dtype(str(encoding["dtype"]))
        except TypeError:
            del encoding["dtype"]
    stored = ds.numpy_dtype
    if (converted and not has_ext and stored.kind == "f"
            and any(k in attrs for k in PACKING)):
        for key in CF_NUMERIC:  # the reference's convert applied these already
            if key in attrs:
                value = attrs.pop(key)
                number = cf_number(value, stored) if isinstance(value, str) else value
                encoding[key] = value if number is None else number
    for key in CF_NUMERIC:
        if isinstance(attrs.get(key), str):
            number = cf_number(attrs[key], stored)
            if number is not None:
                attrs[key] = number
    shape, dims, chunks = ds.shape, ds.dim_names, ds.chunk_shape
    if dims is not None and len(dims) != ds.ndim:
        dims = None
    var = Variable(ds, name, shape, dims, stored, stored, chunks, attrs, encoding,
                   legacy=legacy)
    text = extra.get("text")
    if isinstance(text, Mapping) and (stored != np.uint8 or not shape
                                      or shape[-1] != int(text["width"])):
        if strict:
            raise fail(f"is marked as text {int(text['width'])} bytes wide but holds "
                       f"{stored} values of shape {list(shape)}")
        text = None
    if isinstance(text, Mapping):
        width, kind = int(text["width"]), str(text["kind"])
        if kind == "bytes" and str(attrs.get("_Encoding", "")).lower() in ("utf-8", "utf8"):
            encoding["_Encoding"] = attrs.pop("_Encoding")  # xarray decodes them to str
            var.dtype = np.dtype(f"U{width}")
        else:
            var.dtype = np.dtype(f"S{width}" if kind == "bytes" else f"U{width}")
        var.text, var.width = kind, width
        var.shape, var.chunks = shape[:-1], chunks[:-1]
        var.footer_dims = dims[:-1] if dims is not None else None
    elif stored.kind in "iu" and encoding.get("dtype") is not None:
        narrow = encoding["dtype"]
        if (narrow.kind in "iu" and narrow.itemsize < stored.itemsize
                and not any(k in encoding for k in PACKING)):
            var.dtype = narrow  # e.g. int8 values kept as i16
    marked = extra.get("shape") == []
    if (marked or (legacy is not None and legacy.scalar)) and var.shape:
        if var.shape != (1,):
            if marked and strict:
                raise fail(f"is marked 0-d but holds shape {list(var.shape)}")
        else:
            var.scalar, var.shape, var.footer_dims, var.chunks = True, (), (), ()
    return var


def assign_dims(variables: Sequence[Variable]) -> None:
    """Dimension names of the variables of one group: footer ``dim_names``, else
    ``dim_i`` (or ``<variable>_dim_i`` where ``dim_i`` is taken with another length)."""
    sizes: dict[str, int] = {}
    rest = []
    for v in variables:
        if v.footer_dims is not None:
            v.dims = v.footer_dims
            for dim, n in zip(v.dims, v.shape):
                sizes.setdefault(dim, n)
        else:
            rest.append(v)
    for v in rest:
        dims = []
        for i, n in enumerate(v.shape):
            dim = f"dim_{i}"
            if sizes.setdefault(dim, n) != n:
                dim = f"{v.name}_dim_{i}"
                sizes.setdefault(dim, n)
            dims.append(dim)
        v.dims = tuple(dims)


# ---------------------------------------------------------------------------
# Coordinates from footer labels


def axis_dim(axis: str, v: Variable) -> str | None:
    """The dimension a footer coords key of `v` names (a dim name or a decimal axis
    index); None for the char axis of a text dataset or an axis that is not there."""
    names = v.ds.dim_names
    if names is not None and axis in names:
        d = names.index(axis)
    elif is_axis_index(axis):
        d = int(axis)
    else:
        return None
    return v.dims[d] if d < len(v.dims) else None


def coord_meta(v: Variable, dim: str, ext: Mapping[str, Any]
               ) -> tuple[Mapping[str, Any] | None, dict[str, Any]]:
    """(what types the labels of `dim` — its ``"dtype"`` —, the coordinate's attrs): the
    legacy ``_tet_coord:<dim>`` mark of `v`, else the typed metadata's ``coords``
    entry (`ext` is the file's ``metadata.tet``)."""
    legacy = v.legacy.coords.get(dim) if v.legacy is not None else None
    meta: Mapping[str, Any] | None
    if legacy is not None:
        meta = legacy
        attrs = decode_attrs(legacy.get("attrs", {}), legacy.get("types", {}))
    else:
        meta = ext.get("coords", {}).get(dim)
        attrs = {} if meta is None else merge_attrs({}, meta.get("attrs", {}),
                                                     f"coords {dim!r} attrs")
    return meta, {k: x for k, x in attrs.items() if not reserved(k)}


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
# Groups


def group_names(names: Sequence[str], group: str | None) -> dict[str, str]:
    """dataset name -> variable name for the datasets of `group` (None: every dataset,
    by its full name; ``""`` or ``"/"``: the datasets without a ``/``)."""
    if group is None:
        return {n: n for n in names}
    prefix = group.strip("/")
    if not prefix:
        return {n: n for n in names if "/" not in n}
    head = prefix + "/"
    return {n: n[len(head):] for n in names if n.startswith(head) and "/" not in n[len(head):]}


def all_groups(names: Iterable[str]) -> set[str]:
    """Every group path that holds a dataset, directly or below (``""``: the root)."""
    out = {""}
    for name in names:
        parts = name.split("/")[:-1]
        out.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return out


def group_attrs(f: TetFile, group: str) -> dict[str, Any]:
    """The attributes of a group (the path without its outer ``/``): the file
    attributes at the root, else those recorded for it (``tet.groups``)."""
    group = group.strip("/")
    if not group:
        return f.file_attrs
    entry = ext_of(f.catalog.metadata).get("groups", {}).get(group, {})
    return merge_attrs({}, entry.get("attrs", {}), f"group {group!r} attrs")


def legacy_globals(variables: Iterable[Variable]) -> dict[str, Any]:
    """The ``_tet_global:`` attributes of the variables (the first one of a key wins)."""
    out: dict[str, Any] = {}
    for v in variables:
        if v.legacy is not None:
            for key, value in v.legacy.globals.items():
                out.setdefault(key, value)
    return out
