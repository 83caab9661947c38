"""Spill-path allowlist and safe-output helpers (query.md §10)."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest

import tet
import tet.safeio
from tet.errors import (
    DiskFullError,
    QueryError,
    TetFileNotFoundError,
    TetNotADirectoryError,
    TetPermissionError,
)
from tet.query.allow import Allowlist, atomic_output, cache_roots, move_into_place, temp_file

HINT = "(.tet directory, platform cache, or --spill-allow)"
POSIX = os.name == "posix"


@pytest.fixture(autouse=True)
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every cache root into tmp_path so nothing touches the real home or /tmp."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("XDG_CACHE_HOME", "TEMP", "TMP", "LOCALAPPDATA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmpdir"))
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(systmp))
    return tmp_path


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    d = tmp_path / "work" / "proj"
    d.mkdir(parents=True)
    (d / "data.tet").write_bytes(b"")
    return d.resolve()


def parts(d: Path) -> list[Path]:
    return [p for p in d.iterdir() if p.name.endswith(".part")]


# -- resolve ---------------------------------------------------------------------------------


def test_package_importable() -> None:
    assert tet.errors.QueryError is QueryError
    assert issubclass(QueryError, ValueError)


def test_relative_path_joins_tet_parent_not_cwd(
    proj: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    al = Allowlist.for_file(proj / "data.tet")
    assert al.base == proj
    assert al.resolve("out/x.bin") == proj / "out" / "x.bin"
    assert (proj / "out").is_dir()
    assert not (elsewhere / "out").exists()


def test_bare_tet_name_uses_cwd(proj: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(proj)
    al = Allowlist.for_file("data.tet")
    assert al.base == proj
    assert al.roots[0] == proj
    assert al.resolve("s.bin") == proj / "s.bin"


def test_absolute_path_under_root_creates_parent(proj: Path) -> None:
    al = Allowlist.for_file(str(proj / "data.tet"))
    got = al.resolve(str(proj / "a" / "b" / "c.bin"), what="write.path")
    assert got == proj / "a" / "b" / "c.bin"
    assert (proj / "a" / "b").is_dir()
    assert not got.exists()  # only the parent is created, never the target


def test_dotdot_allowed_when_still_under_root(proj: Path) -> None:
    al = Allowlist.for_file(proj / "data.tet")
    assert al.resolve("sub/../y.bin") == proj / "y.bin"
    assert al.resolve("missing/../z.bin") == proj / "z.bin"
    assert not (proj / "missing").exists()


def test_traversal_refused_with_exact_message(proj: Path, tmp_path: Path) -> None:
    al = Allowlist.for_file(proj / "data.tet")
    resolved = tmp_path.resolve() / "etc" / "x"
    want = (f"validation: spill path ../../etc/x is not under an allowed root {HINT}; "
            f"resolved to {resolved}")
    with pytest.raises(QueryError) as info:
        al.resolve("../../etc/x")
    assert str(info.value) == want
    assert not (tmp_path / "etc").exists()  # nothing created outside the roots


def test_refusal_wording_is_the_same_for_every_output(proj: Path) -> None:
    al = Allowlist.for_file(proj / "data.tet")
    with pytest.raises(QueryError, match=r"^validation: spill path /nowhere/deep/f is not"):
        al.resolve("/nowhere/deep/f", what="write.path")
    assert not Path("/nowhere").exists()


@pytest.mark.skipif(not POSIX, reason="symlinks")
def test_symlink_to_outside_refused(proj: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret"
    secret.write_text("keep")
    (proj / "link").symlink_to(secret)
    (proj / "dangling").symlink_to(outside / "new-file")
    al = Allowlist.for_file(proj / "data.tet")
    with pytest.raises(QueryError) as info:
        al.resolve("link")
    assert str(info.value).startswith("validation: spill path link is not under an allowed root")
    assert str(info.value).endswith(f"resolved to {secret.resolve()}")
    with pytest.raises(QueryError, match="not under an allowed root"):
        al.resolve("dangling")
    assert secret.read_text() == "keep"
    assert not (outside / "new-file").exists()


@pytest.mark.skipif(not POSIX, reason="symlinks")
def test_symlink_inside_root_resolves_to_target(proj: Path) -> None:
    (proj / "real").mkdir()
    (proj / "alias").symlink_to(proj / "real" / "f.bin")
    al = Allowlist.for_file(proj / "data.tet")
    assert al.resolve("alias") == proj / "real" / "f.bin"


@pytest.mark.skipif(not POSIX, reason="symlinks")
def test_symlinked_directory_escape_refused(proj: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (proj / "esc").symlink_to(outside, target_is_directory=True)
    al = Allowlist.for_file(proj / "data.tet")
    with pytest.raises(QueryError) as info:
        al.resolve("esc/new/x.bin")
    assert f"resolved to {outside.resolve() / 'new' / 'x.bin'}" in str(info.value)
    assert not (outside / "new").exists()  # refused before any directory was created


def test_existing_directory_target_refused(proj: Path) -> None:
    (proj / "d").mkdir()
    al = Allowlist.for_file(proj / "data.tet")
    with pytest.raises(QueryError) as info:
        al.resolve("d")
    assert str(info.value) == "validation: spill path d names a directory, not a file"
    for given in ("d/", ".", "", "d/.."):
        with pytest.raises(QueryError, match="names a directory, not a file"):
            al.resolve(given, what="sidecar")


@pytest.mark.skipif(not POSIX, reason="symlinks")
def test_symlink_to_a_root_itself_names_a_directory(proj: Path) -> None:
    (proj / "up").symlink_to(proj, target_is_directory=True)
    al = Allowlist.for_file(proj / "data.tet")
    with pytest.raises(QueryError) as info:
        al.resolve("up")
    assert str(info.value) == "validation: spill path up names a directory, not a file"


def test_parent_that_is_a_file_refused(proj: Path) -> None:
    (proj / "blocker").write_text("x")
    al = Allowlist.for_file(proj / "data.tet")
    with pytest.raises(QueryError, match=r"^validation: cannot create directory for spill path"):
        al.resolve("blocker/x.bin")
    assert (proj / "blocker").read_text() == "x"


def test_spill_allow_extra_root(proj: Path, tmp_path: Path) -> None:
    extra = tmp_path / "extra" / "deep"
    target = extra / "x.bin"
    with pytest.raises(QueryError, match="not under an allowed root"):
        Allowlist.for_file(proj / "data.tet").resolve(str(target))
    al = Allowlist.for_file(proj / "data.tet", extra=[str(extra)])
    assert extra.is_dir()
    assert al.roots[-1] == extra.resolve()
    assert al.resolve(str(target)) == extra.resolve() / "x.bin"


def test_spill_allow_uncreatable_refused(proj: Path, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(QueryError, match="cannot create --spill-allow directory"):
        Allowlist.for_file(proj / "data.tet", extra=[tmp_path / "afile" / "sub"])


# -- cache roots -----------------------------------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux cache layout")
def test_cache_roots_default_layout(tmp_path: Path) -> None:
    home = (tmp_path / "home").resolve()
    want = [home / ".cache" / "tetration", home / ".local" / "cache" / "tetration",
            (tmp_path / "tmpdir" / "tetration").resolve(),
            (tmp_path / "systmp" / "tetration").resolve()]
    got = cache_roots()
    assert got == want  # platformdirs' ~/.cache/tetration deduped with ours
    assert all(p.is_dir() for p in got)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux cache layout")
def test_cache_roots_follow_xdg_and_tmpdir_deduped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    xdg = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    monkeypatch.setenv("TEMP", str(tmp_path / "tmpdir"))  # same as TMPDIR
    link = tmp_path / "tmplink"
    link.symlink_to(tmp_path / "tmpdir", target_is_directory=True)
    monkeypatch.setenv("TMP", str(link))  # same directory through a symlink
    got = cache_roots()
    assert got == [(xdg / "tetration").resolve(), (tmp_path / "tmpdir" / "tetration").resolve(),
                   (tmp_path / "systmp" / "tetration").resolve()]
    assert len(set(got)) == len(got)
    assert not (tmp_path / "home" / ".cache").exists()


def test_cache_roots_skip_uncreatable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("TMPDIR", str(tmp_path / "afile"))
    got = cache_roots()
    assert all(not p.is_relative_to(tmp_path / "afile") for p in got)
    assert (tmp_path / "systmp" / "tetration").resolve() in got


def test_allowlist_roots_order_and_dedupe(tmp_path: Path) -> None:
    caches = cache_roots()
    cache_tet = caches[0] / "data.tet"
    extra = tmp_path / "x1"
    al = Allowlist.for_file(cache_tet, extra=[extra, extra, caches[1]])
    assert al.base == caches[0]
    assert al.roots == (*caches, extra.resolve())


# -- temp paths ------------------------------------------------------------------------------


def test_temp_path_names_and_location(proj: Path) -> None:
    al = Allowlist.for_file(proj / "data.tet")
    first = cache_roots()[0]
    pid = os.getpid()
    spill = al.temp_path("spill")
    draft = al.temp_path("sidecar-draft")
    assert re.fullmatch(rf"spill-{pid}-\d+\.bin", spill.name)
    assert re.fullmatch(rf"sidecar-draft-{pid}-\d+\.tet", draft.name)
    assert spill.parent == first and draft.parent == first
    assert not spill.exists()
    assert len({al.temp_path("spill") for _ in range(100)}) == 100
    with pytest.raises(ValueError, match="unknown temp file kind"):
        al.temp_path("bogus")


def test_temp_path_falls_back_to_any_root(proj: Path) -> None:
    al = Allowlist(base=proj, roots=(proj,))
    assert al.temp_path("spill").parent == proj


# -- atomic_output ---------------------------------------------------------------------------


def test_atomic_output_replaces_target(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with atomic_output(target) as tmp:
        assert re.fullmatch(rf"\.out\.bin\.{os.getpid()}-\d+-[0-9a-f]{{8}}\.\d+\.part",
                            tmp.name)
        assert tmp.parent == tmp_path
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # nothing visible until exit
    assert target.read_bytes() == b"new"
    assert parts(tmp_path) == []


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_atomic_output_failure_keeps_old_target(tmp_path: Path, exc: BaseException) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(type(exc)), atomic_output(target) as tmp:
        tmp.write_bytes(b"partial")
        raise exc
    assert target.read_bytes() == b"old"
    assert parts(tmp_path) == []


def test_atomic_output_oserror_becomes_disk_full_error(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(DiskFullError) as info, atomic_output(target, what="sidecar") as tmp:
        tmp.write_bytes(b"x")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(info.value) == (f"validation: cannot write sidecar file {target}: "
                               f"{os.strerror(errno.ENOSPC)}")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert isinstance(info.value, OSError) and isinstance(info.value, tet.TetError)
    assert isinstance(info.value.__cause__, OSError)
    assert not target.exists()
    assert parts(tmp_path) == []


def test_atomic_output_unwritable_directory(tmp_path: Path) -> None:
    if POSIX and os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        target = locked / "out.bin"
        locked.chmod(0o500)
        try:
            want = re.escape(f"cannot write spill file {target}")
            with pytest.raises(TetPermissionError, match=want), atomic_output(target) as tmp:
                tmp.write_bytes(b"never")
            assert list(locked.iterdir()) == []
        finally:
            locked.chmod(0o700)
    else:
        # Root ignores permission bits: make the parent a regular file instead (ENOTDIR).
        blocker = tmp_path / "blocker"
        blocker.write_text("x")
        target = blocker / "out.bin"
        with pytest.raises(TetNotADirectoryError) as info, atomic_output(target) as tmp:
            tmp.write_bytes(b"never")
        assert str(info.value) == (f"validation: cannot write spill file {target}: "
                                   f"{os.strerror(errno.ENOTDIR)}")
        assert blocker.read_text() == "x"


@pytest.mark.skipif(not POSIX, reason="RLIMIT_FSIZE is POSIX")
def test_atomic_output_disk_full_subprocess(tmp_path: Path) -> None:
    target = tmp_path / "big.bin"
    target.write_bytes(b"old")
    script = textwrap.dedent(f"""
        import resource, signal, sys
        from pathlib import Path
        from tet.errors import DiskFullError
        from tet.query.allow import atomic_output
        target = Path({str(target)!r})
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        try:
            with atomic_output(target) as tmp:
                with open(tmp, "wb") as f:
                    f.write(b"\\0" * (1 << 20))
        except DiskFullError as exc:
            print("QUERYERROR:" + str(exc))
            sys.exit(0)
        print("NO-ERROR")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith(f"QUERYERROR:validation: cannot write spill file {target}: "), line
    assert os.strerror(errno.EFBIG) in line
    assert target.read_bytes() == b"old"
    assert parts(tmp_path) == []


