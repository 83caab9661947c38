"""Spill-path allowlist and crash-safe output helpers (query.md §10).

A query document names output paths (`spill`, `write.path`, sidecars), so it must not be
able to write anywhere the user did not intend.  The allowlist is built from the `.tet`
path the *host* gave, never from the document: the file's directory, the per-user cache
roots and explicit ``--spill-allow`` directories.  Every target is checked after symlinks
and ``..`` are resolved, so neither can smuggle a write outside those roots.

Outputs go to a hidden ``.part`` file beside the target and are renamed onto it only
once complete and fsynced, so an error, a full disk or Ctrl-C never leaves a truncated
file in place of the previous one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from tet.durable import fsync_dir, fsync_file
from tet.errors import QueryError

__all__ = ["Allowlist", "atomic_output", "cache_roots", "move_into_place", "temp_file"]

APP = "tetration"
_ROOTS_HINT = "(.tet directory, platform cache, or --spill-allow)"
_TEMP_NAMES = {"spill": ("spill", ".bin"), "sidecar-draft": ("sidecar-draft", ".tet")}

_ns_lock = threading.Lock()
_last_ns = 0


def _nanos() -> int:
    """Wall-clock nanoseconds, strictly increasing per process so temp names never collide."""
    global _last_ns
    with _ns_lock:
        _last_ns = max(time.time_ns(), _last_ns + 1)
        return _last_ns


def _env_dir(name: str) -> Path | None:
    """An absolute directory from the environment; empty or relative values are ignored
    (a relative root would make the allowlist depend on the cwd)."""
    value = os.environ.get(name)
    if not value:
        return None
    path = Path(value)
    return path if path.is_absolute() else None


def _candidates() -> list[Path]:
    """Cache-root candidates in spec order, before creation and canonicalization."""
    out = [platformdirs.user_cache_path(APP)]
    home = _env_dir("HOME")
    if home is not None:
        xdg = _env_dir("XDG_CACHE_HOME")
        if xdg is not None:
            out.append(xdg / APP)
        elif sys.platform == "darwin":
            out.append(home / ".local" / "cache" / APP)
        else:
            out += [home / ".cache" / APP, home / ".local" / "cache" / APP]
    if sys.platform == "win32":
        local = _env_dir("LOCALAPPDATA")
        if local is not None:
            out.append(local / APP)
    for name in ("TMPDIR", "TEMP", "TMP"):
        tmp = _env_dir(name)
        if tmp is not None:
            out.append(tmp / APP)
    out.append(Path(tempfile.gettempdir()) / APP)
    return out


def _owned(path: Path, canonical: Path) -> bool:
    """On POSIX a cache root (and any symlink naming it) must belong to us: a shared temp
    directory could otherwise hold another user's ``tetration`` link into our files."""
    if not hasattr(os, "geteuid"):
        return True
    uid = os.geteuid()
    return os.lstat(path).st_uid == uid and os.stat(canonical).st_uid == uid


def cache_roots() -> list[Path]:
    """Platform cache roots in order: created, canonical, deduped; unusable ones skipped."""
    roots: list[Path] = []
    for cand in _candidates():
        try:
            cand.mkdir(mode=0o700, parents=True, exist_ok=True)
            canonical = cand.resolve(strict=True)
            if not canonical.is_dir() or not _owned(cand, canonical):
                continue
        except (OSError, RuntimeError):
            continue
        if canonical not in roots:
            roots.append(canonical)
    return roots


def _dedupe(paths: Sequence[Path]) -> tuple[Path, ...]:
    out: list[Path] = []
    for p in paths:
        if p not in out:
            out.append(p)
    return tuple(out)


def _fail(msg: str) -> QueryError:
    return QueryError(f"validation: {msg}")


def _oserr(exc: OSError) -> str:
    return exc.strerror or str(exc)


