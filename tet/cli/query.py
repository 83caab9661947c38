"""`tet query` (alias `q`): parse, plan or execute, print in one of six formats, record
history (cli.md §4)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tet.cli import formats
from tet.cli.common import CommandFailed, Subparsers, add_command, refuse_foreign
from tet.cli.progress import busy
from tet.cli.targets import (
    add_storage_option,
    open_target,
    option_keys,
    shown_target,
    storage_options,
)
from tet.errors import TetError
from tet.query import response as resp
from tet.query.document import load_text, parse_device, parse_value

__all__ = ["FORMATS", "VALIDATED", "add_output_flags", "load_query", "output_format",
           "preview_limit", "register", "run", "run_query", "unrecognized"]

FORMATS = formats.FORMATS
PREVIEW_DEFAULT = 64  # `full` / `json`; every other format previews nothing unless asked
VALIDATED = ("query accepted and validated; pass `--tet PATH` for catalog + read_plan, or add "
             "`--execute` with `--tet` for a capped raw f32 mmap preview")

_DESCRIPTION = """\
Validate a query document (JSON or TOML: a file, inline text, or stdin), plan it against a
.tet file with -t, and execute it with -x. The document names one dataset and at most one
operation (sum, mean, quantile, histogram, transform, ...); see tet-ops(7)."""


def register(sub: Subparsers) -> None:
    parser = add_command(sub, "query", aliases=("q",),
                         help="validate, plan or execute a query document",
                         description=_DESCRIPTION)
    parser.add_argument(
        "query", nargs="?", metavar="QUERY",
        help="a .json/.toml file, inline JSON or TOML text, or - for stdin (default: stdin)")
    parser.add_argument("-t", "--tet", metavar="PATH",
                        help="the .tet file (a path or a URL): adds its catalog entry and "
                             "the read plan")
    parser.add_argument("-x", "--execute", action="store_true",
                        help="execute the query against the file (requires -t)")
    parser.add_argument("--device", metavar="D",
                        help="device token (cpu, auto, metal, cuda[:N|:multi], rocm[:N|:multi]); "
                             "overrides execution.device (requires -x)")
    parser.add_argument("--mask-fill", dest="mask_fill", action="store_true",
                        help="read the dataset's _FillValue / missing_value values as missing "
                             "(NaN) in operations, previews and spills: sets "
                             "execution.mask_fill (a tet extension of the query format)")
    add_output_flags(parser)
    parser.set_defaults(run=run, parser=parser, unrecognized=unrecognized)


def _preview_count(text: str) -> int:
    """`--preview N`: a non-negative integer (anything else is a usage error)."""
    try:
        n = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {n}")
    return n


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    """`--format F | -q`, `--preview N` (`--preview-f32`), `--spill-allow DIR` and
    `--max-chunks N`: shared by `tet query` and `tet qhist run`."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--format", choices=FORMATS, default=None, metavar="F",
                       help="stdout format: full (default; pretty JSON), json (one line), "
                            "stats, plan, quiet (one key=value line) or table")
    group.add_argument("-q", "--quiet", action="store_true",
                       help="same as --format quiet")
    parser.add_argument("--preview", "--preview-f32", dest="preview", type=_preview_count,
                        default=None, metavar="N",
                        help="preview at most N values when executing (default 64 for "
                             "full/json, 0 otherwise; requires -x)")
    parser.add_argument("--spill-allow", dest="spill_allow", action="append", default=None,
                        metavar="DIR",
                        help="also allow spill/sidecar outputs under DIR (repeatable; "
                             "requires -x and -t)")
    parser.add_argument("--max-chunks", dest="max_chunks", type=_preview_count,
                        default=resp.MAX_CHUNKS, metavar="N",
                        help=f"list at most N touched chunks in read_plan.chunks (default "
                             f"{resp.MAX_CHUNKS}); a longer plan adds chunks_truncated and "
                             f"chunks_omitted, and chunk_count stays the total")
    add_storage_option(parser)


