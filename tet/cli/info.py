"""`tet info`: the catalog of a .tet file as a table, one line or JSON (cli.md §1)."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import textwrap
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tet import dtypes
from tet.cli.common import Subparsers, add_command, refuse_foreign
from tet.cli.targets import add_storage_option, open_target, shown_target, storage_options
from tet.layout import ENTRY_DTYPE, FLAG_FOOTER, LAYOUT_VERSION, ROW_BLOCK, Catalog, chunk_rows
from tet.wire import format_float

SECTIONS = ("layout", "execution", "datasets", "chunks", "history")
DEFAULT_CHUNK_ROWS = 32
_COORD_PREVIEW = 12
_META_INDENT = " " * 7


def register(sub: Subparsers) -> None:
    parser = add_command(
        sub, "info", help="print the catalog of a .tet file",
        description="Print the datasets, chunk index, file execution defaults and provenance "
                    "footer of a .tet file. With no section flag only the datasets are shown.")
    parser.add_argument("path", metavar="PATH", help="the .tet file (a path or a URL)")
    add_storage_option(parser)
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true",
                      help="pretty JSON {path, file_len, filter, summary} (the layout summary, "
                           "filtered)")
    form.add_argument("-q", "--quiet", action="store_true",
                      help="one line: path, file_len, layout, datasets, chunks, history")
    parser.add_argument("--all", action="store_true",
                        help="every section: layout, execution, datasets, chunks, history")
    for name, text in (("layout", "the superblock fields"),
                       ("execution", "the file's default memory budget"),
                       ("datasets", "the dataset table (the default section)"),
                       ("chunks", "the chunk index table (see -n)"),
                       ("history", "the provenance footer rows (not `tet qhist`)")):
        parser.add_argument(f"--{name}", action="store_true", help=f"show {text}")
    parser.add_argument("--metadata", action="store_true",
                        help="under each dataset, preview coordinate labels (first 12 per axis)")
    parser.add_argument("-n", "--limit", type=_limit, default=DEFAULT_CHUNK_ROWS, metavar="N",
                        help="at most N chunk rows with --chunks/--all (default 32, 0 = all)")
    parser.add_argument("--dataset", metavar="S",
                        help="keep datasets whose name contains S (case-insensitive)")
    parser.add_argument("--grep", metavar="S",
                        help="keep datasets where S (case-insensitive) occurs in the name, dtype, "
                             "dim names, attribute keys or values, or coordinate names or labels")
    parser.set_defaults(run=run)


def _limit(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


@dataclass(frozen=True)
class Rows:
    """The chunk index rows a view keeps, read a block at a time (a file can have
    millions): with the filters, the rows of the kept datasets with their ids renumbered;
    without, every row as it is."""

    entries: np.ndarray[Any, Any]
    renumber: np.ndarray[Any, Any] | None  # new id per old dataset id, -1 when dropped
    counts: list[int]  # rows per dataset of the view
    total: int

    def blocks(self, limit: int = 0) -> Iterator[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]]:
        """``(rows, dataset ids)`` in index order, at most `limit` rows in all (0 = all)."""
        left = limit or self.total
        for lo in range(0, len(self.entries), ROW_BLOCK):
            if left <= 0:
                return
            block = self.entries[lo:lo + ROW_BLOCK]
            ids = block["dataset_id"]
            if self.renumber is not None:
                new = np.full(len(ids), -1, np.int64)
                known = ids < len(self.renumber)
                new[known] = self.renumber[ids[known]]
                keep = new >= 0
                block, ids = block[keep], new[keep]
            block, ids = block[:left], ids[:left]
            left -= len(block)
            if len(block):
                yield block, ids


@dataclass(frozen=True)
class View:
    """The part of a catalog the filters keep; dataset ids are renumbered.  The
    summary's ``chunks`` list is left empty: the rows are `rows`."""

    summary: dict[str, Any]
    filter: str | None
    empty_file: bool
    rows: Rows


def dtype_label(tag: int) -> str:
    return dtypes.by_tag(tag).name if dtypes.is_known_tag(tag) else "?"


