"""Layout v1's THST footer: the history rows and the metadata a file carries after its
payloads, parsed and validated on read (`parse_footer`), checked against the metadata
limits (`validate_metadata`, `validate_history`) and built on write (`encode_footer`).

Every offset and length read from the footer is checked against the file size before
it is used; a bad footer is a `CatalogError` whose message says what and where.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tet.attrs import EXT_KEY, validate_ext
from tet.errors import CatalogError, InvalidTextError
from tet.jsonlimits import MAX_DEPTH, json_depth, lone_surrogate
from tet.limits import LIMITS

__all__ = [
    "CHECKSUMS_KEY",
    "FOOTER_MAGIC",
    "FOOTER_TAIL_LEN",
    "WRITE_PREFIX",
    "encode_footer",
    "history_row",
    "load_json_region",
    "parse_footer",
    "validate_history",
    "validate_metadata",
]

FOOTER_MAGIC = b"THST"
FOOTER_TAIL_LEN = 16
WRITE_PREFIX = "invalid one-chunk write spec: "
CHECKSUMS_KEY = "tet_checksums_ref"  # footer key of the tile checksum table (tet/integrity.py)


# ---------------------------------------------------------------------------
# Reading


def parse_footer(
    buf: Any, file_len: int, flagged: bool
) -> tuple[list[dict[str, Any]], dict[str, Any], int | None, int, dict[str, tuple[int, int]]]:
    """(history, metadata, footer version, payload bound, out-of-line regions by key)
    per layout.md §5.4, for a file of `file_len` bytes whose superblock has the footer
    flag set (`flagged`) or not."""
    has_tail = file_len >= FOOTER_TAIL_LEN and bytes(buf[file_len - 4 : file_len]) == FOOTER_MAGIC
    json_len = version = 0
    if has_tail:
        json_len, version = struct.unpack_from("<QI", buf, file_len - FOOTER_TAIL_LEN)
        if version not in (1, 2):
            raise CatalogError(f"unsupported history footer version {version}")
        if json_len > file_len - FOOTER_TAIL_LEN:
            raise CatalogError(
                f"history footer out of bounds: json_len {json_len} + 16 exceeds file length "
                f"{file_len}"
            )
    if not flagged:
        return [], {}, None, file_len, {}
    if not has_tail:
        raise CatalogError("superblock history flag set but footer missing")
    json_at = file_len - FOOTER_TAIL_LEN - json_len
    doc = load_json_region(buf, json_at, json_len, "footer", LIMITS["footer_json_bytes"])
    if not isinstance(doc, dict):
        raise CatalogError(f"{WRITE_PREFIX}footer JSON parse: expected an object at {json_at}")
    bound = json_at
    refs = {k: v for k, v in doc.items() if k.endswith("_ref")}
    regions = {key: _parse_ref(key, ref, file_len) for key, ref in refs.items()}
    for start, _ in regions.values():  # payloads end before every out-of-line region
        bound = min(bound, start)
    history = _parse_history(doc.get("history", []))
    if "metadata_ref" in refs:
        start, length = _parse_ref("metadata_ref", refs["metadata_ref"], file_len)
        if length > LIMITS["metadata_blob_bytes"]:
            raise CatalogError(
                f"{WRITE_PREFIX}metadata blob of {length} bytes exceeds metadata_blob_bytes limit"
            )
        metadata = load_json_region(buf, start, length, "metadata_ref",
                                    LIMITS["metadata_blob_bytes"])
        validate_metadata(metadata)
    else:
        metadata = doc.get("metadata", {})
    _check_metadata_shape(metadata)
    return history, metadata, version, bound, regions


def load_json_region(buf: Any, at: int, length: int, what: str, limit: int) -> Any:
    """The JSON value of `length` bytes at `at` (a footer or a spilled metadata blob),
    refused before it is read when over `limit` bytes and before it is parsed when
    nested deeper than query documents may be (`MAX_DEPTH`): always a `CatalogError`,
    never a `RecursionError` or an unbounded read.  A string holding a lone surrogate
    (an unpaired ``"\\ud800"`` escape) is refused too (`InvalidTextError`), as the
    reference's reader refuses it: nothing downstream has to meet text UTF-8 cannot hold."""
    where = f" (footer at {at})" if what == "footer" else ""
    if length > limit:
        name = "footer_json_bytes" if what == "footer" else "metadata_blob_bytes"
        raise CatalogError(
            f"{WRITE_PREFIX}{what} JSON of {length} bytes exceeds {name} limit "
            f"({limit}){where}"
        )
    try:
        text = bytes(buf[at : at + length]).decode("utf-8")
        depth = json_depth(text)
        if depth > MAX_DEPTH:
            raise CatalogError(
                f"{WRITE_PREFIX}{what} JSON parse: nesting depth {depth} exceeds maximum "
                f"{MAX_DEPTH}{where}"
            )
        value = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CatalogError(f"{WRITE_PREFIX}{what} JSON parse: {exc}{where}") from None
    lone = lone_surrogate(text, value)
    if lone is not None:  # JSON allows "\ud800"; no UTF-8 text (and no reader) can hold it
        raise InvalidTextError(f"{WRITE_PREFIX}{what} JSON parse: lone surrogate escape in a "
                               f"string at {lone}{where}")
    return value


