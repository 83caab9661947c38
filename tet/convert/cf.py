"""CF decoding the way ``xarray.open_dataset`` decodes a variable (mask and scale on,
times left as numbers): what a default `tet convert` writes is what xarray shows.

`plan` looks at a variable's stored dtype and attributes once and returns the decoded
dtype, a per-block decode function (elementwise, so it streams tile by tile and is safe
on several threads) and the split of the attributes into those that stay attributes and
those that move to the encoding.  The rules, in xarray's order:

1. ``missing_value`` and ``_FillValue`` (one value or several) leave the attributes;
   their non-NaN values are the fills.  An integer variable whose fills are all NaN has
   them dropped altogether (with a warning, as xarray warns).
2. ``_Unsigned = "true"`` on a signed integer (``"false"`` on an unsigned one) casts
   the values to the other signedness; the ``_FillValue`` is reinterpreted bit for bit.
3. With fills, the values are cast to the decoded type (packed: the float type below;
   else floats keep their type and integers become float32 up to 16 bits, float64
   beyond) and elements equal to a fill (NumPy ``==``) become NaN.
4. ``scale_factor`` / ``add_offset``: ``values.astype(T); values *= scale; values +=
   offset`` with the attribute values as they are (one-element arrays as Python
   scalars), so the arithmetic, and so the bits, are xarray's.  Without fills, T is the
   float type of rule 5; with fills, the type step 3 chose.
5. The packed float type: scale and offset of the same float type → that type, except
   32-bit integers → float64; an offset otherwise → float64; a scale alone → the
   scale's type; no packing → float32 for floats of ≤ 32 bits and integers of ≤ 16
   bits, float64 else.

``valid_range`` / ``valid_min`` / ``valid_max`` stay attributes and mask nothing.  The
moved keys, plus ``"dtype"`` (the stored type's NumPy name), form the encoding; a
variable nothing moved from has none.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from tet.attrs import encode_value
from tet.convert.source import (
    Box,
    ConvertError,
    ConvertWarning,
    SourceVar,
    chunk_grid,
    scalar_read,
    typed_attrs,
    wire_dtype,
)

__all__ = ["ENCODING_KEYS", "Plan", "choose_float", "decoded_var", "plan", "zarr_fill"]

Arr = np.ndarray[Any, Any]
ENCODING_KEYS = ("missing_value", "_FillValue", "_Unsigned", "scale_factor", "add_offset")
_NUMERIC = (int, float, np.integer, np.floating)
# Beyond this many fill values, masking is one np.isin pass instead of one == per value.
MANY_FILLS = 16


@dataclass(frozen=True)
class Plan:
    """How one variable is decoded: `dtype` of the decoded values (None: as stored),
    `decode` for a block of stored values (None: nothing to do), the attributes that
    stay, and the encoding entries moved out of them."""

    dtype: np.dtype[Any]
    decode: Callable[[Arr], Arr] | None
    attrs: dict[str, Any]
    encoding: dict[str, Any] = field(default_factory=dict)


def _warn(text: str) -> None:
    warnings.warn(text, ConvertWarning, stacklevel=4)


def _is_nan(v: Any) -> bool:
    return isinstance(v, (float, np.floating)) and math.isnan(float(v))


def _scalar_type(value: Any) -> np.dtype[Any] | None:
    """NumPy's dtype of `type(value)` (xarray's test), None when it has none."""
    try:
        return np.dtype(type(value))
    except TypeError:
        return None


def choose_float(stored: np.dtype[Any], mapping: Mapping[str, Any]) -> np.dtype[Any]:
    """The type packed (or masked) values decode to (rule 5 of the module docstring)."""
    scale, offset = mapping.get("scale_factor"), mapping.get("add_offset")
    if scale is not None or offset is not None:
        scale_t = _scalar_type(scale) if scale is not None else None
        offset_t = _scalar_type(offset) if offset is not None else None
        if (scale is not None and offset is not None and scale_t == offset_t
                and scale_t in (np.dtype(np.float32), np.dtype(np.float64))):
            if stored.itemsize == 4 and stored.kind in "iu":
                return np.dtype(np.float64)
            assert scale_t is not None
            return scale_t
        if offset is not None:
            return np.dtype(np.float64)
        if scale_t is None or scale_t.kind not in "biuf":
            return np.dtype(np.float64)
        return scale_t
    if stored.kind == "f" and stored.itemsize <= 4:
        return np.dtype(np.float32)
    if stored.kind in "iu" and stored.itemsize <= 2:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _promote(stored: np.dtype[Any]) -> np.dtype[Any]:
    """The type that can hold NaN for a masked variable without packing."""
    if stored.kind == "f":
        return stored
    return np.dtype(np.float32) if stored.itemsize <= 2 else np.dtype(np.float64)


def _flat_fills(value: Any) -> list[Any]:
    """Every element of a fill attribute (one value or several)."""
    return list(np.ravel(np.asarray(value)))


def _numeric(value: Any) -> bool:
    return isinstance(value, _NUMERIC) and not isinstance(value, (bool, np.bool_))


def _distinct(values: list[Any]) -> list[Any]:
    numbers = [v for v in values if _numeric(v)]
    others = [v for v in values if not _numeric(v)]
    return [*np.unique(np.asarray(numbers, dtype=np.float64)).tolist(), *others[:1]]


def _cast(block: Arr, *, dtype: np.dtype[Any]) -> Arr:
    return np.asarray(block, dtype=dtype)


def _apply_mask(block: Arr, *, fills: tuple[Any, ...], dtype: np.dtype[Any]) -> Arr:
    data = np.array(block, dtype=dtype, copy=True)
    if len(fills) > MANY_FILLS:  # one pass, not one comparison per value
        hole = np.isin(data, np.asarray(fills, dtype=np.float64).astype(dtype))
    else:
        hole = np.zeros(data.shape, dtype=bool)
        for fv in fills:
            hole |= data == fv
    data[hole] = np.nan
    return data


def _apply_scale(block: Arr, *, scale: Any, offset: Any, dtype: np.dtype[Any]) -> Arr:
    data = block.astype(dtype, copy=True)
    if scale is not None:
        data *= scale
    if offset is not None:
        data += offset
    return data


def _as_item(value: Any) -> Any:
    """xarray takes a one-element array attribute as its Python scalar."""
    if isinstance(value, np.ndarray) and value.ndim > 0:
        return value.reshape(-1)[0].item() if value.size == 1 else value
    if isinstance(value, list) and len(value) == 1:
        return value[0]
    return value


def plan(name: str, stored: np.dtype[Any], attrs: Mapping[str, Any]) -> Plan:
    """The decoding of a numeric variable `name` stored as `stored` with `attrs`
    (typed values, as the source's reader library gives them).

    Raises
    ------
    ConvertError
        ``scale_factor`` / ``add_offset`` that are not numbers.
    """
    left = dict(attrs)
    encoding: dict[str, Any] = {}
    steps: list[Callable[[Arr], Arr]] = []
    dtype = np.dtype(stored)

    # 1. fill values
    fills: list[Any] = []
    for key in ("missing_value", "_FillValue"):
        if key not in left:
            continue
        raw = left.pop(key)
        values = [v for v in _flat_fills(raw) if not _is_nan(v)]
        if not values and dtype.kind in "iu":
            _warn(f"variable `{name}`: {key} {raw!r} is NaN on an integer variable; "
                  "dropped (as xarray drops it)")
            continue
        encoding[key] = raw
        fills.extend(values)
    if len(fills) > 1:  # distinct values, in order (a long list: sorted)
        fills = (list(dict.fromkeys(fills)) if len(fills) <= MANY_FILLS
                 else _distinct(fills))

    # 2. _Unsigned
    if "_Unsigned" in left:
        unsigned = left.pop("_Unsigned")
        encoding["_Unsigned"] = unsigned
        target = None
        if dtype.kind == "i" and unsigned == "true":
            target = np.dtype(f"u{dtype.itemsize}")
            if "_FillValue" in encoding and _numeric(_as_item(encoding["_FillValue"])):
                raw_fill = _as_item(encoding["_FillValue"])
                if raw_fill in fills:
                    fills.remove(raw_fill)
                fills.append(np.array(raw_fill, dtype=dtype).view(target).item())
        elif dtype.kind == "u" and unsigned == "false":
            target = np.dtype(f"i{dtype.itemsize}")
            if "_FillValue" in encoding and _numeric(_as_item(encoding["_FillValue"])):
                raw_fill = _as_item(encoding["_FillValue"])
                if raw_fill in fills:
                    fills.remove(raw_fill)
                fills.append(target.type(raw_fill))
        elif dtype.kind not in "iu":
            _warn(f"variable `{name}`: _Unsigned on a non-integer variable is ignored")
        if target is not None:
            steps.append(partial(_cast, dtype=target))
            dtype = target

    # 3. masking
    scale_keys = [k for k in ("scale_factor", "add_offset") if k in left]
    for key in scale_keys:
        value = _as_item(left[key])
        if not _numeric(value):
            raise ConvertError(f"variable `{name}`: scale_factor/add_offset must be numbers")
    if fills:
        mask_dtype = choose_float(dtype, left) if scale_keys else _promote(dtype)
        numeric = tuple(v for v in fills if _numeric(v) or isinstance(v, (bool, np.bool_)))
        steps.append(partial(_apply_mask, fills=numeric, dtype=mask_dtype))
        dtype = mask_dtype

    # 4. scale and offset
    if scale_keys:
        raw_scale = left.pop("scale_factor", None)
        raw_offset = left.pop("add_offset", None)
        for key, raw in (("scale_factor", raw_scale), ("add_offset", raw_offset)):
            if raw is not None:
                encoding[key] = raw
        if "_FillValue" not in encoding and "missing_value" not in encoding:
            dtype = choose_float(dtype, encoding)
        scale, offset = _as_item(raw_scale), _as_item(raw_offset)
        steps.append(partial(_apply_scale, scale=scale, offset=offset, dtype=dtype))

    if encoding:
        encoding["dtype"] = np.dtype(stored).name
    return Plan(dtype=dtype, decode=_chain(steps), attrs=left, encoding=encoding)


def _chain(steps: list[Callable[[Arr], Arr]]) -> Callable[[Arr], Arr] | None:
    if not steps:
        return None
    if len(steps) == 1:
        return steps[0]

    def run(block: Arr) -> Arr:
        for step in steps:
            block = step(block)
        return block

    return run


def zarr_fill(value: Any, data_type: np.dtype[Any], name: str) -> Any:
    """A ``_FillValue`` attribute of a Zarr v3 array as xarray reads it: base64 of a
    little-endian float64 for float arrays, a number for integer arrays, a bool for bool
    ones.  None (with a warning) for a value that is none of these; the attribute then
    stays as it is."""
    kind = data_type.kind
    if kind == "f":
        if isinstance(value, str):
            try:
                raw = base64.standard_b64decode(value)
                if len(raw) == 8:
                    return struct.unpack("<d", raw)[0]
            except (binascii.Error, ValueError):
                pass
        elif _numeric(value):  # not what xarray writes, but unambiguous
            return float(value)
    elif kind in "iu" and _numeric(value):
        return int(value)
    elif kind == "b" and isinstance(value, bool):
        return value
    _warn(f"variable `{name}`: _FillValue {value!r} is not a {data_type} fill as xarray "
          "writes it; kept as an attribute, not applied")
    return None


def _storable(name: str, encoding: Mapping[str, Any]) -> dict[str, Any]:
    """The encoding entries the typed metadata can hold (a non-finite Python float
    becomes a NumPy float64; anything else unencodable is left out, with a warning)."""
    out: dict[str, Any] = {}
    for key, value in encoding.items():
        if isinstance(value, float) and not math.isfinite(value):
            value = np.float64(value)
        try:
            encode_value(value)
        except TypeError as exc:
            _warn(f"variable `{name}`: encoding {key!r} left out: {exc}")
            continue
        out[key] = value
    return out


def decoded_var(name: str, shape: tuple[int, ...], stored: np.dtype[Any],
                read: Callable[[Box], Arr], *, items: list[tuple[str, Any]],
                keep_packed: bool, chunks: tuple[int, ...] | None = None,
                unit: tuple[int, ...] | None = None, dim_names: list[str] | None = None,
                coords: dict[str, list[str]] | None = None,
                plain: Iterable[str] = ()) -> SourceVar:
    """The `SourceVar` of a numeric variable (0-d included): decoded by `plan` unless
    `keep_packed`; `items` are its attributes, typed, in source order; keys in `plain`
    stay attributes whatever they are called."""
    attrs = dict(items)
    kept = {k: attrs.pop(k) for k in plain if k in attrs}
    p = (Plan(dtype=np.dtype(stored), decode=None, attrs=attrs) if keep_packed
         else plan(name, np.dtype(stored), attrs))
    p.attrs.update(kept)
    wire = wire_dtype(p.dtype)
    if wire is None:
        raise ConvertError(f"variable `{name}`: decodes to {p.dtype}, which no .tet dtype holds")
    moved = [k for k in p.encoding if k != "dtype"]
    listed = [(k, v) for k, v in items if k in p.attrs or k in moved]
    if p.dtype.kind == "b" and "dtype" not in p.attrs:
        listed.append(("dtype", "bool"))  # u8 values marked as xarray marks stored bools
    typed = typed_attrs(f"`{name}`", listed, moved=moved)
    extra: dict[str, Any] = {}
    if p.encoding:
        extra["encoding"] = _storable(name, p.encoding)
    elif p.dtype.kind == "i" and p.dtype.itemsize == 1:
        # int8 is stored as i16: the encoding names the type to read back
        extra["encoding"] = {"dtype": p.dtype.name}
    if not shape:
        extra["shape"] = []
        return SourceVar(name=name, shape=(1,), dtype=wire, read=scalar_read(read),
                         chunks=(1,), decode=p.decode, attrs=typed, extra=extra)
    grid = chunk_grid(shape, chunks, wire.itemsize)
    outer = chunk_grid(shape, unit, wire.itemsize) if unit is not None else None
    return SourceVar(name=name, shape=shape, dtype=wire, read=read, chunks=grid,
                     unit=outer if outer != grid else None, decode=p.decode, attrs=typed,
                     dim_names=dim_names, coords=dict(coords or {}), extra=extra)
