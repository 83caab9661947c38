"""One exception hierarchy: every error the package raises derives from `TetError`.

Subclasses also inherit the builtin a caller would reach for (`KeyError` for an
unknown dataset name, `ValueError` for a bad axis or selection, `FileNotFoundError`
for a missing file), so generic ``except`` clauses keep working.

Operating-system failures on a named path become `TetOSError` subclasses through one
table (`OS_ERRORS`, errno -> class) and one builder (`os_error`), so every such error
names the action and the path, and keeps ``errno``, ``strerror`` and ``filename``.
"""

from __future__ import annotations

import difflib
import errno as _errno
import os
from collections.abc import Sequence

__all__ = [
    "OS_ERRORS",
    "CatalogError",
    "ChunkError",
    "DiskFullError",
    "FileChangedError",
    "InvalidPathError",
    "InvalidTextError",
    "MemoryBudgetError",
    "NotRegularFileError",
    "PackageError",
    "PublishConflictError",
    "QueryError",
    "SelectionError",
    "TetError",
    "TetFileNotFoundError",
    "TetIndexError",
    "TetIsADirectoryError",
    "TetNotADirectoryError",
    "TetOSError",
    "TetPermissionError",
    "UnknownAxisError",
    "UnknownDatasetError",
    "UnsupportedModeError",
    "os_error",
    "selection_invalid",
    "validation",
]


class TetError(Exception):
    """Base of every error raised by `tet`."""


class CatalogError(TetError):
    """The file's layout, catalog or footer is invalid, or a writer refused its input."""


class ChunkError(CatalogError):
    """A chunk payload could not be decoded into its tile (corrupt or truncated data).

    `tile_index` is the tile's linear index in its dataset's chunk grid (row-major over
    ``chunk_index``) and `dataset` the dataset id, where the failure names them (None
    otherwise); the message says the same in words."""

    def __init__(self, *args: object, dataset: int | None = None,
                 tile_index: int | None = None) -> None:
        super().__init__(*args)
        self.dataset = dataset
        self.tile_index = tile_index


class PackageError(CatalogError):
    """A ``.tet.d`` package refused an operation: no such part or generation, a bad
    claim set, a schema change not allowed by ``replace``, or a layout it cannot read."""


class PublishConflictError(PackageError):
    """Another publisher flipped ``CURRENT`` (or sealed the same generation) first; the
    package stays at that publisher's generation and this publish left nothing behind."""


class QueryError(TetError, ValueError):
    """A query document that cannot be parsed or does not validate (engine text)."""


class SelectionError(TetError, ValueError):
    """A selection does not fit the dataset (bounds, steps, labels, arity)."""


class TetIndexError(SelectionError, IndexError):
    """An index of ``ds[...]`` outside its axis, or a boolean mask of the wrong length."""


VALIDATION = "validation: "  # what every refused document or selection starts with


def validation(msg: str) -> QueryError:
    """The error of a query document the engine refuses: ``validation: {msg}``."""
    return QueryError(VALIDATION + msg)


def selection_invalid(msg: str) -> SelectionError:
    """The error of a selection that does not fit its dataset: ``validation: {msg}``."""
    return SelectionError(VALIDATION + msg)


class MemoryBudgetError(TetError, MemoryError):
    """A dense result would exceed the memory budget."""


class FileChangedError(CatalogError):
    """The file changed while it was being opened (truncated or replaced between the
    size check and the mapping) or read (truncated or rewritten in place while mapped:
    tet.guard); opening it again sees the new file."""


class InvalidTextError(CatalogError, ValueError):
    """Text for the file (a dataset name, attr, label or history field) that UTF-8 cannot
    store: a lone surrogate, as ``os.fsdecode`` makes of undecodable bytes."""


class InvalidPathError(TetError, ValueError):
    """A path that no file can have: a NUL byte in it, or text the file system encoding
    cannot encode (a lone surrogate that is not one of ``os.fsdecode``'s escapes)."""


class UnsupportedModeError(TetError, ValueError):
    """A file mode `tet.open` does not take: it only reads (``"r"``); the message names
    the `TetWriter` call that writes or appends instead."""


class TetOSError(TetError, OSError):
    """An operating-system call on a named path failed.  ``errno``, ``strerror`` and
    ``filename`` are those of the failure; the message says what was being done."""

    def __init__(self, message: str, *, errno: int | None = None, strerror: str | None = None,
                 filename: object = None) -> None:
        super().__init__(errno, strerror or message)
        self.filename = filename
        self.message = message

    def __str__(self) -> str:  # OSError would print "[Errno N] strerror"
        return self.message

    def __reduce__(self) -> tuple[object, ...]:  # picklable (dask, process pools)
        return (_rebuild, (type(self), self.message, self.errno, self.strerror,
                           self.filename, dict(self.__dict__)))