def _parse_ref(key: str, ref: Any, file_len: int) -> tuple[int, int]:
    if (
        not isinstance(ref, dict)
        or not isinstance(ref.get("offset"), int)
        or not isinstance(ref.get("len"), int)
        or ref["offset"] < 0
        or ref["len"] < 0
    ):
        raise CatalogError(f"{WRITE_PREFIX}{key} must be {{\"offset\": u64, \"len\": u64}}")
    start, length = ref["offset"], ref["len"]
    if start > file_len or length > file_len - start:
        raise CatalogError(
            f"{key.replace('_ref', '')}_ref out of bounds: [{start}, {start + length}) "
            f"in a file of {file_len} bytes"
        )
    return start, length


_ROW_KEYS = ("op", "source", "at", "parents", "params")


def _parse_history(rows: Any) -> list[dict[str, Any]]:
    if not isinstance(rows, list):
        raise CatalogError(f"{WRITE_PREFIX}footer history must be an array")
    out = []
    for i, row in enumerate(rows):
        if isinstance(row, list):
            if len(row) != 3 or not all(isinstance(v, str) for v in row):
                raise CatalogError(
                    f"{WRITE_PREFIX}history row {i}: legacy rows are [op, source, at]"
                )
            out.append({"op": row[0], "source": row[1], "at": row[2]})
            continue
        if not isinstance(row, dict):
            raise CatalogError(f"{WRITE_PREFIX}history row {i} must be an object")
        unknown = [k for k in row if k not in _ROW_KEYS]
        if unknown:
            raise CatalogError(f"{WRITE_PREFIX}history row {i}: unknown field `{unknown[0]}`")
        if not all(isinstance(row.get(k), str) for k in ("op", "source", "at")):
            raise CatalogError(f"{WRITE_PREFIX}history row {i}: op, source and at must be strings")
        parents, params = row.get("parents", []), row.get("params", {})
        if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
            raise CatalogError(f"{WRITE_PREFIX}history row {i}: parents must be strings")
        if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
            raise CatalogError(f"{WRITE_PREFIX}history row {i}: params must map strings")
        out.append(history_row(row["op"], row["source"], row["at"], parents, params))
    return out


