"""The ``.tet.d`` package layout in one place: the key of every file, the JSON documents
(``PROTOCOL``, ``PART_META.json``, ``MANIFEST.json``, ``ZONE.json``, ``INDEX.json``) with
their field order and formatting, ``CURRENT``, and the storage interface a package lives on
(`PackageStore`).

The documents are written as tet-py 0.8.3 writes them (two-space indented JSON, keys in
wire order, non-ASCII kept, one trailing newline), so a package either binding makes is
read by the other.  Keys are ``/``-separated and relative to the package root, so one
store implementation serves a local directory (`tet.package_local.LocalStore`) and, later,
an object-store prefix.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tet.errors import PackageError

__all__ = [
    "CURRENT",
    "GENERATIONS",
    "INDEX",
    "MANIFEST",
    "PACKED",
    "PART_META",
    "PINS",
    "PROTOCOL",
    "PROTOCOL_VERSION",
    "PUBLISHING",
    "STAGING",
    "ZONE",
    "Claim",
    "Manifest",
    "PackageStore",
    "PartMeta",
    "check_id",
    "dumps",
    "gen_key",
    "gen_name",
    "iter_parts",
    "manifest_doc",
    "parse_current",
    "parse_generation",
    "parse_manifest",
    "parse_part_meta",
    "part_file",
    "part_meta_doc",
    "protocol_doc",
]

PROTOCOL_VERSION = 2
PROTOCOL = "PROTOCOL"
CURRENT = "CURRENT"
STAGING = "staging"
GENERATIONS = "generations"
PUBLISHING = "publishing"
PINS = "readers"  # tet's own: one file per pinned generation, touched by each open
PACKED = "packed.tet"
MANIFEST = "MANIFEST.json"
ZONE = "ZONE.json"
INDEX = "INDEX.json"
PART_META = "PART_META.json"
MAX_GENERATION = 99_999_999  # eight digits in the directory name
_ID_MAX_BYTES = 128
_SESSION_RE = re.compile(r"[A-Za-z0-9._-]+")


def gen_name(generation: int) -> str:
    return f"{generation:08d}"


def gen_key(generation: int, leaf: str = "") -> str:
    """``generations/00000001`` or a file in it."""
    base = f"{GENERATIONS}/{gen_name(generation)}"
    return f"{base}/{leaf}" if leaf else base


def part_file(part_id: str) -> str:
    return f"part-{part_id}.tet"


def check_id(value: object, what: str) -> str:
    """A staging session or part id that is safe as one path component.  Sessions take
    ``[A-Za-z0-9._-]``; part ids anything but ``/``, ``\\`` and NUL (tet-py accepts
    ``"a b"``), neither may be ``.`` or ``..`` nor longer than 128 bytes."""
    ok = isinstance(value, str) and value not in ("", ".", "..") \
        and len(value.encode("utf-8", "surrogatepass")) <= _ID_MAX_BYTES
    if ok and what == "staging session id":
        ok = _SESSION_RE.fullmatch(str(value)) is not None
    elif ok:
        ok = not any(c in str(value) for c in "/\\\0")
    if not ok:
        raise PackageError(f"tet package: invalid {what} {value!r} (1 to {_ID_MAX_BYTES} bytes"
                           + (", letters, digits, '.', '_' or '-')" if "session" in what
                              else ", no '/', '\\' or NUL, not '.' or '..')"))
    return str(value)


def dumps(doc: Mapping[str, Any]) -> bytes:
    """A package document as tet-py writes it: indent 2, keys in the order given."""
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _loads(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise PackageError(f"tet package: {what} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise PackageError(f"tet package: {what} must be a JSON object")
    return doc


def protocol_doc(created_unix: int) -> dict[str, Any]:
    return {"protocol_version": PROTOCOL_VERSION, "created_unix": created_unix}


# ---------------------------------------------------------------------------
# Parts


@dataclass(frozen=True)
class Claim:
    """What a part contributes to one dataset: the whole grid (tet-py's only kind), or
    a box of whole tiles ``tile_start`` .. ``tile_stop`` (exclusive, tile coordinates) of
    a dataset of `shape` (tet's region claim: the part file holds that slab as its own
    dataset, whose tiles are exactly those tiles)."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    chunk_shape: tuple[int, ...]
    tile_start: tuple[int, ...] | None = None
    tile_stop: tuple[int, ...] | None = None

    @property
    def full_grid(self) -> bool:
        return self.tile_start is None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype,
                               "shape": list(self.shape), "chunk_shape": list(self.chunk_shape),
                               "full_grid": self.full_grid}
        if self.tile_start is not None and self.tile_stop is not None:
            out["region"] = {"tile_start": list(self.tile_start),
                             "tile_stop": list(self.tile_stop)}
        return out

    def describe(self) -> str:
        if self.tile_start is None or self.tile_stop is None:
            return "full_grid"
        return "tiles [" + ", ".join(f"{a}:{b}" for a, b in zip(self.tile_start,
                                                               self.tile_stop)) + "]"


