"""End-to-end evaluation on a small fixture (tiny model), and the evaluate command on bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from pipeline.serving.cli import app
from tests.conftest import REPO

FIXTURE = REPO / "tests" / "fixtures" / "qa" / "klue_flat.jsonl"
runner = CliRunner()


def _project(tmp_path: Path, tiny_model_dir: Path, dataset: dict[str, Any] | None = None, setups: list[str] | None = None) -> Path:
    """A temp project: configs/eval/fixture.yaml + configs/eval/setups/*.yaml."""
    setups_dir = tmp_path / "configs" / "eval" / "setups"
    setups_dir.mkdir(parents=True)
    emb = {"model": str(tiny_model_dir), "precision": "fp32", "max_length": 120}
    bm25 = {"type": "bm25", "name": "bm25", "tokenizer": {"name": "kiwi"}, "candidate_k": 10}
    dense = {"type": "dense", "name": "dense", "candidate_k": 10}
    specs = {
        "bm25-regex": {"retrieval": {"retrievers": [{**bm25, "tokenizer": {"name": "regex"}}]}},
        "bm25-kiwi": {"retrieval": {"retrievers": [bm25]}},
        "dense": {"embedding": emb, "retrieval": {"retrievers": [dense]}},
        "hybrid": {"embedding": emb, "retrieval": {"retrievers": [bm25, dense], "fusion": {"mode": "rrf", "rrf_k": 5}}},
        "anchor-llamaindex": {"embedding": emb, "retrieval": {"retrievers": [bm25, dense]}},
        "hybrid-rerank": {"embedding": emb, "retrieval": {"retrievers": [bm25, dense]}, "rerank": {"enabled": True, "model": "no-such/cross-encoder"}},
    }
    for name, spec in specs.items():
        (setups_dir / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, "chunking": {"splitter": "none"}, **spec}, allow_unicode=True), encoding="utf-8")
    ecfg = {"evaluation": {"dataset": dataset or {"kind": "klue_mrc", "path": str(FIXTURE)}, "setups": setups or list(specs),
                           "default_setup": "hybrid", "depth": 20, "bootstrap_resamples": 200, "output_dir": str(tmp_path / "runs")}}
    path = tmp_path / "configs" / "eval" / "fixture.yaml"
    path.write_text(yaml.safe_dump(ecfg, allow_unicode=True), encoding="utf-8")
    return path


def test_matrix_end_to_end(tmp_path: Path, tiny_model_dir: Path) -> None:
    cfg = _project(tmp_path, tiny_model_dir)
    result = runner.invoke(app, ["--quiet", "evaluate", "-c", str(cfg), "--seed", "1"])
    assert result.exit_code == 0, result.output
    run_dir = next((tmp_path / "runs").iterdir())
    assert {"results.json", "report.md", "hit_at_k.png", "quality_vs_latency.png"} <= {p.name for p in run_dir.iterdir()}
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    setups = {s["name"]: s for s in results["setups"]}
    assert setups["hybrid-rerank"]["skipped"] and "no-such/cross-encoder" in setups["hybrid-rerank"]["skipped"]
    kiwi = setups["bm25-kiwi"]["metrics"]
    assert 0 < kiwi["hit@1"]["mean"] <= kiwi["hit@10"]["mean"] <= kiwi["hit@20"]["mean"] <= 1
    assert kiwi["mrr@10"]["low"] <= kiwi["mrr@10"]["mean"] <= kiwi["mrr@10"]["high"]
    assert "p_value" in setups["bm25-kiwi"]["paired_vs_default"]["mrr@10"]
    assert {"query_embedding", "faiss", "end_to_end"} <= set(setups["hybrid"]["latency_ms"])
    assert setups["hybrid"]["build"]["corpus_embedding"]["passages"] > 0
    assert results["meta"]["fingerprint"] and results["meta"]["n_questions"] > 0
    assert "question_type" in setups["bm25-kiwi"]["breakdowns"]
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "hybrid-rerank" in report and "any node of the relevant document" in report
    assert "bm25-kiwi" in result.stdout  # the terminal table


def test_limit_samples_questions_keeps_corpus(tmp_path: Path, tiny_model_dir: Path) -> None:
    cfg = _project(tmp_path, tiny_model_dir, setups=["bm25-kiwi", "hybrid"])
    result = runner.invoke(app, ["--quiet", "evaluate", "-c", str(cfg), "--limit", "2", "--json"])
    assert result.exit_code == 0, result.output
    run_dir = Path(json.loads(result.stdout)["run_dir"])
    meta = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))["meta"]
    assert meta["n_questions"] == 2 and meta["n_questions_total"] > 2


def test_bad_dataset_path(tmp_path: Path, tiny_model_dir: Path) -> None:
    cfg = _project(tmp_path, tiny_model_dir, dataset={"kind": "klue_mrc", "path": str(tmp_path / "missing.jsonl")})
    result = runner.invoke(app, ["evaluate", "-c", str(cfg)])
    assert result.exit_code == 1 and "missing.jsonl" in result.stderr


def test_missing_field_and_empty_dataset(tmp_path: Path, tiny_model_dir: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"context": "서울은 수도다.", "guid": "1"}, ensure_ascii=False) + "\n", encoding="utf-8")
    cfg = _project(tmp_path, tiny_model_dir, dataset={"kind": "klue_mrc", "path": str(bad)})
    result = runner.invoke(app, ["evaluate", "-c", str(cfg)])
    assert result.exit_code == 1 and "question" in result.stderr and "bad.jsonl" in result.stderr
    bad.write_text("", encoding="utf-8")
    result = runner.invoke(app, ["evaluate", "-c", str(cfg)])
    assert result.exit_code == 1 and "bad.jsonl" in result.stderr


def test_unknown_setup_and_kind(tmp_path: Path, tiny_model_dir: Path) -> None:
    cfg = _project(tmp_path, tiny_model_dir, setups=["bm25-kiwi", "hybrid", "nope"])
    result = runner.invoke(app, ["evaluate", "-c", str(cfg)])
    assert result.exit_code == 2 and "nope" in result.stderr
    cfg2 = _project(tmp_path / "b", tiny_model_dir, dataset={"kind": "msmarco", "path": str(FIXTURE)})
    result = runner.invoke(app, ["evaluate", "-c", str(cfg2)])
    assert result.exit_code == 1 and "unknown QA set kind 'msmarco'" in result.stderr


def test_fine_tuned_model_is_not_evaluated_on_its_training_questions(tmp_path: Path, tiny_model_dir: Path) -> None:
    import shutil

    from pipeline.ingest.qa import read_qa_set
    from pipeline.training.pairs import text_hash

    model = tmp_path / "ft-model"
    shutil.copytree(tiny_model_dir, model)
    qa = read_qa_set("klue_mrc", FIXTURE)
    (model / "ragpipe_finetune.json").write_text(json.dumps({
        "kind": "embedding", "train_set": {"name": "the-fixture"}, "train_question_hashes": [text_hash(qa.questions[0].text)],
        "train_document_hashes": []}), encoding="utf-8")
    cfg = _project(tmp_path, model, setups=["bm25-kiwi", "hybrid"])
    refused = runner.invoke(app, ["--quiet", "evaluate", "-c", str(cfg)])
    assert refused.exit_code != 0
    assert "setup hybrid: embedding model" in refused.output and "trained on the-fixture and has seen 1 of these questions" in refused.output
    allowed = runner.invoke(app, ["--quiet", "evaluate", "-c", str(cfg), "--allow-train-overlap", "--json"])
    assert allowed.exit_code == 0, allowed.output
    report = (Path(json.loads(allowed.stdout)["run_dir"]) / "report.md").read_text(encoding="utf-8")
    assert "was fine-tuned on the-fixture (overlap with this set: 1 questions" in report