def _check_metadata_shape(metadata: Any) -> None:
    """The types readers rely on (limits are `validate_metadata`'s and verify's job).
    Unknown keys are ignored, as the format asks."""

    def bad(what: str) -> CatalogError:
        return CatalogError(f"{WRITE_PREFIX}footer metadata: {what}")

    if not isinstance(metadata, dict):
        raise bad("must be an object")
    file_meta = metadata.get("file", {})
    if not isinstance(file_meta, dict):
        raise bad("`file` must be an object")
    datasets = metadata.get("datasets", {})
    if not isinstance(datasets, dict):
        raise bad("`datasets` must be an object keyed by dataset name")
    for name, entry in datasets.items():
        if not isinstance(entry, dict):
            raise bad(f"dataset {name!r} must be an object")
        attrs = entry.get("attrs", {})
        if not isinstance(attrs, dict) or not all(isinstance(v, str) for v in attrs.values()):
            raise bad(f"dataset {name!r}: attrs must map strings to strings")
        dims = entry.get("dim_names", [])
        if not isinstance(dims, list) or not all(isinstance(d, str) for d in dims):
            raise bad(f"dataset {name!r}: dim_names must be a list of strings")
        coords = entry.get("coords", {})
        if not isinstance(coords, dict):
            raise bad(f"dataset {name!r}: coords must be an object keyed by axis")
        for axis, coord in coords.items():
            labels = coord.get("labels", []) if isinstance(coord, dict) else None
            if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
                raise bad(f"dataset {name!r}: coords {axis!r} needs a list of string labels")
    if EXT_KEY in metadata:
        validate_ext(metadata[EXT_KEY])


def history_row(
    op: str,
    source: str,
    at: str,
    parents: Iterable[str] = (),
    params: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A history row with keys in wire order; empty parents/params are omitted."""
    row: dict[str, Any] = {"op": op, "source": source, "at": at}
    parents = list(parents)
    if parents:
        row["parents"] = parents
    if params:
        row["params"] = dict(sorted(params.items()))
    return row


# ---------------------------------------------------------------------------
# Metadata limits


def _check_string(s: Any, what: str) -> None:
    if not isinstance(s, str):
        raise CatalogError(f"{WRITE_PREFIX}metadata {what} must be a string, got {s!r}")
    try:
        n = len(s.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidTextError(f"{WRITE_PREFIX}metadata {what} {s!r} is not valid text: "
                               f"{exc.reason} (index {exc.start})") from None
    if n == 0:
        raise CatalogError(f"{WRITE_PREFIX}metadata {what} must be a non-empty string")
    if n > LIMITS["attr_string_bytes"]:
        raise CatalogError(
            f"{WRITE_PREFIX}metadata string exceeds attr_string_bytes limit "
            f"({what}: {n} > {LIMITS['attr_string_bytes']} bytes)"
        )


def _check_count(n: int, limit: str, what: str) -> None:
    if n > LIMITS[limit]:
        raise CatalogError(
            f"{WRITE_PREFIX}metadata {what} exceeds {limit} limit ({n} > {LIMITS[limit]})"
        )


def validate_metadata(metadata: Any) -> None:
    """Enforce MetadataLimitsV1 on a metadata object."""
    if not isinstance(metadata, dict):
        raise CatalogError(f"{WRITE_PREFIX}metadata must be an object")
    datasets = metadata.get("datasets", {})
    if not isinstance(datasets, dict):
        raise CatalogError(f"{WRITE_PREFIX}metadata datasets must be an object")
    _check_count(len(datasets), "metadata_datasets", "datasets")
    for name, entry in datasets.items():
        _check_string(name, "dataset name")
        if not isinstance(entry, dict):
            raise CatalogError(f"{WRITE_PREFIX}metadata for dataset {name!r} must be an object")
        attrs = entry.get("attrs", {})
        _check_count(len(attrs), "dataset_attrs", "attrs")
        for k, v in attrs.items():
            _check_string(k, "attr key")
            _check_string(v, f"attr {k!r} value")
        dims = entry.get("dim_names", [])
        _check_count(len(dims), "dim_names", "dim_names")
        for d in dims:
            _check_string(d, "dim name")
        coords = entry.get("coords", {})
        _check_count(len(coords), "coord_axes", "coord axes")
        for axis, coord in coords.items():
            _check_string(axis, "coord axis key")
            labels = coord.get("labels", []) if isinstance(coord, dict) else None
            if not isinstance(labels, list):
                raise CatalogError(f"{WRITE_PREFIX}metadata coords {axis!r} needs a labels list")
            _check_count(len(labels), "coord_labels_per_axis", "coord labels")
            for label in labels:
                _check_string(label, "coord label")
    if EXT_KEY in metadata:
        validate_ext(metadata[EXT_KEY])


def validate_history(history: Sequence[Mapping[str, Any]]) -> None:
    _check_count(len(history), "history_events", "history events")
    for row in history:
        for k in ("op", "source", "at"):
            _check_string(row[k], f"history {k}")
        _check_count(len(row.get("parents", ())), "history_parents", "history parents")
        for p in row.get("parents", ()):
            _check_string(p, "history parent")
        _check_count(len(row.get("params", {})), "history_params", "history params")
        for k, v in row.get("params", {}).items():
            _check_string(k, "history param key")
            _check_string(v, "history param value")



# ---------------------------------------------------------------------------
# Writing


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=False, ensure_ascii=False).encode()


def _sorted_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Maps with string keys sorted; empty members dropped (layout.md §5.1)."""

    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: walk(v[k]) for k in sorted(v) if not _empty(v[k])}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    def walk_ext(ext: dict[str, Any]) -> dict[str, Any]:
        """Typed values keep their empty lists and objects (``{"json": []}``)."""
        def entries(m: dict[str, Any]) -> dict[str, Any]:
            return {k: {f: (dict(sorted(e[f].items())) if isinstance(e[f], dict) and f in
                            ("attrs", "encoding") else e[f]) for f in sorted(e) if e[f] != {}}
                    for k, e in sorted(m.items()) if isinstance(e, dict)}
        out = {k: (dict(sorted(v.items())) if k == "attrs" else entries(v))
               for k, v in sorted(ext.items()) if isinstance(v, dict)}
        return {k: v for k, v in out.items() if v}

    def _empty(v: Any) -> bool:
        return isinstance(v, (dict, list)) and len(v) == 0

    out: dict[str, Any] = walk({k: v for k, v in metadata.items() if k != EXT_KEY})
    ext = metadata.get(EXT_KEY)
    if isinstance(ext, dict) and (kept := walk_ext(ext)):
        out[EXT_KEY] = kept
    return dict(sorted(out.items()))


