"""Spill-path allowlist and crash-safe output helpers (query.md §10).

A query document names output paths (`spill`, `write.path`, sidecars), so it must not be
able to write anywhere the user did not intend.  The allowlist is built from the `.tet`
path the *host* gave, never from the document: the file's directory, the per-user cache
roots and explicit ``--spill-allow`` directories.  A target is resolved once (symlinks and
``..`` resolved, then checked against those roots); its directory is then reached from the
root's own descriptor one component at a time without following symlinks, and the output
is created, written and renamed relative to that descriptor (`tet.safeio`).  A symlink
swapped in meanwhile, for a directory or for the temp file, cannot redirect a write.

Outputs are written beside the target (anonymous, or under a hidden ``.part`` name) and
renamed onto it only once complete and fsynced, so an error, a full disk or Ctrl-C never
leaves a truncated file in place of the previous one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import platformdirs

from tet.errors import QueryError, TetError
from tet.safeio import (
    Dir,
    NewFile,
    kind_of,
    move,
    path_text,
    remove_stale,
    scratch_array,
    temp_name,
)

__all__ = ["Allowlist", "Target", "atomic_output", "cache_roots", "move_into_place",
           "temp_file"]

APP = "tetration"
_ROOTS_HINT = "(.tet directory, platform cache, or --spill-allow)"
_CACHE_KINDS = ("spill", "sidecar-draft")  # engine temp names in a cache root (safeio table)


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


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


@dataclass
class Target:
    """A validated output: its directory, open and reached without following symlinks,
    and its name there.  `path` is the canonical path responses report."""

    dir: Dir
    name: str
    path: Path

    def close(self) -> None:
        self.dir.close()

    def __enter__(self) -> Target:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


@dataclass(frozen=True)
class Allowlist:
    """The directories outputs may be written under, fixed when the `.tet` file is opened.
    `ids` are the roots' (st_dev, st_ino) then: a root replaced later is refused."""

    base: Path
    roots: tuple[Path, ...]
    caches: tuple[Path, ...] = field(default=(), repr=False)
    ids: tuple[tuple[int, int] | None, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.roots):
            object.__setattr__(self, "ids", tuple(_identity(r) for r in self.roots))

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
            if "\0" in os.fspath(d):
                raise _fail(f"--spill-allow directory {path_text(d)!r} contains a NUL byte")
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

    def _canonical(self, given: str, what: str) -> Path:
        """The target with symlinks and ``..`` resolved (the nearest existing ancestor's
        canonical form plus the lexical rest), checked against the roots before anything
        is created, so a refused path leaves no directories behind."""
        if "\0" in given:
            raise _fail("spill open failed: file name contained an unexpected NUL byte")
        seps = (os.sep, os.altsep) if os.altsep else (os.sep,)
        p = Path(given)
        if not given or given.endswith(seps) or p.name in ("", ".", ".."):
            raise _fail(f"{what} path {given} names a directory, not a file")
        if not p.is_absolute():
            p = self.base / p
        try:
            parent = p.parent.resolve()
            target = parent / p.name
            if not self._allowed(parent):
                raise self._outside(given, target)
            if target.is_symlink():  # followed once, here, and only to inside a root
                target = target.resolve()
                if not self._allowed(target):
                    raise self._outside(given, target)
        except (OSError, RuntimeError) as exc:  # RuntimeError: symlink loop
            if isinstance(exc, OSError) and exc.errno in (errno.EINVAL, errno.ENOENT):
                # readlink of what lstat had just called a symlink (a non-strict realpath
                # raises nothing else for a missing path): it changed meanwhile
                raise self._moved(given, what, Path(exc.filename or p.parent)) from exc
            err = _oserr(exc) if isinstance(exc, OSError) else exc
            raise _fail(f"cannot create directory for {what} path {given}: {err}") from exc
        if target.name in ("", ".", "..") or not self._allowed(target.parent):  # a root
            raise _fail(f"{what} path {given} names a directory, not a file")
        return target

    def _root_of(self, directory: Path) -> tuple[Path, tuple[int, int] | None, tuple[str, ...]]:
        """The deepest root holding `directory`, its recorded identity, and the rest."""
        best = max((i for i, r in enumerate(self.roots) if directory.is_relative_to(r)),
                   key=lambda i: len(self.roots[i].parts))
        root = self.roots[best]
        return root, self.ids[best], directory.relative_to(root).parts

    def _moved(self, given: str, what: str, where: Path) -> QueryError:
        return _fail(f"{what} path {given} changed while it was being opened: {where} is no "
                     "longer the directory it resolved to (a symlink or another directory was "
                     "put in its place); nothing was written")

    def target(self, path: str | os.PathLike[str], *, what: str = "spill") -> Target:
        """The validated target, its directory open (missing directories created).
        `what` names the path in messages ("spill", "write.path", "sidecar").  Relative
        paths join the `.tet` directory, not the cwd, so a document means the same thing
        wherever the host runs.  An existing directory, FIFO, socket or device there is
        refused (never opened, replaced or waited on)."""
        given = os.fspath(path)
        target = self._canonical(given, what)
        root, root_id, parts = self._root_of(target.parent)
        try:
            d = Dir.walk(root, parts, root_id=root_id, create=True,
                         on_symlink=lambda where: self._moved(given, what, where))
        except OSError as exc:
            raise _fail(f"cannot create directory for {what} path {given}: "
                        f"{_oserr(exc)}") from exc
        try:
            st = d.lstat(target.name)
        except OSError as exc:
            d.close()
            raise _fail(f"cannot create directory for {what} path {given}: "
                        f"{_oserr(exc)}") from exc
        if st is not None and not stat.S_ISREG(st.st_mode):
            d.close()
            if stat.S_ISDIR(st.st_mode):
                raise _fail(f"{what} path {given} names a directory, not a file")
            if stat.S_ISLNK(st.st_mode):
                raise self._moved(given, what, target)
            raise _fail(f"{what} path {given} names {kind_of(st.st_mode)}, not a regular "
                        "file; refusing to write to it")
        return Target(d, target.name, target)

    def resolve(self, path: str | os.PathLike[str], *, what: str = "spill") -> Path:
        """The validated canonical target path (its directory created), for reports; write
        through `create`, which does not look the path up again."""
        with self.target(path, what=what) as t:
            return t.path

    def create(self, path: str | os.PathLike[str], *, what: str = "spill",
               output: str = "spill") -> NewFile:
        """A new file for the validated target, written beside it and renamed onto it at
        commit (use it as a context manager).  Write errors read ``validation: cannot write
        {output} file P: ...``."""
        t = self.target(path, what=what)
        return NewFile(t.dir, t.name, shown=t.path, action=f"validation: cannot write "
                       f"{output} file", own_dir=True)

    def _temp_root(self) -> tuple[Path, tuple[int, int] | None]:
        roots = [(r, self.ids[self.roots.index(r)]) for r in self.caches if r in self.roots]
        for root, ident in (*roots, *zip(self.roots, self.ids)):
            if root.is_dir() and os.access(root, os.W_OK | os.X_OK):
                return root, ident
        raise _fail("no writable directory for temp files among the allowed roots "
                    f"{', '.join(map(str, self.roots))}")

    def temp_path(self, kind: str) -> Path:
        """kind "spill" -> <cache>/spill-{pid}-{nanos}.bin ; kind "sidecar-draft" ->
        <cache>/sidecar-draft-{pid}-{nanos}.tet (first writable cache root, else any writable
        root). Does not create the file."""
        if kind not in _CACHE_KINDS:
            raise ValueError(f"unknown temp file kind {kind!r}; "
                             f"expected one of {sorted(_CACHE_KINDS)}")
        root, _ = self._temp_root()
        return root / temp_name(kind)

    def _root_dir(self, root: Path, ident: tuple[int, int] | None) -> Dir:
        def moved(where: Path) -> TetError:
            return _fail(f"allowed root {where} is no longer the directory the allowlist "
                         "recorded; nothing was written")

        try:
            return Dir.walk(root, (), root_id=ident, create=False, on_symlink=moved)
        except OSError as exc:
            raise _fail(f"cannot open temp directory {root}: {_oserr(exc)}") from exc

    def scratch(self, dtype: np.dtype[Any], shape: Sequence[int]) -> np.ndarray[Any, Any]:
        """A writable array on a file in the temp root that has no name (tier-C temp
        spills): nothing is left behind, whatever happens, and a full disk is an error
        here, before any byte is written."""
        root, ident = self._temp_root()
        with self._root_dir(root, ident) as d:
            return scratch_array(d, dtype, shape,
                                 action="validation: cannot write temp spill file in")

    def publish(self, draft: Path, target: Target, *, output: str = "sidecar") -> None:
        """Move a finished draft from a root (the temp root) onto `target`, relative to
        both directory descriptors (a copy renamed in when they are on two file systems)."""
        parent = draft.parent
        if parent not in self.roots:
            raise _fail(f"draft {draft} is not in an allowed root")
        with self._root_dir(parent, self.ids[self.roots.index(parent)]) as src:
            move(src, draft.name, target.dir, target.name, shown=target.path,
                 action=f"validation: cannot write {output} file")