def _haystack(ds: Mapping[str, Any], meta: Mapping[str, Any]) -> Iterable[str]:
    yield ds["name"]
    yield dtype_label(ds["dtype"])
    yield from meta.get("dim_names") or ()
    for key, value in (meta.get("attrs") or {}).items():
        yield key
        yield str(value)
    for axis, coord in (meta.get("coords") or {}).items():
        yield axis
        if isinstance(coord, Mapping):
            yield from (str(label) for label in coord.get("labels") or ())


def view(catalog: Catalog, dataset: str | None, grep: str | None) -> View:
    """Filter a catalog's summary: matching datasets, their chunks and their metadata."""
    summary = catalog.summary(rows=False)
    datasets = summary["datasets"]
    meta_all = summary["metadata"].get("datasets") or {}
    kept: list[int] = []
    for i, ds in enumerate(datasets):
        meta = meta_all.get(ds["name"]) or {}
        if dataset is not None and dataset.lower() not in ds["name"].lower():
            continue
        if grep is not None and not any(grep.lower() in s.lower() for s in _haystack(ds, meta)):
            continue
        kept.append(i)
    terms = [f"{k}~{v}" for k, v in (("dataset", dataset), ("grep", grep)) if v is not None]
    counts = _row_counts(catalog.entries, len(datasets))
    rows = Rows(catalog.entries, None, counts, len(catalog.entries))
    out = dict(summary)
    if terms:
        renumber = np.full(len(datasets), -1, np.int64)
        renumber[kept] = np.arange(len(kept))
        kept_counts = [counts[i] for i in kept]
        rows = Rows(catalog.entries, renumber, kept_counts, sum(kept_counts))
        out["datasets"] = [datasets[i] for i in kept]
        metadata = dict(summary["metadata"])
        if "datasets" in metadata:
            names = {datasets[i]["name"] for i in kept}
            metadata["datasets"] = {k: v for k, v in meta_all.items() if k in names}
        out["metadata"] = metadata
    return View(out, " ".join(terms) or None, not datasets, rows)


def _row_counts(entries: np.ndarray[Any, Any], n: int) -> list[int]:
    """Index rows per dataset id below `n` (a bad id is verify's finding, not a crash)."""
    counts = np.zeros(n, np.int64)
    for lo in range(0, len(entries), 16 * ROW_BLOCK):
        ids = entries["dataset_id"][lo:lo + 16 * ROW_BLOCK]
        counts += np.bincount(ids[ids < n].astype(np.intp), minlength=n)[:n]
    return [int(c) for c in counts]


def run(args: argparse.Namespace) -> int:
    refuse_foreign(args.path)
    with open_target(args.path, storage_options(args)) as f:
        args.path = shown_target(args.path)
        cat = f.catalog
        v = view(cat, args.dataset, args.grep)
        out = sys.stdout
        if args.json:
            out.writelines(json_text(args.path, cat.file_len, v))
        elif args.quiet:
            out.write(f"path={args.path} file_len={cat.file_len} layout={LAYOUT_VERSION} "
                      f"datasets={len(v.summary['datasets'])} chunks={v.rows.total} "
                      f"history={len(v.summary['history'])}\n")
        else:
            chosen = [n for n in SECTIONS if args.all or getattr(args, n)] or ["datasets"]
            out.writelines(render(args.path, cat.file_len, v, chosen, limit=args.limit,
                                  metadata=args.metadata))
    return 0


# The JSON text of one summary chunk row, indented as `json.dumps(..., indent=2)` puts it
# inside {"summary": {"chunks": [...]}}; its `%d` slots take the row's values in key order.
_ROW = chunk_rows(np.zeros(1, ENTRY_DTYPE))[0]
_ROW_JSON = textwrap.indent(json.dumps(
    {k: ["%d"] * len(v) if isinstance(v, list) else "%d" for k, v in _ROW.items()}, indent=2),
    " " * 6).replace('"%d"', "%d")
_ROW_TUPLE = np.dtype([(f"v{i}", "<u8") for i in range(_ROW_JSON.count("%d"))])
_CHUNKS_AT = '\n    "chunks": []'  # the summary's key: no JSON string holds a raw newline