# -- move_into_place -------------------------------------------------------------------------


def test_move_into_place_same_filesystem(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    src.write_bytes(b"payload")
    dst.write_bytes(b"old")
    move_into_place(src, dst)
    assert dst.read_bytes() == b"payload"
    assert not src.exists()


def test_move_into_place_cross_filesystem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "a" / "src.bin"
    src.parent.mkdir()
    dst = tmp_path / "b" / "dst.bin"
    dst.parent.mkdir()
    src.write_bytes(b"payload" * 1000)
    real = os.replace
    calls: list[tuple[object, object, dict[str, Any]]] = []

    def fake(a: object, b: object, **kw: Any) -> None:
        calls.append((a, b, kw))
        if len(calls) == 1:
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        real(a, b, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", fake)
    move_into_place(src, dst)
    assert len(calls) == 2  # the failed rename, then the temp copy renamed beside dst
    _, name, kw = calls[1]
    assert name == "dst.bin" and kw["src_dir_fd"] == kw["dst_dir_fd"]  # both in dst's dir
    assert dst.read_bytes() == b"payload" * 1000
    assert not src.exists()
    assert parts(dst.parent) == []


def test_move_into_place_copy_failure_leaves_dst(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    src.write_bytes(b"payload")
    dst.write_bytes(b"old")

    def exdev(a: object, b: object, **kw: Any) -> None:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    def full(src_fd: int, dst_fd: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", exdev)
    monkeypatch.setattr(tet.safeio, "_copy_fd", full)
    with pytest.raises(DiskFullError) as info:
        move_into_place(src, dst)
    assert str(info.value) == (f"validation: cannot move {src} to {dst}: "
                               f"{os.strerror(errno.ENOSPC)} (7 bytes)")
    assert dst.read_bytes() == b"old"
    assert src.read_bytes() == b"payload"
    assert parts(tmp_path) == []


def test_move_into_place_missing_source(tmp_path: Path) -> None:
    dst = tmp_path / "dst.bin"
    dst.write_bytes(b"old")
    with pytest.raises(TetFileNotFoundError, match=r"^validation: cannot move .*src\.bin"):
        move_into_place(tmp_path / "src.bin", dst)
    assert dst.read_bytes() == b"old"


# -- temp_file -------------------------------------------------------------------------------


def test_temp_file_deleted_on_success(proj: Path) -> None:
    al = Allowlist.for_file(proj / "data.tet")
    with temp_file(al) as path:
        path.write_bytes(b"x")
        assert path.parent == cache_roots()[0]
        assert path.name.startswith("spill-")
    assert not path.exists()


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_temp_file_deleted_on_error(proj: Path, exc: BaseException) -> None:
    al = Allowlist.for_file(proj / "data.tet")
    seen: list[Path] = []
    with pytest.raises(type(exc)), temp_file(al, "sidecar-draft") as path:
        seen.append(path)
        path.write_bytes(b"x")
        raise exc
    assert seen and seen[0].name.endswith(".tet")
    assert not seen[0].exists()


def test_temp_file_moved_away_is_fine(proj: Path) -> None:
    al = Allowlist.for_file(proj / "data.tet")
    dst = al.resolve("kept.bin")
    with temp_file(al) as path:
        path.write_bytes(b"data")
        move_into_place(path, dst)
    assert dst.read_bytes() == b"data"
    assert not path.exists()
