"""The layer rule of docs/architecture.md, checked by import-linter, and the size guide for modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint), "--config", str(REPO / "pyproject.toml")], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_no_module_over_about_400_lines() -> None:
    sizes = {p.relative_to(REPO).as_posix(): len(p.read_text(encoding="utf-8").splitlines()) for p in (REPO / "pipeline").rglob("*.py")}
    assert {p: n for p, n in sizes.items() if n > 410} == {}


def test_architecture_doc_names_every_module() -> None:
    doc = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    modules = [p for p in (REPO / "pipeline").rglob("*.py") if p.name != "__init__.py"]
    missing = [p.relative_to(REPO).as_posix() for p in modules if p.name not in doc]
    assert missing == []
