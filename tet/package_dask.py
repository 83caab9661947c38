"""`to_package`: a dask array (or the data variables of an xarray Dataset) into a
package, written by the workers and published once by the client.

Each group of blocks (``blocks_per_part`` consecutive blocks along the first axis) is
one task: it writes its slab to a local temporary ``.tet`` with the array's tile shape
and ingests it with its own staging session and a region claim of that slab
(`tet.package.ingest`), so no two tasks touch one file or session.  The client waits
for every part, then publishes the set once; a task that failed fails the call before
anything is published (its staged parts stay, unnamed, for ``prune`` or by hand).
"""

from __future__ import annotations

import itertools
import os
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tet.errors import PackageError

__all__ = ["to_package"]


def _write_part(block: np.ndarray[Any, Any], package: str, storage_options: dict[str, Any] | None,
                name: str, part_id: str, session_id: str, shape: tuple[int, ...],
                offset: tuple[int, ...], chunk: tuple[int, ...],
                dims: tuple[str, ...] | None) -> str:
    """On a worker: one slab as one staged part."""
    from tet.package import ingest
    from tet.writer import write_dataset

    with tempfile.TemporaryDirectory(prefix="tet-to-package-") as tmp:
        path = Path(tmp) / f"{part_id}.tet"
        write_dataset(path, name, np.ascontiguousarray(block),
                      chunk_shape=list(chunk) if chunk else None,
                      dim_names=list(dims) if dims else None)
        regions = {name: {"shape": list(shape), "offset": list(offset)}} if shape else None
        return ingest(package, path, part_id=part_id, session_id=session_id, regions=regions,
                      storage_options=storage_options)


def _arrays(data: Any, name: str | None) -> list[tuple[str, Any, tuple[str, ...] | None]]:
    """(name, dask array, dims) of what to write."""
    import dask.array as da

    if isinstance(data, da.Array):
        if not name:
            raise PackageError("tet package: to_package of a dask array needs name=")
        return [(name, data, None)]
    data_vars = getattr(data, "data_vars", None)
    if data_vars is None and hasattr(data, "dims") and hasattr(data, "data"):
        data_vars = {name or data.name: data}  # a DataArray
    if data_vars is None:
        raise PackageError(f"tet package: to_package takes a dask array or an xarray "
                           f"Dataset/DataArray, not {type(data).__name__}")
    out: list[tuple[str, Any, tuple[str, ...] | None]] = []
    for key, var in data_vars.items():
        arr = var.data if isinstance(var.data, da.Array) else da.from_array(  # type: ignore[no-untyped-call]
            np.asarray(var.values), chunks=-1)
        out.append((str(key), arr, tuple(str(d) for d in var.dims)))
    if not out:
        raise PackageError("tet package: to_package: the Dataset has no data variables")
    return out


def _tile_shape(name: str, arr: Any, chunk_shape: Sequence[int] | None) -> tuple[int, ...]:
    chunk = tuple(int(c) for c in chunk_shape) if chunk_shape is not None else tuple(
        max(1, c[0]) for c in arr.chunks)
    if len(chunk) != arr.ndim or any(c < 1 for c in chunk):
        raise PackageError(f"tet package: chunk_shape {list(chunk)} does not fit {name!r} "
                           f"({arr.ndim} axes)")
    for axis, (sizes, c) in enumerate(zip(arr.chunks, chunk)):
        starts = list(itertools.accumulate(sizes[:-1]))
        if any(s % c for s in starts):
            raise PackageError(
                f"tet package: {name!r}: dask block boundaries {starts} on axis {axis} are "
                f"not on the tile grid (tile {c}); rechunk the array to multiples of the "
                "tile shape or give chunk_shape= dividing them")
    return chunk


def to_package(data: Any, package: str | os.PathLike[str], *, name: str | None = None,
               chunk_shape: Sequence[int] | None = None, blocks_per_part: int = 1,
               session_prefix: str | None = None, publish: bool = True,
               replace: Sequence[str] | None = None,
               storage_options: Mapping[str, Any] | None = None) -> int | list[str]:
    """Write `data` into `package` (created when it has no ``PROTOCOL``) from the dask
    workers and publish it once; returns the generation (with ``publish=False``, the
    staged part ids).

    Parameters
    ----------
    data
        A dask array (`name` names the dataset), or an xarray Dataset / DataArray (each
        data variable a dataset, its dims the dim names; NumPy-backed variables are one
        part each).
    chunk_shape
        The tile shape; default the array's first chunk per axis.  Every dask block
        boundary must lie on a tile boundary.
    blocks_per_part
        Consecutive blocks along the first axis written as one part.
    session_prefix
        Part ids are ``<prefix>-<variable>-<n>`` and sessions ``<prefix>-<n>``; default a
        fresh random prefix (so a later call never reuses a session or part id).
    """
    from dask.base import compute
    from dask.delayed import delayed

    from tet.package import create, is_package
    from tet.package import publish as publish_parts
    from tet.package_remote import RemoteStore, is_package_url

    if blocks_per_part < 1:
        raise PackageError(f"tet package: blocks_per_part must be at least 1, got "
                           f"{blocks_per_part}")
    target = os.fspath(package)
    options = dict(storage_options) if storage_options else None
    prefix = session_prefix or f"dask-{uuid.uuid4().hex[:12]}"
    write: Any = delayed(_write_part)
    tasks: list[Any] = []
    for var, arr, dims in _arrays(data, name):
        if arr.ndim == 0:
            tasks.append(write(arr, target, options, var, f"{prefix}-{var}",
                                                   f"{prefix}-{len(tasks):06d}", (), (), (), dims))
            continue
        chunk = _tile_shape(var, arr, chunk_shape)
        bounds = [[0, *itertools.accumulate(sizes)] for sizes in arr.chunks]
        groups = [range(0, len(arr.chunks[0]), blocks_per_part),
                  *(range(len(c)) for c in arr.chunks[1:])]
        for n, index in enumerate(itertools.product(*groups)):
            lo = [bounds[0][index[0]], *(bounds[d][i] for d, i in enumerate(index) if d)]
            hi = [bounds[0][min(index[0] + blocks_per_part, len(arr.chunks[0]))],
                  *(bounds[d][i + 1] for d, i in enumerate(index) if d)]
            slab = arr[tuple(slice(a, b) for a, b in zip(lo, hi))]
            tasks.append(write(
                slab, target, options, var, f"{prefix}-{var}-{n:06d}",
                f"{prefix}-{len(tasks):06d}", tuple(arr.shape), tuple(lo), chunk, dims))
    if is_package_url(target):
        if not RemoteStore(target, options).is_package():
            create(target, storage_options=options)
    elif not is_package(target):
        create(target)
    part_ids = [str(p) for p in compute(*tasks)]  # type: ignore[no-untyped-call]
    if not publish:
        return part_ids
    return publish_parts(target, part_ids, replace=replace, storage_options=options)