@dataclass(frozen=True)
class Allowlist:
    """The directories outputs may be written under, fixed when the `.tet` file is opened."""

    base: Path
    roots: tuple[Path, ...]
    caches: tuple[Path, ...] = field(default=(), repr=False)

    @classmethod
    def for_file(
        cls, tet_path: str | os.PathLike[str], extra: Sequence[str | os.PathLike[str]] = ()
    ) -> Allowlist:
        """Allowlist for a `.tet` path as the host gave it; ``extra`` are ``--spill-allow``
        directories (relative to the cwd, like any CLI path), created if missing."""
        parent = Path(os.fspath(tet_path)).parent  # "data.tet" -> "." -> the cwd
        base = parent.resolve()
        extras: list[Path] = []
        for d in extra:
            p = Path(os.fspath(d))
            try:
                p.mkdir(parents=True, exist_ok=True)
                canonical = p.resolve(strict=True)
            except (OSError, RuntimeError) as exc:
                err = _oserr(exc) if isinstance(exc, OSError) else exc
                raise _fail(f"cannot create --spill-allow directory {p}: {err}") from exc
            if not canonical.is_dir():
                raise _fail(f"--spill-allow {p} is not a directory")
            extras.append(canonical)
        caches = tuple(cache_roots())
        return cls(base, _dedupe([base, *caches, *extras]), caches)

    def _allowed(self, path: Path) -> bool:
        return any(path.is_relative_to(root) for root in self.roots)

    def _outside(self, given: str, resolved: Path) -> QueryError:
        """One text for every output kind: query.md §10 words it for spills."""
        return _fail(f"spill path {given} is not under an allowed root {_ROOTS_HINT}; "
                     f"resolved to {resolved}")

    def resolve(self, path: str | os.PathLike[str], *, what: str = "spill") -> Path:
        """Validated canonical target; `what` names the path in messages ("spill", "write.path",
        "sidecar").  Relative paths join the `.tet` directory, not the cwd, so a document means
        the same thing wherever the host runs."""
        given = os.fspath(path)
        if "\0" in given:
            raise _fail("spill open failed: file name contained an unexpected NUL byte")
        seps = (os.sep, os.altsep) if os.altsep else (os.sep,)
        p = Path(given)
        if not given or given.endswith(seps) or p.name in ("", ".", ".."):
            raise _fail(f"{what} path {given} names a directory, not a file")
        if not p.is_absolute():
            p = self.base / p
        try:
            # Canonical form of the nearest existing ancestor plus the lexical rest, checked
            # before creating anything so a refused path leaves no directories behind.
            parent = p.parent.resolve()
            target = parent / p.name
            if not self._allowed(parent):
                raise self._outside(given, target)
            parent.mkdir(parents=True, exist_ok=True)
            parent = parent.resolve(strict=True)
            target = parent / p.name
            if not self._allowed(parent):  # a symlink swapped in while we were creating
                raise self._outside(given, target)
            if target.is_symlink():
                target = target.resolve()
                if not self._allowed(target):
                    raise self._outside(given, target)
                target.parent.mkdir(parents=True, exist_ok=True)
        except (OSError, RuntimeError) as exc:  # RuntimeError: symlink loop
            err = _oserr(exc) if isinstance(exc, OSError) else exc
            raise _fail(f"cannot create directory for {what} path {given}: {err}") from exc
        if target.is_dir():
            raise _fail(f"{what} path {given} names a directory, not a file")
        return target

    def temp_path(self, kind: str) -> Path:
        """kind "spill" -> <cache>/spill-{pid}-{nanos}.bin ; kind "sidecar-draft" ->
        <cache>/sidecar-draft-{pid}-{nanos}.tet (first writable cache root, else any writable
        root). Does not create the file."""
        try:
            prefix, suffix = _TEMP_NAMES[kind]
        except KeyError:
            raise ValueError(f"unknown temp file kind {kind!r}; "
                             f"expected one of {sorted(_TEMP_NAMES)}") from None
        for root in (*self.caches, *self.roots):
            if root.is_dir() and os.access(root, os.W_OK | os.X_OK):
                return root / f"{prefix}-{os.getpid()}-{_nanos()}{suffix}"
        raise _fail("no writable directory for temp files among the allowed roots "
                    f"{', '.join(map(str, self.roots))}")




@contextmanager
def atomic_output(target: Path, *, what: str = "spill") -> Iterator[Path]:
    """Yield a temp path in target's directory (hidden name `.{target.name}.{pid}.{nanos}.part`);
    on normal exit fsync it and os.replace it onto target, so readers never see a partial
    file.  On any exception (KeyboardInterrupt included) the temp file is removed and the
    exception re-raised; OSError (ENOSPC, EFBIG, EACCES…) becomes
    QueryError("validation: cannot write {what} file {target}: …").  The previous content of
    target, if any, is untouched on failure."""
    tmp = target.parent / f".{target.name}.{os.getpid()}.{_nanos()}.part"
    created = False
    try:
        # Claim the name exclusively: never follow or clobber something already there.
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        created = True
        with contextlib.suppress(OSError):
            shutil.copymode(target, tmp)  # keep an existing target's permissions
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException as exc:
        if created:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _fail(f"cannot write {what} file {target}: {_oserr(exc)}") from exc
        raise


def move_into_place(src: Path, dst: Path) -> None:
    """os.replace when on the same filesystem, else copy to a temp beside dst, fsync,
    os.replace, then unlink src.  On failure, dst is untouched and partial copies are
    removed.  I/O errors surface as QueryError."""
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise _fail(f"cannot move {src} to {dst}: {_oserr(exc)}") from exc
    else:
        fsync_dir(dst.parent)
        return
    with atomic_output(dst, what="output") as tmp:
        with src.open("rb") as fin, tmp.open("wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
        shutil.copymode(src, tmp)
    try:
        src.unlink(missing_ok=True)
    except OSError as exc:
        raise _fail(f"moved {src} to {dst} but cannot remove the source: "
                    f"{_oserr(exc)}") from exc


@contextmanager
def temp_file(allow: Allowlist, kind: str = "spill") -> Iterator[Path]:
    """A temp path from allow.temp_path(kind) that is always deleted on exit (success, error,
    KeyboardInterrupt), so interrupted queries do not litter the cache."""
    path = allow.temp_path(kind)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
