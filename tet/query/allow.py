"""Spill-path allowlist and crash-safe output helpers (query.md §10).

A query document names output paths (`spill`, `write.path`, sidecars), so it must not be
able to write anywhere the user did not intend.  The allowlist is built from the `.tet`
path the *host* gave, never from the document: the file's directory, the per-user cache
roots and explicit ``--spill-allow`` directories.  It is pinned when the file is opened
(`Allowlist.pin`): each root canonical and its identity recorded, relative paths taken
against the cwd of then; a root that is another directory later is refused, and nothing
is worked out again from path strings.  A target is resolved once (symlinks and
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
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import platformdirs

from tet.errors import QueryError, TetError
from tet.errors import validation as _fail
from tet.safedir import Dir, kind_of
from tet.safeio import NewFile, move, scratch_array
from tet.tempnames import remove_stale, temp_name

__all__ = ["Allowlist", "Target", "atomic_output", "cache_roots", "move_into_place",
           "temp_file"]

APP = "tetration"
_ROOTS_HINT = "(.tet directory, platform cache, or --spill-allow)"
_CACHE_KINDS = ("spill", "sidecar-draft")  # engine temp names in a cache root (tempnames table)


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


Ident = tuple[int, int] | None
_PIN_TRIES = 3  # a root that keeps changing while it is measured is not used


def _pin_cache(cand: Path, *, create: bool) -> tuple[Path, tuple[int, int]] | None:
    """A cache root's canonical path and identity (st_dev, st_ino), or None when it is
    missing (and not `create`), unusable, or not ours.  The identity is taken twice, of
    the canonical path and of the candidate as named: a candidate swapped meanwhile
    (for a symlink elsewhere) gives two answers and is measured again."""
    for _ in range(_PIN_TRIES):
        try:
            if create:
                cand.mkdir(mode=0o700, parents=True, exist_ok=True)
            canonical = cand.resolve(strict=True)
            st = os.stat(canonical)
            if not stat.S_ISDIR(st.st_mode) or not _owned(cand, canonical):
                return None
            again = os.stat(cand)
        except (OSError, RuntimeError):
            return None
        if (again.st_dev, again.st_ino) == (st.st_dev, st.st_ino):
            return canonical, (st.st_dev, st.st_ino)
    return None


def cache_roots() -> list[Path]:
    """Platform cache roots in order: created, canonical, deduped; unusable ones skipped."""
    roots: list[Path] = []
    for cand in _unique_candidates():
        pinned = _pin_cache(cand, create=True)
        if pinned is not None and pinned[0] not in roots:
            roots.append(pinned[0])
    return roots


_ENV_KEYS = ("HOME", "XDG_CACHE_HOME", "LOCALAPPDATA", "TMPDIR", "TEMP", "TMP")
_cands_lock = threading.Lock()
_cands_memo: dict[tuple[str | None, ...], tuple[Path, ...]] = {}


def _unique_candidates() -> tuple[Path, ...]:
    """`_candidates`, each once, remembered for the environment they came from."""
    key = (*(os.environ.get(k) for k in _ENV_KEYS), tempfile.tempdir)
    with _cands_lock:
        found = _cands_memo.get(key)
        if found is None:
            found = _cands_memo[key] = tuple(dict.fromkeys(_candidates()))
        return found


def _glance(cand: Path) -> Ident:
    """The identity of an existing candidate that is a directory of ours (and so is any
    symlink naming it), else None: two stats, cheap enough for every open."""
    try:
        st, lst = os.stat(cand), os.lstat(cand)
    except (OSError, ValueError):
        return None
    if not stat.S_ISDIR(st.st_mode):
        return None
    if hasattr(os, "geteuid") and (st.st_uid != os.geteuid() or lst.st_uid != os.geteuid()):
        return None
    return st.st_dev, st.st_ino


class _CachePins:
    """The cache roots of one allowlist.  When it is made (at open) the identity of each
    existing candidate is recorded; at the first use every candidate is created if
    missing, canonicalised and pinned, and after that the set never changes.  A
    candidate that is another directory at the first use than at open (swapped
    meanwhile) keeps the identity seen at open, so outputs there are refused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cands = _unique_candidates()
        self._seen = [_glance(c) for c in self._cands]
        self._pins: list[tuple[Path, tuple[int, int]]] | None = None

    def get(self) -> list[tuple[Path, tuple[int, int]]]:
        with self._lock:
            if self._pins is None:
                pins = []
                for cand, seen in zip(self._cands, self._seen):
                    pinned = _pin_cache(cand, create=True)
                    if pinned is not None and seen is not None and pinned[1] != seen:
                        pinned = (cand, seen)  # changed since open: refused when used
                    if pinned is not None:
                        pins.append(pinned)
                self._pins = pins
            return list(self._pins)


