"""Convert inputs in object stores (`tet.convert(url, …)`), where the source library can
read them.

A Zarr store under a prefix (``s3://bucket/data.zarr``: a ``zarr.json``, or a v2
``.zgroup`` / ``.zarray``, under the prefix) is read in place by zarr-python 3 through
`zarr.storage.ObjectStore` over the same obstore store tet reads with: only the chunks
converted are fetched.  An HDF5 or NetCDF object is downloaded into the platform cache
first (h5py and netCDF4 read local files; their own remote drivers need other
libraries and settings) and removed afterwards, whatever happens.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from tet.convert.source import ConvertError
from tet.convert.zarr import RemoteZarr, remote_meta
from tet.errors import TetFileNotFoundError
from tet.paths import checked_path

__all__ = ["remote_input"]


def _zarr_at(url: str, storage_options: Mapping[str, Any] | None) -> RemoteZarr | None:
    """The Zarr store under the prefix `url` names, when its root metadata is there."""
    from tet import objstore

    prefix = url.rstrip("/")
    loc = objstore.locate(f"{prefix}/zarr.json", storage_options)
    remote = RemoteZarr(loc.reach(), posixpath.dirname(loc.key), objstore.redact(prefix))
    if any(remote_meta(remote, n) is not None for n in ("zarr.json", ".zgroup", ".zarray")):
        return remote
    return None


@contextmanager
def remote_input(src: str | os.PathLike[str], storage_options: Mapping[str, Any] | None
                 ) -> Iterator[tuple[Path, RemoteZarr | None, str]]:
    """(the local path to convert, the remote Zarr store or None, the input as reports
    show it).  A local `src` is itself; a remote object is downloaded to the cache for
    the block; a remote Zarr prefix is read in place."""
    from tet import objstore

    if not objstore.is_url(src):
        path = Path(os.path.expanduser(checked_path(src, "cannot convert")))
        yield path, None, str(path)
        return
    from tet.remote_write import fetched

    url = os.fspath(src)
    shown = objstore.redact(url)
    remote = _zarr_at(url, storage_options)
    if remote is not None:
        yield Path(posixpath.basename(remote.prefix) or "root"), remote, shown
        return
    with ExitStack() as stack:
        try:
            local = stack.enter_context(fetched(url, storage_options))
        except TetFileNotFoundError as exc:
            raise ConvertError(f"convert input `{shown}` does not exist (no object, and no "
                               "Zarr store under that prefix)") from exc
        yield local, None, shown
