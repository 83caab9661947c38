"""Progress output goes to stderr only when stderr is a terminal (and TET_NO_PROGRESS is
unset); pipes and logs stay clean."""

from __future__ import annotations

import io
import sys
import time

import pytest

from tet.cli import progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _wait_for(stream: io.StringIO, text: str) -> None:
    deadline = time.monotonic() + 30
    while text not in stream.getvalue():
        assert time.monotonic() < deadline, stream.getvalue()
        time.sleep(0.01)


def test_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    err = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.delenv("TET_NO_PROGRESS", raising=False)
    with progress.progress(4, "verify") as bar:
        bar.update(4)
    assert "verify:" in err.getvalue() and "/4 " in err.getvalue()


def test_nothing_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with progress.progress(4, "verify") as bar, progress.busy("query", after=0):
        bar.update(4)
    assert err.getvalue() == ""


def test_tet_no_progress_silences_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    err = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setenv("TET_NO_PROGRESS", "1")
    with progress.progress(4, "verify") as bar, progress.busy("query", after=0):
        bar.update(4)
    assert err.getvalue() == ""


def test_busy_line_for_a_long_call(monkeypatch: pytest.MonkeyPatch) -> None:
    err = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.delenv("TET_NO_PROGRESS", raising=False)
    with progress.busy("query mean", after=0):
        _wait_for(err, "query mean: 00:0")
    # a call that ends before `after` draws nothing
    quiet = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    with progress.busy("query mean", after=60):
        pass
    assert quiet.getvalue() == ""