@contextmanager
def atomic_output(target: Path, *, what: str = "spill") -> Iterator[Path]:
    """For callers that write by path: yield a hidden temp path beside `target`
    (``TEMP_NAMES["output"]``), created exclusively; on normal exit fsync it and rename it
    onto target relative to the directory, so readers never see a partial file.  On any
    exception (KeyboardInterrupt included) the temp file is removed and the exception
    re-raised; an OSError becomes a `TetOSError` ("validation: cannot write {what} file
    {target}: …").  The previous content of target, if any, is untouched on failure.
    `tet`'s own outputs use `Allowlist.create`, which never reopens a path."""
    try:
        d = Dir.of(target.parent)
    except OSError as exc:
        raise NewFile.describe(exc, f"validation: cannot write {what} file", target) from exc
    out = NewFile(d, target.name, shown=target, action=f"validation: cannot write {what} file",
                  anonymous=False, own_dir=True)
    with out:
        assert out.temp is not None
        yield d.path / out.temp


def move_into_place(src: Path, dst: Path) -> None:
    """Rename src onto dst, or where they are on two file systems copy it beside dst,
    fsync, rename, then unlink src.  On failure, dst is untouched and partial copies are
    removed.  I/O errors surface as `TetOSError` subclasses naming both paths."""
    action = f"validation: cannot move {src} to"
    try:
        s, d = Dir.of(src.parent), Dir.of(dst.parent)
    except OSError as exc:
        raise NewFile.describe(exc, action, dst) from exc
    with s, d:
        move(s, src.name, d, dst.name, shown=dst, action=action)


@contextmanager
def temp_file(allow: Allowlist, kind: str = "spill") -> Iterator[Path]:
    """A temp path from allow.temp_path(kind) that is always deleted on exit (success, error,
    KeyboardInterrupt), so interrupted queries do not litter the cache; drafts that killed
    queries left there (their process gone) are removed first."""
    path = allow.temp_path(kind)
    with contextlib.suppress(OSError):
        remove_stale(path.parent, None)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
