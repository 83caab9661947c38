"""What every importer hands to the write loop: one `SourceVar` per array, with its
footer metadata already cut to the format's limits (layout.md §5.2), plus the rules
that turn source attributes and coordinate values into footer strings (cli.md §6)."""

from __future__ import annotations

import importlib
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TypeVar

import numpy as np

from tet.attrs import display
from tet.errors import TetError
from tet.limits import LIMITS
from tet.safeio import open_regular
from tet.writer import MAX_NAME_BYTES

__all__ = [
    "PREFERRED_ATTRS",
    "ConvertError",
    "ConvertWarning",
    "SourceVar",
    "cf_decoder",
    "chunk_grid",
    "display",
    "footer_attrs",
    "labels_for",
    "require",
    "skip",
    "wire_dtype",
]

PREFERRED_ATTRS = ("units", "long_name", "standard_name", "description", "title",
                   "scale_factor", "add_offset", "_FillValue")
CF_PACKING = ("scale_factor", "add_offset", "_FillValue")
MAX_STRING = LIMITS["attr_string_bytes"]
MAX_ATTRS = LIMITS["dataset_attrs"]
MAX_LABELS = LIMITS["coord_labels_per_axis"]
# A source chunk above this is split (halving its longest axis) so one tile never needs
# more memory than this to build.
MAX_TILE_BYTES = 64 * 1024 * 1024

Box = tuple[slice, ...]
T = TypeVar("T")


class ConvertError(TetError):
    """A conversion that cannot proceed: unsupported input, a missing library, or a
    variable that failed to read (the message names it)."""


def require_regular(path: str | os.PathLike[str]) -> None:
    """Refuse at once an input file that is not a regular file (a FIFO, socket or
    device: `NotRegularFileError`, never opened for reading, so nothing blocks on it);
    readers call this right before they open it."""
    fd, _ = open_regular(path, action="cannot read convert input", refusal="cannot convert",
                         what="a regular file")
    os.close(fd)


class ConvertWarning(UserWarning):
    """Something in the source was left out of the .tet file (the message says what
    and why); the conversion goes on."""


def skip(name: str, reason: str) -> None:
    """Warn that a source member was left out."""
    warnings.warn(f"skipped `{name}`: {reason}", ConvertWarning, stacklevel=3)


def admit(name: str, shape: Sequence[int], dtype: Any) -> np.dtype[Any] | None:
    """The wire dtype of an array the format can hold, or None after warning why it is
    left out (a scalar, rank over 8, an empty extent, an element type without a tag, a
    name that is not 1..1024 bytes of UTF-8)."""
    reason = None
    wire = None
    if len(shape) == 0:
        reason = "scalar"
    elif len(shape) > 8:
        reason = f"rank {len(shape)} (the format allows 1..8)"
    elif any(n == 0 for n in shape):
        reason = f"empty array (shape {list(shape)})"
    elif (wire := wire_dtype(dtype)) is None:
        reason = unsupported_reason(dtype)
    elif not _usable_name(name):
        reason = "name is not 1..1024 bytes of UTF-8"
    if reason is not None:
        skip(name, reason)
        return None
    return wire


def _usable_name(name: str) -> bool:
    try:
        return 0 < len(name.encode("utf-8")) <= MAX_NAME_BYTES
    except UnicodeEncodeError:
        return False


def describe_each(found: Iterable[tuple[str, T]],
                  describe: Callable[[str, T], SourceVar | None]) -> list[SourceVar]:
    """`describe` every (name, member) of a walk; a reader library's own failure becomes
    a ConvertError naming the member."""
    out = []
    for name, member in found:
        try:
            var = describe(name, member)
        except ConvertError:
            raise
        except Exception as exc:
            raise ConvertError(f"failed to read `{name}`: {exc}") from exc
        if var is not None:
            out.append(var)
    return out


