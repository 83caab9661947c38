"""Outputs never land outside the allowlist, whatever another process does meanwhile.

Matrix: the output kinds the allowlist governs (top-level spill, transform spill to
`write.path` and to the engine temp name, sidecar, tier-C temp spill) × the attacks
(a directory under an allowed root exchanged with a symlink to an outside directory by
renameat2(RENAME_EXCHANGE), the hidden temp file replaced by a symlink to an outside
file, an allowed root replaced) × O_TMPFILE on and off; plus targets that are not
regular files (FIFO, socket, device node), which are refused without being opened.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tet
import tet.safedir
from tests.conftest import REPO
from tet.query.allow import Allowlist

LINUX = sys.platform.startswith("linux")
A = np.arange(64 * 48, dtype=np.float64).reshape(64, 48)
HINT = "(.tet directory, platform cache, or --spill-allow)"


@pytest.fixture
def world(tmp_path: Path, private_cache: Path) -> Iterator[dict[str, Path]]:
    """root/ (the .tet directory) with a real `sub/` and a symlink `swap` -> outside/,
    where `victim` is a file nothing may touch."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "victim").write_bytes(b"keep")
    (root / "swap").symlink_to(outside, target_is_directory=True)
    tet.write_dataset(root / "data.tet", "a", A, chunk_shape=(16, 48))
    yield {"root": root.resolve(), "outside": outside.resolve(), "cache": private_cache}


def _outside_files(outside: Path) -> list[str]:
    return sorted(str(p.relative_to(outside)) for p in outside.rglob("*"))


# ---------------------------------------------------------------------------
# the race: a second process exchanges root/sub with the symlink root/swap -> outside
# and replaces every hidden temp file it sees in them by a symlink to outside/victim

SWAPPER = textwrap.dedent(r"""
    import ctypes, os, sys, time
    a, b, victim, stop, seconds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(
        sys.argv[5])
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None) if sys.argv[6] == "renameat2" else None
    if fn is not None:
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                       ctypes.c_uint]
    AT_FDCWD, RENAME_EXCHANGE = -100, 2

    def exchange():
        if fn is not None and fn(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(),
                                 RENAME_EXCHANGE) == 0:
            return "exchange"
        hold = a + ".hold"  # no renameat2 here: three renames, not atomic
        try:
            os.rename(a, hold); os.rename(b, a); os.rename(hold, b)
        except OSError:
            pass
        return "renames"

    swaps = replaced = 0
    how = ""
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not os.path.exists(stop):
        how = exchange()
        swaps += 1
        for d in (a, b):
            try:
                names = os.listdir(d)
            except OSError:
                continue
            for n in names:
                if n.endswith((".part", ".tmp")) and n.startswith("."):
                    link = os.path.join(d, f"lnk{replaced}")
                    try:
                        os.symlink(victim, link)
                        os.rename(link, os.path.join(d, n))
                        replaced += 1
                    except OSError:
                        pass
    print(swaps, replaced, how, flush=True)
""")


