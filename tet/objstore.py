"""Object stores and HTTP(S) servers as places a `.tet` file lives (through obstore).

A `Location` is one object: the URL a user gave (with any credentials removed from it),
the obstore store that reaches it, and the key inside that store.  This module knows
URLs, store options, the environment and the store's errors; it knows nothing of the
layout.  The ranged byte source (`tet.remote`) and the remote writers build on it.

Options (`storage_options`) are one flat mapping, as fsspec and xarray users pass them:
HTTP client keys (`timeout`, `connect_timeout`, `allow_http`, …) go to the client,
`max_retries` / `retry_timeout` / `backoff` to the retry policy, everything else to the
store's own configuration (`endpoint`, `region`, `access_key_id`, …).  Without options,
the store reads its standard environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`); the
reference's `TETRATION_S3_ENDPOINT`, `_REGION`, `_ACCESS_KEY` and `_SECRET_KEY` fill in
what neither gives.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import re
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from tet.errors import FileChangedError, TetError, TetFileNotFoundError

#: URL schemes tet opens as remote objects, and the obstore store kind behind each.
SCHEMES: dict[str, str] = {
    "s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "azure": "azure",
    "abfs": "azure", "abfss": "azure", "adl": "azure", "http": "http", "https": "http",
    "memory": "memory",
}

#: Keys of `storage_options` that configure the HTTP client rather than the store.
CLIENT_KEYS = frozenset({
    "allow_http", "allow_invalid_certificates", "connect_timeout", "default_content_type",
    "default_headers", "http1_only", "http2_keep_alive_interval", "http2_keep_alive_timeout",
    "http2_keep_alive_while_idle", "http2_only", "pool_idle_timeout",
    "pool_max_idle_per_host", "proxy_url", "proxy_ca_certificate", "proxy_excludes",
    "randomize_addresses", "read_timeout", "root_certificate", "timeout", "user_agent",
})
#: Keys of `storage_options` that configure retries.
RETRY_KEYS = frozenset({"max_retries", "retry_timeout", "backoff"})

#: What a request may take when the user says nothing: a stalled server is an error
#: within these bounds, never a hang.
DEFAULT_CLIENT: dict[str, Any] = {"timeout": "30s", "connect_timeout": "5s"}
DEFAULT_RETRY: dict[str, Any] = {
    "max_retries": 3, "retry_timeout": dt.timedelta(seconds=30),
    "backoff": {"init_backoff": dt.timedelta(milliseconds=100),
                "max_backoff": dt.timedelta(seconds=5), "base": 2},
}

#: The reference's S3 variables, and the store option each stands for.
TETRATION_S3_ENV: dict[str, str] = {
    "TETRATION_S3_ENDPOINT": "endpoint", "TETRATION_S3_REGION": "region",
    "TETRATION_S3_ACCESS_KEY": "access_key_id", "TETRATION_S3_SECRET_KEY": "secret_access_key",
}
#: The standard variable that, when set, wins over each reference alias.
_AWS_ENV: dict[str, tuple[str, ...]] = {
    "endpoint": ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT"),
    "region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "access_key_id": ("AWS_ACCESS_KEY_ID",),
    "secret_access_key": ("AWS_SECRET_ACCESS_KEY",),
}

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class RemoteError(TetError):
    """A remote object could not be read or written: the message names the URL and what
    the store or server said."""


class RemoteConfigError(RemoteError, ValueError):
    """`storage_options` or a URL the store cannot use (an unknown key, a bad value)."""


class RemoteConflictError(RemoteError):
    """A conditional write lost: someone else changed the object since it was read."""


class ObjectMeta(NamedTuple):
    """What a store says of one object: its size, its version tag (None when the server
    gives none) and when it was last modified."""

    size: int
    etag: str | None
    modified: dt.datetime | None


def scheme_of(text: str) -> str | None:
    """The lower-case URL scheme of `text` ("s3", "https", "file" …), None for a path."""
    m = _SCHEME.match(text)
    return m.group(1).lower() if m else None


def is_url(target: object) -> bool:
    """Whether `target` names a remote object tet can open (not a local path or file://)."""
    return isinstance(target, str) and scheme_of(target) in SCHEMES


def local_path(target: str) -> Path:
    """The path of a `file://` URL (percent-decoded); `InvalidPathError` for a remote host."""
    from tet.errors import InvalidPathError
    parts = urllib.parse.urlsplit(target)
    if parts.netloc not in ("", "localhost"):
        raise InvalidPathError(f"file URL `{target}` names the host `{parts.netloc}`; "
                               "only local files can be opened with file://")
    return Path(urllib.parse.unquote(parts.path))


def local_target(target: Any) -> Any:
    """A `file://` URL as its local path; anything else (a path, a remote URL) as it is."""
    return local_path(target) if isinstance(target, str) and scheme_of(target) == "file" \
        else target


def redact(url: str) -> str:
    """`url` without user information or query string (where signed URLs keep secrets):
    what messages, history and pickles may record."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass(frozen=True)
class Location:
    """One remote object: where it is and how to reach it.

    Pickles as (url, options), never as a live store, so a dask graph carries what a
    worker needs to open the object itself.  A store object passed by the caller is
    kept as is (obstore stores pickle)."""

    url: str  # redacted: safe to print and record
    key: str
    options: Mapping[str, Any] = field(default_factory=dict)
    store: Any = field(default=None, compare=False, repr=False)

    def reach(self) -> Any:
        """The obstore store, built on first use."""
        if self.store is None:
            object.__setattr__(self, "store", _shared_store(self.url, self.options, self._root))
        return self.store

    _root: str = field(default="", compare=False, repr=False)

    def __reduce__(self) -> tuple[Any, ...]:
        store = self.store if self._root == "" and self.store is not None else None
        return (_rebuild, (self.url, self.key, dict(self.options), store, self._root))


def _rebuild(url: str, key: str, options: dict[str, Any], store: Any, root: str) -> Location:
    return Location(url, key, options, store, root)


def locate(url: str, storage_options: Mapping[str, Any] | None = None,
           store: Any = None) -> Location:
    """The `Location` of `url`.

    With `store` (an obstore store), `url` is the key inside it (a bare key, or a URL whose
    path is the key).  Otherwise the store is the bucket, container or server of the URL
    and the key is the rest of its path.
    """
    options = dict(storage_options or {})
    if store is not None:
        key = urllib.parse.urlsplit(url).path.lstrip("/") if scheme_of(url) else url
        return Location(f"{type(store).__name__}:{key}", key, options, store)
    kind = SCHEMES.get(scheme_of(url) or "")
    if kind is None:
        raise RemoteConfigError(f"`{url}` is not a URL tet can open remotely "
                                f"(schemes: {', '.join(sorted(SCHEMES))})")
    parts = urllib.parse.urlsplit(url)
    path = urllib.parse.unquote(parts.path).lstrip("/")
    if kind == "http":
        # the server is the store; the key is the path under it
        root = urllib.parse.urlunsplit((parts.scheme, parts.netloc, "", "", ""))
        if parts.query:
            raise RemoteConfigError(f"`{redact(url)}`: query strings are not supported "
                                    "in HTTP URLs")
    elif kind == "azure" and "@" in parts.netloc:
        root = f"{parts.scheme}://{parts.netloc}"
    else:
        root = f"{parts.scheme}://{parts.netloc}"
    if not path or path.endswith("/"):
        raise RemoteConfigError(f"`{redact(url)}` names no object (a key after the "
                                "bucket or host is needed)")
    return Location(redact(url), path, options, None, root)


def _split_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any],
                                                         dict[str, Any]]:
    config: dict[str, Any] = {}
    client = dict(DEFAULT_CLIENT)
    retry = dict(DEFAULT_RETRY)
    for key, value in options.items():
        k = str(key).lower()
        if k in CLIENT_KEYS:
            client[k] = value
        elif k in RETRY_KEYS:
            retry[k] = (dt.timedelta(seconds=float(value))
                        if k == "retry_timeout" and isinstance(value, (int, float)) else value)
        else:
            config[k] = value
    return config, client, retry


def s3_env_aliases(config: Mapping[str, Any]) -> dict[str, Any]:
    """The reference's `TETRATION_S3_*` values for what neither `config` nor the standard
    `AWS_*` variables set; an `http://` endpoint allows plain HTTP, as the reference does."""
    out: dict[str, Any] = {}
    for var, key in TETRATION_S3_ENV.items():
        value = os.environ.get(var)
        if not value or key in config or any(os.environ.get(v) for v in _AWS_ENV[key]):
            continue
        out[key] = value
    return out


#: Stores built in this process, by root, options and the environment they read: a store
#: holds an HTTP client and its open connections, so files of one bucket share them
#: (opening a second file costs its requests, not a new client and TCP handshake).
_STORES: OrderedDict[tuple[str, str, str], Any] = OrderedDict()
_STORES_MAX = 32
_STORES_LOCK = threading.Lock()
_ENV_PREFIXES = ("AWS_", "GOOGLE_", "AZURE_", "TETRATION_S3_")


def _shared_store(url: str, options: Mapping[str, Any], root: str) -> Any:
    kind = SCHEMES.get(scheme_of(url) or "")
    if kind == "memory":  # each memory:// location is its own store
        return _build_store(url, options, root)
    env = repr(sorted((k, v) for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)))
    key = (root or url, repr(sorted((str(k), repr(v)) for k, v in options.items())), env)
    with _STORES_LOCK:
        store = _STORES.get(key)
        if store is not None:
            _STORES.move_to_end(key)
            return store
    store = _build_store(url, options, root)
    with _STORES_LOCK:
        _STORES[key] = store
        while len(_STORES) > _STORES_MAX:
            _STORES.popitem(last=False)
    return store


def _build_store(url: str, options: Mapping[str, Any], root: str) -> Any:
    try:
        import obstore.store
    except ImportError as exc:  # the optional extra is not installed
        raise RemoteError(f"opening `{url}` needs obstore: pip install 'tet-arrays[remote]'"
                          ) from exc
    split: tuple[Any, Any, Any] = _split_options(options)  # obstore's TypedDicts, built flat
    config, client, retry = split
    kind = SCHEMES[scheme_of(url) or ""]
    if kind == "s3":
        config = {**s3_env_aliases(config), **config}
    endpoint = str(config.get("endpoint", config.get("aws_endpoint", "")))
    if endpoint.startswith("http://") or (kind == "http" and root.startswith("http://")):
        client.setdefault("allow_http", True)
        client["allow_http"] = client["allow_http"] in (True, "true", "True", "1", 1)
    try:
        if kind == "memory":
            return obstore.store.MemoryStore()
        if kind == "http":
            return obstore.store.HTTPStore.from_url(root, client_options=client,
                                                    retry_config=retry)
        return obstore.store.from_url(root, config=config or None, client_options=client,
                                      retry_config=retry)
    except Exception as exc:
        raise RemoteConfigError(f"`{url}`: the store cannot be set up: "
                                f"{_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def translate(exc: BaseException, loc: Location, action: str) -> TetError:
    """The `TetError` for a store error raised while doing `action` on `loc`."""
    import obstore.exceptions as oe
    what = f"{action} `{loc.url}`"
    detail = _first_line(exc)
    if isinstance(exc, TetError):
        return exc
    if isinstance(exc, (FileNotFoundError, oe.NotFoundError)):
        return TetFileNotFoundError(f"no such object: `{loc.url}`", errno=errno.ENOENT,
                                    filename=loc.url)
    if isinstance(exc, oe.PreconditionError | oe.AlreadyExistsError):
        return RemoteConflictError(f"{what}: the object changed since it was read "
                                   f"(a concurrent writer won): {detail}")
    if isinstance(exc, oe.PermissionDeniedError | oe.UnauthenticatedError):
        return RemoteError(f"{what}: access denied (check the credentials and "
                           f"permissions): {detail}")
    if isinstance(exc, oe.UnknownConfigurationKeyError):
        return RemoteConfigError(f"{what}: {detail}")
    return RemoteError(f"{what} failed: {detail}")


def changed(loc: Location, then: str | None, now: str | None) -> FileChangedError:
    """The error for an object whose version tag changed between two requests."""
    return FileChangedError(f"`{loc.url}` changed while it was being read (ETag {then} "
                            f"then {now}); open it again")


def _meta(raw: Mapping[str, Any]) -> ObjectMeta:
    return ObjectMeta(int(raw["size"]), raw.get("e_tag"), raw.get("last_modified"))


def read_range(loc: Location, start: int, end: int, *,
               etag: str | None = None) -> tuple[bytes, ObjectMeta]:
    """Bytes [start, end) of the object (fewer only at its end) and its metadata, in one
    request; with `etag`, a changed object is `FileChangedError`."""
    import obstore
    options: Any = {"range": (start, end)}  # obstore's GetOptions
    if etag is not None:
        options["if_match"] = etag
    try:
        got = obstore.get(loc.reach(), loc.key, options=options)
        data = bytes(got.bytes())
        meta = _meta(got.meta)
    except Exception as exc:
        raise _read_error(exc, loc, etag) from exc
    want = min(end, meta.size) - start
    if len(data) != max(want, 0):
        raise RemoteError(f"reading `{loc.url}`: the server sent {len(data)} bytes for "
                          f"[{start}, {end}) of a {meta.size}-byte object")
    if etag is not None and meta.etag is not None and meta.etag != etag:
        raise changed(loc, etag, meta.etag)
    return data, meta


def read_head(loc: Location, length: int) -> tuple[bytes, ObjectMeta]:
    """The first `length` bytes (all of a shorter object) and its metadata: one request
    that also measures the object.  An empty object costs a second request (a range
    past the end is refused)."""
    try:
        return read_range(loc, 0, length)
    except RemoteError:
        meta = head(loc)
        if meta.size != 0:
            raise
        return b"", meta


def head(loc: Location) -> ObjectMeta:
    """The object's metadata (one HEAD request)."""
    import obstore
    try:
        return _meta(obstore.head(loc.reach(), loc.key))
    except Exception as exc:
        raise translate(exc, loc, "reading") from exc


def _read_error(exc: BaseException, loc: Location, etag: str | None) -> TetError:
    import obstore.exceptions as oe
    if etag is not None and isinstance(exc, oe.PreconditionError):
        return changed(loc, etag, "different")
    return translate(exc, loc, "reading")


def put_file(loc: Location, path: Path, *, if_match: str | None = None,
             create: bool = False, part_bytes: int = 16 << 20) -> ObjectMeta:
    """Upload the local file `path` as the object, atomically (readers see the old object
    or the new one).  `create`: only if no object exists; `if_match`: only if the object
    still has that ETag.  A lost condition is `RemoteConflictError`."""
    import obstore
    mode: Any = "create" if create else ({"e_tag": if_match} if if_match else "overwrite")
    size = path.stat().st_size
    try:
        result = obstore.put(loc.reach(), loc.key, path, mode=mode,
                             use_multipart=size > part_bytes, chunk_size=part_bytes)
    except Exception as exc:
        raise translate(exc, loc, "writing") from exc
    return ObjectMeta(size, result.get("e_tag"), None)


def download(loc: Location, out: Any, *, chunk_bytes: int = 8 << 20) -> ObjectMeta:
    """Stream the whole object into the binary file `out`; its metadata as read."""
    import obstore
    try:
        got = obstore.get(loc.reach(), loc.key)
        meta = _meta(got.meta)
        written = 0
        for chunk in got.stream(min_chunk_size=chunk_bytes):
            out.write(chunk)
            written += len(chunk)
    except Exception as exc:
        raise translate(exc, loc, "downloading") from exc
    if written != meta.size:
        raise RemoteError(f"downloading `{loc.url}`: the server sent {written} of "
                          f"{meta.size} bytes")
    return meta
