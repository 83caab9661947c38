"""Looking after a package: `log` (its generations), `prune` (old generations and the
staged parts only they used) and the checked copy behind `tet.pack`.

Pins: every open of a package generation creates or touches ``readers/<generation>``
(best effort: a reader without write access pins nothing).  `prune` keeps a generation
whose pin was touched within `PIN_GRACE_S` (ten minutes), besides the one ``CURRENT``
names and the `keep` newest; so a handle pickled to a worker, which reopens the file by
path, finds it if it reopens within the grace period.  A reader that has the file open
already keeps reading it after a prune (POSIX keeps an unlinked file until it is closed).
Prune holds the publish lock, so it never meets a generation sealed but not yet flipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tet.durable import fsync_dir
from tet.errors import PackageError
from tet.layout import parse_catalog
from tet.package_layout import (
    GENERATIONS,
    MANIFEST,
    PACKED,
    PART_META,
    PINS,
    PUBLISHING,
    STAGING,
    gen_key,
    gen_name,
    iter_parts,
    parse_manifest,
)
from tet.package_local import LocalStore, copy_range
from tet.package_remote import RemoteStore, package_store, remote_catalog
from tet.tempnames import remove_stale, temp_name

__all__ = ["PIN_GRACE_S", "log", "pack_copy", "prune"]

PIN_GRACE_S = 600.0
_HASH_STEP = 8 << 20


def _store(package: str | os.PathLike[str],
           storage_options: Mapping[str, Any] | None) -> LocalStore | RemoteStore:
    store: LocalStore | RemoteStore = package_store(package, storage_options)
    return store


def _generations(store: LocalStore | RemoteStore) -> list[int]:
    return sorted(int(n) for n in store.list(GENERATIONS) if n.isdigit() and len(n) == 8)


def packed_digest(path: Path) -> str:
    """tet-py's ``packed_sha256`` of a packed file: its bytes before the zone maps (or
    the footer), superblock flag bit 0 clear."""
    with path.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(min(size, 1 << 16))
        catalog = parse_catalog(head + fh.read(), size) if size > len(head) else \
            parse_catalog(head, size)
        end = min([catalog.payload_bound,
                   *(o for o, _ in catalog.footer_refs.values())])
        fh.seek(0)
        first = bytearray(fh.read(min(end, _HASH_STEP)))
        if len(first) >= 16:
            first[12] &= 0xFE
        digest = hashlib.sha256(first)
        done = len(first)
        while done < end:
            block = fh.read(min(_HASH_STEP, end - done))
            if not block:
                break
            digest.update(block)
            done += len(block)
    return digest.hexdigest()


def pack_copy(store: LocalStore | RemoteStore, generation: int, src: Path, out: Path) -> None:
    """Copy `src` to the new file `out` (beside it, fsynced, then linked into place so an
    existing `out` is never replaced), checked against the generation's manifest."""
    data = store.read(gen_key(generation, MANIFEST))
    manifest = parse_manifest(data, gen_key(generation, MANIFEST)) if data else None
    tmp = out.with_name(temp_name("write", out.name))
    try:
        with src.open("rb") as fin:
            size = os.fstat(fin.fileno()).st_size
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                copy_range(fin.fileno(), fd, 0, size, 0)
                os.fsync(fd)
            finally:
                os.close(fd)
        if manifest is not None and (size != manifest.packed_byte_len
                                     or packed_digest(tmp) != manifest.packed_sha256):
            raise PackageError(f"tet package: the copy of generation {generation} does not "
                               "match its MANIFEST.json (packed_byte_len / packed_sha256)")
        os.link(tmp, out)
    except FileExistsError:
        raise PackageError(f"package path already exists: {out}") from None
    except OSError as exc:
        raise PackageError(f"tet package: cannot pack to {out}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    fsync_dir(out.parent)


def _names_and_time(store: LocalStore | RemoteStore, gen: int) -> tuple[list[str], int]:
    """The datasets of a generation's ``packed.tet`` and when its manifest was written
    (on an object store the catalog is range-read, not downloaded); OSError when the
    generation cannot be read."""
    if isinstance(store, RemoteStore):
        names = [r.name for r in remote_catalog(store, gen_key(gen, PACKED)).datasets]
        age = store.age(gen_key(gen, MANIFEST))
        return names, int(time.time() - (age or 0.0))
    with store.local_path(gen_key(gen, PACKED)).open("rb") as fh:
        head = fh.read()
    names = [r.name for r in parse_catalog(head, len(head)).datasets]
    return names, int(os.stat(store.local_path(gen_key(gen, MANIFEST))).st_mtime)


def log(package: str | os.PathLike[str], *,
        storage_options: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The package's sealed generations, oldest first: ``generation``, ``current``
    (whether ``CURRENT`` names it), ``created_unix`` (when it was sealed), ``part_ids``,
    ``datasets``, ``packed_byte_len``.

    Raises
    ------
    PackageError
        Not a package, or a generation whose manifest cannot be read.
    """
    store = _store(package, storage_options)
    current = store.current()
    out = []
    for gen in _generations(store):
        key = gen_key(gen, MANIFEST)
        data = store.read(key)
        if data is None:
            continue  # not sealed (tet-py's empty leftovers)
        manifest = parse_manifest(data, key)
        try:
            names, when = _names_and_time(store, gen)
        except OSError:
            continue
        out.append({"generation": gen, "current": gen == current, "created_unix": when,
                    "part_ids": list(manifest.part_ids), "datasets": names,
                    "packed_byte_len": manifest.packed_byte_len})
    return out


def prune(package: str | os.PathLike[str], *, keep: int = 1,
          grace_s: float = PIN_GRACE_S, dry_run: bool = False,
          storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Remove old generations and the staged parts only they used.

    Kept: the generation ``CURRENT`` names, the `keep` newest at or below it, and any
    whose pin (``readers/<id>``) is younger than `grace_s` seconds.  Generations above
    ``CURRENT`` are what publishes that did not flip it left (or what an explicit older
    ``generation=`` left behind) and are removed unless pinned (on an object store,
    where prune holds no lock, also unless claimed within `grace_s`: a publish may be
    uploading it).  Staged parts used by a
    kept generation, and parts no generation used yet, are kept; sessions an ingest left
    without ``PART_META.json`` are removed once older than `grace_s`.

    Returns
    -------
    dict
        ``removed_generations``, ``kept_generations``, ``pinned``, ``removed_sessions``,
        ``bytes_freed`` (with `dry_run`, what would be removed; nothing is).
    """
    if keep < 1:
        raise PackageError(f"tet package: prune keep must be at least 1, got {keep}")
    store = _store(package, storage_options)
    with store.lock():
        current = store.current()
        gens = _generations(store)
        below = [g for g in gens if current is not None and g <= current]
        keep_set = set(below[-keep:]) | ({current} if current is not None else set())
        pinned = [g for g in gens if g not in keep_set and (
            _pinned(store, g, grace_s) or _in_flight(store, g, current, grace_s))]
        kept = sorted(keep_set | set(pinned))
        removed = [g for g in gens if g not in kept]
        used: set[str] = set()
        for g in kept:
            data = store.read(gen_key(g, MANIFEST))
            if data is not None:
                used |= set(parse_manifest(data, gen_key(g, MANIFEST)).part_ids)
        consumed: set[str] = set()
        for g in removed:
            data = store.read(gen_key(g, MANIFEST))
            if data is not None:
                consumed |= set(parse_manifest(data, gen_key(g, MANIFEST)).part_ids)
        sessions = [s for s, meta in iter_parts(store)
                    if meta.part_id in consumed and meta.part_id not in used]
        sessions += [s for s in store.list(STAGING)
                     if not store.exists(f"{STAGING}/{s}/{PART_META}")
                     and (store.age(f"{STAGING}/{s}") or 0.0) > grace_s]
        freed = sum(_tree_bytes(store, gen_key(g)) for g in removed) + sum(
            _tree_bytes(store, f"{STAGING}/{s}") for s in sessions)
        if not dry_run:
            for g in removed:
                store.remove(gen_key(g))
                store.remove(f"{PINS}/{gen_name(g)}")
            for s in sessions:
                store.remove(f"{STAGING}/{s}")
            if isinstance(store, LocalStore):
                remove_stale(store.local_path(PUBLISHING), "generation")
    return {"removed_generations": removed, "kept_generations": kept, "pinned": pinned,
            "removed_sessions": sorted(sessions), "bytes_freed": freed}


def _in_flight(store: LocalStore | RemoteStore, generation: int, current: int | None,
               grace_s: float) -> bool:
    """On an object store (no lock to hold), a generation above ``CURRENT`` claimed
    within the grace period may be a publish still uploading: kept."""
    if not isinstance(store, RemoteStore) or (current is not None and generation <= current):
        return False
    age = store.age(gen_key(generation))
    return age is not None and age < grace_s


def _pinned(store: LocalStore | RemoteStore, generation: int, grace_s: float) -> bool:
    age = store.age(f"{PINS}/{gen_name(generation)}")
    return age is not None and age < grace_s


def _tree_bytes(store: LocalStore | RemoteStore, key: str) -> int:
    if isinstance(store, RemoteStore):
        return store.tree_bytes(key)
    path = store.local_path(key)
    total = 0
    for folder, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, f)).st_size
    return total

