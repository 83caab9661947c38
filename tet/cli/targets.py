"""What the subcommands share about their targets: a path or a URL (``s3://``, ``gs://``,
``az://``, ``https://``), the repeatable ``--storage-option KEY=VALUE`` that reaches the
store, and what of them history may keep (the URL without credentials, option keys,
never a secret's value)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tet import objstore
from tet.cli.common import CommandFailed

__all__ = ["SECRET_KEYS", "add_storage_option", "check_local", "exists", "local_copy",
           "open_target", "option_keys", "parse_storage_options", "refuse_url_output",
           "shown_target", "storage_options"]

#: Keys whose values are credentials: never printed, never recorded.
SECRET_KEYS = frozenset({
    "access_key_id", "secret_access_key", "session_token", "token", "sas_key", "sas_token",
    "account_key", "password", "bearer_token", "service_account_key", "client_secret",
    "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "azure_storage_sas_key",
    "azure_storage_account_key", "azure_client_secret", "google_service_account_key",
    "key", "secret", "credentials",
})

_HELP = ("an option of the object store behind a URL (endpoint, region, access_key_id, "
         "allow_http, timeout, max_retries, …); repeatable. VALUE is read as JSON when it "
         "parses (true, false, numbers), else as text")


def add_storage_option(parser: argparse.ArgumentParser) -> None:
    """The repeatable ``--storage-option KEY=VALUE`` of a command that takes URLs."""
    parser.add_argument("--storage-option", dest="storage_option", action="append",
                        default=None, metavar="KEY=VALUE", help=_HELP)


def _value(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, (bool, int, float)) else text


def parse_storage_options(items: Sequence[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` words as one options mapping; a malformed word is `CommandFailed`
    naming it (with a secret's value left out)."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            shown = item if not eq else f"{key}=…"
            raise CommandFailed(f"--storage-option `{shown}`: expected KEY=VALUE "
                                "(e.g. --storage-option region=us-east-1)")
        if key in out:
            raise CommandFailed(f"--storage-option `{key}` is given twice")
        out[key] = _value(value)
    return out


def storage_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """The command's ``--storage-option`` mapping; None when none were given."""
    return parse_storage_options(getattr(args, "storage_option", None)) or None


def option_keys(options: Mapping[str, Any] | None) -> list[str]:
    """The option keys history keeps (sorted); the values are never kept."""
    return sorted(str(k) for k in (options or {}))


def shown_target(target: str) -> str:
    """A target as output and history may show it: a URL without user information or
    query string (where signed URLs carry secrets); a path as it is."""
    return objstore.redact(target) if objstore.is_url(target) else target


def check_local(target: str, options: Mapping[str, Any] | None) -> str:
    """`target`, a local path: storage options given with it are refused."""
    if options:
        raise CommandFailed(f"--storage-option applies to URLs, not to the path {target}")
    return target


def open_target(target: str, options: Mapping[str, Any] | None, **kwargs: Any) -> Any:
    """`tet.open` of a path or a URL (with its storage options)."""
    from tet.file import open as open_tet

    if not objstore.is_url(target):
        return open_tet(check_local(target, options), **kwargs)
    return open_tet(target, storage_options=dict(options or {}), **kwargs)


@contextmanager
def local_copy(target: str, options: Mapping[str, Any] | None) -> Iterator[str]:
    """A local path for a command that reads a whole file (`export`): the
    path itself, or the object downloaded to the cache for the block (removed after)."""
    if not objstore.is_url(target):
        yield check_local(target, options)
        return
    from tet.remote_write import fetched

    with fetched(target, options) as path:
        yield os.fspath(path)


def refuse_url_output(output: str, command: str) -> None:
    """Outputs stay local: a URL given as one is refused, saying why."""
    if objstore.is_url(output):
        raise CommandFailed(f"{command} output `{shown_target(output)}` is a URL; {command} "
                            "writes a local directory store (write it locally, then upload "
                            "the directory)")


def exists(target: str, options: Mapping[str, Any] | None) -> bool:
    """Whether the path or the object exists (one HEAD request for a URL)."""
    if not objstore.is_url(target):
        return os.path.lexists(Path(target))
    try:
        objstore.head(objstore.locate(target, options))
    except FileNotFoundError:
        return False
    return True
