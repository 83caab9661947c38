"""`RemoteStore`: the package storage interface (`tet.package_layout.PackageStore`) over
an object-store prefix (``s3://bucket/prefix``), through obstore and `tet.objstore`.

The layout is the local one, key for key, as tet-py 0.8.3 lays it out on S3: folders
are prefixes, each marked by an empty ``.tet-dir`` object.  An object store has no
rename and no lock, so the steps differ:

- a staging session is claimed by creating ``staging/<session>/.tet-dir`` with
  ``If-None-Match: *`` (a reused session id loses and is refused);
- a generation is claimed the same way (``generations/<id>/.tet-dir``), then its files
  are put (each put atomic); a publisher that loses the claim uploads nothing;
- ``CURRENT`` is flipped with a conditional put: ``If-None-Match: *`` for the first
  generation, ``If-Match`` on the ETag read with the generation the publish started
  from otherwise.  A lost put leaves ``CURRENT`` as the winner wrote it and is
  `PublishConflictError`, as on a local filesystem.

Parts and generations needed locally (assembly, ``pack``) are downloaded into a private
cache folder removed when the store is collected.  Readers never download: `tet.open`
range-reads the pinned ``packed.tet`` (`tet.remote`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import tempfile
import urllib.parse
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tet import objstore
from tet.errors import PackageError, PublishConflictError, TetError
from tet.layout import Catalog
from tet.objstore import Location, RemoteConfigError
from tet.opencache import open_remote
from tet.package_layout import (
    CURRENT,
    PROTOCOL,
    STAGING,
    gen_key,
    gen_name,
    parse_current,
    part_file,
)

__all__ = ["DIR_MARKER", "PACKAGE_SCHEMES", "RemoteStore", "is_package_url"]

#: The empty object tet-py puts in each "folder" of a package on an object store.
DIR_MARKER = ".tet-dir"
#: URL schemes a package may live under (stores with conditional puts tet has tested).
PACKAGE_SCHEMES = frozenset({"s3", "s3a"})
GEN_QUERY = "?generation="


def is_package_url(target: object) -> bool:
    """Whether `target` is a URL of a scheme a package may live under."""
    return isinstance(target, str) and objstore.scheme_of(target) in PACKAGE_SCHEMES


def _split(url: str) -> tuple[str, str]:
    """(``s3://bucket``, prefix) of a package URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.query:
        raise RemoteConfigError(f"`{objstore.redact(url)}`: a package URL takes no query "
                                "string (but ?generation=N when opening)")
    if not parts.netloc:
        raise RemoteConfigError(f"`{objstore.redact(url)}` names no bucket")
    prefix = urllib.parse.unquote(parts.path).strip("/")
    return f"{parts.scheme}://{parts.netloc}", prefix


class RemoteStore:
    """A package under one object-store prefix."""

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        bucket, self.prefix = _split(url)
        self.options = dict(storage_options or {})
        self.root = objstore.redact(f"{bucket}/{self.prefix}" if self.prefix else bucket)
        self.bucket = bucket
        # a throwaway key gives the shared store of this bucket and these options
        self._store = objstore.locate(f"{bucket}/{PROTOCOL}", self.options).reach()
        self._etags: dict[int, str | None] = {}  # CURRENT's ETag when it held each value
        self._cache: Path | None = None
        self._fetched: dict[str, Path] = {}

    # -- keys ----------------------------------------------------------------
    def full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix and key else (key or self.prefix)

    def url(self, key: str) -> str:
        return f"{self.bucket}/{self.full(key)}"

    def loc(self, key: str) -> Location:
        return Location(objstore.redact(self.url(key)), self.full(key), self.options,
                        self._store)

    def _fail(self, exc: BaseException, key: str, action: str) -> TetError:
        return objstore.translate(exc, self.loc(key), action)

    # -- reads ---------------------------------------------------------------
    def _get(self, key: str) -> tuple[bytes, str | None] | None:
        import obstore
        import obstore.exceptions as oe
        try:
            got = obstore.get(self._store, self.full(key))
            return bytes(got.bytes()), got.meta.get("e_tag")
        except (FileNotFoundError, oe.NotFoundError):
            return None
        except Exception as exc:
            raise self._fail(exc, key, "reading") from exc

    def read(self, key: str) -> bytes | None:
        got = self._get(key)
        return None if got is None else got[0]

    def _head(self, key: str) -> dict[str, Any] | None:
        import obstore
        import obstore.exceptions as oe
        try:
            return dict(obstore.head(self._store, self.full(key)))
        except (FileNotFoundError, oe.NotFoundError):
            return None
        except Exception as exc:
            raise self._fail(exc, key, "reading") from exc

    def exists(self, key: str) -> bool:
        """An object at `key`, or any object under ``key/``."""
        return self._head(key) is not None or bool(self._listing(key, limit=True))

    def _listing(self, key: str, *, limit: bool = False) -> list[dict[str, Any]]:
        import obstore
        out: list[dict[str, Any]] = []
        try:
            for batch in obstore.list(self._store, self.full(key) + "/", chunk_size=1000):
                out.extend(dict(m) for m in batch)
                if limit and out:
                    break
        except Exception as exc:
            raise self._fail(exc, key, "listing") from exc
        return out

    def list(self, prefix: str) -> list[str]:
        import obstore
        base = self.full(prefix) + "/"
        try:
            got = obstore.list_with_delimiter(self._store, base)
        except Exception as exc:
            raise self._fail(exc, prefix, "listing") from exc
        names = {p[len(base):].strip("/") for p in got["common_prefixes"]}
        names |= {m["path"][len(base):] for m in got["objects"]}
        names.discard(DIR_MARKER)
        names.discard("")
        return sorted(names)

    def current(self) -> int | None:
        got = self._get(CURRENT)
        if got is None:
            return None
        value = parse_current(got[0])
        self._etags[value] = got[1]
        return value

    # -- writes --------------------------------------------------------------
    def _put(self, key: str, data: bytes | Path, mode: Any = "overwrite") -> None:
        import obstore
        size = data.stat().st_size if isinstance(data, Path) else len(data)
        big = size > (16 << 20)
        try:
            obstore.put(self._store, self.full(key), data, mode=mode, use_multipart=big,
                        chunk_size=16 << 20)
        except Exception as exc:
            raise self._fail(exc, key, "writing") from exc

    def write(self, key: str, data: bytes) -> None:
        self._put(key, data)

    def _claim(self, folder: str) -> bool:
        """Create ``folder/.tet-dir`` only if absent; False when it exists."""
        try:
            self._put(f"{folder}/{DIR_MARKER}", b"", mode="create")
        except objstore.RemoteConflictError:
            return False
        return True

    def create_session(self, session_id: str) -> None:
        folder = f"{STAGING}/{session_id}"
        if not self._claim(folder):
            raise PackageError(f"package path already exists: {self.root}/{folder}")

    def put_part(self, session_id: str, part_id: str, source: Path) -> Path:
        self._put(f"{STAGING}/{session_id}/{part_file(part_id)}", source)
        return source  # the local file is the part's bytes; nothing else to cache

    def _cache_dir(self) -> Path:
        if self._cache is None:
            self._cache = Path(tempfile.mkdtemp(prefix="tet-package-"))
            weakref.finalize(self, shutil.rmtree, str(self._cache), True)
        return self._cache

    def local_path(self, key: str) -> Path:
        """A downloaded copy of `key` (once per store; a missing object gives a path
        that does not exist)."""
        if key in self._fetched:
            return self._fetched[key]
        out = self._cache_dir() / f"{len(self._fetched)}-{os.path.basename(key) or 'obj'}"
        try:
            with open(out, "xb") as fh:
                objstore.download(self.loc(key), fh)
        except FileNotFoundError:
            out.unlink(missing_ok=True)
            return out
        except BaseException:
            out.unlink(missing_ok=True)
            raise
        self._fetched[key] = out
        return out

    @contextlib.contextmanager
    def scratch(self, generation: int) -> Iterator[Path]:
        folder = Path(tempfile.mkdtemp(prefix=f"tet-publish-{gen_name(generation)}-",
                                       dir=self._cache_dir()))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        yield  # no lock on an object store: the conditional puts decide

    def seal(self, generation: int, folder: Path) -> None:
        """Claim the generation, then put its files, the manifest last (a generation
        whose manifest is missing is not sealed: `log` skips it, `prune` removes it)."""
        where = gen_key(generation)
        if not self._claim(where):
            raise PublishConflictError(
                f"package path already exists: {self.root}/{where} (generation "
                f"{generation} was sealed by another publish; publish again for the next one)")
        names = sorted(p.name for p in folder.iterdir())
        for name in sorted(names, key=lambda n: (n == "MANIFEST.json", n)):
            self._put(f"{where}/{name}", folder / name, mode="create")

    def flip_current(self, generation: int, expected: int | None) -> None:
        mode: Any = "create"
        if expected is not None:
            etag = self._etags.get(expected)
            if etag is None:  # never read here, or the server gave no ETag
                now = self.current()
                etag = self._etags.get(expected) if now == expected else None
                if now != expected:
                    raise self._conflict(generation, expected)
                if etag is None:
                    raise PackageError(f"tet package: {self.url(CURRENT)} has no ETag, so "
                                       "it cannot be replaced conditionally")
            mode = {"e_tag": etag}
        try:
            self._put(CURRENT, f"{generation}\n".encode("ascii"), mode=mode)
        except objstore.RemoteConflictError:
            raise self._conflict(generation, expected) from None

    def _conflict(self, generation: int, expected: int | None) -> PublishConflictError:
        now = self.current()
        return PublishConflictError(
            f"publish conflict: CURRENT moved from {_show(expected)} to {_show(now)} while "
            f"generation {generation} was assembled; the package stays at generation "
            f"{_show(now)}")

    def remove(self, key: str) -> None:
        import obstore
        keys = [m["path"] for m in self._listing(key)]
        if key and self._head(key) is not None:
            keys.append(self.full(key))
        try:
            for i in range(0, len(keys), 1000):
                obstore.delete(self._store, keys[i:i + 1000])
        except Exception as exc:
            raise self._fail(exc, key, "removing") from exc

    def touch(self, key: str) -> None:
        with contextlib.suppress(TetError):
            self._put(key, b"")

    def age(self, key: str) -> float | None:
        """Seconds since `key` (or, for a folder, its ``.tet-dir`` marker: when it was
        claimed) was written."""
        meta = self._head(key) or (self._head(f"{key}/{DIR_MARKER}") if key else None)
        if meta is None:
            return None
        when = meta.get("last_modified")
        if not isinstance(when, dt.datetime):
            return None
        return max(0.0, (dt.datetime.now(dt.UTC) - when).total_seconds())

    def tree_bytes(self, key: str) -> int:
        return sum(int(m["size"]) for m in self._listing(key))

    # -- package-level -------------------------------------------------------
    def is_package(self) -> bool:
        """A ``PROTOCOL`` (tet's) or a ``CURRENT`` or staging/generation folder
        (tet-py writes no ``PROTOCOL`` on object stores)."""
        return self._head(PROTOCOL) is not None or self._head(CURRENT) is not None \
            or bool(self.list(STAGING)) or bool(self.list("generations"))


def _show(generation: int | None) -> str:
    return "none" if generation is None else str(generation)


def package_store(package: str | os.PathLike[str],
                  storage_options: Mapping[str, Any] | None = None) -> Any:
    """The store of an existing package: a `RemoteStore` for an ``s3://`` URL, else the
    `LocalStore` of the path (`PackageError` when it is not a package)."""
    from tet.package_local import store_of

    if is_package_url(package):
        store = RemoteStore(str(package), storage_options)
        if not store.is_package():
            raise PackageError(f"not a tet package (no PROTOCOL, CURRENT or generations/ "
                               f"under it): {store.root}")
        return store
    if storage_options:
        raise PackageError(f"storage_options apply to package URLs, not to the path {package}")
    if isinstance(package, str) and objstore.scheme_of(package) not in (None, "file"):
        raise PackageError(f"`{objstore.redact(package)}`: packages live on a local "
                           f"filesystem or under {', '.join(sorted(PACKAGE_SCHEMES))}:// URLs")
    return store_of(objstore.local_target(package))


def remote_catalog(store: RemoteStore, key: str) -> Catalog:
    """The catalog of the ``.tet`` at `key`, range-read (its head and tail), not downloaded."""
    reader = open_remote(store.url(key), store.options)
    if reader is None:  # a store URL is always remote
        raise PackageError(f"tet package: {store.url(key)} is not a remote object")
    try:
        return reader.catalog
    finally:
        reader.close()
