"""Every failure a path, a file system or a name can provoke is a `TetError` subclass
naming the path, keeping the builtin a caller would catch as a second base.

Matrix: the errno table (`tet.errors.OS_ERRORS`) and its builder; `tet.open`, `tet
verify`, `tet query -t` on a missing file, a directory, a FIFO (at once, never
blocking), a NUL in the path, no permission; a file truncated or replaced while it is
opened; a full disk in a writer; lone surrogates in dataset names, attrs, labels,
history and paths; NUL in `spill_allow`; the same through the CLI, which prints one
`error:` line and never "internal error", and prints undecodable names escaped.
"""

from __future__ import annotations

import errno
import os
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tet
import tet.reader
import tet.safeio
import tet.writer
from tests.conftest import REPO, CliRun
from tet.errors import OS_ERRORS, os_error

POSIX = os.name == "posix"
ROOT = POSIX and os.geteuid() == 0


def _tet() -> list[str]:
    return [sys.executable, "-m", "tet.cli.main"]


def _run(*argv: str | os.PathLike[str], timeout: int = 60) -> subprocess.CompletedProcess[str]:
    """The CLI in a child (a real pipe as stdout, a timeout in case anything blocks)."""
    return subprocess.run([*_tet(), *map(os.fspath, argv)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, "TET_DEBUG": ""})


# ---------------------------------------------------------------------------
# the table and the builder


@pytest.mark.parametrize(("code", "cls", "builtin"), [
    (errno.ENOENT, tet.TetFileNotFoundError, FileNotFoundError),
    (errno.EISDIR, tet.TetIsADirectoryError, IsADirectoryError),
    (errno.ENOTDIR, tet.TetNotADirectoryError, NotADirectoryError),
    (errno.EACCES, tet.TetPermissionError, PermissionError),
    (errno.EPERM, tet.TetPermissionError, PermissionError),
    (errno.ENOSPC, tet.DiskFullError, OSError),
    (errno.EFBIG, tet.DiskFullError, OSError),
    (errno.EDQUOT, tet.DiskFullError, OSError),
    (errno.EIO, tet.TetOSError, OSError),
])
def test_one_table_from_errno_to_class(code: int, cls: type[tet.TetOSError],
                                       builtin: type[OSError]) -> None:
    assert OS_ERRORS.get(code, tet.TetOSError) is cls
    exc = os_error(OSError(code, os.strerror(code)), "cannot write", Path("/d/f.tet"), size=9)
    assert type(exc) is cls and isinstance(exc, builtin) and isinstance(exc, tet.TetError)
    assert isinstance(exc, OSError)
    suffix = " (9 bytes)" if cls is tet.DiskFullError else ""
    assert str(exc) == f"cannot write /d/f.tet: {os.strerror(code)}{suffix}"
    assert (exc.errno, exc.strerror, exc.filename) == (code, os.strerror(code), "/d/f.tet")
    back = pickle.loads(pickle.dumps(exc))  # crosses process pools and dask workers
    assert type(back) is cls and str(back) == str(exc) and back.errno == code


def test_a_tet_error_is_passed_through() -> None:
    exc = tet.DiskFullError("already said", errno=errno.ENOSPC)
    assert os_error(exc, "cannot write", "/x") is exc


# ---------------------------------------------------------------------------
# opening


def test_open_missing_directory_and_nul(tmp_path: Path) -> None:
    missing = tmp_path / "missing.tet"
    with pytest.raises(FileNotFoundError) as info:
        tet.open(missing)
    assert type(info.value) is tet.TetFileNotFoundError
    assert str(info.value) == f"cannot open {missing}: No such file or directory"
    assert info.value.filename == str(missing) and info.value.errno == errno.ENOENT
    with pytest.raises(IsADirectoryError) as dinfo:
        tet.open(tmp_path)
    assert type(dinfo.value) is tet.TetIsADirectoryError
    assert str(dinfo.value) == f"cannot open {tmp_path}: is a directory, not a .tet file"
    with pytest.raises(tet.InvalidPathError) as ninfo:
        tet.open(f"{tmp_path}/a\0b.tet")
    assert isinstance(ninfo.value, ValueError)
    assert str(ninfo.value) == f"cannot open '{tmp_path}/a\\x00b.tet': the path contains a NUL byte"


@pytest.mark.skipif(not POSIX or ROOT, reason="root ignores permission bits")
def test_open_without_permission(tmp_path: Path) -> None:
    path = tet.write_dataset(tmp_path / "p.tet", "a", np.arange(3.0))
    path.chmod(0)
    try:
        with pytest.raises(PermissionError) as info:
            tet.open(path)
        assert type(info.value) is tet.TetPermissionError
        assert str(info.value) == f"cannot open {path}: Permission denied"
    finally:
        path.chmod(0o644)


