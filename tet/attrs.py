"""Typed metadata: what the v1 footer's string maps cannot say, kept beside them.

The v1 footer (layout.md §5.1) holds string attrs only, 64 keys of at most 1024 bytes
each, per dataset, and nothing file-level.  Everything else travels in one extension
object, ``metadata["tet"]``, which the reference reader ignores (it skips unknown
metadata keys, inline or spilled)::

    "tet": {"attrs":    {key: VALUE},                  file-level attributes
            "coords":   {dim: {"dtype": D, "attrs": {key: VALUE}}},
            "groups":   {path: {"attrs": {key: VALUE}}},   attributes of a "/" group
            "datasets": {name: {"attrs": {key: VALUE},  attrs v1 cannot hold exactly
                                "encoding": {key: VALUE},  on-disk CF encoding
                                "shape": [],            a 0-d variable stored as (1,)
                                "text": {"width": N, "kind": "str" | "bytes"}}}}

A VALUE is a JSON string (a ``str``), ``true``/``false`` (a ``bool``), or one object:
``{"dtype": D, "value": V}`` (a NumPy scalar, or an array when V is a list; non-finite
floats are the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``), ``{"json": V}`` (a
plain JSON value), ``{"tuple": [...]}`` or ``{"bytes": "<base64>"}``.

The v1 ``attrs`` keep each attribute's display text so the reference and ``tet info``
still see it; readers overlay the typed values (`merge_attrs`).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tet.errors import CatalogError
from tet.limits import LIMITS
from tet.query.budget import require_memory
from tet.wire import format_float

__all__ = [
    "EXT_KEY",
    "MAX_EXT_ATTRS",
    "decode_value",
    "display",
    "encode_value",
    "ext_of",
    "labels_to_values",
    "merge_attrs",
    "split_attrs",
    "validate_ext",
]

EXT_KEY = "tet"
MAX_EXT_ATTRS = 4096
MAX_VALUE_DEPTH = 16
MAX_TEXT_WIDTH = 1 << 20
DTYPES = frozenset({"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                    "uint64", "float16", "float32", "float64", "str"})
DATASET_KEYS = frozenset({"attrs", "encoding", "shape", "text"})
TEXT_KINDS = ("str", "bytes")
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_V1_STRING = LIMITS["attr_string_bytes"]
_V1_KEYS = LIMITS["dataset_attrs"]


def _bad(what: str) -> CatalogError:
    return CatalogError(f"footer metadata tet: {what}")


# ---------------------------------------------------------------------------
# One value


def encode_value(value: Any, where: str = "attribute") -> Any:
    """The JSON form of an attribute value (see the module docstring).

    Raises
    ------
    TypeError
        A value that is none of: str, bool, bytes, a number or numeric/string NumPy
        value, or a JSON-able list/tuple/dict of those.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):  # a NumPy bool keeps its type: {"dtype": "bool", ...}
        return value
    if isinstance(value, (bytes, np.bytes_)):
        return {"bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, (np.ndarray, np.generic)):
        return _encode_numpy(value, where)
    if isinstance(value, tuple):
        return {"tuple": [_plain(v, where) for v in value]}
    return {"json": _plain(value, where)}


def _encode_numpy(value: np.ndarray[Any, Any] | np.generic, where: str) -> Any:
    kind = value.dtype.kind
    if kind in "US":
        items = np.asarray(value).astype(str)
        return {"dtype": "str", "value": items.tolist()} if items.ndim else str(items)
    name = value.dtype.name
    if name not in DTYPES:
        raise TypeError(f"{where}: cannot store a {value.dtype} value in the footer")
    narrow = value.dtype.type if kind == "f" and value.dtype.itemsize < 8 else None
    return {"dtype": name, "value": _finite(value.tolist(), narrow)}


def _finite(v: Any, narrow: Any) -> Any:
    """JSON numbers: non-finite ones spelled out; f16/f32 in their own shortest digits
    (1e20, not 1.0000000200408773e+20), which read back to the same value."""
    if isinstance(v, list):
        return [_finite(x, narrow) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    if isinstance(v, float) and narrow is not None:
        return float(str(narrow(v)))
    return v


def _plain(value: Any, where: str) -> Any:
    """A JSON-native value (numbers finite or spelled as strings inside lists only)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise TypeError(f"{where}: a non-finite Python float needs a NumPy type "
                        f"(np.float64({value!r}))")
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise TypeError(
            f"{where}: cannot store {type(value).__name__} {value!r} in the footer "
            "(strings, numbers, booleans, bytes, lists of them, NumPy values)") from None
    return json.loads(text)


def decode_value(raw: Any, where: str = "attribute") -> Any:
    """The value `encode_value` wrote; a malformed one is a `CatalogError`."""
    if isinstance(raw, str | bool):
        return raw
    if not isinstance(raw, dict) or len(raw) not in (1, 2):
        raise _bad(f"{where}: not a typed value")
    if set(raw) == {"dtype", "value"}:
        return _decode_numpy(raw["dtype"], raw["value"], where)
    (tag, body), = raw.items() if len(raw) == 1 else ((None, None),)
    if tag == "json":
        return body
    if tag == "tuple" and isinstance(body, list):
        return tuple(body)
    if tag == "bytes" and isinstance(body, str):
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise _bad(f"{where}: bytes are not base64") from None
    raise _bad(f"{where}: not a typed value")


def _decode_numpy(dtype: Any, value: Any, where: str) -> Any:
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise _bad(f"{where}: unknown dtype {dtype!r}")
    if dtype == "str":
        if not isinstance(value, list):
            raise _bad(f"{where}: a str array needs a list")
        try:
            return np.asarray(value, dtype=str)
        except (TypeError, ValueError):
            raise _bad(f"{where}: a str array needs a list of strings") from None
    try:
        if isinstance(value, list):
            return np.asarray(_numbers(value), dtype=np.dtype(dtype))
        return np.dtype(dtype).type(_numbers(value))
    except (TypeError, ValueError, OverflowError):
        raise _bad(f"{where}: value does not fit {dtype}") from None


def _numbers(v: Any) -> Any:
    if isinstance(v, list):
        return [_numbers(x) for x in v]
    if isinstance(v, str):
        if v not in _NONFINITE:
            raise ValueError(v)
        return _NONFINITE[v]
    if isinstance(v, bool) or not isinstance(v, int | float):
        if isinstance(v, bool):
            return v
        raise ValueError(v)
    return v


# ---------------------------------------------------------------------------
# Attribute maps


def display(value: Any) -> str | None:
    """One attribute value or coordinate label as v1 footer text (cli.md §6); None when
    it has none (empty strings, empty arrays, compound or reference values)."""
    if isinstance(value, np.ndarray):
        if value.size == 0:
            return None
        if value.dtype.kind in "SUTO" or value.size == 1:
            return display(value.reshape(-1)[0])
        parts = [display(v) for v in value.reshape(-1)]
        if any(p is None for p in parts):
            return None
        return "[" + ", ".join(p for p in parts if p is not None) + "]"
    if isinstance(value, (list, tuple)):
        return display(np.asarray(value)) if value else None
    if isinstance(value, (bytes, np.bytes_)):
        text = bytes(value).decode("utf-8", errors="replace")
    elif isinstance(value, str):
        text = value
    elif isinstance(value, (bool, np.bool_)):
        text = "true" if value else "false"
    elif isinstance(value, (int, np.integer)):
        text = str(int(value))
    elif isinstance(value, (np.floating, float)):
        # shortest digits of the value's own width, positional, no trailing ".0" (so
        # -9999.0 reads "-9999", as the format's examples show)
        text = format_float(value, "display")
    else:
        return None
    return text or None


def _v1_fits(key: str, text: str | None) -> bool:
    return (text is not None and 0 < len(key.encode("utf-8", "surrogatepass")) <= _V1_STRING
            and 0 < len(text.encode("utf-8", "surrogatepass")) <= _V1_STRING)


def split_attrs(attrs: Mapping[str, Any], where: str = "attrs") -> tuple[dict[str, str],
                                                                          dict[str, Any]]:
    """(v1 string attrs, typed extension attrs) of one attribute map.

    A string that fits the v1 limits goes to v1 only; every other value goes to the
    extension, and to v1 as its display text when that fits (first 64 keys)."""
    v1: dict[str, str] = {}
    ext: dict[str, Any] = {}
    for key, value in attrs.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"{where}: attribute names must be non-empty strings, got {key!r}")
        text = display(value)
        fits = _v1_fits(key, text) and len(v1) < _V1_KEYS
        if not (isinstance(value, str) and fits):
            ext[key] = encode_value(value, f"{where}: attribute {key!r}")
        if fits and text is not None:
            v1[key] = text
    return v1, ext


def merge_attrs(v1: Mapping[str, str], ext: Mapping[str, Any], where: str = "attrs"
                ) -> dict[str, Any]:
    """The typed attribute map: v1 strings overlaid by the extension's typed values."""
    out: dict[str, Any] = dict(v1)
    for key, raw in ext.items():
        out[key] = decode_value(raw, f"{where}: attribute {key!r}")
    return out


# ---------------------------------------------------------------------------
# The extension object


def ext_of(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """``metadata["tet"]``, or an empty object."""
    ext = metadata.get(EXT_KEY, {})
    return ext if isinstance(ext, dict) else {}


def validate_ext(ext: Any) -> None:
    """Refuse a malformed extension (types, counts, key text, value depth); values are
    decoded once here so readers can decode them later without surprises."""
    if not isinstance(ext, dict):
        raise _bad("must be an object")
    unknown = set(ext) - {"attrs", "coords", "datasets", "groups"}
    if unknown:
        raise _bad(f"unknown key {sorted(unknown)[0]!r}")
    _check_attrs(ext.get("attrs", {}), "attrs")
    groups = ext.get("groups", {})
    if not isinstance(groups, dict):
        raise _bad("groups must be an object keyed by group path")
    for path, group in groups.items():
        if not isinstance(group, dict) or set(group) - {"attrs"}:
            raise _bad(f"groups {path!r} must be an object with attrs")
        _check_attrs(group.get("attrs", {}), f"groups {path!r} attrs")
    coords = ext.get("coords", {})
    if not isinstance(coords, dict):
        raise _bad("coords must be an object keyed by dimension")
    for dim, coord in coords.items():
        if not isinstance(coord, dict) or set(coord) - {"dtype", "attrs"}:
            raise _bad(f"coords {dim!r} must be an object with dtype and attrs")
        dtype = coord.get("dtype", "str")
        if not isinstance(dtype, str) or not (dtype in DTYPES
                                               or dtype.startswith(("datetime64", "timedelta64"))):
            raise _bad(f"coords {dim!r}: unknown dtype {dtype!r}")
        _check_attrs(coord.get("attrs", {}), f"coords {dim!r} attrs")
    datasets = ext.get("datasets", {})
    if not isinstance(datasets, dict):
        raise _bad("datasets must be an object keyed by dataset name")
    for name, entry in datasets.items():
        if not isinstance(entry, dict):
            raise _bad(f"dataset {name!r} must be an object")
        unknown = set(entry) - DATASET_KEYS
        if unknown:
            raise _bad(f"dataset {name!r}: unknown key {sorted(unknown)[0]!r}")
        _check_attrs(entry.get("attrs", {}), f"dataset {name!r} attrs")
        _check_attrs(entry.get("encoding", {}), f"dataset {name!r} encoding")
        if "shape" in entry and entry["shape"] != []:
            raise _bad(f"dataset {name!r}: shape must be [] (a 0-d variable)")
        if "text" in entry:
            _check_text(entry["text"], name)


def _check_text(text: Any, name: str) -> None:
    if not isinstance(text, dict) or set(text) != {"width", "kind"}:
        raise _bad(f"dataset {name!r}: text must be {{\"width\": N, \"kind\": K}}")
    width, kind = text["width"], text["kind"]
    if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= MAX_TEXT_WIDTH:
        raise _bad(f"dataset {name!r}: text width must be 1..{MAX_TEXT_WIDTH}")
    if kind not in TEXT_KINDS:
        raise _bad(f"dataset {name!r}: text kind must be one of {list(TEXT_KINDS)}")


def _check_attrs(attrs: Any, where: str) -> None:
    if not isinstance(attrs, dict):
        raise _bad(f"{where} must be an object")
    if len(attrs) > MAX_EXT_ATTRS:
        raise _bad(f"{where}: {len(attrs)} entries exceed {MAX_EXT_ATTRS}")
    for key, raw in attrs.items():
        size = len(key.encode("utf-8", "surrogatepass")) if isinstance(key, str) else 0
        if not 0 < size <= _V1_STRING:
            raise _bad(f"{where}: keys must be 1..{_V1_STRING} bytes")
        if _depth(raw) > MAX_VALUE_DEPTH:
            raise _bad(f"{where}: attribute {key!r} nests deeper than {MAX_VALUE_DEPTH}")
        decode_value(raw, f"{where}: attribute {key!r}")


def _depth(v: Any) -> int:
    if isinstance(v, dict):
        return 1 + max((_depth(x) for x in v.values()), default=0)
    if isinstance(v, list):
        return 1 + max((_depth(x) for x in v), default=0)
    return 0


# ---------------------------------------------------------------------------
# Coordinate labels: the one rule the xarray backend and the export share


def labels_to_values(labels: Sequence[str], length: int, meta: Mapping[str, Any] | None,
                     budget: int, what: str, hint: str) -> np.ndarray[Any, Any] | None:
    """The coordinate values of an axis's footer labels (None when they cannot be).

    Without a recorded dtype (or with ``"str"``) the labels are strings; footers may
    label only the first positions of an axis, the rest read as ``""``. That padding is
    sized by the axis length, a file field, so it is charged to ``budget`` first
    (``what`` and ``hint`` word the refusal).
    """
    dtype = meta.get("dtype") if meta else None
    if dtype is None or dtype == "str":
        width = 4 * max([1, *map(len, labels)])  # bytes per NumPy str element
        require_memory(length * width, budget,
                       f"{what} ({len(labels)} labels padded to its {length} positions)", hint)
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
    except (TypeError, ValueError, OverflowError):
        return None
