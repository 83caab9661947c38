"""What a user installing `tet` outside this repository gets: an sdist that builds, an abi3
wheel with no run-time path into the build machine, and one clear error when the zstd
library the kernels link is missing."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import tet
from tests.conftest import REPO

NATIVE = Path(tet.native._native.__file__)
TIMEOUT = 600
# what a user's shell has: no ASan preload or kernels build of `make asan` (pip, the
# compiler and the fresh venv's tet must not inherit them)
PLAIN_ENV = {k: v for k, v in os.environ.items()
             if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "TET_NATIVE")}


def _run(*cmd: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          timeout=TIMEOUT, cwd=cwd, env=PLAIN_ENV if env is None else env)


def _dynamic_paths(so: bytes) -> list[str]:
    """RPATH/RUNPATH entries of an ELF shared object (readelf's view, done by hand)."""
    import struct

    assert so[:4] == b"\x7fELF" and so[4] == 2 and so[5] == 1  # 64-bit little-endian
    shoff, = struct.unpack_from("<Q", so, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", so, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", so, shoff + i * shentsize)
                for i in range(shnum)]
    out = []
    for _name, kind, _f, _a, offset, size, link, _i, _al, _es in sections:
        if kind != 6:  # SHT_DYNAMIC
            continue
        strtab = sections[link][4]
        for pos in range(offset, offset + size, 16):
            tag, value = struct.unpack_from("<qQ", so, pos)
            if tag in (15, 29):  # DT_RPATH, DT_RUNPATH
                end = so.index(b"\0", strtab + value)
                out.append(so[strtab + value:end].decode())
    return out