def output_format(args: argparse.Namespace) -> str:
    """The format the flags of `add_output_flags` chose (`-q` means `quiet`)."""
    if getattr(args, "quiet", False):
        return "quiet"
    fmt: str | None = getattr(args, "format", None)
    return fmt or "full"


def preview_limit(fmt: str, preview: int | None) -> int:
    """The preview cap of an execution: the explicit `--preview`, else the format's
    default (64 for `full`/`json`, where the arrays are shown; 0 for the others)."""
    if preview is not None:
        return preview
    return PREVIEW_DEFAULT if fmt in ("full", "json") else 0


def load_query(arg: str | None) -> Any:
    """The JSON-model value of the QUERY argument: an existing file (its extension picks
    JSON or TOML), ``-`` or nothing for stdin, else the text itself."""
    filename: str | None = None
    if arg is None or arg == "-":
        if arg is None and sys.stdin is not None and sys.stdin.isatty():
            raise CommandFailed("no query given: pass QUERY (a file or inline JSON/TOML) "
                                "or pipe one on stdin")
        text = sys.stdin.read() if sys.stdin is not None else ""
    elif os.path.isfile(arg):
        filename = arg
        try:
            text = Path(arg).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise CommandFailed(f"cannot read query file {arg}: {why}") from exc
    elif _looks_like_path(arg):
        raise CommandFailed(f"query file {arg} not found")
    else:
        text = arg
    return load_text(text, filename=filename)


def _looks_like_path(arg: str) -> bool:
    """A missing ``*.json`` / ``*.toml`` name: report the file, not a TOML syntax error."""
    return (arg.lower().endswith((".json", ".toml")) and "\n" not in arg
            and not any(c in arg for c in "{=["))


def _with_device(query: Any, device: str | None) -> Any:
    """`--device` merged over ``execution.device`` (the token checked and normalised);
    a document that is not an object is left for validation to refuse."""
    if device is None:
        return query
    token = parse_device(device)
    if not isinstance(query, Mapping):
        return query
    if "execution" not in query:
        return {**query, "execution": {"device": token}}
    execution = query["execution"]
    if not isinstance(execution, Mapping):
        return query
    return {**query, "execution": {**execution, "device": token}}


def _with_mask_fill(query: Any, mask_fill: bool) -> Any:
    """`--mask-fill` set over ``execution.mask_fill``; a document (or an ``execution``)
    that is not an object is left for validation to refuse."""
    if not mask_fill or not isinstance(query, Mapping):
        return query
    execution = query.get("execution", {})
    if not isinstance(execution, Mapping):
        return query
    return {**query, "execution": {**execution, "mask_fill": True}}


def _validate_only(doc: Any) -> dict[str, Any]:
    """The echo response without a file (query.md §13)."""
    op = doc.operation
    return resp.response(
        layout_version=doc.layout_version, dataset=doc.dataset,
        selection_axes=len(doc.selection) if doc.selection is not None else None,
        operation=op.echo() if op is not None else None, message=VALIDATED)


