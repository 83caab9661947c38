"""What every importer hands to the write loop: one `SourceVar` per array, with its
attributes typed and ordered for the footer (v1 text as cli.md §6 says, typed values
beside it, `tet.attrs`), plus the rules that turn coordinate values into footer labels,
and the wrappers that store 0-d variables and text as datasets."""

from __future__ import annotations

import importlib
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TypeVar

import numpy as np

from tet.attrs import MAX_EXT_ATTRS, display, encode_value, validate_ext
from tet.errors import CatalogError, TetError
from tet.layout import MAX_NDIM
from tet.limits import LIMITS
from tet.paths import open_regular
from tet.writer import MAX_NAME_BYTES

__all__ = [
    "PREFERRED_ATTRS",
    "ConvertError",
    "ConvertWarning",
    "SourceVar",
    "block_boxes",
    "chunk_grid",
    "display",
    "file_attrs",
    "labels_for",
    "require",
    "scalar_read",
    "skip",
    "text_var",
    "typed_attrs",
    "wire_dtype",
]

PREFERRED_ATTRS = ("units", "long_name", "standard_name", "description", "title",
                   "scale_factor", "add_offset", "_FillValue")
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
    left out (rank over 8, an empty extent, an element type without a tag, a name that
    is not 1..1024 bytes of UTF-8).  A 0-d array is admitted (stored as shape (1,))."""
    reason = None
    wire = None
    if len(shape) > MAX_NDIM:
        reason = f"rank {len(shape)} (the format allows 1..{MAX_NDIM})"
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


def admit_text(name: str, shape: Sequence[int]) -> bool:
    """Whether a text array of logical `shape` can be stored (one more axis holds its
    bytes, so rank 7 at most); warns why not."""
    reason = None
    if len(shape) > MAX_NDIM - 1:
        reason = f"text of rank {len(shape)} (the format allows 1..{MAX_NDIM} with its byte axis)"
    elif any(n == 0 for n in shape):
        reason = f"empty array (shape {list(shape)})"
    elif not _usable_name(name):
        reason = "name is not 1..1024 bytes of UTF-8"
    if reason is not None:
        skip(name, reason)
        return False
    return True


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
    `attrs` are typed, in footer order (`split_attrs` parts them into the v1 map and
    the typed rest); `extra` holds the dataset's other typed-metadata fields
    (``encoding``, ``shape``, ``text``).
    """

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    read: Callable[[Box], np.ndarray[Any, Any]]
    chunks: tuple[int, ...] | None = None
    unit: tuple[int, ...] | None = None
    decode: Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]] | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    dim_names: list[str] | None = None
    coords: dict[str, list[str]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def split_attrs(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the writer's ``attrs=``, ``extra["attrs"]``): the first 64 attributes whose
        text fits the v1 footer map (strings as they are, other values typed: the writer
        writes their display text and keeps their type), and every other attribute
        (long or empty strings, past 64 keys, values with no display text), typed."""
        v1: dict[str, Any] = {}
        rest: dict[str, Any] = {}
        for key, value in self.attrs.items():
            text = value if isinstance(value, str) else _text_of(value)
            if text is not None and _fits(text) and len(v1) < MAX_ATTRS:
                v1[key] = value
            else:
                rest[key] = value
        return v1, rest

    def writer_extra(self) -> dict[str, Any]:
        """The writer's ``extra=``: `extra` plus the attributes v1 cannot hold."""
        _, rest = self.split_attrs()
        return {**self.extra, "attrs": rest} if rest else dict(self.extra)

    def meta(self) -> dict[str, Any]:
        """The v1 footer entry this variable adds (empty members left out)."""
        out: dict[str, Any] = {}
        v1, _ = self.split_attrs()
        texts = {k: v if isinstance(v, str) else _text_of(v) for k, v in v1.items()}
        if texts:
            out["attrs"] = texts
        if self.dim_names:
            out["dim_names"] = list(self.dim_names)
        if self.coords:
            out["coords"] = {k: {"labels": list(v)} for k, v in self.coords.items()}
        return out

    def ext(self) -> dict[str, Any]:
        """The typed-metadata entry (`metadata.tet.datasets[name]`) this variable adds."""
        out: dict[str, Any] = {}
        _, rest = self.split_attrs()
        typed = {k: encode_value(v, f"dataset {self.name!r}: attribute {k!r}")
                 for k, v in self.attrs.items() if not isinstance(v, str) or k in rest}
        if typed:
            out["attrs"] = typed
        for key, value in self.extra.items():
            if key == "encoding":
                value = {k: encode_value(v, f"{self.name} encoding {k!r}")
                         for k, v in value.items()}
            out[key] = value
        return out

    def drop_meta(self) -> None:
        """Leave out attributes, dim names and coords (the footer has no room); the
        `extra` fields stay, as reading the data back needs them."""
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


def block_boxes(shape: Sequence[int], unit: Sequence[int], itemsize: int,
                target: int) -> Iterator[tuple[slice, ...]]:
    """Boxes covering `shape` in row-major order, each a whole number of `unit`s
    (clipped at the edges): grown from the last axis outwards up to `target` bytes."""
    block = [int(u) for u in unit]
    for d in reversed(range(len(shape))):
        per = itemsize * math.prod(block)
        units = -(-int(shape[d]) // int(unit[d]))
        m = max(1, min(units, target // per))
        block[d] = min(int(unit[d]) * m, int(shape[d]))
        if m < units:
            break
    counts = [-(-int(n) // b) for n, b in zip(shape, block)]
    for idx in np.ndindex(*counts):
        yield tuple(slice(i * b, min((i + 1) * b, int(n)))
                    for i, b, n in zip(idx, block, shape))

# ---------------------------------------------------------------------------
# Strings for the footer


def _fits(text: str) -> bool:
    try:
        return 0 < len(text.encode("utf-8")) <= MAX_STRING
    except UnicodeEncodeError:
        return False


def truncate(text: str, limit: int = MAX_STRING) -> str:
    """Cut to at most `limit` UTF-8 bytes without splitting a character."""
    raw = text.encode("utf-8")
    return text if len(raw) <= limit else raw[:limit].decode("utf-8", errors="ignore")


def _text_of(value: Any) -> str | None:
    try:
        return display(value)
    except (TypeError, ValueError):  # ragged lists and the like: no v1 text
        return None


def _typable(value: Any) -> Any:
    """A non-finite Python float as np.float64 (JSON has no NaN; the typed form does)."""
    if type(value) is float and not math.isfinite(value):
        return np.float64(value)
    return value


def _typed_ok(where: str, key: str, value: Any) -> bool:
    """Whether the typed metadata can hold `value` (warns when not)."""
    try:
        validate_ext({"attrs": {key: encode_value(value, where)}})
    except (TypeError, CatalogError) as exc:
        warnings.warn(f"attribute `{key}` of {where} left out: {exc}", ConvertWarning,
                      stacklevel=3)
        return False
    return True


def typed_attrs(where: str, items: Iterable[tuple[str, Any]], *,
                moved: Iterable[str] = ()) -> dict[str, Any]:
    """Attributes in footer order: the preferred keys first, then the others in source
    order.  Values keep their type (the writer stores their v1 display text beside
    them); the keys in `moved` went to the encoding and appear as display text only,
    when that text lands among the 64 v1 keys.  Keys that are not 1..1024 bytes of
    UTF-8 and values the typed metadata cannot hold are left out (with a warning)."""
    moved_keys = set(moved)
    values: dict[str, Any] = {}
    for key, value in items:
        value = _typable(value)
        if not isinstance(key, str) or key in values:
            continue
        if not _fits(key):
            warnings.warn(f"attribute of {where} left out: its name is not 1..1024 bytes "
                          "of UTF-8", ConvertWarning, stacklevel=2)
            continue
        if key in moved_keys or _typed_ok(where, key, value):
            values[key] = value
    order = [k for k in PREFERRED_ATTRS if k in values]
    order += [k for k in values if k not in PREFERRED_ATTRS]
    out: dict[str, Any] = {}
    slots = typed = 0
    for key in order:
        text = _text_of(values[key])
        fits = text is not None and _fits(text) and slots < MAX_ATTRS
        if key in moved_keys:
            if fits:
                out[key] = text
                slots += 1
            continue
        if not (isinstance(values[key], str) and fits):
            if typed == MAX_EXT_ATTRS:
                warnings.warn(f"attribute `{key}` of {where} left out: more than "
                              f"{MAX_EXT_ATTRS} typed attributes", ConvertWarning, stacklevel=2)
                continue
            typed += 1
        slots += fits
        out[key] = values[key]
    return out


def file_attrs(where: str, items: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """File-level attributes the typed metadata can hold, in source order."""
    out: dict[str, Any] = {}
    for key, value in items:
        value = _typable(value)
        if len(out) == MAX_EXT_ATTRS:
            warnings.warn(f"attributes of {where} past the first {MAX_EXT_ATTRS} left out",
                          ConvertWarning, stacklevel=2)
            break
        if isinstance(key, str) and key not in out and _fits(key) and _typed_ok(where, key,
                                                                               value):
            out[key] = value
    return out


class Labels(list[str]):
    """Coordinate labels, and the NumPy dtype name of the numbers they spell (None for
    text): recorded as the footer's ``tet.coords`` type so readers parse them back as
    the source's values (a group's coordinate then aligns with its parent's)."""

    dtype: str | None = None


def labels_for(values: np.ndarray[Any, Any] | None, length: int) -> Labels | None:
    """Coordinate labels for an axis of `length`: only for 1..64 values matching the
    axis, each the value's display text cut to 1024 bytes."""
    if values is None or values.ndim != 1 or not 1 <= values.size <= MAX_LABELS:
        return None
    if values.size != length:
        return None
    out = Labels()
    for v in values:
        text = display(v)
        if text is None:
            return None
        out.append(truncate(text))
    if values.dtype.kind in "iuf":  # display text of a number reads back exactly
        out.dtype = values.dtype.name
    return out


def valid_dim_names(names: Sequence[Any] | None, ndim: int) -> list[str] | None:
    """Dimension names when there is one usable (non-empty, ≤ 1024 bytes) per axis."""
    if names is None or len(names) != ndim or ndim > LIMITS["dim_names"]:
        return None
    if not all(isinstance(n, str) and _fits(n) for n in names):
        return None
    return [str(n) for n in names]


# ---------------------------------------------------------------------------
# 0-d variables and text


def scalar_read(read: Callable[[Box], np.ndarray[Any, Any]]) -> Callable[[Box],
                                                                      np.ndarray[Any, Any]]:
    """Reads of a 0-d variable stored as shape (1,)."""
    def one(box: Box) -> np.ndarray[Any, Any]:
        return np.asarray(read(())).reshape(1)

    return one


def _utf8(value: Any) -> bytes:
    text = value if isinstance(value, str) else str(value)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from a bad source string
        return text.encode("utf-8", "replace")


def text_bytes(values: np.ndarray[Any, Any], kind: str) -> list[bytes]:
    """The encoded bytes of every element: UTF-8 for `str`, as stored for `bytes`."""
    out = []
    for v in np.asarray(values, dtype=object).reshape(-1):
        if isinstance(v, (bytes, np.bytes_)):
            raw = bytes(v) if kind == "bytes" else _utf8(bytes(v).decode("utf-8", "replace"))
        elif v is None:
            raw = b""
        else:
            raw = _utf8(v) if kind == "str" or isinstance(v, str) else _utf8(str(v))
        out.append(raw)
    return out


def text_width(values: np.ndarray[Any, Any], kind: str) -> int:
    """The widest element's encoded byte length (at least 1)."""
    return max((len(b) for b in text_bytes(values, kind)), default=0) or 1


def scan_width(read: Callable[[Box], np.ndarray[Any, Any]], shape: tuple[int, ...],
               chunks: Sequence[int] | None, kind: str) -> int:
    """The widest value's encoded byte length, read block by block (chunk-aligned
    blocks of at most 16 MiB of elements)."""
    if not shape:
        return text_width(np.asarray(read(())), kind)
    unit = chunks if chunks and len(chunks) == len(shape) else shape
    unit = tuple(min(int(c), int(n)) for c, n in zip(unit, shape))
    return max(text_width(np.asarray(read(box)), kind)
               for box in block_boxes(shape, unit, 64, 16 * 1024 * 1024))


def text_encoding(attrs: Mapping[str, Any], keep_packed: bool,
                  dtype: str) -> tuple[list[str], dict[str, Any]]:
    """(keys moved, encoding) of a text variable: its `missing_value` / `_FillValue`
    go to the encoding, never applied (no NaN in text); none with `keep_packed`."""
    moved = [] if keep_packed else [k for k in ("missing_value", "_FillValue") if k in attrs]
    encoding: dict[str, Any] = {k: attrs[k] for k in moved}
    if encoding:
        encoding["dtype"] = dtype
    return moved, encoding


def fixed_text(values: np.ndarray[Any, Any], width: int, kind: str,
               name: str) -> np.ndarray[Any, Any]:
    """`values` as NUL-padded bytes: u8 of shape ``values.shape + (width,)``."""
    raw = text_bytes(values, kind)
    if any(len(b) > width for b in raw):
        raise ConvertError(f"`{name}`: a text value is wider than the {width} bytes "
                           "measured (the source changed while converting?)")
    flat = np.frombuffer(np.array(raw, dtype=f"S{width}").tobytes(), dtype=np.uint8)
    return flat.reshape((*np.shape(values), width))


def text_var(name: str, shape: tuple[int, ...], read: Callable[[Box], np.ndarray[Any, Any]],
             *, kind: str, width: int, chunks: Sequence[int] | None, attrs: dict[str, Any],
             dim_names: list[str] | None, coords: dict[str, list[str]],
             extra: dict[str, Any] | None = None) -> SourceVar:
    """A text variable of logical `shape` (0-d allowed) stored as a u8 dataset whose
    last axis holds `width` bytes per value (`tet.text`); `read` returns the strings or
    bytes of a box of the logical shape."""
    logical = shape or (1,)
    stored = (*logical, width)

    def read_box(box: Box) -> np.ndarray[Any, Any]:
        lbox = box[:-1] if shape else ()
        values = np.asarray(read(lbox)).reshape(tuple(s.stop - s.start for s in box[:-1]))
        return fixed_text(values, width, kind, name)

    grid = chunk_grid(shape, chunks, width) if shape else (1,)
    entry: dict[str, Any] = dict(extra or {})
    entry["text"] = {"width": int(width), "kind": kind}
    if not shape:
        entry["shape"] = []
    names = [*dim_names, f"{name}_strlen"] if dim_names and shape else None
    return SourceVar(name=name, shape=stored, dtype=np.dtype("u1"), read=read_box,
                     chunks=(*grid, width) if grid else None, attrs=attrs, dim_names=names,
                     coords=coords, extra=entry)
