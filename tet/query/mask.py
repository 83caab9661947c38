"""Fill values as missing data: the opt-in ``"execution": {"mask_fill": true}`` of a
query document (an extension of the query format; the reference engine refuses it).

A dataset's fill values are its ``_FillValue`` and ``missing_value`` attributes (each
one number or several).  They are taken from the typed footer extension
(``metadata.tet.datasets[name].attrs``) when it holds them, else parsed from the v1
footer text (``"1e20"``, ``"-9999"``, ``"[1, 2]"``, ``"1 2"``, a CDL suffix such as
``"1.e+20f"``, or xarray's base64 float bytes such as ``"AAAAAICHw8A="``).  Each value
is cast to the dataset's dtype and compared with the stored elements exactly (as
xarray compares in the stored dtype): a NaN fill is dropped (NaN is missing already),
and so is a value the dtype cannot hold (``-1`` for ``u8``, ``2.5`` or ``1e20`` for an
integer dtype, ``1e300`` for ``f32``), since no stored element can equal it.

The C kernels apply the mask where tiles are decoded (`kernels.FillMask`), so every
tier A/B fold, histogram, materialised tier C statistic, transform, preview and spill
sees an element equal to a fill as NaN.  Float datasets keep their dtype; integer
datasets are read as float64, as xarray decodes a masked integer variable.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from tet import dtypes
from tet.attrs import EXT_KEY, decode_value
from tet.errors import CatalogError
from tet.errors import validation as _v
from tet.kernels import MASK_MAX, FillMask

if TYPE_CHECKING:
    from tet.file import TetFile

__all__ = ["MASK_ATTRS", "MaskInfo", "fill_values", "mask_fields", "parse_fill_text",
           "resolve_mask"]

MASK_ATTRS = ("_FillValue", "missing_value")

_NUMBER = re.compile(
    r"([+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?|nan))"
    r"(?:[fFdD]|[uU]?(?:[bBsSlL]|[lL][lL])?)",  # CDL type suffixes: 1.e+20f, -9999s, 7UB
    re.IGNORECASE)
_INTEGER = re.compile(r"[+-]?\d+")
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})+(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_BASE64_FLOATS = {2: "<f2", 4: "<f4", 8: "<f8"}


def _token(text: str) -> int | float | None:
    """One number of attr text: an exact int for integer literals, else a float."""
    m = _NUMBER.fullmatch(text)
    if m is None:
        return None
    body = m.group(1)
    if _INTEGER.fullmatch(body):
        return int(body)
    return float(body)


def parse_fill_text(text: str) -> list[int | float] | None:
    """The numbers of a v1 footer attr: one number, or several in ``[...]``/``(...)``
    separated by commas and/or whitespace, or one value as base64 float bytes (how
    xarray writes a float ``_FillValue`` to Zarr).  None when it is none of these."""
    body = text.strip()
    if len(body) >= 2 and (body[0], body[-1]) in (("[", "]"), ("(", ")")):
        body = body[1:-1].strip()
        if not body:
            return []
    tokens = [t for t in re.split(r"[,\s]+", body) if t]
    if not tokens:
        return None
    out = [_token(t) for t in tokens]
    if all(v is not None for v in out):
        return [v for v in out if v is not None]
    if len(tokens) == 1 and _BASE64.fullmatch(tokens[0]):
        try:
            raw = base64.b64decode(tokens[0], validate=True)
        except (binascii.Error, ValueError):
            return None
        if len(raw) in _BASE64_FLOATS:
            return [float(np.frombuffer(raw, dtype=_BASE64_FLOATS[len(raw)])[0])]
    return None


def _typed(entry: Any) -> list[int | float] | None:
    """The numbers of a typed-extension attr (`tet.attrs.decode_value`: a NumPy scalar or
    array, a JSON number or list, text parsed as v1 text); None for anything else, a
    malformed entry included (then the v1 text is used)."""
    try:
        value = decode_value(entry, "mask_fill")
    except CatalogError:
        return None
    if isinstance(value, str):
        return parse_fill_text(value)
    if isinstance(value, (np.ndarray, np.generic)):
        if value.dtype.kind not in "biuf":
            return None
        items: list[Any] = np.asarray(value).ravel().tolist()
    else:
        items = list(value) if isinstance(value, (list, tuple)) else [value]
    out: list[int | float] = []
    for item in items:
        if isinstance(item, bool):
            out.append(int(item))
        elif isinstance(item, (int, float)):
            out.append(item)
        else:
            return None  # nested lists, text, objects: not fill values
    return out


def _cast(value: int | float, dtype: np.dtype[Any]) -> Any:
    """`value` as a scalar of `dtype`, or None when no stored element can equal it (NaN,
    an integer dtype's non-integral or out-of-range value, a float overflowing)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if dtype.kind in "iu":
        if isinstance(value, float):
            if not value.is_integer():
                return None
            value = int(value)
        info = np.iinfo(dtype)
        return dtype.type(value) if info.min <= value <= info.max else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # overflow: refused just below
        cast = dtype.type(value)
    if math.isinf(float(cast)) and not math.isinf(float(value)):
        return None
    return cast


def _meta_attrs(f: TetFile, name: str) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """(v1 attrs, typed-extension attrs) of a dataset, each {} when absent or malformed."""
    meta = f.catalog.metadata if isinstance(f.catalog.metadata, Mapping) else {}

    def get(d: Any, *keys: str) -> Mapping[str, Any]:
        for k in keys:
            d = d.get(k) if isinstance(d, Mapping) else None
        return d if isinstance(d, Mapping) else {}

    return get(meta, "datasets", name, "attrs"), get(meta, EXT_KEY, "datasets", name, "attrs")


def fill_values(f: TetFile, dataset_id: int) -> list[Any]:
    """The dataset's fill values (`MASK_ATTRS`, in that order, repeats dropped) as
    scalars of its dtype, NaN and unrepresentable values left out.

    Raises
    ------
    QueryError
        An attr whose text is not a number or a list of numbers, or more than
        `kernels.MASK_MAX` values.
    """
    record = f.catalog.datasets[dataset_id]
    dtype = dtypes.by_tag(record.dtype).numpy
    v1, typed = _meta_attrs(f, record.name)
    out: list[Any] = []
    for key in MASK_ATTRS:
        numbers = _typed(typed[key]) if key in typed else None
        if numbers is None and key in v1:
            raw = v1[key]
            numbers = parse_fill_text(raw) if isinstance(raw, str) else _typed(raw)
            if numbers is None:
                raise _v(f"`execution.mask_fill`: dataset `{record.name}` attr `{key}` is not "
                         f'a number or a list of numbers: "{raw}"')
        for number in numbers or ():
            cast = _cast(number, dtype)
            if cast is not None and not any(cast == seen for seen in out):
                out.append(cast)
    if len(out) > MASK_MAX:
        raise _v(f"`execution.mask_fill`: dataset `{record.name}` has {len(out)} distinct fill "
                 f"values ({', '.join(MASK_ATTRS)}); at most {MASK_MAX} are supported")
    return out


class MaskInfo:
    """What a masked execution applies: the values and the dtype values are read in."""

    def __init__(self, dtype: np.dtype[Any], values: list[Any]) -> None:
        self.values = values
        self.mask = FillMask(dtype, values) if values else None
        self.out_dtype: np.dtype[Any] = self.mask.out_dtype if self.mask else np.dtype(dtype)


def resolve_mask(f: TetFile, dataset_id: int) -> MaskInfo:
    """The mask of ``execution.mask_fill`` for one dataset (`mask` None: nothing to mask,
    and then nothing changes, integer dtypes included)."""
    dtype = dtypes.by_tag(f.catalog.datasets[dataset_id].dtype).numpy
    return MaskInfo(dtype, fill_values(f, dataset_id))


def mask_fields(info: MaskInfo) -> dict[str, Any]:
    """The execution fields a masked query adds: ``mask_fill`` (true), ``mask_fill_values``
    (the values masked, as numbers of the dataset's dtype) and ``mask_fill_dtype`` (the
    dtype previews and spills are in)."""
    values: list[Any]
    if not info.values:
        values = []
    elif info.values[0].dtype.kind == "f":
        # the shortest decimal that reads back as the same value of the dtype (1e20, not
        # the float64 widening of float32 1e20), as previews print them
        values = [float(str(v)) for v in info.values]
    else:
        values = [int(v) for v in info.values]
    return {"mask_fill": True, "mask_fill_values": values,
            "mask_fill_dtype": dtypes.for_numpy(info.out_dtype).name}
