"""Writing `.tet` files to object stores: build locally, upload once.

A remote write (`TetWriter.create(url)`, `tet.write_dataset(url, …)`, `tet.convert(src,
url)`) builds the file in a private directory under the platform cache with the same
streaming writer (and so the same memory bounds) as a local write, then uploads it in
one atomic put (`objstore.put_file`: multipart above `UPLOAD_PART_BYTES`), so readers
see the old object or the new one.  An append (`TetWriter.open_append(url)`) downloads
the object, recording its ETag, appends locally, and uploads only if the object still
has that ETag: a concurrent writer's commit is never overwritten; the loser gets
`RemoteConflictError` naming the URL.

The build directory is a temp of kind ``upload`` (`tet.tempnames.TEMP_NAMES`): removed
after the upload, after a failure and on abort, and swept by a later remote write when
its owner died.  This module knows the cache and the store; the writer knows the layout.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tet import objstore
from tet.errors import TetError
from tet.objstore import Location, ObjectMeta, RemoteError

__all__ = ["UPLOAD_PART_BYTES", "RemoteTarget", "built_by", "fetched", "is_remote", "remote_target",
           "staged"]

#: Files larger than this are uploaded in parts of this size (a multipart upload).
UPLOAD_PART_BYTES = 16 << 20
_FALLBACK_NAME = "object.tet"


def is_remote(target: object, store: Any = None) -> bool:
    """Whether `target` names an object to write through a store (a URL tet writes
    remotely, or any key when `store` is given)."""
    return store is not None or objstore.is_url(target)


def _local_name(key: str) -> str:
    """The file name the local build gets: the key's last part when it is a plain name."""
    name = posixpath.basename(key)
    if name in ("", ".", "..") or "\x00" in name or len(os.fsencode(name)) > 150:
        return _FALLBACK_NAME
    return name


def _cache_root(url: str) -> Path:
    from tet.query.allow import cache_roots  # the per-user cache the allowlist pins

    roots = cache_roots()
    if not roots:
        raise RemoteError(f"cannot write `{url}`: no usable per-user cache directory to "
                          "build the file in (check HOME, XDG_CACHE_HOME and TMPDIR)")
    return roots[0]


class RemoteTarget:
    """One remote write: the object (`loc`), the local file it is built in (`local`,
    inside a private build directory) and, for an append, the ETag the upload requires.

    `upload` puts the local file; `cleanup` removes the build directory (idempotent,
    and done when the target is collected)."""

    def __init__(self, loc: Location, *, part_bytes: int = UPLOAD_PART_BYTES) -> None:
        from tet.tempnames import remove_stale, temp_name

        if int(part_bytes) < 1:
            raise ValueError(f"part_bytes must be positive, got {part_bytes}")
        self.loc = loc
        self.part_bytes = int(part_bytes)
        self.etag: str | None = None
        self.appending = False
        name = _local_name(loc.key)
        root = _cache_root(loc.url)
        with contextlib.suppress(OSError):
            remove_stale(root, name)  # what killed remote writes left
        build = root / temp_name("upload", name)
        try:
            build.mkdir(mode=0o700)
        except OSError as exc:
            raise RemoteError(f"cannot write `{loc.url}`: cannot create the local build "
                              f"directory {build}: {exc.strerror or exc}") from exc
        self.build_dir = build
        self.local = build / name
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(build), True)

    @property
    def url(self) -> str:
        """The object's URL, credentials removed (what messages and reports show)."""
        return self.loc.url

    @classmethod
    def create(cls, target: str, storage_options: Mapping[str, Any] | None = None,
               store: Any = None, *, part_bytes: int = UPLOAD_PART_BYTES) -> RemoteTarget:
        """A target for a new object (replaced at upload if one exists, as a local
        create replaces the file)."""
        return cls(objstore.locate(target, storage_options, store), part_bytes=part_bytes)

    @classmethod
    def append(cls, target: str, storage_options: Mapping[str, Any] | None = None,
               store: Any = None, *, part_bytes: int = UPLOAD_PART_BYTES) -> RemoteTarget:
        """A target holding a local copy of the object, and the ETag it had."""
        out = cls.create(target, storage_options, store, part_bytes=part_bytes)
        try:
            with open(out.local, "xb") as f:
                meta = objstore.download(out.loc, f)
            if not meta.etag:
                raise RemoteError(f"cannot append to `{out.url}`: the server gives the "
                                  "object no ETag, so a concurrent writer could not be "
                                  "detected")
        except BaseException:
            out.cleanup()
            raise
        out.etag = meta.etag
        out.appending = True
        return out

    def upload(self) -> ObjectMeta:
        """Put the local file as the object (for an append: only if its ETag is still
        the one read; else `RemoteConflictError`)."""
        try:
            return objstore.put_file(self.loc, self.local, if_match=self.etag,
                                     part_bytes=self.part_bytes)
        except TetError:
            raise
        except OSError as exc:
            raise RemoteError(f"cannot upload `{self.url}` from {self.local}: "
                              f"{exc.strerror or exc}") from exc

    def cleanup(self) -> None:
        """Remove the local build (idempotent)."""
        self._finalizer()

    @property
    def cleaned(self) -> bool:
        return not self._finalizer.alive


@contextlib.contextmanager
def staged(target: str, storage_options: Mapping[str, Any] | None = None,
           store: Any = None, *, part_bytes: int = UPLOAD_PART_BYTES
           ) -> Iterator[RemoteTarget]:
    """A `RemoteTarget` for a new object, removed on exit whatever happens; the caller
    writes `local` and calls `upload`."""
    out = RemoteTarget.create(target, storage_options, store, part_bytes=part_bytes)
    try:
        yield out
    finally:
        out.cleanup()


@contextlib.contextmanager
def fetched(source: str, storage_options: Mapping[str, Any] | None = None,
            store: Any = None) -> Iterator[Path]:
    """A local copy of the remote object `source` (under the cache, named like it),
    removed on exit: how `tet.convert` reads remote HDF5 and NetCDF files."""
    with staged(source, storage_options, store) as copy:
        with open(copy.local, "xb") as f:
            objstore.download(copy.loc, f)
        yield copy.local


def remote_target(path: str | os.PathLike[str], storage_options: Mapping[str, Any] | None,
                  store: Any, part_bytes: int, *, append: bool) -> RemoteTarget | None:
    """The `RemoteTarget` of a URL (or of a key with `store`), downloaded first for an
    append; None for a local path (where `storage_options` are refused)."""
    if not is_remote(path, store):
        if storage_options:
            raise ValueError(f"storage_options apply to URLs, not to the local path {path}")
        return None
    make = RemoteTarget.append if append else RemoteTarget.create
    return make(os.fspath(path), storage_options, store, part_bytes=part_bytes)


@contextlib.contextmanager
def built_by(target: RemoteTarget | None) -> Iterator[None]:
    """Remove `target`'s local build when the block fails (a session that could not be
    set up leaves nothing behind)."""
    try:
        yield
    except BaseException:
        if target is not None:
            target.cleanup()
        raise
