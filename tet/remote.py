"""Reading a remote ``.tet`` object through ranged requests: `RangedSource`.

The source is a `tet.reader.ByteSource` whose buffer is a sparse anonymous private
mapping the size of the object: pages never touched cost no memory and read as zeros,
and the catalog parser and the C kernels read it exactly as they read a local map.
What they will read is fetched first: the catalog at open (kept), the touched tiles
before each C call (`hold`: nearby ranges coalesced, many requests in flight, every one
conditional on the ETag read at open), released again afterwards (``MADV_DONTNEED``) so
memory stays bounded.  `tet.remote_tiles` runs the C calls in windows over it.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import struct
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PosixPath
from typing import Any

from tet import objstore
from tet.errors import TetError
from tet.limits import LIMITS
from tet.objstore import Location, RemoteConfigError

__all__ = ["RangedSource", "RemoteName", "Tuning", "split_options"]

Span = tuple[int, int]  # [start, end) byte range

PAGE = mmap.PAGESIZE
FOOTER_TAIL = 16
HISTORY_MAX = LIMITS["footer_json_bytes"]  # a footer's JSON is at most this long
REF_MAX = LIMITS["metadata_blob_bytes"]  # the largest out-of-line region fetched at open


@dataclass(frozen=True)
class Tuning:
    """How a remote source fetches (``storage_options`` keys in brackets).

    head_bytes [tet_head_bytes]: the speculative read at open (also measures the object).
    gap_bytes [tet_gap_bytes]: two ranges closer than this are fetched as one request.
    request_bytes [tet_request_bytes]: the largest single request.
    in_flight [tet_in_flight]: requests in flight at once.
    window_bytes [tet_window_bytes]: payload bytes one windowed C call may hold (half is
    decoded while the next half is fetched)."""

    head_bytes: int = 256 << 10
    gap_bytes: int = 1 << 20
    request_bytes: int = 16 << 20
    in_flight: int = 8
    window_bytes: int = 128 << 20


TUNING_KEYS = {f"tet_{k}": k for k in Tuning.__dataclass_fields__}


def split_options(options: Mapping[str, Any] | None) -> tuple[dict[str, Any], Tuning]:
    """`storage_options` without tet's own ``tet_*`` keys, and the `Tuning` they give."""
    store: dict[str, Any] = {}
    tuning: dict[str, int] = {}
    for key, value in (options or {}).items():
        field = TUNING_KEYS.get(str(key).lower())
        if field is None:
            store[key] = value
            continue
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = 0
        if number < 1:
            raise RemoteConfigError(f"storage option {key}={value!r}: a positive integer "
                                    "is needed")
        tuning[field] = number
    return store, Tuning(**tuning)


def merge(spans: Sequence[Span], gap: int = 0) -> list[Span]:
    """Sorted, non-empty spans with those closer than `gap` joined."""
    out: list[Span] = []
    for a, b in sorted(s for s in spans if s[1] > s[0]):
        if out and a <= out[-1][1] + gap:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def subtract(spans: Sequence[Span], minus: Sequence[Span]) -> list[Span]:
    """The parts of merged `spans` outside merged `minus`."""
    out: list[Span] = []
    j = 0
    for a, b in spans:
        while j < len(minus) and minus[j][1] <= a:
            j += 1
        k = j
        while a < b and k < len(minus) and minus[k][0] < b:
            if minus[k][0] > a:
                out.append((a, minus[k][0]))
            a = max(a, minus[k][1])
            k += 1
        if a < b:
            out.append((a, b))
    return out


def requests_for(spans: Sequence[Span], tuning: Tuning) -> list[Span]:
    """The requests that fetch `spans`: coalesced, then cut at the largest request."""
    out: list[Span] = []
    for a, b in merge(spans, tuning.gap_bytes):
        while a < b:
            out.append((a, min(b, a + tuning.request_bytes)))
            a = out[-1][1]
    return out


class RemoteName(PosixPath):
    """What a remote file's reader calls its path: prints (and ``os.fspath``) as the URL,
    so messages name the object; ``.name`` and ``.stem`` are the key's last part."""

    url = ""

    @classmethod
    def of(cls, url: str) -> RemoteName:
        name = cls(url)
        name.url = url
        return name

    def __str__(self) -> str:
        return self.url or super().__str__()

    def __fspath__(self) -> str:
        return str(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteName.of, (self.url,))


