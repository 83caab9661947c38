"""Strings as fixed-width ``u8`` datasets: the format holds numbers only, so a text
array of shape S is stored as bytes of shape ``S + (width,)``, NUL-padded, and marked in
the footer's typed metadata as ``{"text": {"width": width, "kind": "str" | "bytes"}}``
(`tet.attrs`).  ``str`` holds UTF-8; ``bytes`` holds the raw bytes.  A value may not end
in NUL bytes (they are the padding), as with NumPy's own fixed-width strings.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["MAX_WIDTH", "decode_text", "encode_text", "text_entry"]

MAX_WIDTH = 1 << 20


def encode_text(values: Any) -> tuple[np.ndarray[Any, Any], dict[str, Any]]:
    """(u8 array of shape ``values.shape + (width,)``, its ``text`` entry) for an array of
    strings (``U``, ``S`` or object holding str/bytes).

    Raises
    ------
    TypeError
        Elements that are neither all str nor all bytes.
    ValueError
        A value over `MAX_WIDTH` bytes.
    """
    arr = np.asarray(values)
    flat = arr.reshape(-1)
    if arr.dtype.kind == "S":
        kind, raw = "bytes", [bytes(v) for v in flat]
    elif arr.dtype.kind == "U":
        kind, raw = "str", [str(v).encode("utf-8") for v in flat]
    elif arr.dtype.kind == "O" and all(isinstance(v, str) for v in flat):
        kind, raw = "str", [v.encode("utf-8") for v in flat]
    elif arr.dtype.kind == "O" and all(isinstance(v, bytes) for v in flat):
        kind, raw = "bytes", list(flat)
    else:
        raise TypeError(f"cannot store a {arr.dtype} array as text (strings or bytes only)")
    width = max((len(r) for r in raw), default=0) or 1
    if width > MAX_WIDTH:
        raise ValueError(f"a text value of {width} bytes exceeds {MAX_WIDTH}")
    out = np.frombuffer(np.array(raw, dtype=f"S{width}").tobytes(), dtype=np.uint8)
    return out.reshape((*arr.shape, width)), text_entry(width, kind)


def text_entry(width: int, kind: str) -> dict[str, Any]:
    return {"width": int(width), "kind": kind}


def decode_text(data: np.ndarray[Any, Any], kind: str) -> np.ndarray[Any, Any]:
    """The strings (``U``) or bytes (``S``) held in a u8 array whose last axis is the
    fixed width; a ``str`` value that is not UTF-8 has its bad bytes replaced."""
    data = np.ascontiguousarray(data, dtype=np.uint8)
    width = data.shape[-1] if data.ndim else 1
    fixed = data.reshape(-1).view(f"S{max(width, 1)}").reshape(data.shape[:-1])
    if kind == "bytes":
        return fixed
    try:
        return np.char.decode(fixed, "utf-8")
    except UnicodeDecodeError:
        flat = [bytes(v).decode("utf-8", "replace") for v in fixed.reshape(-1)]
        return np.asarray(flat, dtype=str).reshape(fixed.shape)
