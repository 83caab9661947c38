"""The `tet` command (a first cut: `info`; the full command set grows in tet.cli)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from tet import __version__, kernels
from tet.errors import TetError
from tet.file import TetFile


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tet", description="Read and query .tet files.")
    parser.add_argument("--version", action="version",
                        version=f"tet {__version__} (simd: {kernels.simd_level()})")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print the catalog of a .tet file")
    info.add_argument("file")
    info.add_argument("--json", action="store_true", help="print the layout summary as JSON")
    return parser


def _info(path: str, as_json: bool) -> None:
    with TetFile(path) as f:
        if as_json:
            print(json.dumps({"tet_file": path, "summary": f.summary()}, indent=2))
            return
        cat = f.catalog
        print(f"{path}: layout v1, {cat.dataset_count} dataset(s), {cat.file_len} bytes")
        for ds in f.iter_datasets():
            dims = f" dims={list(ds.dim_names)}" if ds.dim_names else ""
            rows = int((cat.entries["dataset_id"] == cat.datasets.index(
                next(r for r in cat.datasets if r.name == ds.name))).sum())
            print(f"  {ds.name}: {ds.dtype_name} shape={list(ds.shape)} "
                  f"chunks={list(ds.chunk_shape)} ({rows} tiles){dims}")
            for k, v in ds.attrs.items():
                print(f"    @{k} = {v}")
            for k, labels in ds.coords.items():
                print(f"    coords[{k}] = {list(labels)}")
        for row in cat.history:
            print(f"  history: {row['op']} {row['source']} at {row['at']}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "info":
            _info(args.file, args.json)
    except (TetError, OSError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
