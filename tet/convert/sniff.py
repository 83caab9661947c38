"""Which reader an input needs (cli.md §6 detection order): a directory holding a v3
`zarr.json`, then the extension (after compression suffixes), then the file signature."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import shutil
import stat
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Literal

from tet.convert.source import ConvertError
from tet.layout import foreign_format, not_tet_hint
from tet.paths import checked_path, open_regular
from tet.tempnames import remove_stale, temp_name

__all__ = [
    "COMPRESSION_SUFFIXES",
    "Kind",
    "compression_suffixes",
    "foreign_hint",
    "sniff",
    "uncompressed",
    "unsupported",
]

Kind = Literal["h5", "nc", "zarr"]

COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zip")
EXTENSIONS: dict[str, Kind] = {
    **dict.fromkeys(("h5", "hdf5", "hdf", "he2", "he5"), "h5"),
    **dict.fromkeys(("nc", "netcdf", "nc4", "nc3", "cdf", "ncdf"), "nc"),
    "zarr": "zarr",
}
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
NETCDF3_SIGNATURES = (b"CDF\x01", b"CDF\x02")
SUPPORTED = (".h5, .hdf5, .hdf, .he2, .he5; .nc, .netcdf, .nc4, .nc3, .cdf, .ncdf; "
             ".zarr directory store (v3 zarr.json at root); or recognizable HDF5 / "
             "NetCDF-3 file signature / Zarr v3 directory store")


def compression_suffixes(path: Path) -> tuple[str, list[str]]:
    """(name without compression suffixes, the stripped suffixes outermost first)."""
    name = path.name
    stripped: list[str] = []
    while True:
        low = name.lower()
        hit = next((s for s in COMPRESSION_SUFFIXES if low.endswith(s) and len(low) > len(s)),
                   None)
        if hit is None:
            return name, stripped
        stripped.append(hit)
        name = name[: -len(hit)]


def _extension(name: str) -> str:
    stem, dot, ext = name.rpartition(".")
    return ext if dot and stem else ""


def is_zarr_v3(path: Path) -> bool:
    """A directory whose `zarr.json` says `zarr_format: 3`."""
    meta = path / "zarr.json"
    if not path.is_dir() or not meta.is_file():
        return False
    try:
        doc = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("zarr_format") == 3


def unsupported(path: Path, ext: str) -> ConvertError:
    return ConvertError(f"unsupported convert input `{path}`: extension `{ext}` "
                        f"(supported extensions: {SUPPORTED})")


def _signature(fd: int) -> Kind | None:
    try:
        head = os.pread(fd, 8, 0)
    except OSError:
        return None
    if head == HDF5_SIGNATURE:
        return "h5"
    if head[:4] in NETCDF3_SIGNATURES:
        return "nc"
    return None


def sniff(path: str | os.PathLike[str]) -> Kind:
    """The input kind, or the spec's `unsupported convert input` error."""
    p = Path(checked_path(path, "cannot convert"))
    if not p.exists():
        raise ConvertError(f"convert input `{p}` does not exist")
    if is_zarr_v3(p):
        return "zarr"
    name, _ = compression_suffixes(p)
    ext = _extension(name)
    kind = EXTENSIONS.get(ext.lower())
    if p.is_dir():
        if kind is not None:
            return kind
        raise unsupported(p, ext)
    # a file: opened without blocking, so a FIFO or device is refused at once
    fd, _ = open_regular(p, action="cannot read convert input", refusal="cannot convert",
                         what="a regular file")
    try:
        found = kind or _signature(fd)
    finally:
        os.close(fd)
    if found is not None:
        return found
    raise unsupported(p, ext)


def foreign_hint(path: str) -> str | None:
    """For a path given where a .tet file is expected: the one-line hint when it is an
    HDF5, NetCDF or .npy file (by its signature) or a Zarr store (a directory with
    ``zarr.json``, ``.zgroup`` or ``.zarray``), else None.  Reads at most 8 bytes of a
    regular file and never blocks on a FIFO or device; any failure is None (the normal
    open reports it)."""
    p = Path(path)
    try:
        info = os.stat(p)
        if stat.S_ISDIR(info.st_mode):
            if is_zarr_v3(p):
                return not_tet_hint(path, "a Zarr v3 store")
            if (p / ".zgroup").is_file() or (p / ".zarray").is_file():
                return not_tet_hint(path, "a Zarr v2 store")
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError):
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        head = os.pread(fd, 8, 0)
    except OSError:
        return None
    finally:
        os.close(fd)
    label = foreign_format(head, p.name)
    return None if label is None else not_tet_hint(path, label)


def _open_layer(path: Path, suffix: str) -> IO[bytes]:
    """A readable stream of one compression layer's decompressed bytes."""
    if suffix in (".gz", ".bz2", ".xz"):
        opener = {".gz": gzip.GzipFile, ".bz2": bz2.BZ2File, ".xz": lzma.LZMAFile}[suffix]
        stream: IO[bytes] = opener(path, "rb")
        return stream
    if suffix == ".zst":
        try:
            import zstandard  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            raise ConvertError(f"`{path}`: reading .zst inputs needs the zstandard package "
                               "(pip install zstandard)") from None
        reader: IO[bytes] = zstandard.ZstdDecompressor().stream_reader(path.open("rb"),
                                                                       closefd=True)
        return reader
    archive = zipfile.ZipFile(path)
    members = [m for m in archive.infolist() if not m.is_dir()]
    if len(members) != 1:
        archive.close()
        raise ConvertError(f"`{path}`: a .zip input must hold exactly one file "
                           f"(found {len(members)})")
    return _ZipMember(archive, members[0])


class _ZipMember(io.BufferedReader):
    """A zip member that closes its archive with it."""

    def __init__(self, archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> None:
        super().__init__(archive.open(member))  # type: ignore[arg-type]
        self._archive = archive

    def close(self) -> None:
        super().close()
        self._archive.close()


@contextmanager
def uncompressed(path: Path, workdir: Path) -> Iterator[Path]:
    """The input with its compression layers (`.gz .bz2 .xz .zst .zip`) undone into
    hidden temp files in `workdir`, removed afterwards; the path itself when it has none."""
    _, suffixes = compression_suffixes(path)
    if not suffixes or path.is_dir():
        yield path
        return
    temps: list[Path] = []
    remove_stale(workdir, path.name)  # what converts that were killed left
    try:
        current = path
        for suffix in suffixes:
            tmp = workdir / temp_name("unpacked", path.name)  # names its owner
            try:
                with _open_layer(current, suffix) as src, tmp.open("xb") as dst:
                    temps.append(tmp)
                    shutil.copyfileobj(src, dst, 4 * 1024 * 1024)
            except (OSError, EOFError, zipfile.BadZipFile, lzma.LZMAError) as exc:
                raise ConvertError(f"cannot decompress `{path}` ({suffix}): {exc}") from None
            current = tmp
        yield current
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