def _recording_creates(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Where every file tet creates really is: the directory descriptor's path at the
    moment of the create (from /proc), whatever it was called when it was resolved."""
    where: list[str] = []
    real = tet.safedir.Dir.open
    creating = os.O_CREAT | getattr(os, "O_TMPFILE", 0)

    def open_(self: tet.safedir.Dir, name: str, flags: int, mode: int = 0o666) -> int:
        if flags & creating and self.fd >= 0:
            where.append(os.readlink(f"/proc/self/fd/{self.fd}"))
        return real(self, name, flags, mode)

    monkeypatch.setattr(tet.safedir.Dir, "open", open_)
    return where


def _attempt(f: tet.TetFile, kind: int, i: int) -> None:
    """One output of each kind the allowlist governs, under root/sub/ (and the cache)."""
    if kind == 0:
        f.query({"dataset": "a", "spill": f"sub/s{i % 5}.bin"}, preview=3)
    elif kind == 1:
        f.query({"dataset": "a", "transform": {"method": "zscore", "axis": []},
                 "write": {"target": "spill", "path": f"sub/t{i % 3}.bin"}}, preview=3)
    elif kind == 2:
        f.query({"dataset": "a", "transform": {"method": "center", "axis": []},
                 "write": {"target": "sidecar", "path": f"sub/side{i % 3}.tet"}}, preview=3)
    else:
        f.query({"dataset": "a", "median": [],
                 "execution": {"memory_budget_bytes": 1}}, preview=0)


def _attempt_cache(f: tet.TetFile, kind: int, i: int) -> None:
    """Outputs in the cache root: engine spill names, tier-C temp spills, sidecars."""
    if kind == 0:
        f.read_spill("a")
    elif kind == 1:
        f.query({"dataset": "a", "transform": {"method": "l2", "axis": []},
                 "write": "spill"}, preview=3)
    elif kind == 2:
        f.query({"dataset": "a", "transform": {"method": "center", "axis": []},
                 "write": {"target": "sidecar", "path": f"sub/side{i % 3}.tet"}}, preview=3)
    else:
        f.query({"dataset": "a", "median": [],
                 "execution": {"memory_budget_bytes": 1}}, preview=0)


ATTEMPTS = 1200
EXPECTED_REFUSALS = ("is not under an allowed root", "changed while it was being opened",
                     "is no longer the directory the allowlist recorded",
                     "the temp file was replaced by another process",
                     "its directory was removed by another process")  # renames: rename(2)
# onto the empty directory a spill had just made replaces it


def _swapped(world: dict[str, Path], tmp_path: Path, what: str) -> tuple[Path, Path]:
    """The directory another process exchanges with a symlink to outside/, and that
    symlink: root/sub; the `.tet` directory itself (after it was opened); the cache
    root (pinned at the first use, before the race)."""
    root, outside, cache = world["root"], world["outside"], world["cache"] / "tetration"
    if what == "sub":
        return root / "sub", root / "swap"
    link = tmp_path / f"{what}-link"
    link.symlink_to(outside, target_is_directory=True)
    return (root, link) if what == "root" else (cache, link)


@pytest.mark.skipif(not LINUX, reason="reads /proc/self/fd to locate every created file")
@pytest.mark.parametrize(("what", "swap"), [("sub", "renameat2"), ("sub", "renames"),
                                            ("root", "renameat2"), ("cache", "renameat2")])
def test_symlink_race_writes_nothing_outside(world: dict[str, Path], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, what: str,
                                             swap: str) -> None:
    root, outside = world["root"], world["outside"]
    created = _recording_creates(monkeypatch)
    stop = tmp_path / "stop"
    f = tet.open(root / "data.tet")  # the roots are pinned here, before any swap
    attempt = _attempt_cache if what == "cache" else _attempt
    attempt(f, 1, 0)  # the first use: the cache roots are all pinned now
    allowed = [root, *f.allowlist.caches]
    a, b = _swapped(world, tmp_path, what)
    allowed.append(b)  # the real directory goes by the link's name half the time
    outcomes: Counter[str] = Counter()
    swapper = subprocess.Popen(
        [sys.executable, "-c", SWAPPER, str(a), str(b), str(outside / "victim"), str(stop),
         "300", swap],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    try:
        assert swapper.stdout is not None
        assert swapper.stdout.readline().strip() == "ready"
        with f:
            for i in range(ATTEMPTS):
                if i == ATTEMPTS // 2:  # named temp files from here on: the .part attack
                    monkeypatch.delattr(os, "O_TMPFILE", raising=False)
                try:
                    attempt(f, i % 4, i)
                    outcomes["written"] += 1
                except tet.TetError as exc:
                    text = str(exc)
                    assert any(r in text for r in EXPECTED_REFUSALS), text
                    outcomes[next(r for r in EXPECTED_REFUSALS if r in text)] += 1
    finally:
        stop.touch()
        out, err = swapper.communicate(timeout=60)
    seconds = time.monotonic() - started
    swaps, replaced, how = out.split()[-3:]
    print(f"\n{what}: {ATTEMPTS} attempts in {seconds:.1f} s against {swaps} directory swaps "
          f"({how}) and {replaced} temp files replaced: {dict(outcomes)}")
    assert swapper.returncode == 0, err
    assert sum(outcomes.values()) == ATTEMPTS and int(swaps) > 0
    assert _outside_files(outside) == ["victim"]
    assert (outside / "victim").read_bytes() == b"keep"
    assert created and all(any(Path(w).is_relative_to(r) for r in allowed) for w in created)


# ---------------------------------------------------------------------------
# the same attacks, one at a time, at the worst moment


@pytest.mark.parametrize("tmpfile", [True, False], ids=["o_tmpfile", "named"])
def test_temp_file_swapped_for_a_symlink_is_never_written_through(
        world: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmpfile: bool) -> None:
    """Another process renames a symlink to an outside file over the hidden temp file
    while the spill is written: the outside file is untouched and the spill fails."""
    root, outside = world["root"], world["outside"]
    if not tmpfile:
        monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    real_rename = tet.safedir.Dir.rename
    swapped: list[str] = []

    def attack(d: tet.safedir.Dir) -> None:
        for name in os.listdir(d.path):
            if name.startswith(".s.bin.") and name.endswith(".part"):
                os.symlink(outside / "victim", d.path / "lnk")
                os.rename(d.path / "lnk", d.path / name)
                swapped.append(name)

    def rename(self: tet.safedir.Dir, name: str, dst: tet.safedir.Dir, dst_name: str) -> None:
        attack(self)  # after the bytes are written, before the rename
        real_rename(self, name, dst, dst_name)

    monkeypatch.setattr(tet.safedir.Dir, "rename", rename)
    with tet.open(root / "data.tet") as f, pytest.raises(tet.FileChangedError) as info:
        f.query({"dataset": "a", "spill": "sub/s.bin"}, preview=1)
    target = root / "sub" / "s.bin"
    assert str(info.value) == (f"validation: cannot write spill file {target}: the temp file "
                               "was replaced by another process while it was written; the "
                               "output is not there")
    assert len(swapped) == 1
    assert (outside / "victim").read_bytes() == b"keep"
    assert _outside_files(outside) == ["victim"]


def test_directory_swapped_between_resolve_and_open_is_refused(
        world: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    root, outside = world["root"], world["outside"]
    real = tet.query.allow.Allowlist._canonical

    def canonical_then_swap(self: Allowlist, given: str, what: str) -> Path:
        out = real(self, given, what)
        os.rename(root / "sub", root / "real")  # the resolved directory becomes a symlink
        os.rename(root / "swap", root / "sub")
        return out

    monkeypatch.setattr(tet.query.allow.Allowlist, "_canonical", canonical_then_swap)
    with tet.open(root / "data.tet") as f, pytest.raises(tet.QueryError) as info:
        f.query({"dataset": "a", "spill": "sub/deep/s.bin"}, preview=1)
    assert str(info.value) == (
        f"validation: spill path sub/deep/s.bin changed while it was being opened: "
        f"{root / 'sub'} is no longer the directory it resolved to (a symlink or another "
        "directory was put in its place); nothing was written")
    assert _outside_files(outside) == ["victim"]


@pytest.mark.skipif(not LINUX, reason="directory descriptors of removed directories")
def test_directory_renamed_over_before_a_commit_is_a_file_changed_error(
        tmp_path: Path) -> None:
    """A session writing into a directory descriptor whose directory another process
    replaced (rename(2) onto an empty directory) says so, and writes nothing anywhere."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "other").mkdir()
    d = tet.safedir.Dir.of(tmp_path / "sub")
    w = tet.writer.TetWriter.create(tmp_path / "sub" / "x.tet", _dir=d)
    w.write_dataset("a", np.arange(4.0))
    os.rename(tmp_path / "other", tmp_path / "sub")  # the opened directory is deleted
    with pytest.raises(tet.FileChangedError) as info:
        w.commit(fsync=False)
    assert str(info.value) == (
        f"cannot write {tmp_path / 'sub' / 'x.tet'}: its directory was removed by another "
        "process while the file was written")
    assert [p.name for p in tmp_path.rglob("*")] == ["sub"]
    d.close()


def test_replaced_allowed_root_is_refused(world: dict[str, Path], tmp_path: Path) -> None:
    root = world["root"]
    allow = Allowlist.for_file(root / "data.tet")
    os.rename(root, tmp_path / "moved")
    (tmp_path / "root").mkdir()  # the same path, another directory
    with pytest.raises(tet.QueryError) as info:
        allow.create("x.bin")
    assert str(info.value) == (
        f"validation: spill path x.bin: allowed root {root} is no longer the directory the "
        "allowlist recorded (a symlink or another directory was put in its place); nothing "
        "was written")
    assert list((tmp_path / "root").iterdir()) == []


def test_symlinks_inside_the_roots_still_work(world: dict[str, Path]) -> None:
    root = world["root"]
    (root / "alias").symlink_to(root / "sub", target_is_directory=True)
    (root / "sub" / "file-link").symlink_to(root / "sub" / "real.bin")
    with tet.open(root / "data.tet") as f:
        r = f.query({"dataset": "a", "spill": "alias/x.bin"}, preview=1)
        assert r["execution"]["spill_f32_path"] == str(root / "sub" / "x.bin")
        r = f.query({"dataset": "a", "spill": "sub/file-link"}, preview=1)
        assert r["execution"]["spill_f32_path"] == str(root / "sub" / "real.bin")
    assert (root / "sub" / "file-link").is_symlink()  # the link stays, its target is written
    np.testing.assert_array_equal(np.fromfile(root / "sub" / "real.bin").reshape(A.shape), A)


def test_outputs_keep_permissions_and_leave_no_temp(world: dict[str, Path]) -> None:
    root = world["root"]
    target = root / "sub" / "s.bin"
    target.write_bytes(b"old")
    target.chmod(0o640)
    with tet.open(root / "data.tet") as f:
        f.query({"dataset": "a", "spill": "sub/s.bin"}, preview=1)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in (root / "sub").iterdir()) == ["s.bin"]
    np.testing.assert_array_equal(np.fromfile(target).reshape(A.shape), A)