def require(module: str, what: str) -> ModuleType:
    """Import an optional reader library, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConvertError(
            f"{module} is required to convert {what} files ({exc}): "
            "pip install 'tet-arrays[convert]'") from None


@dataclass
class SourceVar:
    """One source array, described the same way whatever the format.

    `read` returns the stored values of a box (it must be safe to call from several
    threads at once); `decode` (optional) turns stored values into the values written.
    """

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    read: Callable[[Box], np.ndarray[Any, Any]]
    chunks: tuple[int, ...] | None = None
    unit: tuple[int, ...] | None = None
    decode: Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]] | None = None
    attrs: dict[str, str] = field(default_factory=dict)
    dim_names: list[str] | None = None
    coords: dict[str, list[str]] = field(default_factory=dict)

    def meta(self) -> dict[str, Any]:
        """The footer entry this variable adds (empty members left out)."""
        out: dict[str, Any] = {}
        if self.attrs:
            out["attrs"] = dict(self.attrs)
        if self.dim_names:
            out["dim_names"] = list(self.dim_names)
        if self.coords:
            out["coords"] = {k: {"labels": list(v)} for k, v in self.coords.items()}
        return out

    def drop_meta(self) -> None:
        self.attrs, self.dim_names, self.coords = {}, None, {}


# ---------------------------------------------------------------------------
# Element types


def wire_dtype(dt: Any) -> np.dtype[Any] | None:
    """The dtype a source element type is stored as, or None when the format has none.

    bool → u8 (0/1); int8 → i16, so negative bytes keep their value (the format has no
    signed 8-bit type).  Byte order is normalised to little-endian by the writer.
    """
    try:
        d = np.dtype(dt)
    except TypeError:
        return None
    if d.fields is not None or d.subdtype is not None:
        return None
    if d.kind == "b":
        return np.dtype("u1")
    if d.kind == "i" and d.itemsize == 1:
        return np.dtype("<i2")
    if (d.kind, d.itemsize) in {("f", 2), ("f", 4), ("f", 8), ("i", 2), ("i", 4), ("i", 8),
                                ("u", 1), ("u", 2), ("u", 4), ("u", 8)}:
        out: np.dtype[Any] = d.newbyteorder("<")
        return out
    return None


def unsupported_reason(dt: Any) -> str:
    try:
        d = np.dtype(dt)
    except TypeError:
        return f"unsupported element type {dt!r}"
    if d.fields is not None:
        return "compound element type"
    if d.kind in "SUTO":
        return "string element type"
    return f"unsupported element type {d.str.lstrip('<>|=')}"


def chunk_grid(shape: Sequence[int], chunks: Sequence[int] | None,
               itemsize: int) -> tuple[int, ...] | None:
    """The source chunk shape clipped to the array (None when unusable: wrong rank or a
    non-positive extent).  A chunk over MAX_TILE_BYTES is halved along its longest axis
    until it fits, keeping memory per tile bounded."""
    if chunks is None or len(chunks) != len(shape) or any(int(c) < 1 for c in chunks):
        return None
    out = [min(int(c), int(n)) for c, n in zip(chunks, shape)]
    while math.prod(out) * itemsize > MAX_TILE_BYTES and max(out) > 1:
        d = out.index(max(out))
        out[d] = -(-out[d] // 2)
    return tuple(out)


# ---------------------------------------------------------------------------
# Strings for the footer


def _fits(text: str) -> bool:
    return 0 < len(text.encode("utf-8")) <= MAX_STRING


def truncate(text: str, limit: int = MAX_STRING) -> str:
    """Cut to at most `limit` UTF-8 bytes without splitting a character."""
    raw = text.encode("utf-8")
    return text if len(raw) <= limit else raw[:limit].decode("utf-8", errors="ignore")


def footer_attrs(items: Iterable[tuple[str, Any]], *, drop: Iterable[str] = ()) -> dict[str, str]:
    """Attributes as footer strings: the preferred keys first, then the others in
    source order, until 64; keys or values over 1024 bytes, and values with no text,
    are left out."""
    dropped = set(drop)
    texts: dict[str, str] = {}
    for key, value in items:
        if not isinstance(key, str) or key in dropped or key in texts or not _fits(key):
            continue
        text = display(value)
        if text is not None and _fits(text):
            texts[key] = text
    order = [k for k in PREFERRED_ATTRS if k in texts]
    order += [k for k in texts if k not in PREFERRED_ATTRS]
    return {k: texts[k] for k in order[:MAX_ATTRS]}


def labels_for(values: np.ndarray[Any, Any] | None, length: int) -> list[str] | None:
    """Coordinate labels for an axis of `length`: only for 1..64 values matching the
    axis, each the value's display text cut to 1024 bytes."""
    if values is None or values.ndim != 1 or not 1 <= values.size <= MAX_LABELS:
        return None
    if values.size != length:
        return None
    out = []
    for v in values:
        text = display(v)
        if text is None:
            return None
        out.append(truncate(text))
    return out