@pytest.mark.skipif(sys.platform != "linux", reason="checks a Linux (ELF) wheel")
def test_sdist_builds_an_abi3_wheel_in_a_fresh_venv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    r = _run(sys.executable, "-m", "build", "--sdist", "--outdir", dist, REPO, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    needed = {"build_ffi.py", "setup.py", "pyproject.toml", "LICENSE", "csrc/tet.h",
              "csrc/internal.h", "man/tet.1", "tet/py.typed", "tet_console.py",
              *(f"csrc/{p.name}" for p in (REPO / "csrc").glob("*.c"))}
    assert needed <= names, sorted(needed - names)

    venv = tmp_path / "venv"
    assert _run(sys.executable, "-m", "venv", venv).returncode == 0
    py = venv / "bin" / "python"
    wheels = tmp_path / "wheels"
    r = _run(py, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, sdist, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = wheels.glob("*.whl")
    assert wheel.name.endswith("-cp311-abi3-linux_x86_64.whl") or \
        wheel.name.endswith(f"-cp311-abi3-linux_{os.uname().machine}.whl"), wheel.name
    with zipfile.ZipFile(wheel) as z:
        (so,) = [n for n in z.namelist() if n.startswith("tet/_native")]
        assert so == "tet/_native.abi3.so"
        assert _dynamic_paths(z.read(so)) == []
        assert "tet_arrays-0.1.0.dist-info/licenses/LICENSE" in z.namelist()
        assert "tet_console.py" in z.namelist()  # the console script's module
        assert "tet = tet_console:main" in z.read("tet_arrays-0.1.0.dist-info/entry_points.txt"
                                                  ).decode()
        assert any(n.endswith("share/man/man1/tet.1") for n in z.namelist())

    # the manylinux wheel `make wheel` makes: libzstd bundled, a manylinux tag
    bindir = Path(sys.executable).parent
    env = {**PLAIN_ENV, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    repaired = tmp_path / "repaired"
    r = _run(bindir / "auditwheel", "repair", "-w", repaired, wheel, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    (fixed,) = repaired.glob("*.whl")
    assert "-cp311-abi3-manylinux_" in fixed.name, fixed.name
    with zipfile.ZipFile(fixed) as z:
        assert any(n.startswith("tet_arrays.libs/libzstd") for n in z.namelist())
    r = _run(bindir / "auditwheel", "show", fixed, env=env)
    assert r.returncode == 0 and 'consistent with the following platform tag: "manylinux_' in \
        " ".join(r.stdout.split()), r.stdout

    r = _run(py, "-m", "pip", "wheel", "--no-deps", "-w", tmp_path / "none", sdist,
             cwd=tmp_path, env={**PLAIN_ENV, "CC": "/nonexistent/gcc"})
    assert r.returncode != 0
    assert ("tet build: no C compiler found ('/nonexistent/gcc' is not on PATH); install one "
            "(Debian/Ubuntu: apt install gcc;") in r.stdout + r.stderr

    r = _run(py, "-m", "pip", "install", "-q", wheel, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    r = _run(venv / "bin" / "tet", "man", "query", "--path", cwd=tmp_path)  # not activated
    assert r.returncode == 0 and Path(r.stdout.strip()) == \
        venv / "share" / "man" / "man1" / "tet-query.1", r
    r = _run(venv / "bin" / "tet", "--version", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith(f"tet {tet.__version__} "), r
    r = _run(py, "-c", "import numpy as np, tet; p = tet.write_dataset('a.tet', 'a', "
             "np.arange(10.0)); print(tet.open(p).mean('a'))", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "4.5", r


@pytest.mark.skipif(sys.platform != "linux", reason="patches the ELF name of libzstd")
@pytest.mark.parametrize(("soname", "hint"), [
    (b"libzstd.so.9", "the zstd runtime library: Debian/Ubuntu `apt install libzstd1`"),
    (b"libzstq.so.1", "install the system package that provides it"),
])
def test_a_missing_zstd_library_is_one_clear_import_error(tmp_path: Path, soname: bytes,
                                                           hint: str) -> None:
    """The extension with its libzstd.so.1 dependency renamed: a machine without it."""
    data = NATIVE.read_bytes()
    assert data.count(b"libzstd.so.1\0") == 1
    patched = tmp_path / NATIVE.name
    patched.write_bytes(data.replace(b"libzstd.so.1\0", soname + b"\0"))
    env = {**os.environ, "TET_NATIVE": str(patched)}
    r = _run(sys.executable, "-c", "import tet", cwd=tmp_path, env=env)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"ImportError: tet's compiled kernels need {soname.decode()}, "
                           "which is not installed ("), last
    assert hint in last

    # the `tet` command on that machine: --version answers, a command fails in one line
    tet_cmd = Path(sys.executable).parent / "tet"
    env = {k: v for k, v in env.items() if k != "TET_DEBUG"}
    r = _run(tet_cmd, "--version", cwd=tmp_path, env=env)
    assert r.returncode == 0 and r.stderr == "", r
    assert r.stdout.startswith(f"tet {tet.__version__} (kernels not loaded: tet's compiled "
                               f"kernels need {soname.decode()}, which is not installed ({hint}")
    assert r.stdout.endswith("))\n") and r.stdout.count("\n") == 1, r.stdout
    for argv in (["info", "x.tet"], ["verify", "x.tet"], []):
        r = _run(tet_cmd, *argv, cwd=tmp_path, env=env)
        assert r.returncode == 1 and r.stdout == "", (argv, r)
        assert r.stderr.startswith(f"error: tet's compiled kernels need {soname.decode()}, "
                                   "which is not installed (") and hint in r.stderr, (argv, r)
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, (argv, r)
    r = _run(tet_cmd, "--debug", "info", "x.tet", cwd=tmp_path, env=env)  # the way to see more
    assert r.returncode == 1 and "Traceback" in r.stderr, r
    assert r.stderr.strip().splitlines()[-1].startswith("ImportError: tet's compiled kernels need")


def test_the_license_is_the_one_pyproject_names() -> None:
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert 'license = "MIT"' in (REPO / "pyproject.toml").read_text()


def test_a_missing_kernels_build_is_not_called_a_missing_library(tmp_path: Path) -> None:
    env = {**os.environ, "TET_NATIVE": str(tmp_path / "_native.so")}  # no such file
    r = _run(sys.executable, "-c", "import tet", cwd=tmp_path, env=env)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: ") and "_native.so: cannot open shared object file" \
        in last and "tet's compiled kernels need" not in last, last


def test_the_console_script_is_the_cli_when_the_kernels_load(
        capsys: pytest.CaptureFixture[str]) -> None:
    import tet_console

    with pytest.raises(SystemExit) as stop:
        tet_console.main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith(f"tet {tet.__version__} (simd: ")
    assert tet_console.main(["info", "/nonexistent/x.tet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "/nonexistent/x.tet" in err and err.count("\n") == 1


def test_the_console_script_when_the_cli_cannot_be_imported(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import tet_console

    monkeypatch.setitem(sys.modules, "tet.cli.main", None)  # its import fails: ImportError
    monkeypatch.delenv("TET_DEBUG", raising=False)
    assert tet_console.main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out == (f"tet {tet.__version__} (kernels not loaded: import of tet.cli.main "
                   "halted; None in sys.modules)\n"), out
    assert tet_console.main(["query", "{}", "-t", "x.tet"]) == 1
    assert capsys.readouterr() == ("", "error: import of tet.cli.main halted; None in "
                                       "sys.modules\n")
    with pytest.raises(ImportError, match=r"import of tet\.cli\.main halted"):
        tet_console.main(["--debug", "info", "x.tet"])
    monkeypatch.setenv("TET_DEBUG", "1")
    with pytest.raises(ImportError, match=r"import of tet\.cli\.main halted"):
        tet_console.main(["info", "x.tet"])