FIFO_CHILD = textwrap.dedent(r"""
    import sys
    import tet, tet.verify
    path = sys.argv[1]
    for name, fn in (("open", lambda: tet.open(path)), ("verify", lambda: tet.verify.verify(path)),
                     ("append", lambda: tet.TetWriter.open_append(path))):
        try:
            fn()
            print(name, "OPENED")
        except tet.TetError as exc:
            print(name, type(exc).__name__, exc.errno, exc)
""")


@pytest.mark.skipif(not POSIX, reason="FIFOs")
def test_a_fifo_is_refused_at_once_in_process_and_cli(tmp_path: Path) -> None:
    fifo = tmp_path / "f.tet"
    os.mkfifo(fifo)
    done = subprocess.run([sys.executable, "-c", FIFO_CHILD, str(fifo)], capture_output=True,
                          text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"open NotRegularFileError None cannot open {fifo}: is a FIFO, not a .tet file",
        f"verify NotRegularFileError None cannot verify {fifo}: is a FIFO, not a .tet file",
        f"append NotRegularFileError None cannot open {fifo}: is a FIFO, not a .tet file",
    ]
    for argv, line in (
        (("verify", fifo), f"error: cannot verify {fifo}: is a FIFO, not a .tet file"),
        (("verify", "--deep", fifo), f"error: cannot verify {fifo}: is a FIFO, not a .tet file"),
        (("info", fifo), f"error: cannot open {fifo}: is a FIFO, not a .tet file"),
        (("query", '{"dataset": "a", "mean": []}', "-t", fifo, "-x"),
         f"error: cannot open {fifo}: is a FIFO, not a .tet file"),
    ):
        r = _run(*argv)
        assert (r.returncode, r.stdout, r.stderr) == (1, "", line + "\n"), argv


def test_a_file_truncated_while_it_is_opened(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = tet.write_dataset(tmp_path / "t.tet", "a", np.arange(100.0))
    size = path.stat().st_size
    real = tet.reader.open_regular

    def truncating(p: Any, **kw: Any) -> tuple[int, os.stat_result]:
        fd, st = real(p, **kw)  # measured: now another process cuts the file
        os.truncate(p, 40)
        return fd, st

    monkeypatch.setattr(tet.reader, "open_regular", truncating)
    with pytest.raises(tet.FileChangedError) as info:
        tet.open(path)
    assert isinstance(info.value, tet.CatalogError)
    assert str(info.value) == (f"{path} changed while it was being opened: it was {size} "
                               "bytes, now 40; open it again")


def test_a_file_replaced_while_it_is_opened_for_appending(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tet.write_dataset(tmp_path / "t.tet", "a", np.arange(10.0))
    other = tet.write_dataset(tmp_path / "o.tet", "b", np.arange(5.0))
    real = tet.writer.open_regular

    def replacing(p: Any, **kw: Any) -> tuple[int, os.stat_result]:
        os.replace(other, p)  # between the catalog read and the payload descriptor
        return real(p, **kw)

    monkeypatch.setattr(tet.writer, "open_regular", replacing)
    with pytest.raises(tet.FileChangedError) as info:
        tet.TetWriter.open_append(path)
    assert str(info.value) == (f"{path} was replaced while it was being opened for appending; "
                               "open it again")


# ---------------------------------------------------------------------------
# writers on a full disk (a real full disk: tests/test_safe_output.py, on a tmpfs)


def test_a_full_disk_at_commit_is_disk_full_error(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tet.write_dataset(tmp_path / "d.tet", "a", np.arange(4.0))
    old = path.read_bytes()
    # the same file under a name of the same length (history names it): its whole size
    whole = tet.write_dataset(tmp_path / "e.tet", "a", np.arange(1000.0)).stat().st_size
    (tmp_path / "e.tet").unlink()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as info:
        tet.write_dataset(path, "a", np.arange(1000.0))
    assert type(info.value) is tet.DiskFullError and info.value.errno == errno.ENOSPC
    assert info.value.size == whole  # the flush of the whole output failed
    assert str(info.value) == f"cannot write {path}: {os.strerror(errno.ENOSPC)} ({whole} bytes)"
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.tet"]


# ---------------------------------------------------------------------------
# text UTF-8 cannot store


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"name": "t\udcff"}, "dataset name 't\\udcff' is not valid text: surrogates not allowed "
                          "(index 1)"),
    ({"attrs": {"k": "v\ud800"}}, "attr 'k' 'v\\ud800' is not valid text: surrogates not "
                                  "allowed (index 1)"),
    ({"attrs": {"\udc80": "v"}}, "attr name '\\udc80' is not valid text: surrogates not allowed "
                                 "(index 0)"),
    ({"dim_names": ["x\udcff"]}, "dim name 'x\\udcff' is not valid text: surrogates not "
                                 "allowed (index 1)"),
    ({"dim_names": ["x"], "coords": {"x": ["a", "b\udcff", "c"]}},
     "coords 'x' label 'b\\udcff' is not valid text: surrogates not allowed (index 1)"),
    ({"history_op": "make", "history_source": "s\udcff"},
     "history source 's\\udcff' is not valid text: surrogates not allowed (index 1)"),
])
def test_lone_surrogates_are_invalid_text_error(tmp_path: Path, kwargs: dict[str, Any],
                                                message: str) -> None:
    args: dict[str, Any] = {"name": "t", **kwargs}
    with pytest.raises(tet.InvalidTextError) as info:
        tet.write_dataset(tmp_path / "s.tet", array=np.arange(3.0), **args)
    assert isinstance(info.value, ValueError) and isinstance(info.value, tet.CatalogError)
    assert str(info.value) == "invalid one-chunk write spec: " + message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not POSIX, reason="file names that are not UTF-8")
