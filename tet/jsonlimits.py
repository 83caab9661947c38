"""Limits on untrusted JSON text, checked before a parser sees it.

Python's ``json`` recurses once per nesting level, so hostile nesting must be
refused by measuring it first.  Query documents and file footers share the one
depth limit and the one measurement.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["MAX_DEPTH", "json_depth"]

MAX_DEPTH = 64

# A JSON string (escapes included); an unterminated one runs to the end of the text.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.S)
_OPEN = frozenset(b"[{")
_BRACKETS = re.compile(r"[^\[\]{}]+")


def json_depth(text: str) -> int:
    """Bracket depth of JSON text (a scalar 0, ``{}`` 1); brackets inside strings do not
    count.  Works on any text, valid JSON or not, in time linear in its length."""
    brackets = _BRACKETS.sub("", _STRING.sub("", text)).encode("ascii")
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where(np.isin(codes, list(_OPEN)), 1, -1)
    return max(0, int(np.cumsum(steps).max()))
