"""The Python API example in README.md runs as written (on the tiny model and corpus)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

DOC = REPO / "README.md"
MARKER = "<!-- api-example -->"


def api_example() -> str:
    """The fenced ```python block right after the ``<!-- api-example -->`` marker."""
    text = DOC.read_text(encoding="utf-8")
    match = re.search(re.escape(MARKER) + r"\s*```python\n(.*?)\n```", text, flags=re.S)
    if match is None:
        raise AssertionError(f"{DOC}: no ```python block after {MARKER}")
    return match.group(1)


def test_example_reads_the_default_config() -> None:
    code = api_example()
    assert 'Pipeline.from_config("configs/default.yaml")' in code
    assert "QueryEngineTool" in code and "answer_with_sources" in code


def test_api_example_runs_as_written(tiny_config: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Run it with cwd = a temp project whose configs/default.yaml is the tiny hybrid config."""
    project = tmp_path / "project"
    (project / "configs").mkdir(parents=True)
    (project / "configs" / "default.yaml").write_text(yaml.safe_dump(tiny_config, allow_unicode=True), encoding="utf-8")
    monkeypatch.chdir(project)
    exec(compile(api_example(), str(DOC), "exec"), {"__name__": "__main__"})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[1] == "kimchi"                   # 1. retrieve
    assert lines[-2].startswith("retrieval_only ['sleep'")  # 2. query engine with sources
    assert lines[-1] == "busan"                             # 3. QueryEngineTool
    assert Path(tiny_config["index_dir"], "CURRENT").exists()