class RangedSource:
    """A remote object as a `tet.reader.ByteSource` (see the module doc).

    ``requests`` and ``bytes_fetched`` count what it asked for; ``held`` is the payload
    bytes held now by operations and ``peak_held`` the most ever held at once."""

    def __init__(self, loc: Location, tuning: Tuning | None = None, *,
                 tiles: Callable[..., Any] | None = None) -> None:
        self.loc = loc
        self._tiles = tiles
        self.tuning = tuning or Tuning()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._coord: ThreadPoolExecutor | None = None  # runs `fetching`'s fills
        self._pinned: list[Span] = []
        self._have: list[Span] = []
        self._holds: dict[int, list[Span]] = {}
        self._next_hold = 0
        self.requests = 0
        self.bytes_fetched = 0
        self.held = 0
        self.peak_held = 0
        head, meta = objstore.read_head(loc, self.tuning.head_bytes)
        self.requests, self.bytes_fetched = 1, len(head)
        self.etag: str | None = meta.etag
        self._size = meta.size
        self.map: mmap.mmap | None = None
        if self._size:
            flags = mmap.MAP_PRIVATE | getattr(mmap, "MAP_ANONYMOUS", 0x20) | \
                getattr(mmap, "MAP_NORESERVE", 0)
            self.map = mmap.mmap(-1, self._size, flags=flags)
            self.map[: len(head)] = head
            self._pinned = self._have = [(0, len(head))]
        try:
            self._fetch_catalog(head)
        except BaseException:
            self.close()
            raise

    # -- ByteSource -----------------------------------------------------------------
    @property
    def size(self) -> int:
        return self._size

    @property
    def identity(self) -> tuple[int, int]:
        return (zlib.crc32(self.loc.url.encode()), zlib.crc32((self.etag or "").encode()))

    @property
    def url(self) -> str:
        return self.loc.url

    def buffer(self) -> Any:
        return self.map if self.map is not None else b""

    def make_table(self, *args: Any, **kwargs: Any) -> Any:
        """The tile table over this source (`tet.reader.Reader.table`): the `tiles` class
        given at open (`tet.remote_tiles.RemoteTiles`), which fetches before each call."""
        if self._tiles is None:
            raise TetError(f"{self.loc.url}: this source was opened without a tile table")
        return self._tiles(*args, source=self, **kwargs)

    def guarded(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def lend(self, end: int, start: int = 0) -> Any:
        """The buffer with [start, end) fetched and kept for good (a view reads it later)."""
        self.pin([(start, end)])
        return self.buffer()

    def close(self) -> None:
        for pool in (self._coord, self._pool):
            if pool is not None:
                pool.shutdown(wait=True)
        self._coord = self._pool = None
        if self.map is not None:
            with contextlib.suppress(BufferError):  # a zero-copy view still uses it
                self.map.close()
            self.map = None

    # -- fetching -------------------------------------------------------------------
    def _fetch_catalog(self, head: bytes) -> None:
        """The tail (footer) and the catalog, as the parser will read them."""
        size, got = self._size, len(head)
        if got < 32 or head[:4] != b"TETR" or size <= got:
            return  # the parser sees what there is and says what is wrong
        flags, cio, cil = struct.unpack_from("<IQQ", head, 12)
        want: list[Span] = []
        if size >= FOOTER_TAIL:  # the parser checks the tail whatever the flag says
            want.append((max(got, size - (HISTORY_MAX + FOOTER_TAIL) if flags & 1
                             else size - FOOTER_TAIL), size))
        self.pin(want)
        if cio + cil <= size:
            self.pin([(40, cio + cil)])
        if flags & 1:
            self.pin(self._spill_span())

    def _spill_span(self) -> list[Span]:
        """The out-of-line footer regions (``*_ref``: spilled metadata, the checksum
        table) that lie inside the object."""
        buf = self.buffer()
        size = self._size
        if bytes(buf[size - 4:size]) != b"THST":
            return []
        (n,) = struct.unpack_from("<Q", buf, size - FOOTER_TAIL)
        if n > HISTORY_MAX or n + FOOTER_TAIL > size:
            return []
        try:
            doc = json.loads(bytes(buf[size - FOOTER_TAIL - n: size - FOOTER_TAIL]))
        except ValueError:
            return []
        out: list[Span] = []
        for key, ref in (doc.items() if isinstance(doc, dict) else ()):
            if key.endswith("_ref") and isinstance(ref, dict):
                a, length = ref.get("offset"), ref.get("len")
                if isinstance(a, int) and isinstance(length, int) and a >= 0 and \
                        0 < length <= REF_MAX and a + length <= size:
                    out.append((a, a + length))
        return out

    def _clip(self, spans: Sequence[Span]) -> list[Span]:
        return merge([(max(0, a), min(b, self._size)) for a, b in spans])

    def _fill(self, missing: Sequence[Span]) -> None:
        """Fetch `missing` (merged, not resident) into the map, many requests at once."""
        reqs = requests_for(missing, self.tuning)
        if not reqs:
            return
        if len(reqs) == 1 or self.tuning.in_flight == 1:
            for r in reqs:
                self._get(r)
            return
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.tuning.in_flight,
                                                thread_name_prefix="tet-fetch")
            pool = self._pool
        for fut in [pool.submit(self._get, r) for r in reqs]:
            fut.result()  # the first failure is raised (FileChangedError, RemoteError)

    def _get(self, span: Span) -> None:
        a, b = span
        data, _ = objstore.read_range(self.loc, a, b, etag=self.etag)
        if self.map is None:
            raise TetError(f"{self.loc.url} is closed")
        self.map[a:a + len(data)] = data
        with self._lock:
            self.requests += 1
            self.bytes_fetched += len(data)

    def pin(self, spans: Sequence[Span]) -> None:
        """Fetch `spans` (what is not resident) and keep them for the source's life."""
        want = self._clip(spans)
        with self._lock:
            missing = subtract(want, self._have)
        self._fill(missing)
        with self._lock:
            self._pinned = merge([*self._pinned, *want])
            self._have = merge([*self._have, *want])

    @contextlib.contextmanager
    def hold(self, spans: Sequence[Span]) -> Iterator[None]:
        """`spans` resident for the block; released afterwards unless pinned or held by
        another operation.  Spans outside the object are left to the C bounds checks."""
        with self.fetching(spans) as done:
            done()
            yield

    @contextlib.contextmanager
    def fetching(self, spans: Sequence[Span]) -> Iterator[Any]:
        """Like `hold`, but the fetch runs on the pool: the block gets a callable that
        waits for it (so a caller overlaps it with other work), released at exit."""
        want = self._clip(spans)
        with self._lock:
            hold_id = self._next_hold
            self._next_hold += 1
            self._holds[hold_id] = want
            missing = subtract(want, self._have)
            got = sum(b - a for a, b in requests_for(missing, self.tuning))
            self.held += got
            self.peak_held = max(self.peak_held, self.held)
        future: Any = None
        if missing:
            with self._lock:  # a fill waits on the request pool: it runs beside it
                if self._coord is None:
                    self._coord = ThreadPoolExecutor(1, thread_name_prefix="tet-window")
                coord = self._coord
            future = coord.submit(self._fill, missing)

        def wait() -> None:
            if future is not None:
                future.result()
                with self._lock:
                    self._have = merge([*self._have, *missing])

        try:
            yield wait
        finally:
            if future is not None:
                with contextlib.suppress(BaseException):
                    future.result()  # never release under a running fetch
            self._release(hold_id, got)

    def _release(self, hold_id: int, got: int) -> None:
        with self._lock:
            mine = self._holds.pop(hold_id)
            keep = merge([*self._pinned, *(s for h in self._holds.values() for s in h)])
            drop = subtract(mine, keep)
            self._have = subtract(self._have, drop)
            self.held -= got
        if self.map is None:
            return
        for a, b in drop:
            lo, hi = -(-a // PAGE) * PAGE, b // PAGE * PAGE
            if hi > lo:
                self.map.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