def json_text(path: str, file_len: int, v: View) -> Iterator[str]:
    """``tet info --json`` a piece at a time: the bytes `json.dumps` of the whole
    document with a 2-space indent gives, with the chunk rows written a block at a time."""
    text = json.dumps({"path": path, "file_len": file_len, "filter": v.filter,
                       "summary": v.summary}, indent=2, ensure_ascii=False) + "\n"
    at = text.index(_CHUNKS_AT) + len(_CHUNKS_AT) - 2
    yield text[:at]
    sep = "[\n"
    for block, ids in v.rows.blocks():
        columns = [ids if k == "dataset_id" else block[k] for k in _ROW]
        values = np.column_stack([np.asarray(c, np.uint64) for c in columns])
        rows = values.view(_ROW_TUPLE).ravel().tolist()  # one tuple per row
        yield sep + ",\n".join([_ROW_JSON % r for r in rows])
        sep = ",\n"
    yield text[at:] if sep == "[\n" else "\n    ]" + text[at + 2:]


def render(path: str, file_len: int, v: View, sections: Sequence[str], *, limit: int,
           metadata: bool) -> Iterator[str]:
    """The text of the chosen sections a piece at a time: the header, then the sections
    separated by blank lines, then a newline (the chunk table is built as it is written)."""
    s = v.summary
    head = [f"file: {path}",
            f"size: {file_len} bytes  layout_version: {LAYOUT_VERSION}  "
            f"datasets: {len(s['datasets'])}  chunks: {v.rows.total}"]
    if v.filter:
        head.append(f"filter: {v.filter}")
    yield "\n".join(head)
    for name in SECTIONS:
        if name in sections:
            for block in _SECTION[name](v, limit, metadata):
                yield "\n\n"
                yield from [block] if isinstance(block, str) else block
    yield "\n"


def _layout(v: View, limit: int, metadata: bool) -> list[str]:
    sb = v.summary["superblock"]
    footer = "true" if sb["flags"] & FLAG_FOOTER else "false"
    return ["\n".join([
        "layout:",
        f"  layout_version:    {sb['layout_version']}",
        f"  dataset_count:     {sb['dataset_count']}",
        f"  flags:             {sb['flags']} (history_footer={footer})",
        f"  chunk_index_offset: {sb['chunk_index_offset']}",
        f"  chunk_index_length: {sb['chunk_index_length']}",
    ])]


def _number(x: float) -> str:
    return format_float(x, "fixed", places=2)


def _execution(v: View, limit: int, metadata: bool) -> list[str]:
    ex = v.summary["file_execution"]
    lines = ["execution (file defaults):"]
    if ex["memory_budget_percent_bps"]:
        lines.append(f"  memory_budget_percent: {_number(ex['memory_budget_percent_bps'] / 100)}")
    if ex["memory_budget_bytes"]:
        lines.append(f"  memory_budget_bytes: {ex['memory_budget_bytes']}")
    if len(lines) == 1:
        lines.append("  (engine defaults — 25% host RAM when unset in query JSON)")
    return ["\n".join(lines)]


def _shape(dims: Sequence[int]) -> str:
    return "×".join(str(d) for d in dims)


def _clip(name: str, width: int) -> str:
    """At most `width` characters, the last one `…` when cut (the table stays aligned)."""
    return name if len(name) <= width else name[:width - 1] + "…"


def utc_time(value: Any) -> str:
    """A stored time (Unix seconds, as the writers record it) as UTC ISO 8601
    (``2023-11-14T22:13:20Z``); anything else (a tool's own text) as it is."""
    text = str(value)
    try:
        seconds = int(text) if text.lstrip("-").isdigit() else None
        if seconds is None:
            return text
        when = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return text
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _row(i: Any, name: str, dtype: str, shape: str, chunk: str, n: Any) -> str:
    return f"  {i:>3}  {name:<20}  {dtype:<5}  {shape:<16}  {chunk:<12}  {n}"


