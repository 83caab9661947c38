"""Man pages: one per subcommand plus `tet.1` and `tet-ops.7`, rendered by the system's
roff, naming every flag of the parser `tet` runs and every operation of the registry; the
committed pages are the generated ones."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tet.cli import manpages
from tet.cli.main import build_parser
from tet.query.document import parse_text
from tet.query.ops import OPS, TRANSFORM_METHODS

MAN = REPO / "man"


def render(path: Path) -> str:
    """Plain text of a page as `man` would show it (wide, no hyphenation)."""
    if shutil.which("groff"):
        cmd = ["groff", "-man", "-Tutf8", "-rLL=250n", "-rHY=0", "-P", "-cbou", str(path)]
        # not Python: it must not inherit a sanitizer runtime preloaded for the suite
        env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS")}
    else:
        cmd = ["man", "-l", "-P", "cat", str(path)]
        env = {"MANWIDTH": "250", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    assert "warning" not in done.stderr, done.stderr
    return done.stdout


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return {name: sub for name, _, sub in manpages._subcommands(parser)}


def _flags(parser: argparse.ArgumentParser) -> Iterator[str]:
    """Every option string and positional metavar, nested subcommands included."""
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):  # every page omits -h/--help
            continue
        if isinstance(action, argparse._SubParsersAction):
            for sub in _subcommands(parser).values():
                yield from _flags(sub)
            yield from _subcommands(parser)
        elif action.option_strings:
            yield from action.option_strings
        elif action.metavar or action.dest:
            yield str(action.metavar or action.dest)


def test_the_set_of_pages() -> None:
    commands = _subcommands(build_parser())
    assert set(commands) == {"info", "verify", "repair", "query", "qhist", "convert", "export",
                             "pkg", "man"}
    want = {"tet.1", "tet-ops.7", *(f"tet-{c}.1" for c in commands)}
    assert set(manpages.pages()) == want
    assert {p.name for p in MAN.glob("tet*.[17]")} == want


def test_committed_pages_are_the_generated_ones() -> None:
    assert manpages.main([str(MAN), "--check"]) == 0


def test_check_reports_a_stale_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert manpages.main([str(tmp_path)]) == 0
    (tmp_path / "tet-info.1").write_text(".TH OLD\n")
    assert manpages.main([str(tmp_path), "--check"]) == 1
    assert "tet-info.1" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(_subcommands(build_parser())))
def test_each_command_page_names_every_flag(name: str) -> None:
    text = render(MAN / f"tet-{name}.1")
    assert re.search(rf"^NAME\n\s+tet-{name} - \S", text, re.M)
    sub = _subcommands(build_parser())[name]
    missing = [f for f in _flags(sub) if f not in text]
    assert not missing, missing
    assert "EXIT STATUS" in text and "SEE ALSO" in text


def test_main_page_lists_every_command_and_its_flags() -> None:
    text = render(MAN / "tet.1")
    parser = build_parser()
    for name in _subcommands(parser):
        assert f"tet {name}" in text
    missing = [f for f in _flags(parser) if f not in text]
    assert not missing, missing
    for var, _ in manpages.ENVIRONMENT:
        assert var in text


def test_ops_page_has_every_operation_with_examples() -> None:
    text = render(MAN / "tet-ops.7")
    for key, op in OPS.items():
        assert re.search(rf"^   {key}$", text, re.M), key
        assert op.summary.split()[0] in text
        assert manpages.example_json(op) in text
    for method in TRANSFORM_METHODS:
        assert method in text
    for field in ("operation_histogram_edges", "operation_covariance_order",
                  "operation_reduced_argmax", "operation_element_count"):
        assert field in text


@pytest.mark.parametrize("key", list(OPS))
def test_examples_are_valid_documents_and_agree(key: str) -> None:
    op = OPS[key]
    from_json = parse_text(manpages.example_json(op), filename="x.json")
    from_toml = parse_text(manpages.example_toml(op), filename="x.toml")
    assert from_json == from_toml
    assert from_json.operation is not None and from_json.operation.key == key


def test_roff_escaping() -> None:
    assert manpages._esc("a-b\\c") == "a\\-b\\ec"
    assert manpages._esc(".starts\n'quote") == "\\&.starts\n\\&'quote"


def test_pages_are_installed_with_the_package() -> None:
    """Wheels carry them through pyproject's data-files; `make build` copies them into the
    development environment (editable installs skip data files)."""
    import sys
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    data_files = config["tool"]["setuptools"]["data-files"]
    declared = {p.name for patterns in data_files.values() for pattern in patterns
                for p in REPO.glob(pattern)}
    assert declared == {p.name for p in MAN.glob("tet*.[17]")}
    assert set(data_files) == {"share/man/man1", "share/man/man7"}
    for page in MAN.glob("tet*.[17]"):
        installed = Path(sys.prefix) / "share" / "man" / f"man{page.suffix[1:]}" / page.name
        assert installed.read_text() == page.read_text(), installed
