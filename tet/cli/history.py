"""Query history storage (cli.md §5): one JSON row per successful `tet query`, kept in a
JSON-lines file outside any `.tet` so `tet qhist` can list and replay past queries.

The file is shared by every `tet` process of the user, so each change is a locked
read-modify-write: an exclusive `flock` on a sibling ``<file>.lock`` serialises writers
(no row is lost when several queries finish at once), and the new content is written to a
temp file in the same directory and renamed over the old one, so a crash or a full disk
never leaves a truncated history.  Readers take no lock: the rename makes every version
they can see complete.

History is a convenience, never a reason for a query to fail: `record` only warns.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from tet import objstore
from tet.cli.common import CommandFailed
from tet.errors import os_error
from tet.query.allow import APP, cache_roots
from tet.safedir import Dir
from tet.safeio import NewFile

try:
    import fcntl
except ImportError:  # Windows: no flock
    _HAVE_FLOCK = False
else:
    _HAVE_FLOCK = True

__all__ = ["FILE_NAME", "MAX_CAP", "MAX_DEFAULT", "Row", "clear", "disabled", "history_file",
           "history_max", "load", "record"]

FILE_NAME = "query_history.jsonl"
MAX_DEFAULT = 50
MAX_CAP = 10_000
_ENV_FILE = "TET_QUERY_HISTORY_FILE"
_ENV_MAX = "TET_QUERY_HISTORY_MAX"
_ENV_OFF = "TET_NO_QUERY_HISTORY"
_OFF_VALUES = frozenset({"1", "true", "TRUE", "yes", "YES"})
_UINT = re.compile(r"\+?[0-9]+")  # an unsigned integer: digits, optional "+", no spaces


@dataclass(frozen=True)
class Row:
    """One recorded query: when, against which `.tet` (None: validate-only), whether it was
    executed, and the flat query document as parsed."""

    at: int
    tet: str | None
    execute: bool
    query: dict[str, Any]
    storage_option_keys: tuple[str, ...] = ()  # a URL's options: their names, never values

    def to_json(self) -> dict[str, Any]:
        """The on-disk shape: ``{"at", "tet", "execute", "query"}``, plus
        ``"storage_option_keys"`` when a URL was queried with options."""
        out: dict[str, Any] = {"at": self.at, "tet": self.tet, "execute": self.execute,
                               "query": self.query}
        if self.storage_option_keys:
            out["storage_option_keys"] = list(self.storage_option_keys)
        return out


def history_file() -> Path:
    """``$TET_QUERY_HISTORY_FILE`` when set and non-empty, else
    ``<first platform cache root>/query_history.jsonl`` (query.md §10)."""
    explicit = os.environ.get(_ENV_FILE)
    if explicit:
        return Path(explicit)
    roots = cache_roots()
    # No usable root (unwritable home…): name the platform location anyway, so the
    # error a write then meets says where history was meant to go.
    root = roots[0] if roots else platformdirs.user_cache_path(APP)
    return root / FILE_NAME


def history_max() -> int:
    """Rows kept on disk: ``$TET_QUERY_HISTORY_MAX`` when it is an integer in 1..=10000,
    else 50 (an unparsable or out-of-range value is ignored, not an error)."""
    value = os.environ.get(_ENV_MAX)
    if value is None or not _UINT.fullmatch(value):
        return MAX_DEFAULT
    n = int(value)
    return n if 1 <= n <= MAX_CAP else MAX_DEFAULT


def disabled() -> bool:
    """True when ``$TET_NO_QUERY_HISTORY`` is 1, true, TRUE, yes or YES."""
    return os.environ.get(_ENV_OFF, "") in _OFF_VALUES


def _dumps(value: Any) -> str:
    """Compact JSON: the one serialisation used for rows and for the dedupe comparison."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _line(value: Any) -> bytes:
    """One row as UTF-8 JSON; a `.tet` path that is not UTF-8 (lone surrogates from
    ``os.fsdecode``) is kept as JSON ``\\udcXX`` escapes, which load back as the same path."""
    try:
        return _dumps(value).encode()
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":")).encode()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


def record(tet: str | None, execute: bool, query: Mapping[str, Any],
           option_keys: Sequence[str] = ()) -> None:
    """Remember one successful query.  Never raises: any failure becomes
    ``warning: query history not saved: <err>`` on stderr, because the query itself
    already succeeded.  The `.tet` path is stored absolute (not resolved through
    symlinks), so a replay from another directory opens the same file; a URL is stored
    without credentials (`objstore.redact`), with the names of its storage options and
    never their values."""
    if disabled():
        return
    try:
        _record(tet, execute, query, tuple(option_keys))
    except Exception as exc:  # history must never fail the query that just succeeded
        print(f"warning: query history not saved: {_describe(exc)}", file=sys.stderr)