@dataclass(frozen=True)
class PartMeta:
    part_id: str
    session_id: str
    byte_len: int
    sha256: str
    claims: tuple[Claim, ...]


def part_meta_doc(meta: PartMeta) -> dict[str, Any]:
    return {"part_id": meta.part_id, "writer_session_id": meta.session_id,
            "protocol_version": PROTOCOL_VERSION, "sealed": True,
            "part_byte_len": meta.byte_len, "part_sha256": meta.sha256,
            "claims": [c.to_dict() for c in meta.claims]}


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(v, int) and v >= 0 for v in value):
        raise PackageError(f"tet package: {what} must be a list of non-negative integers")
    return tuple(value)


def _field(doc: Mapping[str, Any], key: str, kind: type, what: str) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise PackageError(f"tet package: {what}: `{key}` must be a {kind.__name__}")
    return value


def parse_part_meta(data: bytes, where: str) -> PartMeta:
    doc = _loads(data, where)
    claims = []
    for raw in _field(doc, "claims", list, where):
        if not isinstance(raw, dict):
            raise PackageError(f"tet package: {where}: each claim must be an object")
        region = raw.get("region")
        start = stop = None
        if isinstance(region, dict):
            start = _ints(region.get("tile_start"), f"{where}: region tile_start")
            stop = _ints(region.get("tile_stop"), f"{where}: region tile_stop")
        elif raw.get("full_grid") is not True:
            raise PackageError(f"tet package: {where}: claim {raw.get('name')!r} is not "
                               "full_grid and has no region")
        claims.append(Claim(_field(raw, "name", str, where), _field(raw, "dtype", int, where),
                            _ints(raw.get("shape"), f"{where}: shape"),
                            _ints(raw.get("chunk_shape"), f"{where}: chunk_shape"),
                            start, stop))
    return PartMeta(_field(doc, "part_id", str, where),
                    _field(doc, "writer_session_id", str, where),
                    _field(doc, "part_byte_len", int, where),
                    _field(doc, "part_sha256", str, where), tuple(claims))


# ---------------------------------------------------------------------------
# Generations


@dataclass(frozen=True)
class Manifest:
    generation: int
    part_ids: tuple[str, ...]
    packed_byte_len: int
    packed_sha256: str


def manifest_doc(generation: int, part_ids: Sequence[str], packed_len: int, packed_sha: str,
                 zone_sha: str, index_sha: str) -> dict[str, Any]:
    return {"generation": generation, "protocol_version": PROTOCOL_VERSION,
            "part_ids": list(part_ids), "packed_byte_len": packed_len,
            "packed_sha256": packed_sha, "zone_maps": "required", "zone_maps_sha256": zone_sha,
            "secondary_indexes": "present", "secondary_indexes_sha256": index_sha}