# ---------------------------------------------------------------------------
# targets that are not regular files: refused at once, never opened or replaced

PROBE = textwrap.dedent(r"""
    import json, sys
    import tet
    root, docs = sys.argv[1], json.loads(sys.argv[2])
    with tet.open(root + "/data.tet") as f:
        for doc in docs:
            try:
                f.query(doc, preview=1)
                print("WRITTEN", flush=True)
            except tet.TetError as exc:
                print(type(exc).__name__ + ": " + str(exc), flush=True)
""")


def _probe(root: Path, docs: list[dict[str, Any]]) -> list[str]:
    """Run queries in a child with a timeout: a call that blocked would time out."""
    import json

    done = subprocess.run([sys.executable, "-c", PROBE, str(root), json.dumps(docs)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def _special_files(root: Path) -> dict[str, str]:
    sub = root / "sub"
    os.mkfifo(sub / "fifo")
    made = {"fifo": "a FIFO"}
    if LINUX:
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(sub / "sock"))
        s.close()
        made["sock"] = "a socket"
    try:
        os.mknod(sub / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        made["null"] = "a character device"
    except (PermissionError, AttributeError):
        pass  # no device nodes without privilege: FIFO and socket still cover the rule
    return made


@pytest.mark.skipif(os.name != "posix", reason="FIFOs, sockets and device nodes")
def test_special_targets_are_refused_without_blocking(world: dict[str, Path]) -> None:
    root = world["root"]
    made = _special_files(root)
    before = {name: os.lstat(root / "sub" / name) for name in made}
    docs, want = [], []
    for name, kind in made.items():
        for what, doc in (
            ("spill", {"dataset": "a", "spill": f"sub/{name}"}),
            ("write.path", {"dataset": "a", "transform": {"method": "zscore", "axis": []},
                            "write": {"target": "spill", "path": f"sub/{name}"}}),
            ("sidecar", {"dataset": "a", "transform": {"method": "zscore", "axis": []},
                         "write": {"target": "sidecar", "path": f"sub/{name}"}}),
        ):
            docs.append(doc)
            want.append(f"QueryError: validation: {what} path sub/{name} names {kind}, not a "
                        "regular file; refusing to write to it")
    assert _probe(root, docs) == want
    for name, st in before.items():
        after = os.lstat(root / "sub" / name)
        assert (after.st_ino, after.st_mode) == (st.st_ino, st.st_mode)


# ---------------------------------------------------------------------------
# a full disk: the space is reserved first, so it is an error, never SIGBUS

FSIZE = textwrap.dedent(r"""
    import resource, signal, sys
    import numpy as np
    import tet
    root = sys.argv[1]
    a = np.arange(64 * 48, dtype=np.float64).reshape(64, 48)
    tet.write_dataset(root + "/one.tet", "a", a)  # one tile of a.nbytes
    h5py = None
    try:
        import h5py
        with h5py.File(root + "/in.h5", "w") as h:
            h["a"] = a
    except ImportError:
        pass
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 14, 1 << 14))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def attempt(fn):
        try:
            fn()
            print("WRITTEN")
        except tet.DiskFullError as exc:
            print(exc.errno, exc.size, type(exc).__name__, exc)

    def stream():
        with tet.TetWriter.create(root + "/sub/s.tet") as w:
            s = w.create_dataset("a", (64, 48), "f8", chunk_shape=(16, 48))
            for r in range(0, 64, 16):
                s[r:r + 16] = a[r:r + 16]

    with tet.open(root + "/data.tet") as f:
        for doc in ({"dataset": "a", "spill": "sub/big.bin"},
                    {"dataset": "a", "transform": {"method": "zscore", "axis": []},
                     "write": {"target": "spill", "path": "sub/t.bin"}}):
            attempt(lambda: f.query(doc, preview=1))
        attempt(lambda: f.transform.to_sidecar.zscore("a", path="sub/side.tet"))
    attempt(lambda: tet.write_dataset(root + "/sub/w.tet", "a", a))
    attempt(stream)
    attempt(lambda: tet.export(root + "/one.tet", root + "/sub/o.zarr"))
    if h5py is not None:
        attempt(lambda: tet.convert(root + "/in.h5", root + "/sub/c.tet"))
""")


@pytest.mark.skipif(os.name != "posix", reason="RLIMIT_FSIZE is POSIX")
def test_file_size_limit_is_a_disk_full_error_naming_path_and_size(
        world: dict[str, Path]) -> None:
    root = world["root"]
    (root / "sub" / "big.bin").write_bytes(b"old")
    done = subprocess.run([sys.executable, "-c", FSIZE, str(root)], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    big, n = os.strerror(errno.EFBIG), A.nbytes
    lines = done.stdout.splitlines()
    # spills reserve the whole output; writers name the bytes of the write that failed:
    # the whole array in one write, a streamed tile (16 x 48 f8), a chunk file
    assert lines[:6] == [
        f"{errno.EFBIG} {n} DiskFullError validation: cannot write spill file "
        f"{root}/sub/big.bin: {big} ({n} bytes)",
        f"{errno.EFBIG} {n} DiskFullError validation: cannot write spill file "
        f"{root}/sub/t.bin: {big} ({n} bytes)",
        f"{errno.EFBIG} {n} DiskFullError cannot write {root}/sub/side.tet: {big} ({n} bytes)",
        f"{errno.EFBIG} {n} DiskFullError cannot write {root}/sub/w.tet: {big} ({n} bytes)",
        f"{errno.EFBIG} 6144 DiskFullError cannot write {root}/sub/s.tet: {big} (6144 bytes)",
        f"{errno.EFBIG} {n} ExportDiskFullError Zarr export failed: dataset `a`: cannot write "
        f"{root}/sub/o.zarr/a/c/0/0: {big} ({n} bytes)",
    ]
    assert lines[6:] in ([], [f"{errno.EFBIG} {n} DiskFullError cannot write "
                              f"{root}/sub/c.tet: {big} ({n} bytes)"])  # convert, with h5py
    assert sorted(p.name for p in (root / "sub").iterdir()) == ["big.bin"]
    assert (root / "sub" / "big.bin").read_bytes() == b"old"


# A small tmpfs in a private mount namespace: every writer meets a really full disk.
FULL = textwrap.dedent(r"""
    import json, os, sys
    mnt = sys.argv[1]
    print("MOUNTED", flush=True)
    for var, sub in (("XDG_CACHE_HOME", "cache"), ("HOME", "home"), ("TMPDIR", "tmp"),
                     ("TET_QUERY_HISTORY_FILE", "cache/history.jsonl")):
        os.environ[var] = os.path.join(mnt, sub)
    import numpy as np
    import tet
    import tet.query.allow

    src = tet.write_dataset(mnt + "/data.tet", "a", np.ones((512, 1024)))  # 4 MiB
    tet.write_dataset(mnt + "/old.tet", "a", np.zeros(4))
    with open(mnt + "/keep.bin", "wb") as fh:
        fh.write(b"old")
    st = os.statvfs(mnt)
    with open(mnt + "/filler", "wb") as fh:  # leave about 1 MiB
        fh.write(bytes(st.f_bavail * st.f_frsize - (1 << 20)))
    tet.query.allow.cache_roots()  # the cache directories exist before the listing
    before = sorted(os.listdir(mnt))
    out = {}

    def attempt(name, fn):
        try:
            fn()
            out[name] = "WRITTEN"
        except tet.TetError as exc:
            out[name] = [type(exc).__name__, isinstance(exc, OSError),
                         getattr(exc, "errno", None), str(exc)]

    def query(doc):
        with tet.open(src) as f:
            f.query(doc, preview=1)

    attempt("spill", lambda: query({"dataset": "a", "spill": "keep.bin"}))
    attempt("tier_c", lambda: query({"dataset": "a", "median": [1],
                                     "execution": {"memory_budget_bytes": 1}}))
    attempt("transform", lambda: query({"dataset": "a", "transform": {"method": "zscore",
                                        "axis": []}, "write": {"target": "spill",
                                        "path": "t.bin"}}))
    attempt("writer", lambda: tet.write_dataset(mnt + "/old.tet", "a", np.ones((512, 1024))))

    def streamed():
        with tet.TetWriter.create(mnt + "/old.tet") as w:
            s = w.create_dataset("a", (512, 1024), "f8", chunk_shape=(64, 1024))
            for r in range(0, 512, 64):
                s[r:r + 64] = np.ones((64, 1024))

    attempt("stream", streamed)
    attempt("sidecar", lambda: query({"dataset": "a", "transform": {"method": "zscore",
                                      "axis": []}, "write": {"target": "sidecar",
                                      "path": "side.tet"}}))
    attempt("export", lambda: tet.export(src, mnt + "/out.zarr", fsync=False))
    cache = os.path.join(mnt, "cache", "tetration")
    out["listing"] = sorted(set(os.listdir(mnt)) ^ set(before))
    out["cache"] = sorted(os.listdir(cache)) if os.path.isdir(cache) else []
    out["keep"] = open(mnt + "/keep.bin", "rb").read().decode()
    with tet.open(mnt + "/old.tet") as f:
        out["old"] = f.read_numpy("a").tolist()
    print(json.dumps(out))
""")


@pytest.mark.skipif(not LINUX, reason="tmpfs in a private mount namespace is Linux")
def test_full_tmpfs_is_a_disk_full_error_and_leaves_nothing(tmp_path: Path) -> None:
    import json
    import shutil

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare(1) to mount a private tmpfs")
    cmd = [unshare, "-rm", "sh", "-c", 'mount -t tmpfs -o size=8m tmpfs "$1" && '
           'exec "$2" -c "$3" "$1"', "sh", str(mnt), sys.executable, FULL]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    if "MOUNTED" not in done.stdout:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()[-300:]}")
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.splitlines()[-1])
    full = os.strerror(errno.ENOSPC)
    size = 512 * 1024 * 8
    assert got["spill"] == ["DiskFullError", True, errno.ENOSPC,
                            f"validation: cannot write spill file {mnt}/keep.bin: {full} "
                            f"({size} bytes)"]
    assert got["tier_c"] == ["DiskFullError", True, errno.ENOSPC,
                             f"validation: cannot write temp spill file in {mnt}/cache/"
                             f"tetration: {full} ({size} bytes)"]
    assert got["transform"] == ["DiskFullError", True, errno.ENOSPC,
                                f"validation: cannot write spill file {mnt}/t.bin: {full} "
                                f"({size} bytes)"]
    # writers: the bytes of the write that failed (the whole array; one 64 x 1024 tile)
    for name, n in (("writer", size), ("stream", 64 * 1024 * 8)):
        assert got[name] == ["DiskFullError", True, errno.ENOSPC,
                             f"cannot write {mnt}/old.tet: {full} ({n} bytes)"], name
    assert got["sidecar"] == ["DiskFullError", True, errno.ENOSPC,
                              f"cannot write {mnt}/side.tet: {full} ({size} bytes)"]
    kind, is_os, code, text = got["export"]  # an ExportError that is a DiskFullError too
    assert (kind, is_os, code) == ("ExportDiskFullError", True, errno.ENOSPC)
    assert text.startswith("Zarr export failed: dataset `a`: cannot write ") and full in text
    assert text.endswith(" bytes)")
    assert got["listing"] == []  # nothing partial beside the targets
    assert got["cache"] == []      # nor in the cache
    assert got["keep"] == "old" and got["old"] == [0.0, 0.0, 0.0, 0.0]