def _record(tet: str | None, execute: bool, query: Mapping[str, Any],
            option_keys: tuple[str, ...]) -> None:
    if tet is not None and objstore.is_url(tet):
        tet = objstore.redact(tet)
    elif tet is not None:
        tet = os.path.abspath(tet)
    row = Row(int(time.time()), tet, bool(execute), dict(query), option_keys)
    line = _line(row.to_json())  # before the lock: a bad query fails fast
    query_text = _dumps(row.query)
    keep = history_max()
    path = _target(history_file())
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        lines = _read_lines(path)
        newest = _try_row(lines[-1]) if lines else None
        if (newest is not None and newest.tet == row.tet and newest.execute == row.execute
                and _dumps(newest.query) == query_text):
            lines[-1] = line  # the same query again: only `at` moves
        else:
            lines.append(line)
            del lines[:-keep]
        _rewrite(path, lines)


def _target(path: Path) -> Path:
    """Write through a symlinked history file instead of replacing the link."""
    return path.resolve() if path.is_symlink() else path


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` for a read-modify-write.

    The lock lives in a separate file because the history file itself is replaced by a
    rename (a lock on it would be left on the old inode).  The lock file is never deleted:
    unlinking it while another process waits on it would let two writers in at once.
    Without `fcntl` (Windows) this is best effort: there is no portable whole-file lock
    that works with rename-replace there, and a lost row in a convenience history is an
    acceptable cost for concurrent recorders on that platform.
    """
    if not _HAVE_FLOCK:
        yield
        return
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _read_lines(path: Path) -> list[bytes]:
    """Non-blank raw lines, oldest first; corrupt ones are kept as they are (a writer
    never drops what it does not understand; trimming ages them out)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return [ln.rstrip(b"\r") for ln in data.split(b"\n") if ln.strip()]


def _rewrite(path: Path, lines: list[bytes]) -> None:
    """Replace the file atomically: a new file beside it (stale temps of killed writers
    removed), fsync, rename relative to the directory; a failure (a full disk) is a
    `TetOSError` naming the file, and leaves the old file and no temp."""
    action = "cannot write query history"
    try:
        directory = Dir.of(path.parent)
    except OSError as exc:
        raise os_error(exc, action, path) from exc
    with NewFile(directory, path.name, shown=path, action=action, kind="write",
                 own_dir=True) as out:
        out.write(b"".join(ln + b"\n" for ln in lines), 0)



def _parse_row(raw: bytes) -> Row:
    """One line -> Row; ValueError with the reason it is not a row."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not valid UTF-8") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    at, tet, execute, query = (obj.get(k) for k in ("at", "tet", "execute", "query"))
    if not isinstance(at, int) or isinstance(at, bool) or at < 0:
        raise ValueError("`at` must be a non-negative integer (unix seconds)")
    if tet is not None and not isinstance(tet, str):
        raise ValueError("`tet` must be a string or null")
    if not isinstance(execute, bool):
        raise ValueError("`execute` must be true or false")
    if not isinstance(query, dict):
        raise ValueError("`query` must be a JSON object")
    keys = obj.get("storage_option_keys") or []
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ValueError("`storage_option_keys` must be a list of strings")
    return Row(at, tet, execute, query, tuple(keys))


def _try_row(raw: bytes) -> Row | None:
    try:
        return _parse_row(raw)
    except ValueError:
        return None


def load() -> tuple[list[Row], list[str]]:
    """All readable rows, newest first, and one ready-to-print
    ``warning: query history line N skipped: <reason>`` per corrupt line (N counts from 1,
    blank lines included).  A missing file is an empty history; a file that cannot be read
    at all raises CommandFailed."""
    path = history_file()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        raise CommandFailed(f"cannot read query history {path}: "
                            f"{exc.strerror or exc}") from exc
    rows: list[Row] = []
    warnings: list[str] = []
    for n, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            rows.append(_parse_row(raw))
        except ValueError as exc:
            warnings.append(f"warning: query history line {n} skipped: {exc}")
    rows.reverse()
    return rows, warnings


def clear() -> bool:
    """Delete the history file; False when there was none.  Takes the writers' lock so a
    query finishing at the same moment cannot resurrect the old rows."""
    path = _target(history_file())
    try:
        if not path.parent.is_dir():
            return False
        with _locked(path):
            path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise CommandFailed(f"cannot clear query history {path}: "
                            f"{exc.strerror or exc}") from exc
    return True
