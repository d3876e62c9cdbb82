"""Progress on a log: when stderr is not a terminal, long stages still say how far they are and how fast."""

from __future__ import annotations

import pytest

from pipeline.core import progress as prog


def test_lines_on_a_log(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("RAGPIPE_NO_PROGRESS")  # the tests' default
    monkeypatch.setattr(prog, "_FORCED_OFF", False)  # the service tests turn progress off process-wide
    monkeypatch.setattr(prog, "LINE_EVERY_S", 0.0)
    monkeypatch.setattr(prog, "LINE_MIN_S", 0.0)
    assert list(prog.progress(range(3), "tokenize (kiwi)", total=3, unit="doc")) == [0, 1, 2]
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("ragpipe: tokenize (kiwi): 1/3 doc (") and lines[0].endswith(" doc/s)")
    assert lines[-1].startswith("ragpipe: tokenize (kiwi): 3 doc in ")
    list(prog.progress(["a", "b"], "queries"))  # a sized iterable gives its own total, as tqdm does
    assert capsys.readouterr().err.splitlines()[0].startswith("ragpipe: queries: 1/2 it (")
    clock = iter([0.0, 0.0, 30.0, 30.0, 30.0, 30.0])  # one chunk in 30 s: seconds per chunk, not "0.0 chunk/s"
    monkeypatch.setattr(prog.time, "monotonic", lambda: next(clock))
    list(prog.progress([1], "embedding", total=1, unit="chunk"))
    assert capsys.readouterr().err.splitlines()[-1] == "ragpipe: embedding: 1 chunk in 30.0 s (30.0 s/chunk)"


def test_short_stages_and_quiet_print_nothing(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("RAGPIPE_NO_PROGRESS")
    monkeypatch.setattr(prog, "_FORCED_OFF", False)
    assert list(prog.progress(range(3), "loading files", total=3)) == [0, 1, 2]  # well under LINE_MIN_S
    monkeypatch.setattr(prog, "LINE_MIN_S", 0.0)
    monkeypatch.setenv("RAGPIPE_NO_PROGRESS", "1")
    assert list(prog.progress(range(3), "embedding", total=3)) == [0, 1, 2]
    assert list(prog.progress(range(3), "embedding", total=3, show_progress=False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""
