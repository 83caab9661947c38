"""Limits on untrusted JSON text, checked before a parser sees it.

Python's ``json`` recurses once per nesting level, so hostile nesting must be
refused by measuring it first.  Query documents and file footers share the one
depth limit and the one measurement.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

__all__ = ["MAX_DEPTH", "json_depth", "lone_surrogate"]

MAX_DEPTH = 64

# A JSON string (escapes included); an unterminated one runs to the end of the text.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.S)
_OPEN = frozenset(b"[{")
_BRACKETS = re.compile(r"[^\[\]{}]+")
# A \uD800-\uDFFF escape: the only way JSON text that is valid UTF-8 yields a surrogate.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def json_depth(text: str) -> int:
    """Bracket depth of JSON text (a scalar 0, ``{}`` 1); brackets inside strings do not
    count.  Works on any text, valid JSON or not, in time linear in its length."""
    brackets = _BRACKETS.sub("", _STRING.sub("", text)).encode("ascii")
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where(np.isin(codes, list(_OPEN)), 1, -1)
    return max(0, int(np.cumsum(steps).max()))


def lone_surrogate(text: str, value: Any) -> str | None:
    """Where `value` (parsed from the JSON `text`) holds a string with a lone surrogate
    (``"\\ud800"`` unpaired: JSON's grammar allows it, UTF-8 cannot store it), as
    ``<path>: <escape>`` with the path of keys and indices leading to it; None when
    every string is valid text.  `text` decides cheaply: without a surrogate escape
    in it, no string can hold one (a pair of escapes becomes one code point)."""
    if not _SURROGATE_ESCAPE.search(text):
        return None
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:  # depth is bounded by the caller (MAX_DEPTH), breadth by the text
        where, item = stack.pop()
        if isinstance(item, str):
            found = _SURROGATE.search(item)
            if found:
                return f"{where or '(top)'}: \\u{ord(found[0]):04x}"
        elif isinstance(item, dict):
            for key, member in reversed(list(item.items())):
                found = _SURROGATE.search(key)
                if found:
                    return f"{where}/{ascii(key)[1:-1]} (a key): \\u{ord(found[0]):04x}"
                stack.append((f"{where}/{key}", member))
        elif isinstance(item, list):
            stack.extend((f"{where}/{i}", member) for i, member in reversed(list(
                enumerate(item))))
    return None
