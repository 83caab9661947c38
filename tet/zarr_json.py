"""Zarr v3 JSON: the ``zarr.json`` documents of the export's groups and arrays, and
attribute and fill values in the forms zarr-python and xarray's Zarr reader decode
(non-finite floats as ``NaN``/``Infinity``, a float ``_FillValue`` as the base64 of
its little-endian float64, dates and durations as CF integers)."""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["ZARR_DATA_TYPES", "array_document", "fill_of", "group_document", "json_attrs",
           "json_value", "time_encoded"]

ZARR_DATA_TYPES: Mapping[str, str] = {
    "f32": "float32", "f64": "float64", "i32": "int32", "i64": "int64", "u8": "uint8",
    "u16": "uint16", "i16": "int16", "u32": "uint32", "f16": "float16", "u64": "uint64",
}
_BYTES_CODEC = {"name": "bytes", "configuration": {"endian": "little"}}
_ZSTD_CODEC = {"name": "zstd", "configuration": {"level": 0, "checksum": False}}


def _scalar(value: Any) -> float | int | None:
    """A number attribute's value (a one-element array counts); None otherwise."""
    if isinstance(value, np.ndarray):
        if value.size != 1 or value.dtype.kind not in "biuf":
            return None
        value = value.reshape(-1)[0]
    if isinstance(value, np.generic):
        if value.dtype.kind not in "biuf":
            return None
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _float_json(value: float) -> Any:
    """A float as Zarr v3 spells fill values: a number, or "NaN" / "Infinity" / "-Infinity"."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def fill_of(attrs: dict[str, Any], dtype: np.dtype[Any]) -> tuple[Any, Any]:
    """(JSON fill_value, padding value) of a numeric array; rewrites a ``_FillValue``
    attribute into the form xarray's Zarr reader decodes (an int; for floats, base64 of
    the little-endian float64), and drops one no reader could use (not one number)."""
    number = _scalar(attrs["_FillValue"]) if "_FillValue" in attrs else None
    if dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            pad = dtype.type(math.nan if number is None else number)
        if number is not None:
            attrs["_FillValue"] = base64.standard_b64encode(
                struct.pack("<d", float(number))).decode("ascii")
        else:
            attrs.pop("_FillValue", None)
        return _float_json(float(pad)), pad
    fill = 0
    if number is not None and math.isfinite(number) and float(number).is_integer():
        attrs["_FillValue"] = int(number)
        info = np.iinfo(dtype)
        if info.min <= int(number) <= info.max:
            fill = int(number)
    else:
        attrs.pop("_FillValue", None)
    return fill, dtype.type(fill)


def json_value(value: Any) -> Any:
    """An attribute value as JSON: NumPy scalars and arrays as numbers and lists (exact
    values; non-finite floats as the NaN/Infinity tokens zarr-python reads back), tuples
    as lists, bytes as UTF-8 text (bad bytes replaced)."""
    if isinstance(value, str | bool | None):
        return value
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "S":
            value = np.char.decode(value, "utf-8", errors="replace")
        return json_value(value.tolist())
    if isinstance(value, np.generic):
        return json_value(value.item())
    if isinstance(value, int | float):
        return value
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    return str(value)


def json_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Attribute values as JSON (`json_value`)."""
    return {k: json_value(v) for k, v in attrs.items()}



_TIME_UNITS = {"D": "days", "h": "hours", "m": "minutes", "s": "seconds",
               "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}


def time_encoded(values: np.ndarray[Any, Any], attrs: dict[str, Any]
                  ) -> np.ndarray[Any, Any]:
    """Dates or durations as CF integers xarray decodes back: dates as counts of the
    coarsest unit that holds every one exactly since 1970-01-01 (``units``,
    ``calendar``), durations as counts of their own unit (``units``, ``dtype``); NaT is
    the int64 minimum, marked as ``_FillValue``."""
    nat = np.isnat(values)
    if values.dtype.kind == "M":
        valid = values[~nat]
        unit = "ns"
        for unit in ("D", "h", "m", "s", "ms", "us", "ns"):
            if (valid.astype(f"M8[{unit}]") == valid).all():
                break
        counts = values.astype(f"M8[{unit}]").view(np.int64)
        attrs.update(units=f"{_TIME_UNITS[unit]} since 1970-01-01",
                     calendar="proleptic_gregorian")
    else:
        unit = np.datetime_data(values.dtype)[0]
        if unit not in _TIME_UNITS:
            values, unit = values.astype("m8[ns]"), "ns"
        counts = values.view(np.int64)
        attrs.update(units=_TIME_UNITS[unit], dtype=f"timedelta64[{unit}]")
    if nat.any():
        attrs["_FillValue"] = int(np.iinfo(np.int64).min)
    return np.ascontiguousarray(counts, dtype="<i8")


def group_document(attrs: Mapping[str, Any] | None) -> dict[str, Any]:
    """A group's ``zarr.json`` (with ``attributes`` when `attrs` is given)."""
    doc: dict[str, Any] = {"zarr_format": 3, "node_type": "group"}
    if attrs is not None:
        doc["attributes"] = attrs
    return doc


def array_document(*, shape: Sequence[int], chunks: Sequence[int], data_type: str, fill: Any,
                   text: str | None, zstd: bool, attrs: Mapping[str, Any],
                   dims: Sequence[str]) -> dict[str, Any]:
    """An array's ``zarr.json`` (cli.md §7, with the fill value, typed attributes and
    dimension names xarray reads); `text` ("str" | "bytes") makes it a vlen array."""
    if text is not None:
        codecs: list[dict[str, Any]] = [{"name": "vlen-utf8" if text == "str" else
                                         "vlen-bytes", "configuration": {}}]
    else:
        codecs = [_BYTES_CODEC]
    if zstd:
        codecs.append(_ZSTD_CODEC)
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(shape),
        "data_type": data_type,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill,
        "codecs": codecs,
        "attributes": attrs,
        "dimension_names": list(dims),
        "storage_transformers": [],
    }