def parse_manifest(data: bytes, where: str) -> Manifest:
    doc = _loads(data, where)
    ids = _field(doc, "part_ids", list, where)
    if not all(isinstance(i, str) for i in ids):
        raise PackageError(f"tet package: {where}: part_ids must be strings")
    return Manifest(_field(doc, "generation", int, where), tuple(ids),
                    _field(doc, "packed_byte_len", int, where),
                    _field(doc, "packed_sha256", str, where))


def parse_generation(text: str) -> int:
    """A generation id as ``CURRENT`` or ``?generation=`` spells it (surrounding
    whitespace and leading zeros allowed, as tet-py reads it)."""
    s = text.strip()
    # the length first: a hostile CURRENT of thousands of digits is refused, not parsed
    if not s.isascii() or not s.isdigit() or len(s.lstrip("0")) > len(str(MAX_GENERATION)) \
            or int(s) > MAX_GENERATION:
        raise PackageError(f"invalid generation id: {s[:40]}" + ("..." if len(s) > 40 else ""))
    return int(s)


def parse_current(data: bytes) -> int:
    try:
        return parse_generation(data.decode("ascii"))
    except UnicodeDecodeError:
        raise PackageError("tet package: CURRENT does not hold a generation id") from None


# ---------------------------------------------------------------------------
# Storage


class PackageStore(Protocol):
    """Where a package's files live, by key.  Writes are atomic and durable before they
    return (a reader sees the old bytes or the new, never part); `flip_current` is the
    one conditional write, and the only one readers act on."""

    root: str  # shown in messages

    def read(self, key: str) -> bytes | None:
        """The bytes at `key`, None when there is none."""
        ...

    def exists(self, key: str) -> bool: ...

    def current(self) -> int | None:
        """The generation ``CURRENT`` names, None before the first publish."""
        ...

    def list(self, prefix: str) -> list[str]:
        """The names directly under `prefix` (files and folders), sorted."""
        ...

    def write(self, key: str, data: bytes) -> None:
        """Write `data` at `key` atomically, replacing what is there."""
        ...

    def create_session(self, session_id: str) -> None:
        """Claim ``staging/<session>``; `PackageError` when it exists."""
        ...

    def put_part(self, session_id: str, part_id: str, source: Path) -> Path:
        """Copy the sealed file `source` in as the session's part; the copy's local path
        (an object store returns a local cache of it)."""
        ...

    def local_path(self, key: str) -> Path:
        """A local file holding what `key` names (assembly reads parts through it)."""
        ...

    def scratch(self, generation: int) -> contextlib.AbstractContextManager[Path]:
        """A local folder to assemble `generation` in, removed afterwards."""
        ...

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Held around the check of ``CURRENT`` and its flip."""
        ...

    def seal(self, generation: int, folder: Path) -> None:
        """Make `folder`'s files ``generations/<generation>/`` durably;
        `PublishConflictError` when that generation exists already."""
        ...

    def flip_current(self, generation: int, expected: int | None) -> None:
        """Point ``CURRENT`` at `generation` if it still names `expected` (None: absent);
        otherwise `PublishConflictError` and ``CURRENT`` is left as it is."""
        ...

    def remove(self, key: str) -> None:
        """Remove `key` and everything under it (absent: nothing to do)."""
        ...

    def touch(self, key: str) -> None:
        """Create `key` or renew its time, best effort (readers without write access)."""
        ...

    def age(self, key: str) -> float | None:
        """Seconds since `key` was last written or touched, None when absent."""
        ...


def iter_parts(store: PackageStore) -> Iterator[tuple[str, PartMeta]]:
    """Every sealed staged part as (session, meta); a session without ``PART_META.json``
    (an ingest that was stopped) holds no part."""
    for session in store.list(STAGING):
        key = f"{STAGING}/{session}/{PART_META}"
        data = store.read(key)
        if data is not None:
            yield session, parse_part_meta(data, key)
