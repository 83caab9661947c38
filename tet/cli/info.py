"""`tet info`: the catalog of a .tet file as a table, one line or JSON (cli.md §1)."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tet import dtypes
from tet.cli.common import Subparsers, add_command, print_json
from tet.file import TetFile
from tet.layout import FLAG_FOOTER, LAYOUT_VERSION

SECTIONS = ("layout", "execution", "datasets", "chunks", "history")
DEFAULT_CHUNK_ROWS = 32
_COORD_PREVIEW = 12
_META_INDENT = " " * 7


def register(sub: Subparsers) -> None:
    parser = add_command(
        sub, "info", help="print the catalog of a .tet file",
        description="Print the datasets, chunk index, file execution defaults and provenance "
                    "footer of a .tet file. With no section flag only the datasets are shown.")
    parser.add_argument("path", metavar="PATH", help="the .tet file")
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
class View:
    """The part of a catalog the filters keep; dataset ids are renumbered."""

    summary: dict[str, Any]
    filter: str | None
    empty_file: bool


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


def view(summary: dict[str, Any], dataset: str | None, grep: str | None) -> View:
    """Filter a layout summary: matching datasets, their chunks and their metadata."""
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
    out = dict(summary)
    if terms:
        renumber = {old: new for new, old in enumerate(kept)}
        out["datasets"] = [datasets[i] for i in kept]
        out["chunks"] = [dict(c, dataset_id=renumber[c["dataset_id"]])
                         for c in summary["chunks"] if c["dataset_id"] in renumber]
        metadata = dict(summary["metadata"])
        if "datasets" in metadata:
            names = {datasets[i]["name"] for i in kept}
            metadata["datasets"] = {k: v for k, v in meta_all.items() if k in names}
        out["metadata"] = metadata
    return View(out, " ".join(terms) or None, not datasets)


def run(args: argparse.Namespace) -> int:
    with TetFile(args.path) as f:
        cat = f.catalog
        v = view(f.summary(), args.dataset, args.grep)
    s = v.summary
    if args.json:
        print_json({"path": args.path, "file_len": cat.file_len, "filter": v.filter,
                    "summary": s})
    elif args.quiet:
        print(f"path={args.path} file_len={cat.file_len} layout={LAYOUT_VERSION} "
              f"datasets={len(s['datasets'])} chunks={len(s['chunks'])} "
              f"history={len(s['history'])}")
    else:
        chosen = [n for n in SECTIONS if args.all or getattr(args, n)] or ["datasets"]
        print("\n\n".join(render(args.path, cat.file_len, v, chosen, limit=args.limit,
                                 metadata=args.metadata)))
    return 0


def render(path: str, file_len: int, v: View, sections: Sequence[str], *, limit: int,
           metadata: bool) -> list[str]:
    """The text blocks of the chosen sections, header first (joined by blank lines)."""
    s = v.summary
    head = [f"file: {path}",
            f"size: {file_len} bytes  layout_version: {LAYOUT_VERSION}  "
            f"datasets: {len(s['datasets'])}  chunks: {len(s['chunks'])}"]
    if v.filter:
        head.append(f"filter: {v.filter}")
    blocks = ["\n".join(head)]
    for name in SECTIONS:
        if name in sections:
            blocks.extend(_SECTION[name](v, limit, metadata))
    return blocks


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
    return f"{x:.2f}".rstrip("0").rstrip(".")


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


def _row(i: Any, name: str, dtype: str, shape: str, chunk: str, n: Any) -> str:
    return f"  {i:>3}  {name:<20}  {dtype:<5}  {shape:<16}  {chunk:<12}  {n}"


def _datasets(v: View, limit: int, metadata: bool) -> list[str]:
    s = v.summary
    blocks = []
    file_meta = s["metadata"].get("file")
    if file_meta:
        blocks.append("\n".join(["file metadata:"] + [
            f"  {k}: {file_meta[k]}" for k in ("tool", "library_version", "created_at")
            if k in file_meta]))
    if not s["datasets"]:
        blocks.append("datasets: (empty file)" if v.empty_file
                      else "datasets: (no rows match filter)")
        return blocks
    counts = [0] * len(s["datasets"])
    for c in s["chunks"]:
        if 0 <= c["dataset_id"] < len(counts):  # a bad id is verify's finding, not a crash
            counts[c["dataset_id"]] += 1
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


def _chunks(v: View, limit: int, metadata: bool) -> list[str]:
    s = v.summary
    chunks = s["chunks"]
    if not chunks:
        return ["chunks: (none)"]
    shown = chunks if limit == 0 else chunks[:limit]
    lines = ["chunks:"]
    if len(shown) < len(chunks):
        lines.append(f"  (showing {len(shown)} of {len(chunks)}; use -n 0 for all)")
    lines.append(_chunk_row("#", "dataset", "coords", "raw", "stored", "codec", "offset"))
    for i, c in enumerate(shown):
        ds = s["datasets"][c["dataset_id"]] if c["dataset_id"] < len(s["datasets"]) else None
        ndim = len(ds["shape"]) if ds else len(c["chunk_index"])
        lines.append(_chunk_row(
            i, ds["name"] if ds else f"#{c['dataset_id']}",
            ",".join(str(x) for x in c["chunk_index"][:ndim]), c["raw_byte_len"],
            c["stored_byte_len"], _CODEC.get(c["codec"], "?"), c["payload_offset"]))
    return ["\n".join(lines)]


def _history(v: View, limit: int, metadata: bool) -> list[str]:
    rows = v.summary["history"]
    lines = ["history:"]
    if not rows:
        lines.append("  (none)")
    for i, row in enumerate(rows, 1):
        lines.append(f"  {i:>3}  {row['op']}  {row['source']}  at={row['at']}")
        if row.get("parents"):
            lines.append(f"{_META_INDENT}parents: " + ", ".join(row["parents"]))
        lines.extend(f"{_META_INDENT}{k}: {val}" for k, val in (row.get("params") or {}).items())
    return ["\n".join(lines)]


_SECTION = {"layout": _layout, "execution": _execution, "datasets": _datasets,
            "chunks": _chunks, "history": _history}
