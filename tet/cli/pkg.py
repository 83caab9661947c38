"""`tet pkg`: versioned packages (``.tet.d``) from the command line: create, ingest a
part, publish a generation, pack one to a file, list generations, prune old ones."""

from __future__ import annotations

import argparse
import json
import time

from tet.cli.common import CommandFailed, Subparsers, add_command
from tet.cli.targets import add_storage_option, storage_options


def register(sub: Subparsers) -> None:
    parser = add_command(
        sub, "pkg", help="create, fill, publish, pack, list and prune .tet.d packages",
        description="Versioned packages: writers ingest sealed .tet files as parts (each "
                    "with its own session), one publish seals them into an immutable "
                    "generation and flips CURRENT atomically; readers (tet info, tet query "
                    "-t PKG or PKG?generation=N) pin one generation. PKG is a directory or "
                    "an s3://bucket/prefix URL (with --storage-option).")
    cmds = parser.add_subparsers(dest="pkg_command", metavar="ACTION", required=True)

    p = add_command(cmds, "create", help="create an empty package",
                    description="Create an empty package directory (PROTOCOL, staging/, "
                                "generations/, publishing/).")
    p.add_argument("package", metavar="PKG")
    add_storage_option(p)
    p.set_defaults(run=_create)

    p = add_command(cmds, "ingest", help="stage a sealed .tet file as one part",
                    description="Copy a sealed .tet file into the package as one part, "
                                "with its PART_META.json; prints the part id.")
    p.add_argument("package", metavar="PKG")
    p.add_argument("source", metavar="FILE")
    p.add_argument("--session", default="s0", help="the writer's staging session (once each)")
    p.add_argument("--part-id", help="default: the file's stem")
    p.add_argument("--create", action="store_true", help="create PKG when it does not exist")
    p.add_argument("--region", action="append", default=[], metavar="NAME:SHAPE:OFFSET",
                   help="dataset NAME of FILE is the slab at OFFSET of an array of SHAPE "
                        "(comma-separated, e.g. big:1000,64:200,0); repeatable")
    add_storage_option(p)
    p.set_defaults(run=_ingest)

    p = add_command(cmds, "publish", help="seal parts into a generation and flip CURRENT",
                    description="Seal the listed parts into one generation (a full snapshot: "
                                "exactly their datasets) and point CURRENT at it; prints the "
                                "generation.")
    p.add_argument("package", metavar="PKG")
    p.add_argument("parts", metavar="PART", nargs="+")
    p.add_argument("--generation", type=int, help="default: one past CURRENT")
    p.add_argument("--dry-run", action="store_true", help="check claims and schema only")
    p.add_argument("--replace", action="append", default=[], metavar="NAME",
                   help="allow dataset NAME to change dtype or shape; repeatable")
    add_storage_option(p)
    p.set_defaults(run=_publish)

    p = add_command(cmds, "pack", help="copy a generation to a standalone .tet file",
                    description="Copy a sealed generation's packed.tet to a new file, "
                                "checked against its manifest.")
    p.add_argument("package", metavar="PKG")
    p.add_argument("dest", metavar="DEST")
    p.add_argument("--generation", type=int, help="default: CURRENT")
    p.add_argument("--remove-package", action="store_true",
                   help="remove PKG after the checked copy")
    add_storage_option(p)
    p.set_defaults(run=_pack)

    p = add_command(cmds, "log", help="list the package's generations",
                    description="List the sealed generations: id, CURRENT mark, time sealed, "
                                "bytes, parts and datasets.")
    p.add_argument("package", metavar="PKG")
    p.add_argument("--json", action="store_true", help="JSON rows")
    add_storage_option(p)
    p.set_defaults(run=_log)

    p = add_command(cmds, "prune", help="remove old generations and consumed parts",
                    description="Remove generations other than CURRENT's and the KEEP newest, "
                                "except those a reader pinned within the grace period, and "
                                "the staged parts only removed generations used.")
    p.add_argument("package", metavar="PKG")
    p.add_argument("--keep", type=int, default=1, help="newest generations kept (default 1)")
    p.add_argument("--grace", type=float, default=600.0, metavar="SECONDS",
                   help="keep generations pinned this recently (default 600)")
    p.add_argument("--dry-run", action="store_true", help="say what would be removed")
    add_storage_option(p)
    p.set_defaults(run=_prune)


def _create(args: argparse.Namespace) -> int:
    import tet

    print(tet.create(args.package, storage_options=storage_options(args)))
    return 0


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise CommandFailed(f"--region {what} must be comma-separated integers, "
                            f"got {text!r}") from None


def _ingest(args: argparse.Namespace) -> int:
    import tet

    regions = {}
    for spec in args.region:
        name, sep, rest = spec.rpartition(":")
        name, sep2, shape = name.rpartition(":")
        if not (sep and sep2 and name):
            raise CommandFailed(f"--region takes NAME:SHAPE:OFFSET, got {spec!r}")
        regions[name] = {"shape": _ints(shape, "SHAPE"), "offset": _ints(rest, "OFFSET")}
    print(tet.ingest(args.package, args.source, session_id=args.session, part_id=args.part_id,
                     create=args.create, regions=regions or None,
                     storage_options=storage_options(args)))
    return 0


def _publish(args: argparse.Namespace) -> int:
    import tet

    print(tet.publish(args.package, args.parts, generation=args.generation,
                      dry_run=args.dry_run, replace=args.replace or None,
                      storage_options=storage_options(args)))
    return 0


def _pack(args: argparse.Namespace) -> int:
    import tet

    print(tet.pack(args.package, args.dest, generation=args.generation,
                   remove_package=args.remove_package,
                   storage_options=storage_options(args)))
    return 0


def _log(args: argparse.Namespace) -> int:
    import tet

    rows = tet.log(args.package, storage_options=storage_options(args))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["created_unix"]))
        mark = "*" if r["current"] else " "
        print(f"{mark} {r['generation']:>8}  {when}Z  {r['packed_byte_len']:>12} bytes  "
              f"parts: {','.join(r['part_ids'])}  datasets: {','.join(r['datasets'])}")
    return 0


def _prune(args: argparse.Namespace) -> int:
    import tet

    report = tet.prune(args.package, keep=args.keep, grace_s=args.grace, dry_run=args.dry_run,
                       storage_options=storage_options(args))
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} generations {report['removed_generations']}, sessions "
          f"{report['removed_sessions']} ({report['bytes_freed']} bytes); kept "
          f"{report['kept_generations']} (pinned {report['pinned']})")
    return 0