def _against_file(doc: Any, tet: str, *, preview: int | None, spill_allow: Sequence[str],
                  max_chunks: int, storage_options: Mapping[str, Any] | None = None
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Plan (``preview`` None) or execute `doc` against the file at `tet` (a path or a
    URL): the response, and the same response with non-finite floats kept (what quiet
    and table print)."""
    from tet.query.execute import execute_document

    refuse_foreign(tet)
    try:
        f = open_target(tet, storage_options, spill_allow=spill_allow)
    except OSError as exc:
        if isinstance(exc, TetError):  # already "cannot open P: …"
            raise
        raise CommandFailed(f"cannot open {tet}: {exc.strerror or exc}") from exc
    sink: dict[str, Any] = {}
    with f, busy(f"tet query {doc.dataset}"):
        response = execute_document(f, doc, preview=preview, tet_file=shown_target(tet), sink=sink,
                                    max_chunks=max_chunks)
    if "execution" not in sink:
        return response, response
    return response, {**response, "execution": sink["execution"]}


def run_query(query: Mapping[str, Any], *, tet: str | None, execute: bool, fmt: str,
              preview: int | None, device: str | None, spill_allow: Sequence[str],
              max_chunks: int = resp.MAX_CHUNKS, mask_fill: bool = False,
              storage_options: Mapping[str, Any] | None = None) -> int:
    """Validate, plan or execute, print, hint, and record history; the exit status.

    `query` is the document as parsed (JSON model, before validation); `preview` None
    means the format's default; `max_chunks` caps ``read_plan.chunks``; `mask_fill`
    sets ``execution.mask_fill`` (the recorded history holds it); `storage_options`
    reach the store of a URL `tet` (history keeps their keys only).  A dataset the
    file does not have prints the normal output plus a stderr hint and returns 1 (README
    decision 33); it is not recorded.
    """
    if fmt not in FORMATS:
        raise CommandFailed(f"unknown output format {fmt!r} (expected one of "
                            f"{', '.join(FORMATS)})")
    if execute and tet is None:
        raise CommandFailed("-x / --execute requires -t / --tet")
    if device is not None and not execute:
        raise CommandFailed("--device requires -x / --execute")
    if spill_allow and not execute:
        raise CommandFailed("--spill-allow requires -x / --execute and -t / --tet")
    if storage_options and tet is None:
        raise CommandFailed("--storage-option requires -t / --tet")
    query = _with_mask_fill(_with_device(query, device), mask_fill)
    doc = parse_value(query)
    if preview is not None and not execute:
        raise CommandFailed("--preview requires -x / --execute")
    if tet is None:
        response = shown = _validate_only(doc)
    else:
        limit = preview_limit(fmt, preview) if execute else None
        response, exact = _against_file(doc, tet, preview=limit, spill_allow=list(spill_allow),
                                        max_chunks=max_chunks, storage_options=storage_options)
        shown = exact if fmt in ("quiet", "table") else response
    text = formats.render(shown, fmt)
    sys.stdout.write(text)
    from tet.query.execute import device_fallback

    note = device_fallback(response.get("execution"))
    if note is not None:  # one line; the run still succeeded
        sys.stdout.flush()
        sys.stderr.write(f"warning: {note}\n")
    hint = formats.not_found_hint(response)
    if hint is not None:
        sys.stdout.flush()
        sys.stderr.write(hint)
        return 1
    from tet.cli import history

    history.record(tet, execute, query, option_keys(storage_options))
    return 0


def unrecognized(args: argparse.Namespace, extra: Sequence[str]) -> str:
    """The usage error of words the parser did not take; one stray .tet path after the
    query (`tet query DOC obs.tet`) gets a pointer to -t."""
    text = f"unrecognized arguments: {' '.join(extra)}"
    if args.tet is None and len(extra) == 1 and not extra[0].startswith("-") and (
            extra[0].lower().endswith(".tet") or os.path.isfile(extra[0])):
        text += f" (pass the .tet file with -t: `tet query QUERY -t {extra[0]}`)"
    return text


def run(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    spill_allow: list[str] = args.spill_allow or []
    if args.query is not None and args.query.lower().endswith(".tet") and os.path.isfile(
            args.query):
        parser.error(f"QUERY {args.query} is a .tet file; give the query document first "
                     f"and the file with -t: `tet query QUERY -t {args.query}`")
    if args.execute and args.tet is None:
        parser.error("-x / --execute requires -t / --tet")
    if args.device is not None and not args.execute:
        parser.error("--device requires -x / --execute")
    if spill_allow and not (args.execute and args.tet is not None):
        parser.error("--spill-allow requires -x / --execute and -t / --tet")
    return run_query(load_query(args.query), tet=args.tet, execute=args.execute,
                     fmt=output_format(args), preview=args.preview, device=args.device,
                     spill_allow=spill_allow, max_chunks=args.max_chunks,
                     mask_fill=args.mask_fill, storage_options=storage_options(args))
