"""`tet convert`: HDF5 / NetCDF / Zarr v3 → .tet (cli.md §6): a progress bar on stderr
when it is a terminal, `warning: …` lines for what was left out, then the pretty JSON
report on stdout. An existing OUTPUT is refused unless `--force`."""

from __future__ import annotations

import argparse
import sys
import warnings
from contextlib import ExitStack
from typing import Any, TextIO

from tet import objstore
from tet.cli.common import CommandFailed, Subparsers, add_command, print_json
from tet.cli.progress import Progress, progress
from tet.cli.targets import add_storage_option, check_local, exists, shown_target, storage_options


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid job count {text!r} (an integer >= 0)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid job count {value} (0 = host parallelism)")
    return value


def register(sub: Subparsers) -> None:
    parser = add_command(
        sub, "convert", help="convert an HDF5, NetCDF or Zarr v3 store into a .tet file",
        description="Convert every numeric, 0-d and string array of an HDF5 file, a NetCDF "
                    "file or a Zarr v3 store (or v2 directory store) into one .tet file "
                    "(source chunking, typed attributes, file attributes, dimension names "
                    "and coordinates kept; fill values, missing values and packing decoded "
                    "as xarray decodes them). The output is built beside OUTPUT and "
                    "renamed into place when complete.")
    parser.add_argument("input", metavar="INPUT",
                        help="source file (.h5/.nc/…, optionally .gz/.bz2/.xz/.zst/.zip) or "
                             "Zarr v3 (or v2) directory; or a URL of an object (downloaded "
                             "first) or of a Zarr store's prefix (read in place)")
    parser.add_argument("output", metavar="OUTPUT",
                        help="the .tet file to write, or a URL to upload it to")
    parser.add_argument("--jobs", type=_jobs, default=0, metavar="N",
                        help="parallel tile-read workers; 0 (default) = host parallelism, "
                             "clamped to 1..64")
    parser.add_argument("--codec", choices=("raw", "zstd"), default="raw",
                        help="payload codec of the written tiles (default: raw)")
    parser.add_argument("--keep-packed", action="store_true",
                        help="store values as stored, with _FillValue, missing_value, "
                             "scale_factor, add_offset and _Unsigned kept as attributes, "
                             "instead of decoding them (fills → NaN, stored × scale + "
                             "offset, as xarray decodes them)")
    parser.add_argument("--force", action="store_true",
                        help="replace OUTPUT when it exists (atomically, once the new file "
                             "is complete); without it an existing OUTPUT is refused")
    add_storage_option(parser)
    parser.set_defaults(run=run)


def _show_warning(message: Warning | str, category: type[Warning], filename: str,
                  lineno: int, file: TextIO | None = None, line: str | None = None) -> None:
    print(f"warning: {message}", file=sys.stderr)


class _Bar:
    """Opens the progress bar at the first report, when the tile total is known."""

    def __init__(self, stack: ExitStack, label: str) -> None:
        self._stack = stack
        self._label = label
        self._bar: Progress | None = None
        self._done = 0
        self._dataset = ""

    def __call__(self, dataset: str, done: int, total: int) -> None:
        if self._bar is None:
            self._bar = self._stack.enter_context(progress(total, f"{self._label} → .tet"))
        describe: Any = getattr(self._bar, "set_description_str", None)
        if describe is not None and dataset != self._dataset:
            describe(f"{self._label} → .tet ({dataset})", refresh=True)
        self._dataset = dataset
        self._bar.update(done - self._done)
        self._done = done


def run(args: argparse.Namespace) -> int:
    from tet.convert import LABELS, convert, sniff
    from tet.convert.sniff import EXTENSIONS

    options = storage_options(args)
    if not (objstore.is_url(args.input) or objstore.is_url(args.output)):
        check_local(args.input, options)
    if objstore.is_url(args.input):  # named by its extension; a Zarr prefix has none
        ext = args.input.rstrip("/").rpartition(".")[2].lower()
        label = LABELS.get(EXTENSIONS.get(ext, "zarr"), "Zarr")
    else:
        label = LABELS[sniff(args.input)]
    if not args.force and exists(args.output, options):
        raise CommandFailed(f"convert output `{shown_target(args.output)}` exists "
                            "(pass --force to replace it)")
    with warnings.catch_warnings(), ExitStack() as stack:
        warnings.simplefilter("always")
        warnings.showwarning = _show_warning
        report = convert(args.input, args.output, jobs=args.jobs, codec=args.codec,
                         keep_packed=args.keep_packed, progress=_Bar(stack, label),
                         storage_options=options)
    print_json(report.to_dict())
    return 0
