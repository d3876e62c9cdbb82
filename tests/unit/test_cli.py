"""The ragpipe command: exit codes, one-line errors, --json on stdout."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from pipeline.serving.cli import app

runner = CliRunner()


def _write(tmp_path: Path, cfg: dict[str, Any]) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


def test_ingest_and_query_json(tiny_config: dict[str, Any], tmp_path: Path) -> None:
    cfg = _write(tmp_path, tiny_config)
    result = runner.invoke(app, ["--quiet", "ingest", "-c", str(cfg), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["documents"] == 6 and report["new_embeddings"] == 6
    assert 0 < report["seconds"]["embedding"] <= report["seconds"]["total"]  # the CLI's passages/s
    result = runner.invoke(app, ["--quiet", "query", "-c", str(cfg), "김치는 어떻게 만드나요?", "--json", "--top-k", "2"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["results"][0]["doc_id"] == "kimchi" and len(out["results"]) == 2
    result = runner.invoke(app, ["--quiet", "ingest", "-c", str(cfg), "--json"])
    assert json.loads(result.stdout)["new_embeddings"] == 0


def test_set_override_and_filter(tiny_config: dict[str, Any], tmp_path: Path) -> None:
    cfg = _write(tmp_path, tiny_config)
    assert runner.invoke(app, ["--quiet", "ingest", "-c", str(cfg)]).exit_code == 0
    result = runner.invoke(app, ["--quiet", "query", "-c", str(cfg), "서울 김치", "--json", "--filter", "category=요리",
                                 "--set", "retrieval.fusion.mode=relative_score"])
    assert result.exit_code == 0, result.output
    assert [r["doc_id"] for r in json.loads(result.stdout)["results"]] == ["kimchi"]


def test_config_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("retrieval: [unclosed\n", encoding="utf-8")
    result = runner.invoke(app, ["ingest", "-c", str(bad)])
    assert result.exit_code == 2
    assert "malformed YAML" in result.stderr and "Traceback" not in result.stderr
    result = runner.invoke(app, ["ingest", "-c", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "config file not found" in result.stderr


def test_unknown_component_exit_2(tiny_config: dict[str, Any], tmp_path: Path) -> None:
    cfg = copy.deepcopy(tiny_config)
    cfg["retrieval"]["retrievers"][0]["type"] = "splade"
    result = runner.invoke(app, ["ingest", "-c", str(_write(tmp_path, cfg))])
    assert result.exit_code == 2 and "is not one of: bm25, tfidf, bow, dense" in result.stderr


def test_runtime_errors_exit_1(tiny_config: dict[str, Any], tmp_path: Path) -> None:
    cfg = _write(tmp_path, tiny_config)
    result = runner.invoke(app, ["query", "-c", str(cfg), "서울"])
    assert result.exit_code == 1 and "no index here" in result.stderr
    assert runner.invoke(app, ["--quiet", "ingest", "-c", str(cfg)]).exit_code == 0
    result = runner.invoke(app, ["query", "-c", str(cfg), "  "])
    assert result.exit_code == 1 and "empty query" in result.stderr
    broken = copy.deepcopy(tiny_config)
    broken["data"]["path"] = str(tmp_path / "nope.jsonl")
    result = runner.invoke(app, ["ingest", "-c", str(_write(tmp_path, broken))])
    assert result.exit_code == 1 and "nope.jsonl does not exist" in result.stderr


def test_help_imports_no_heavy_library() -> None:
    import subprocess
    import sys

    code = "import sys; from pipeline.serving.cli import app; bad=[m for m in ('torch','faiss','kiwipiepy','sentence_transformers','bm25s') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_version_matches_the_package_and_license_exists() -> None:
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"ragpipe {version('ragpipe')}"
    root = Path(__file__).resolve().parents[2]
    pyproject = (root / "pyproject.toml").read_text(encoding="utf-8")
    assert 'license = "MIT"' in pyproject and (root / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")


def test_answer_without_an_llm_says_so(tiny_config: dict[str, Any], tmp_path: Path) -> None:
    cfg = _write(tmp_path, tiny_config)
    assert runner.invoke(app, ["--quiet", "ingest", "-c", str(cfg)]).exit_code == 0
    result = runner.invoke(app, ["--quiet", "query", "-c", str(cfg), "김치는 어떻게 만드나요?", "--answer", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["answer"] is None and out["results"][0]["doc_id"] == "kimchi"  # passages, not passed off as an answer
    assert "no LLM is configured (llm.provider: none)" in result.stderr


def test_ingest_skips_unreadable_files_and_strict_fails(tiny_config: dict[str, Any], tmp_path: Path) -> None:
    folder = tmp_path / "mydocs"
    (folder / "hr").mkdir(parents=True)
    (folder / "hr" / "welfare.md").write_text("# 복지\n직원은 매년 건강검진을 받는다.", encoding="utf-8")
    (folder / "hr" / "broken.docx").write_bytes(b"not a zip file")
    cfg = copy.deepcopy(tiny_config)
    cfg["data"] = {"loader": "folder", "path": str(folder)}
    path = _write(tmp_path, cfg)
    result = runner.invoke(app, ["--quiet", "ingest", "-c", str(path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["documents"] == 1 and [Path(s["path"]).name for s in report["skipped"]] == ["broken.docx"]
    assert "skipped 1 file(s)" in result.stderr and "broken.docx" in result.stderr
    result = runner.invoke(app, ["--quiet", "ingest", "-c", str(path), "--strict"])
    assert result.exit_code == 1 and "broken.docx" in result.stderr
    assert "indexed 1 documents" in result.stdout  # the readable files are still indexed


def test_query_many_questions_load_once(tiny_config: dict[str, Any], tmp_path: Path) -> None:
    """--file (plain lines or .jsonl) and stdin answer every question in one process, one JSON line each."""
    cfg = _write(tmp_path, tiny_config)
    assert runner.invoke(app, ["--quiet", "ingest", "-c", str(cfg)]).exit_code == 0
    (tmp_path / "q.txt").write_text("김치는 어떻게 만드나요?\n\n서울은 어떤 도시인가요?\n", encoding="utf-8")
    (tmp_path / "q.jsonl").write_text('{"question": "김치는 어떻게 만드나요?"}\n', encoding="utf-8")
    result = runner.invoke(app, ["--quiet", "query", "-c", str(cfg), "--file", str(tmp_path / "q.txt"), "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["query"] for r in rows] == ["김치는 어떻게 만드나요?", "서울은 어떤 도시인가요?"]
    assert rows[0]["results"][0]["doc_id"] == "kimchi" and rows[1]["results"][0]["doc_id"] == "seoul"
    result = runner.invoke(app, ["--quiet", "query", "-c", str(cfg), "--file", str(tmp_path / "q.jsonl"), "--json"])
    assert [json.loads(line)["query"] for line in result.stdout.splitlines()] == ["김치는 어떻게 만드나요?"]
    result = runner.invoke(app, ["--quiet", "query", "-c", str(cfg)], input="서울은 어떤 도시인가요?\n")
    assert result.exit_code == 0 and "질문: 서울은 어떤 도시인가요?" in result.stdout
    result = runner.invoke(app, ["--quiet", "query", "-c", str(cfg), "--file", str(tmp_path / "nope.txt")])
    assert result.exit_code == 2 and "nope.txt: no such file" in result.stderr


def test_script_wrappers_take_global_flags_anywhere(tiny_config: dict[str, Any], tmp_path: Path,
                                                    monkeypatch: Any, capsys: Any) -> None:
    """`python scripts/query.py -c C -q QUESTION` works like `ragpipe -q query -c C QUESTION`."""
    import sys

    import pytest

    from pipeline.serving.cli import run_as

    cfg = _write(tmp_path, tiny_config)
    assert runner.invoke(app, ["--quiet", "ingest", "-c", str(cfg)]).exit_code == 0
    monkeypatch.setattr(sys, "argv", ["scripts/query.py", "-c", str(cfg), "-q", "김치는 어떻게 만드나요?", "--json"])
    with pytest.raises(SystemExit) as stop:
        run_as("query")
    assert stop.value.code == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["doc_id"] == "kimchi"


def test_docs_list_show_export(tiny_config: dict[str, Any], tmp_path: Path) -> None:
    from llama_index.core import Document

    from pipeline import Pipeline

    cfg = _write(tmp_path, tiny_config)
    assert runner.invoke(app, ["--quiet", "ingest", "-c", str(cfg)]).exit_code == 0
    Pipeline.from_config(cfg).upsert([Document(text="복지 규정: 건강검진은 매년 한다.", id_="hr/welfare.md", metadata={"title": "복지"})])
    result = runner.invoke(app, ["docs", "list", "-c", str(cfg), "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["doc_id"]: r for r in json.loads(result.stdout)}
    assert len(rows) == 7 and rows["hr/welfare.md"]["owner"] == "api" and rows["kimchi"]["owner"] == "source"
    result = runner.invoke(app, ["docs", "show", "-c", str(cfg), "hr/welfare.md"])
    assert result.exit_code == 0 and "owner: api" in result.stdout and "건강검진은 매년" in result.stdout
    result = runner.invoke(app, ["docs", "show", "-c", str(cfg), "welfare"])
    assert result.exit_code == 1 and "similar ids: hr/welfare.md" in result.stderr
    out = tmp_path / "export.jsonl"
    assert runner.invoke(app, ["docs", "export", "-c", str(cfg), "--out", str(out)]).exit_code == 0
    exported = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["doc_id"] for r in exported] == sorted(rows) and exported[0]["text"]