def _dedupe(pins: Sequence[tuple[Path, Ident]]) -> tuple[tuple[Path, Ident], ...]:
    out: list[tuple[Path, Ident]] = []
    for p in pins:
        if all(p[0] != q[0] for q in out):
            out.append(p)
    return tuple(out)


def _oserr(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _identity(path: Path) -> Ident:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _path_problem(text: str) -> str | None:
    """Why no file can have this name (a NUL byte, text the file system encoding cannot
    encode), or None."""
    if "\0" in text:
        return "contains a NUL byte"
    try:
        os.fsencode(text)
    except UnicodeEncodeError as exc:
        return (f"contains {text[exc.start:exc.end]!r}, which the file system encoding "
                f"({sys.getfilesystemencoding()}) cannot encode")
    return None


def _pin_extra(d: str | os.PathLike[str]) -> tuple[Path, Ident]:
    """A ``--spill-allow`` directory (relative to the cwd now, ``~`` expanded), created
    if missing, canonical, with its identity."""
    text = os.fspath(d)
    raw = os.fsdecode(text) if isinstance(text, bytes) else text
    if not raw:
        raise _fail("--spill-allow directory '' is empty; name a directory ('.' for the "
                    "current one)")
    problem = _path_problem(raw)
    if problem is not None:
        raise _fail(f"--spill-allow directory {raw!r} {problem}")
    p = Path(os.path.expanduser(raw))
    try:
        p.mkdir(parents=True, exist_ok=True)
        canonical = p.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        err = _oserr(exc) if isinstance(exc, OSError) else exc
        raise _fail(f"cannot create --spill-allow directory {p}: {err}") from exc
    if not canonical.is_dir():
        raise _fail(f"--spill-allow {p} is not a directory")
    return canonical, _identity(canonical)


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


class Allowlist:
    """The directories outputs may be written under, pinned when the `.tet` file is opened
    (`pin`, which `tet.open` calls): each root is canonical and its identity (st_dev,
    st_ino) recorded then, so a root replaced later (by a symlink or another directory)
    is refused, and nothing is worked out again from path strings or the cwd.

    Constructed directly, `roots` are taken as they are and their identities recorded
    now; `pin` builds the list of query.md §10 (the `.tet` directory, the cache roots,
    the ``--spill-allow`` ones)."""

    def __init__(self, base: Path, roots: Sequence[Path] = (), caches: Sequence[Path] = (),
                 ids: Sequence[Ident] | None = None) -> None:
        if ids is None or len(ids) != len(roots):
            ids = [_identity(r) for r in roots]
        self.base = base
        self._fixed = _dedupe(list(zip(roots, ids)))
        self._cache_paths = tuple(caches)
        self._lazy: _CachePins | None = None
        self._extras: tuple[tuple[Path, Ident], ...] = ()
        self._pins: tuple[tuple[Path, Ident], ...] | None = self._fixed

    @classmethod
    def pin(cls, tet_path: str | os.PathLike[str],
            extra: Sequence[str | os.PathLike[str]] = ()) -> Allowlist:
        """The allowlist of a `.tet` path as the host gave it, pinned now: its directory
        (a relative path against the cwd now), the cache roots (the identity of those
        that exist is taken now; all are created if missing, canonicalised and pinned at
        the first use), and ``extra`` (``--spill-allow``
        directories, relative to the cwd now, created if missing).  An empty, NUL or
        unencodable ``extra`` entry is a `QueryError`."""
        parent = Path(os.fspath(tet_path)).parent  # "data.tet" -> "." -> the cwd
        base = parent.resolve()
        out = cls(base, (base,))
        out._extras = tuple(_pin_extra(d) for d in extra)
        out._lazy = _CachePins()
        out._pins = None
        return out

    for_file = pin

    def _all(self) -> tuple[tuple[Path, Ident], ...]:
        """Every root with its identity, in order (the cache roots pinned on first call)."""
        pins = self._pins
        if pins is None:
            assert self._lazy is not None
            caches = self._lazy.get()
            self._cache_paths = tuple(p for p, _ in caches)  # before `_pins` says done
            pins = self._pins = _dedupe([*self._fixed, *caches, *self._extras])
        return pins

    @property
    def roots(self) -> tuple[Path, ...]:
        return tuple(p for p, _ in self._all())

    @property
    def ids(self) -> tuple[Ident, ...]:
        return tuple(i for _, i in self._all())

    @property
    def caches(self) -> tuple[Path, ...]:
        self._all()
        return self._cache_paths

    def __repr__(self) -> str:
        return f"Allowlist(base={self.base!r}, roots={self.roots!r})"

    def _allowed(self, path: Path) -> bool:
        return any(path.is_relative_to(root) for root in self.roots)

    def _outside(self, given: str, resolved: Path) -> QueryError:
        """One text for every output kind: query.md §10 words it for spills."""
        return _fail(f"spill path {given} is not under an allowed root {_ROOTS_HINT}; "
                     f"resolved to {resolved}")

    def _root_moved(self, root: Path, given: str | None = None, what: str = "spill"
                    ) -> QueryError:
        head = "" if given is None else f"{what} path {given}: "
        return _fail(f"{head}allowed root {root} is no longer the directory the allowlist "
                     "recorded (a symlink or another directory was put in its place); "
                     "nothing was written")

    def check_name(self, given: str, what: str = "spill") -> None:
        """Refuse, before anything is looked up, a path no output can have: empty, a
        directory by its form (``.``, ``..``, a trailing separator), a NUL byte (the
        reference engine's text) or text the file system encoding cannot encode."""
        if "\0" in given:
            raise _fail("spill open failed: file name contained an unexpected NUL byte")
        problem = _path_problem(given)
        if problem is not None:
            raise _fail(f"{what} path {given!r} {problem}")
        seps = (os.sep, os.altsep) if os.altsep else (os.sep,)
        if not given or given.endswith(seps) or os.path.basename(given) in ("", ".", ".."):
            raise _fail(f"{what} path {given or repr(given)} names a directory, not a file")

    def _check_roots(self, given: str, what: str, p: Path) -> None:
        """A root that `p` lies in (as written) and that is not the directory pinned any
        more: refused in those words, not as a path outside the roots."""
        for root, ident in sorted(self._all(), key=lambda r: -len(r[0].parts)):
            if ident is not None and p.is_relative_to(root):
                if _identity(root) != ident:
                    raise self._root_moved(root, given, what)
                return

    def _canonical(self, given: str, what: str) -> Path:
        """The target with symlinks and ``..`` resolved (the nearest existing ancestor's
        canonical form plus the lexical rest), checked against the roots before anything
        is created, so a refused path leaves no directories behind."""
        self.check_name(given, what)
        p = Path(given)
        if not p.is_absolute():
            p = self.base / p
        self._check_roots(given, what, p)
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

    def _root_of(self, directory: Path) -> tuple[Path, Ident, tuple[str, ...]]:
        """The deepest root holding `directory`, its recorded identity, and the rest."""
        pins = self._all()
        best = max((i for i, (r, _) in enumerate(pins) if directory.is_relative_to(r)),
                   key=lambda i: len(pins[i][0].parts))
        root, ident = pins[best]
        return root, ident, directory.relative_to(root).parts

    def _moved(self, given: str, what: str, where: Path) -> QueryError:
        return _fail(f"{what} path {given} changed while it was being opened: {where} is no "
                     "longer the directory it resolved to (a symlink or another directory was "
                     "put in its place); nothing was written")

    def beside(self, path: str | os.PathLike[str], what: str = "spill") -> str:
        """A path a Python caller gave for an output, checked (`check_name`) and with
        ``~`` expanded; a relative one stays relative: `target` takes it beside the
        `.tet` file (the directory pinned at open), never in the cwd."""
        given = os.fspath(path)
        text = os.fsdecode(given) if isinstance(given, bytes) else given
        self.check_name(text, what)
        return os.path.expanduser(text)

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
                         on_symlink=lambda where: self._moved(given, what, where),
                         on_root=lambda where: self._root_moved(where, given, what))
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

    def _temp_root(self) -> tuple[Path, Ident]:
        pins = self._all()
        caches = [p for p in pins if p[0] in self.caches]
        for root, ident in (*caches, *pins):
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

    def _root_dir(self, root: Path, ident: Ident) -> Dir:
        """A root's directory, opened and checked against its pinned identity."""
        def moved(where: Path) -> TetError:
            return self._root_moved(where)

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

    def sweep_temps(self) -> None:
        """Remove from the temp root the stale temps that killed queries left there
        (sidecar drafts of earlier versions, whose owners are gone), through its
        identity-checked descriptor; best effort."""
        with contextlib.suppress(OSError, TetError):
            root, ident = self._temp_root()
            with self._root_dir(root, ident) as d:
                remove_stale(d, None)

    def root_dir(self, directory: Path) -> Dir | None:
        """The open, identity-checked directory of a root itself (None when `directory`
        is not one of the roots)."""
        for root, ident in self._all():
            if root == directory:
                return self._root_dir(root, ident)
        return None


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
    queries left there (their process gone) are removed first.  Both go through the
    root's identity-checked descriptor, never a path looked up again."""
    path = allow.temp_path(kind)

    def in_root() -> Dir:
        d = allow.root_dir(path.parent)
        assert d is not None  # temp_path names a file in a root
        return d

    with contextlib.suppress(OSError, TetError), in_root() as d:
        remove_stale(d, None)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError, TetError), in_root() as d:
            d.unlink(path.name)