def test_a_path_that_is_not_utf8_is_written_and_printed(tmp_path: Path) -> None:
    path = Path(os.fsdecode(os.fsencode(tmp_path) + b"/s\xff.tet"))
    tet.write_dataset(path, "a", np.arange(3.0))
    with tet.open(path) as f:
        assert [h["source"] for h in f.history] == [f"{tmp_path}/s\\xff.tet"]
        assert f.read_numpy("a").tolist() == [0.0, 1.0, 2.0]
    for argv in (("info", path), ("verify", path),
                 ("query", '{"dataset": "a", "sum": []}', "-t", path, "-x", "-q")):
        r = _run(*argv)
        assert r.returncode == 0 and r.stderr == "", (argv, r.stderr)
        assert f"{tmp_path}/s\\udcff.tet" in r.stdout or argv[0] == "query", r.stdout


def test_a_footer_escape_that_is_a_lone_surrogate_is_refused(tmp_path: Path,
                                                             cli: Callable[..., CliRun]) -> None:
    """JSON's grammar allows ``"\\ud800"`` but no text UTF-8 stores can hold it (the
    reference's reader refuses it too): the footer is invalid, as verify says."""
    path = tet.write_dataset(tmp_path / "f.tet", "a", np.arange(3.0), attrs={"k": "ZZZZZZ"})
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"ZZZZZZ"', b'"\\ud800"'))  # valid JSON, same length
    at = len(data) - 16 - int.from_bytes(data[-16:-8], "little")
    text = ("invalid one-chunk write spec: footer JSON parse: lone surrogate escape in a "
            f"string at /metadata/datasets/a/attrs/k: \\ud800 (footer at {at})")
    with pytest.raises(tet.InvalidTextError) as info:
        tet.open(path)
    assert str(info.value) == text
    r = _run("info", path)
    assert (r.returncode, r.stdout, r.stderr) == (1, "", f"error: {text}\n")


@pytest.mark.parametrize(("entry", "message"), [
    ("x\0y", "validation: --spill-allow directory 'x\\x00y' contains a NUL byte"),
    ("x\ud800y", "validation: --spill-allow directory 'x\\ud800y' contains '\\ud800', which "
                 f"the file system encoding ({sys.getfilesystemencoding()}) cannot encode"),
    ("", "validation: --spill-allow directory '' is empty; name a directory ('.' for the "
         "current one)"),
])
def test_bad_spill_allow_entries_are_refused_at_open(tmp_path: Path, entry: str,
                                                     message: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = tet.write_dataset(tmp_path / "d.tet", "a", np.arange(3.0))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(tet.QueryError) as info:
        tet.open(path, spill_allow=[entry])
    assert str(info.value) == message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.tet"]  # nothing created


# ---------------------------------------------------------------------------
# the CLI: one error line each, never "internal error"


def test_cli_says_what_and_where(tmp_path: Path, cli: Callable[..., CliRun]) -> None:
    missing = tmp_path / "missing.tet"
    cases = [
        (("info", missing), f"error: cannot open {missing}: No such file or directory\n"),
        (("info", tmp_path), f"error: cannot open {tmp_path}: is a directory, not a .tet file\n"),
        (("query", '{"dataset": "a", "mean": []}', "-t", tmp_path, "-x"),
         f"error: cannot open {tmp_path}: is a directory, not a .tet file\n"),
        (("verify", tmp_path), f"error: cannot verify {tmp_path}: is a directory, not a .tet "
                               "file\n"),
        (("repair", tmp_path), f"error: cannot verify {tmp_path}: is a directory, not a .tet "
                               "file\n"),
    ]
    for argv, err in cases:
        r = cli(*argv)
        assert (r.rc, r.out, r.err) == (1, "", err), argv
        assert "internal error" not in r.err