def _datasets(v: View, limit: int, metadata: bool) -> list[str]:
    s = v.summary
    blocks = []
    file_meta = s["metadata"].get("file")
    if file_meta:
        blocks.append("\n".join(["file metadata:"] + [
            f"  {k}: {utc_time(file_meta[k]) if k == 'created_at' else file_meta[k]}"
            for k in ("tool", "library_version", "created_at") if k in file_meta]))
    if not s["datasets"]:
        blocks.append("datasets: (empty file)" if v.empty_file
                      else "datasets: (no rows match filter)")
        return blocks
    counts = v.rows.counts
    meta_all = s["metadata"].get("datasets") or {}
    lines = ["datasets:", _row("id", "name", "dtype", "shape", "chunk_shape", "chunks")]
    for i, ds in enumerate(s["datasets"]):
        lines.append(_row(i, _clip(ds["name"], 20), dtype_label(ds["dtype"]),
                          _shape(ds["shape"]), _shape(ds["chunk_shape"]), counts[i]))
        lines.extend(_META_INDENT + line
                     for line in _dataset_meta(meta_all.get(ds["name"]) or {}, metadata))
    blocks.append("\n".join(lines))
    return blocks


def _dataset_meta(meta: Mapping[str, Any], verbose: bool) -> list[str]:
    lines = []
    if meta.get("dim_names"):
        lines.append("dim_names: " + ", ".join(meta["dim_names"]))
    coords = {k: list(c.get("labels") or ()) for k, c in sorted((meta.get("coords") or {}).items())
              if isinstance(c, Mapping)}
    if coords and verbose:
        for axis, labels in coords.items():
            shown = ", ".join(str(x) for x in labels[:_COORD_PREVIEW])
            more = len(labels) - _COORD_PREVIEW
            lines.append(f"{axis}: {shown}" + (f" … (+{more} more)" if more > 0 else ""))
    elif coords:
        lines.append("coords: " + ", ".join(f"{k}({len(v)} labels)" for k, v in coords.items()))
    lines.extend(f"{k}: {v}" for k, v in (meta.get("attrs") or {}).items())
    return lines


_CODEC = {0: "raw", 1: "zstd"}


def _chunk_row(i: Any, name: str, coords: str, raw: Any, stored: Any, codec: str,
               offset: Any) -> str:
    return f"  {i:>4}  {name:<12}  {coords:<8}  {raw:>10}  {stored:>10}  {codec:>5}  {offset}"


def _chunks(v: View, limit: int, metadata: bool) -> list[str | Iterator[str]]:
    if not v.rows.total:
        return ["chunks: (none)"]
    return [_chunk_lines(v, limit)]


def _chunk_lines(v: View, limit: int) -> Iterator[str]:
    """The chunk table a block of rows at a time: only the rows shown are built."""
    yield "chunks:"
    total = v.rows.total
    if 0 < limit < total:
        yield f"\n  (showing {limit} of {total}; use -n 0 for all)"
    yield "\n" + _chunk_row("#", "dataset", "coords", "raw", "stored", "codec", "offset")
    datasets = v.summary["datasets"]
    names = [ds["name"] for ds in datasets]
    ranks = [len(ds["shape"]) for ds in datasets]
    i = 0
    for block, ids in v.rows.blocks(limit):
        lines = []
        for d, c, raw, stored, codec, offset in zip(
                ids.tolist(), block["chunk_index"].tolist(), block["raw_byte_len"].tolist(),
                block["stored_byte_len"].tolist(), block["codec"].tolist(),
                block["payload_offset"].tolist()):
            known = d < len(names)
            lines.append(_chunk_row(
                i, names[d] if known else f"#{d}",
                ",".join(map(str, c[:ranks[d]] if known else c)), raw, stored,
                _CODEC.get(codec, "?"), offset))
            i += 1
        yield "".join("\n" + line for line in lines)


def _history(v: View, limit: int, metadata: bool) -> list[str]:
    rows = v.summary["history"]
    lines = ["history:"]
    if not rows:
        lines.append("  (none)")
    for i, row in enumerate(rows, 1):
        lines.append(f"  {i:>3}  {row['op']}  {row['source']}  at={utc_time(row['at'])}")
        if row.get("parents"):
            lines.append(f"{_META_INDENT}parents: " + ", ".join(row["parents"]))
        lines.extend(f"{_META_INDENT}{k}: {val}" for k, val in (row.get("params") or {}).items())
    return ["\n".join(lines)]


_SECTION: dict[str, Callable[[View, int, bool], Sequence[str | Iterator[str]]]] = {
    "layout": _layout, "execution": _execution, "datasets": _datasets, "chunks": _chunks,
    "history": _history}