def valid_dim_names(names: Sequence[Any] | None, ndim: int) -> list[str] | None:
    """Dimension names when there is one usable (non-empty, ≤ 1024 bytes) per axis."""
    if names is None or len(names) != ndim or ndim > LIMITS["dim_names"]:
        return None
    if not all(isinstance(n, str) and _fits(n) for n in names):
        return None
    return [str(n) for n in names]


# ---------------------------------------------------------------------------
# CF packing


def _as_float(value: Any) -> float | None:
    arr = np.asarray(value)
    if arr.size < 1 or arr.dtype.kind not in "biuf":
        return None
    return float(arr.reshape(-1)[0])


def _xarray_float(stored: np.dtype[Any], attrs: Mapping[str, Any]) -> np.dtype[Any]:
    """The float type xarray decodes packed integers to: the type of scale/offset when
    both are the same float type (f64 for 32/64-bit integers), f64 when only an offset
    is given, else f32 for ≤ 16-bit integers and f64 beyond."""
    def kind(key: str) -> np.dtype[Any] | None:
        return np.asarray(attrs[key]).dtype if key in attrs else None

    scale, offset = kind("scale_factor"), kind("add_offset")
    if scale is not None and offset is not None and scale == offset and scale.kind == "f":
        if stored.itemsize >= 4:
            return np.dtype("<f8")
        return np.dtype("<f4") if scale.itemsize <= 4 else np.dtype("<f8")
    if offset is not None:
        return np.dtype("<f8")
    if scale is not None and scale.kind == "f":
        return np.dtype("<f4") if scale.itemsize <= 4 and stored.itemsize <= 2 else np.dtype("<f8")
    return np.dtype("<f4") if stored.itemsize <= 2 else np.dtype("<f8")


def cf_decoder(name: str, stored: np.dtype[Any], attrs: Mapping[str, Any],
               fallback_fill: Any = None) -> tuple[np.dtype[Any], Any] | None:
    """(decoded dtype, decode function) when `scale_factor` or `add_offset` is present.

    value = stored × scale (default 1) + offset (default 0), computed in f64; stored
    values equal to the fill (`_FillValue`, else `fallback_fill`) within
    max(|fill|·1e-6, 1e-6), or both NaN, become NaN.  Float storage keeps its type;
    integer storage decodes to the float type xarray would choose.
    """
    if "scale_factor" not in attrs and "add_offset" not in attrs:
        return None
    scale = _as_float(attrs["scale_factor"]) if "scale_factor" in attrs else 1.0
    offset = _as_float(attrs["add_offset"]) if "add_offset" in attrs else 0.0
    if scale is None or offset is None:
        raise ConvertError(f"variable `{name}`: scale_factor/add_offset must be numbers")
    fill = _as_float(attrs["_FillValue"]) if "_FillValue" in attrs else _as_float(fallback_fill)
    if stored.kind == "f" and stored.itemsize >= 4:
        out = stored.newbyteorder("<")
    elif stored.kind in "biuf":
        out = _xarray_float(stored, attrs)
    else:
        raise ConvertError(f"variable `{name}`: CF packing on a {stored} variable")

    def decode(block: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        raw = block.astype(np.float64)
        values = raw * scale + offset
        if fill is not None:
            if math.isnan(fill):
                hole = np.isnan(raw)
            else:
                hole = np.abs(raw - fill) <= max(abs(fill) * 1e-6, 1e-6)
            values[hole] = np.nan
        return values.astype(out, copy=False)

    return out, decode
