"""Query text: JSON or TOML -> the JSON value model a document is validated from, and
the limits that apply before any document rule (size of the text, nesting depth)."""

from __future__ import annotations

import datetime as _dt
import json
import math
import tomllib
from collections.abc import Mapping
from typing import Any

from tet.errors import QueryError
from tet.errors import validation as _v
from tet.jsonlimits import MAX_DEPTH, json_depth
from tet.wire import format_float

__all__ = ["JSON_SYNTAX", "MAX_TEXT", "load_text", "text_bytes", "value_depth"]

JSON_SYNTAX = "invalid query JSON: "  # the Python API rewords it (python-api.md §2)
MAX_TEXT = 1_048_576


def text_bytes(text: str) -> int:
    """UTF-8 length; lone surrogates (JSON allows ``"\\ud800"``) count, never raise."""
    return len(text.encode("utf-8", "surrogatepass"))


def load_text(text: str, *, filename: str | None = None) -> Any:
    """The JSON-model value of JSON or TOML text, not yet validated as a document.

    The extension (``.json`` / ``.toml``) decides the format; otherwise text starting
    with ``{`` (after whitespace) is JSON and anything else TOML.

    Raises
    ------
    QueryError
        ``invalid query JSON: …`` / ``invalid query TOML: …`` for malformed text, or a
        ``validation: …`` rule (size, depth, every document rule).
    """
    size = text_bytes(text)
    if size > MAX_TEXT:
        raise _v(f"query document exceeds maximum size ({size} bytes, limit {MAX_TEXT})")
    suffix = filename.lower().rsplit(".", 1)[-1] if filename and "." in filename else ""
    if suffix == "json" or (suffix != "toml" and text.lstrip().startswith("{")):
        value = _load_json(text)  # unstripped, so error positions count from the user's text
    else:
        try:
            value = _from_toml(tomllib.loads(text.strip()))
        except (ValueError, RecursionError) as exc:
            raise QueryError(f"invalid query TOML: {exc}") from None
    return value


def _load_json(text: str) -> Any:
    if text.count("[") + text.count("{") > MAX_DEPTH:
        depth = json_depth(text)  # refuse hostile nesting before the parser recurses
        if depth > MAX_DEPTH:
            raise _v(f"query document nesting depth {depth} exceeds maximum {MAX_DEPTH}")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise QueryError(f"{JSON_SYNTAX}{exc}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"invalid number `{name}`")  # NaN / Infinity are not JSON


def _from_toml(value: Any) -> Any:
    """TOML value tree -> JSON value model (datetimes as RFC 3339 strings).

    JSON has no NaN or infinity, so the engine turns TOML ``nan``/``inf``/``-inf`` into
    the strings ``"NaN"``/``"inf"``/``"-inf"``; a number key then refuses them with its
    own "must be a number" rule, never reading them as absent.
    """
    if isinstance(value, dict):
        return {k: _from_toml(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_toml(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return format_float(value)
    if isinstance(value, _dt.datetime):
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    if isinstance(value, (_dt.date, _dt.time)):
        return value.isoformat()
    return value


def value_depth(root: Any) -> int:
    """Nesting depth (scalar 0, ``{}`` 1) without recursion; shared parts counted once."""
    if not (isinstance(root, (Mapping, list, tuple))):
        return 0
    done: dict[int, int] = {}
    on_path = {id(root)}
    frames: list[list[Any]] = [[root, iter(_children(root)), 0]]
    while frames:
        frame = frames[-1]
        for child in frame[1]:
            if not (isinstance(child, (Mapping, list, tuple))):
                continue
            if id(child) in done:
                frame[2] = max(frame[2], done[id(child)])
                continue
            if id(child) in on_path:
                raise _v("query document contains a reference cycle")
            on_path.add(id(child))
            frames.append([child, iter(_children(child)), 0])
            break
        else:
            frames.pop()
            depth: int = frame[2] + 1
            done[id(frame[0])] = depth
            on_path.discard(id(frame[0]))
            if not frames:
                return depth
            frames[-1][2] = max(frames[-1][2], depth)
    raise AssertionError("unreachable")


def _children(v: Any) -> Any:
    return v.values() if isinstance(v, Mapping) else v