def _rebuild(cls: type[TetOSError], message: str, errno: int | None, strerror: str | None,
             filename: object, state: dict[str, object]) -> TetOSError:
    exc = cls(message, errno=errno, strerror=strerror, filename=filename)
    exc.__dict__.update(state)
    return exc


class TetFileNotFoundError(TetOSError, FileNotFoundError):
    """The file or a directory on its path does not exist."""


class TetIsADirectoryError(TetOSError, IsADirectoryError):
    """A directory where a file was expected."""


class TetNotADirectoryError(TetOSError, NotADirectoryError):
    """A file where a directory was expected on the path."""


class TetPermissionError(TetOSError, PermissionError):
    """Not permitted to read or write the path."""


class DiskFullError(TetOSError):
    """No space for an output: ``ENOSPC`` (disk full), ``EDQUOT`` (quota) or ``EFBIG``
    (file size limit).  ``size`` is the byte count being written, when known.  Nothing
    partial is left behind and the previous file, if any, is untouched."""

    size: int | None = None


class NotRegularFileError(TetOSError):
    """A FIFO, socket or device node where a regular file was expected; it is refused
    without being opened for reading or written to (so nothing blocks on it)."""


# One table: the errno of an OS failure -> the class it is raised as (else TetOSError).
OS_ERRORS: dict[int, type[TetOSError]] = {
    _errno.ENOENT: TetFileNotFoundError,
    _errno.EISDIR: TetIsADirectoryError,
    _errno.ENOTDIR: TetNotADirectoryError,
    _errno.EACCES: TetPermissionError,
    _errno.EPERM: TetPermissionError,
    _errno.EROFS: TetPermissionError,
    _errno.ENOSPC: DiskFullError,
    _errno.EFBIG: DiskFullError,
    **({_errno.EDQUOT: DiskFullError} if hasattr(_errno, "EDQUOT") else {}),
}


def os_error(exc: OSError, action: str, path: object, *, size: int | None = None) -> TetError:
    """The `TetOSError` for `exc` (class from `OS_ERRORS`) with the message
    ``"{action} {path}: {strerror}"`` (plus ``" ({size} bytes)"`` for a full disk when the
    size is known).  A `TetError` is returned as it is: it already says what and where."""
    if isinstance(exc, TetError):
        return exc
    code = exc.errno
    cls = OS_ERRORS.get(code, TetOSError) if code is not None else TetOSError
    text = exc.strerror or (os.strerror(code) if code else str(exc) or type(exc).__name__)
    message = f"{action} {path}: {text}"
    if cls is DiskFullError and size is not None:
        message += f" ({size} bytes)"
    out = cls(message, errno=code, strerror=text, filename=os.fspath(path)
              if isinstance(path, (str, os.PathLike)) else path)
    if isinstance(out, DiskFullError):
        out.size = size
    return out


class UnknownDatasetError(KeyError, TetError):
    """No dataset of that name in the file; the message lists what is there."""

    def __init__(self, name: str, *, path: object = None, available: Sequence[str] = ()) -> None:
        self.name = name
        self.path = path
        self.available = tuple(available)
        lines = [f"unknown dataset {name!r} in {path}"]
        lines.append(f"available datasets ({len(self.available)}):")
        lines.extend(f"  - {a!r}" for a in self.available)
        close = difflib.get_close_matches(name, self.available, n=3, cutoff=0.5)
        if close:
            lines.append("did you mean: " + ", ".join(repr(c) for c in close) + "?")
        self.message = "\n".join(lines)
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would quote the whole message
        return self.message


class UnknownAxisError(ValueError, TetError):
    """An axis index or name that the dataset does not have."""

    def __init__(
        self,
        axis: object,
        *,
        dataset: str,
        path: object,
        ndim: int,
        shape: Sequence[int],
        dim_names: Sequence[str] | None,
    ) -> None:
        self.axis = axis
        self.dataset = dataset
        self.path = path
        self.ndim = ndim
        self.shape = tuple(shape)
        self.dim_names = tuple(dim_names) if dim_names is not None else None
        lines = [
            f"invalid axis {axis!r} for dataset {dataset!r} in {path}",
            f"ndim={ndim}, shape={self.shape}",
        ]
        if isinstance(axis, int):
            lines.append(f"valid integer axis indices: 0..{ndim - 1} (or negative indexing)")
        elif self.dim_names is None:
            lines.append(
                "this dataset has no dim_names in footer metadata; "
                f"use integer axis indices 0..{ndim - 1}"
            )
        else:
            lines.append("dim_names (index → name):")
            lines.extend(f"  {i} → {n!r}" for i, n in enumerate(self.dim_names))
            close = difflib.get_close_matches(str(axis), self.dim_names, n=3, cutoff=0.5)
            if close:
                lines.append("did you mean: " + ", ".join(repr(c) for c in close) + "?")
        super().__init__("\n".join(lines))
