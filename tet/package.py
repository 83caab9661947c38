"""Versioned packages (``.tet.d``): several writers stage sealed ``.tet`` parts, one
publish seals them into an immutable generation and flips ``CURRENT``; readers pin one
generation at open.  Compatible with the packages tet-py 0.8.3 makes and reads (the
layout is `tet.package_layout`'s; the sealing `tet.package_pack`'s; `log`, `prune` and
the pins are `tet.package_admin`'s).

The functions take a package path or an ``s3://bucket/prefix`` URL (with
`storage_options`); storage goes through `tet.package_layout.PackageStore`: `LocalStore`
for a directory, `tet.package_remote.RemoteStore` for an object-store prefix.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tet.errors import PackageError, PublishConflictError
from tet.layout import parse_catalog
from tet.objstore import RemoteConflictError
from tet.package_admin import pack_copy
from tet.package_layout import (
    GENERATIONS,
    MAX_GENERATION,
    PACKED,
    PART_META,
    PINS,
    PROTOCOL,
    PUBLISHING,
    STAGING,
    Claim,
    PartMeta,
    check_id,
    dumps,
    gen_key,
    gen_name,
    iter_parts,
    parse_generation,
    part_file,
    part_meta_doc,
    protocol_doc,
)
from tet.package_local import LocalStore, store_of
from tet.package_pack import open_parts, plan_datasets, seal_generation
from tet.package_remote import (
    GEN_QUERY,
    RemoteStore,
    is_package_url,
    package_store,
    remote_catalog,
)

__all__ = ["create", "ingest", "is_package", "pack", "package_target", "publish", "store_of"]

PACKAGE_SUFFIX = ".tet.d"
DEFAULT_SESSION = "s0"
_PIN_RETRIES = 5


def is_package(path: str | os.PathLike[str]) -> bool:
    """True for a directory named ``*.tet.d`` or holding a ``PROTOCOL`` file."""
    p = Path(os.path.expanduser(os.fspath(path)))
    return p.is_dir() and (p.name.endswith(PACKAGE_SUFFIX) or (p / PROTOCOL).is_file())


def create(path: str | os.PathLike[str], *,
           storage_options: Mapping[str, Any] | None = None) -> Path | str:
    """Create an empty package (``PROTOCOL``, ``staging/``, ``generations/``,
    ``publishing/``) and return its path (for an ``s3://`` URL: ``PROTOCOL`` and the
    folder markers under the prefix, and the URL is returned).

    Raises
    ------
    PackageError
        When `path` exists already (for a URL: a package is there already).
    """
    if is_package_url(path):
        return _create_remote(str(path), storage_options)
    if storage_options:
        raise PackageError(f"storage_options apply to package URLs, not to the path {path}")
    root = Path(os.path.expanduser(os.fspath(path)))
    try:
        root.mkdir()
    except FileExistsError:
        raise PackageError(f"package path already exists: {root}") from None
    except OSError as exc:
        raise PackageError(f"tet package: cannot create {root}: {exc.strerror}") from None
    for sub in (STAGING, GENERATIONS, PUBLISHING):
        (root / sub).mkdir()
    LocalStore(root).write(PROTOCOL, dumps(protocol_doc(int(time.time()))))
    return root


_create_package = create


def _create_remote(url: str, storage_options: Mapping[str, Any] | None) -> str:
    store = RemoteStore(url, storage_options)
    if store.is_package():
        raise PackageError(f"package path already exists: {store.root}")
    try:
        store._put(PROTOCOL, dumps(protocol_doc(int(time.time()))), mode="create")
    except RemoteConflictError:
        raise PackageError(f"package path already exists: {store.root}") from None
    for sub in (STAGING, GENERATIONS, PUBLISHING):
        store._claim(sub)
    return store.root


def _default_part_id(source: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", source.stem) or "part"


def _region_claim(name: str, dtype: int, slab: tuple[int, ...], chunk: tuple[int, ...],
                  spec: Mapping[str, Any]) -> Claim:
    """The tiles a slab covers in the full array (`spec`: ``shape``, ``offset``): its
    origin on a tile corner, its far side on a tile corner or the array's edge."""
    try:
        shape = tuple(int(v) for v in spec["shape"])
        offset = tuple(int(v) for v in spec["offset"])
    except (KeyError, TypeError, ValueError):
        raise PackageError(f"tet package: region of {name!r} needs integer sequences "
                           "'shape' (the whole array) and 'offset' (the slab's origin)"
                           ) from None
    if len(shape) != len(slab) or len(offset) != len(slab):
        raise PackageError(f"tet package: region of {name!r}: shape {list(shape)} and offset "
                           f"{list(offset)} must have the part's {len(slab)} axes")
    for d, (n, o, s, c) in enumerate(zip(shape, offset, slab, chunk)):
        end = o + s
        if o < 0 or end > n or o % c or (end != n and end % c):
            raise PackageError(
                f"tet package: region of {name!r}, axis {d}: the slab [{o}, {end}) must lie "
                f"in [0, {n}) and start and end on a tile boundary (chunk {c}) or the "
                "array's edge; write each slab with the whole array's chunk shape")
    return Claim(name, dtype, shape, chunk, tuple(o // c for o, c in zip(offset, chunk)),
                 tuple(-(-(o + s) // c) for o, s, c in zip(offset, slab, chunk)))


def ingest(package: str | os.PathLike[str], source: str | os.PathLike[str], *,
           part_id: str | None = None, session_id: str = DEFAULT_SESSION,
           create: bool = False, regions: Mapping[str, Mapping[str, Any]] | None = None,
           storage_options: Mapping[str, Any] | None = None) -> str:
    """Stage the sealed file `source` as one part of `package`; returns the part id.

    Parameters
    ----------
    part_id
        Default: the file's stem, characters other than letters, digits, ``_`` and ``-``
        made ``_`` (as tet-py names parts).
    session_id
        The writer's staging folder; each writer needs its own, once.
    create
        Create the package first when it has no ``PROTOCOL``.
    regions
        Datasets of `source` that are slabs of a larger array: name ->
        ``{"shape": whole array shape, "offset": slab origin}``; the slab must cover
        whole tiles of the array's grid (same chunk shape).  One publish merges the
        slabs of every part; tiles claimed twice or by none are refused there.

    Raises
    ------
    PackageError
        Not a package, a bad or reused id, a source that is not a sealed ``.tet``, a
        region that does not cover whole tiles.
    """
    if is_package_url(package):
        if create and not RemoteStore(str(package), storage_options).is_package():
            _create_remote(str(package), storage_options)
        store = package_store(package, storage_options)
    else:
        root = Path(os.path.expanduser(os.fspath(package)))
        if create and not (root / PROTOCOL).is_file():
            _create_package(root)
        store = package_store(root, storage_options)
    check_id(session_id, "staging session id")
    src = Path(os.path.expanduser(os.fspath(source)))
    pid = check_id(part_id if part_id is not None else _default_part_id(src), "part id")
    if not src.is_file():
        raise PackageError(f"tet package: ingest source .tet missing: {src}")
    for other, meta in iter_parts(store):
        if meta.part_id == pid:
            raise PackageError(f"tet package: part id {pid!r} is already staged (session "
                               f"{other!r}); give this part another part_id")
    store.create_session(session_id)
    staged = store.put_part(session_id, pid, src)
    data = staged.read_bytes()
    catalog = parse_catalog(data, len(data))
    claims, seen = [], set()
    regions = dict(regions or {})
    for rec in catalog.datasets:
        if rec.name in seen:
            raise PackageError(f"tet package: {src} holds two datasets named {rec.name!r}")
        seen.add(rec.name)
        spec = regions.pop(rec.name, None)
        claims.append(Claim(rec.name, rec.dtype, rec.shape, rec.chunk_shape) if spec is None
                      else _region_claim(rec.name, rec.dtype, rec.shape, rec.chunk_shape, spec))
    if regions:
        raise PackageError(f"tet package: regions name datasets {sorted(regions)} that "
                           f"{src} does not hold")
    meta = PartMeta(pid, session_id, len(data), hashlib.sha256(data).hexdigest(), tuple(claims))
    store.write(f"{STAGING}/{session_id}/{PART_META}", dumps(part_meta_doc(meta)))
    return pid


def _next_generation(store: Any, base: int | None) -> int:
    """One past CURRENT and past any generation sealed without a flip (a publish that
    was stopped), so such a remnant never blocks the next publish."""
    ids = [int(n) for n in store.list(GENERATIONS) if n.isdigit()]
    return max([base or 0, *ids]) + 1


def _check_schema(store: Any, base: int | None, outs: Sequence[Any],
                  replace: Sequence[str]) -> None:
    if base is None:
        return
    if isinstance(store, RemoteStore):  # the catalog is range-read, not downloaded
        if store._head(gen_key(base, PACKED)) is None:
            return
        records = list(remote_catalog(store, gen_key(base, PACKED)).datasets)
    else:
        path = store.local_path(gen_key(base, PACKED))
        try:
            data = path.read_bytes()
        except OSError:
            return  # CURRENT names no sealed file: nothing to keep compatible with
        records = list(parse_catalog(data, len(data)).datasets)
    prior = {r.name: r for r in records}
    for out in outs:
        new, old = out.record, prior.get(out.record.name)
        if old is None or new.name in replace:
            continue
        if (new.dtype, new.shape, new.chunk_shape) != (old.dtype, old.shape, old.chunk_shape):
            extra = "" if (new.dtype, new.shape) != (old.dtype, old.shape) else (
                f" (chunk_shape {list(old.chunk_shape)} -> {list(new.chunk_shape)})")
            raise PackageError(
                f"dataset schema conflict vs CURRENT: dataset={new.name} prior=dtype:"
                f"{old.dtype} shape:{list(old.shape)} new=dtype:{new.dtype} shape:"
                f"{list(new.shape)}{extra} (pass --replace {new.name} to allow in G+1)")


def publish(package: str | os.PathLike[str], part_ids: Sequence[str], *,
            generation: int | None = None, dry_run: bool = False,
            replace: Sequence[str] | None = None,
            storage_options: Mapping[str, Any] | None = None) -> int:
    """Seal the staged parts `part_ids` into one generation and point ``CURRENT`` at it.

    The generation holds exactly the datasets of these parts (a full snapshot).  It is
    assembled without a lock; ``CURRENT`` is then checked and flipped under the
    package lock, so of two publishes that overlap one wins and the other is
    `PublishConflictError` with the package at the winner's generation.

    Parameters
    ----------
    generation
        Default: one past ``CURRENT`` (and past any generation a stopped publish left).
    dry_run
        Check the claims and schema only; returns the generation a publish would seal.
    replace
        Dataset names whose dtype, shape or chunk shape may differ from ``CURRENT``'s.

    Raises
    ------
    PackageError
        Unknown or repeated part ids, overlapping claims, missing region tiles, a schema
        change not in `replace`, an existing generation.
    PublishConflictError
        Another publish flipped ``CURRENT`` first (on an object store: its conditional
        put of ``CURRENT`` won, or it claimed the same generation first).
    """
    store = package_store(package, storage_options)
    ids = list(part_ids)
    if not ids:
        raise PackageError("tet package: publish requires a frozen part-id list")
    if len(set(ids)) != len(ids):
        raise PackageError(f"tet package: part ids listed twice in the publish set: {ids}")
    staged: dict[str, tuple[str, PartMeta]] = {}
    for session, meta in iter_parts(store):
        staged.setdefault(meta.part_id, (session, meta))
    missing = [i for i in ids if i not in staged]
    if missing:
        raise PackageError(f"tet package: frozen part id not found in staging: {missing[0]!r}")
    base = store.current()
    gen = generation if generation is not None else _next_generation(store, base)
    if not 0 <= gen <= MAX_GENERATION:
        raise PackageError(f"invalid generation id: {gen}")
    if store.exists(gen_key(gen)):
        raise PackageError(f"package path already exists: {store.root}/{gen_key(gen)}")
    parts = [(staged[i][1], store.local_path(f"{STAGING}/{staged[i][0]}/{part_file(i)}"))
             for i in ids]
    with open_parts(parts) as opened:
        outs = plan_datasets(opened)
        _check_schema(store, base, outs, list(replace or ()))
        if dry_run:
            return gen
        with store.scratch(gen) as folder:
            seal_generation(folder, gen, opened, outs)
            with store.lock():
                now = store.current()
                if now != base:
                    raise PublishConflictError(
                        f"publish conflict: CURRENT moved from {base} to {now} while "
                        f"generation {gen} was assembled; the package stays at {now}")
                store.seal(gen, folder)
                store.flip_current(gen, base)
    return gen


def _sealed_target(store: Any, generation: int) -> Any:
    """What `tet.open` reads for a sealed generation: the local ``packed.tet``, or its
    URL on an object store; None when it is not there."""
    key = gen_key(generation, PACKED)
    if isinstance(store, RemoteStore):
        return store.url(key) if store._head(key) is not None else None
    path = store.local_path(key)
    return path if path.is_file() else None


def pinned_generation(store: Any, generation: int | None) -> tuple[Any, int]:
    """The ``packed.tet`` of `generation` (None: the one ``CURRENT`` names, read once),
    after touching its pin (`tet.package_admin` keeps pinned generations): a local path,
    or a URL on an object store."""
    for _ in range(_PIN_RETRIES):
        gen = generation if generation is not None else store.current()
        if gen is None:
            raise PackageError("tet package: package has no CURRENT generation")
        store.touch(f"{PINS}/{gen_name(gen)}")
        target = _sealed_target(store, gen)
        if target is not None:
            return target, gen
        if generation is not None:
            break  # CURRENT-pinned opens retry: a prune may have raced a publish
    raise PackageError(f"package generation {gen} is not sealed (missing packed.tet)")


def _remote_target(text: str, storage_options: Mapping[str, Any] | None
                   ) -> tuple[Any, int | None]:
    """An ``s3://`` URL: a package prefix (pinned) or a plain object (as it is).  A key
    ending in ``.tet`` is an object; otherwise an existing object at the key is one, and
    a prefix holding a package is a package."""
    base, sep, gen_text = text.partition(GEN_QUERY)
    if not sep:
        if base.rstrip("/").endswith(".tet"):
            return text, None
        store = RemoteStore(base, storage_options)
        if store._head("") is not None or not store.is_package():
            return text, None
    else:
        store = package_store(base, storage_options)
    return pinned_generation(store, parse_generation(gen_text) if sep else None)


def package_target(path: Any, storage_options: Mapping[str, Any] | None = None,
                   store: Any = None) -> tuple[Any, int | None]:
    """What `tet.open` opens for `path`: a package (or ``pkg?generation=N``, locally or
    under ``s3://bucket/prefix``) becomes its pinned ``packed.tet`` and generation;
    anything else, and any key in a caller's obstore `store`, is returned as it is."""
    if store is not None or not isinstance(path, (str, os.PathLike)):
        return path, None
    text = os.fspath(path)
    if not isinstance(text, str):
        return path, None
    if is_package_url(text):
        return _remote_target(text, storage_options)
    if "://" in text and not text.startswith("file://"):
        return path, None
    text = text.removeprefix("file://")
    base, sep, gen_text = text.partition(GEN_QUERY)
    if not sep and not is_package(base):
        return path, None
    store = store_of(base)
    return pinned_generation(store, parse_generation(gen_text) if sep else None)


def pack(package: str | os.PathLike[str], dest: str | os.PathLike[str], *,
         generation: int | None = None, remove_package: bool = False,
         storage_options: Mapping[str, Any] | None = None) -> int:
    """Copy a sealed generation's ``packed.tet`` (default: ``CURRENT``'s) to the new
    local file `dest` (from an object store: downloaded); with `remove_package`, remove
    the package after the copy is checked against the generation's manifest.  Returns
    the generation packed."""
    store = package_store(package, storage_options)
    target, gen = pinned_generation(store, generation)
    out = Path(os.path.expanduser(os.fspath(dest)))
    if os.path.lexists(out):
        raise PackageError(f"package path already exists: {out}")
    src = store.local_path(gen_key(gen, PACKED)) if isinstance(store, RemoteStore) else target
    pack_copy(store, gen, src, out)
    if remove_package:
        if isinstance(store, RemoteStore):
            store.remove("")
            return gen
        try:
            shutil.rmtree(store.path)
        except OSError as exc:
            raise PackageError(f"tet package: packed to {out} but cannot remove "
                               f"{store.path}: {exc.strerror}") from None
    return gen
