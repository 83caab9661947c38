"""`tet export`: .tet → Zarr v3 directory store (cli.md §7)."""

from __future__ import annotations

import argparse
import sys

from tet.cli.common import Subparsers, add_command
from tet.cli.progress import progress
from tet.cli.targets import add_storage_option, local_copy, refuse_url_output, storage_options
from tet.export_zarr import CODEC_CHOICES, chunk_count, export


def register(sub: Subparsers) -> None:
    parser = add_command(
        sub, "export", help="export a .tet file as a Zarr v3 directory store",
        description="Write every dataset of a .tet file into a new (or empty) Zarr v3 "
                    "directory store that zarr-python and xarray read back; slash-separated "
                    "names become nested groups. Typed attributes become JSON values, "
                    "footer coordinate labels become coordinate arrays, every array gets "
                    "dimension_names, and file attributes go on the root group. Edge "
                    "chunks are padded to the full chunk shape with the array's fill value "
                    "(NaN for floats, 0 or the dataset's _FillValue for integers), as Zarr "
                    "requires. The store is built beside OUTPUT_DIR and renamed into place "
                    "only when complete.")
    parser.add_argument("input", metavar="INPUT",
                        help="the .tet file to read (a URL is downloaded to the cache first)")
    parser.add_argument("output", metavar="OUTPUT_DIR",
                        help="directory to create (must not exist or be empty)")
    parser.add_argument("--codec", choices=CODEC_CHOICES, default="keep",
                        help="chunk codec of the store: keep (default) = each dataset's codec "
                             "in the .tet file (a dataset mixing raw and zstd chunks is "
                             "refused); raw or zstd = convert every chunk")
    add_storage_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    refuse_url_output(args.output, "export")
    with local_copy(args.input, storage_options(args)) as src:
        total = chunk_count(src, codec=args.codec)  # the bar's total; one more catalog parse
        with progress(total, "export → Zarr") as bar:
            report = export(src, args.output, codec=args.codec, progress=bar.update)
    print(report.summary_line(args.output), file=sys.stderr)
    return 0