def encode_footer(
    history: Sequence[Mapping[str, Any]], metadata: Mapping[str, Any], payload_end: int,
    checksums: bytes = b"",
) -> bytes:
    """Bytes to append at `payload_end`: the checksum table blob (`checksums`, from
    `tet.integrity.encode_table`, referenced as ``tet_checksums_ref``), the metadata
    spill when inlining would pass the footer limit, history JSON, tail.

    Empty bytes when there is neither history nor metadata nor a table (§5.3 step 5).
    """
    validate_history(history)
    meta = _sorted_metadata(metadata)
    validate_metadata(meta)
    rows = [dict(r) for r in history]
    if not rows and not meta and not checksums:
        return b""
    table = {CHECKSUMS_KEY: {"offset": payload_end, "len": len(checksums)}} if checksums else {}
    spill, text = footer_json(rows, meta, table, payload_end + len(checksums))
    return checksums + spill + text + struct.pack("<QI4s", len(text), 1, FOOTER_MAGIC)


def footer_json(rows: list[dict[str, Any]], meta: Mapping[str, Any], refs: Mapping[str, Any],
                spill_at: int) -> tuple[bytes, bytes]:
    """The footer JSON: history, metadata inline, then the out-of-line `refs`; when that
    passes the footer limit, the metadata becomes a spill (to be written at `spill_at`,
    named by ``metadata_ref``).  Returns (spill, JSON); `CatalogError` past the limits."""
    doc: dict[str, Any] = {"history": rows}
    if meta:
        doc["metadata"] = meta
    text = _compact({**doc, **refs})
    spill = b""
    if len(text) > LIMITS["footer_json_bytes"]:
        spill = _compact(meta)
        if len(spill) > LIMITS["metadata_blob_bytes"]:
            raise CatalogError(f"{WRITE_PREFIX}metadata exceeds metadata_blob_bytes limit")
        text = _compact({"history": rows, "metadata_ref": {"offset": spill_at, "len": len(spill)},
                         **refs})
        if len(text) > LIMITS["footer_json_bytes"]:
            raise CatalogError(
                f"{WRITE_PREFIX}footer JSON exceeds footer_json_bytes limit even without "
                f"inline metadata"
            )
    return spill, text
