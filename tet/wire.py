"""JSON values as the query engine's wire sees and names them: which numbers are
integers, how a float is printed (in messages, in echoed documents, in CLI output),
how a string is quoted and how a value it did not expect is described.

Selections, documents, the engine and the CLI formats all read these, so an error
text or a printed number is spelled one way everywhere.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

__all__ = [
    "I64_MIN",
    "U64_END",
    "FloatStyle",
    "format_float",
    "is_axis_index",
    "is_json_int",
    "json_float",
    "quote",
    "unexpected",
]

# The wire grammar is parsed by a typed JSON reader, so type errors read
# ``invalid type: <what it got>, expected <what it wanted>``.  Integers outside
# [-2**63, 2**64) are floats to that reader (JSON has one number type), NumPy
# scalars are the numbers they hold, and floats are printed in its shortest form.

I64_MIN = -(2**63)
U64_END = 2**64


def is_axis_index(token: str) -> bool:
    """An axis token written as a decimal index (not a dimension name): ASCII digits only,
    as ``int`` would also take "²" or "٣" and then fail."""
    return token.isascii() and token.isdigit()


def is_json_int(value: Any) -> bool:
    """An integer the JSON layer keeps as one: int or NumPy integer in [-2**63, 2**64)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        return False
    return I64_MIN <= int(value) < U64_END


def json_float(value: Any) -> float | None:
    """A non-integer JSON number as f64 (floats, NumPy floats, out-of-range integers)."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, (int, np.integer)) and not is_json_int(value):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    return None


FloatStyle = Literal["debug", "display", "fixed"]
"""How `format_float` prints a finite value:

``debug``
    the engine's messages (Rust ``{:?}``): shortest round-trip digits, positional for
    1e-5 <= |x| < 1e16 and always with a ``.`` (``2.0``), else ``1.5e+16`` / ``1e-7``;
``display``
    echoed numbers and footer text (Rust ``Display``): shortest round-trip digits of
    the value's own width (an f32 prints its f32 digits), positional, no exponent, no
    trailing ``.0`` (``-9999``);
``fixed``
    CLI tables and quiet lines: `places` decimals, trailing zeros and dot trimmed
    (``2.916667``, ``21``).
"""


def format_float(x: float | np.floating[Any], style: FloatStyle = "debug", *,
                 places: int = 6) -> str:
    """A float as the wire's texts print it, in `style` (`FloatStyle`); NaN and the
    infinities are ``NaN``, ``inf`` and ``-inf`` in every style."""
    v = float(x)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if style == "display":
        return np.format_float_positional(x, unique=True, trim="-")
    if style == "fixed":
        s = f"{v:.{places}f}"
        return s.rstrip("0").rstrip(".") if "." in s else s
    return _debug(v)


def _debug(x: float) -> str:
    sign = "-" if math.copysign(1.0, x) < 0 else ""
    if x == 0:
        return sign + "0.0"
    mantissa, _, exp = repr(abs(x)).partition("e")
    whole, _, frac = mantissa.partition(".")
    raw = whole + frac
    digits = raw.lstrip("0")
    point = len(whole) + int(exp or 0) - (len(raw) - len(digits))  # digits before the point
    digits = digits.rstrip("0")
    n = len(digits)
    if n <= point <= 16:
        text = digits + "0" * (point - n) + ".0"
    elif 0 < point <= 16:
        text = digits[:point] + "." + digits[point:]
    elif -5 < point <= 0:
        text = "0." + "0" * -point + digits
    else:
        e = point - 1
        text = digits[0] + ("." + digits[1:] if n > 1 else "") + ("e+" if e >= 0 else "e-")
        text += str(abs(e))
    return sign + text


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"}


def quote(text: str) -> str:
    """A string quoted the way the engine's messages quote it (Rust ``{:?}``)."""
    out = ['"']
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif not ch.isprintable() or unicodedata.category(ch) in ("Mn", "Me"):
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def unexpected(value: Any) -> str:
    """What a type error says it got: ``string "1"``, ``integer `1` ``, ``map``, …"""
    if value is None:
        return "null"
    if isinstance(value, (bool, np.bool_)):
        return f"boolean `{'true' if value else 'false'}`"
    if is_json_int(value):
        return f"integer `{int(value)}`"
    number = json_float(value)
    if number is not None:
        return f"floating point `{format_float(number)}`"
    if isinstance(value, str):
        return f"string {quote(value)}"
    if isinstance(value, Mapping):
        return "map"
    if isinstance(value, (list, tuple)):
        return "sequence"
    return f"Python object of type `{type(value).__name__}`"
