"""Evaluate what you ship: the evaluation runs the SearchPipeline that Pipeline.retrieve runs, rerank included."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from llama_index.core.schema import MetadataMode
from sentence_transformers import CrossEncoder
from typer.testing import CliRunner

from pipeline import Pipeline
from pipeline.config import config_from_dict
from pipeline.evaluation.metrics import dedupe_by_doc
from pipeline.evaluation.runner import MatrixRunner
from pipeline.ingest.qa import read_qa_set
from pipeline.serving.cli import app
from tests.conftest import REPO

FIXTURE = REPO / "tests" / "fixtures" / "qa" / "klue_flat.jsonl"
QUESTIONS = ["서울의 강", "김치는 어떻게 만드나요?", "여행 가기 좋은 항구 도시", "잠이 안 올 때"]


@pytest.fixture()
def rerank_config(tiny_config: dict[str, Any], tiny_cross_encoder_dir: Path) -> dict[str, Any]:
    cfg = copy.deepcopy(tiny_config)
    cfg["rerank"] = {"enabled": True, "model": str(tiny_cross_encoder_dir), "candidates": 4, "max_length": 64}
    return cfg


def test_pipeline_rerank_orders_candidates_by_cross_encoder_score(rerank_config: dict[str, Any], tiny_cross_encoder_dir: Path) -> None:
    reranked = Pipeline.from_config(copy.deepcopy(rerank_config))
    reranked.ingest()
    plain = Pipeline.from_config({**copy.deepcopy(rerank_config), "rerank": {"enabled": False}})
    ce = CrossEncoder(str(tiny_cross_encoder_dir), max_length=64, device="cpu")
    changed = 0
    for q in QUESTIONS:
        fused = plain.retrieve(q, top_k=6)
        got = reranked.retrieve(q, top_k=6)
        head, tail = fused[:4], fused[4:]
        scores = ce.predict([(q, h.node.get_content(metadata_mode=MetadataMode.EMBED)) for h in head])
        want = [head[i].node.node_id for i in sorted(range(len(head)), key=lambda i: (-float(scores[i]), i))]
        assert [h.node.node_id for h in got] == want + [t.node.node_id for t in tail]  # candidates reranked, rest after
        assert [round(h.score, 5) for h in got[:4]] == sorted((round(float(s), 5) for s in scores), reverse=True)
        changed += [h.node.node_id for h in got] != [h.node.node_id for h in fused]
    assert changed  # the cross-encoder really reorders something


@pytest.mark.parametrize("rerank", [False, True])
def test_evaluation_rankings_equal_pipeline_rankings(tmp_path: Path, tiny_model_dir: Path, tiny_cross_encoder_dir: Path,
                                                     rerank: bool) -> None:
    qa = read_qa_set("klue_mrc", FIXTURE)
    raw = {
        "index_dir": str(tmp_path / "index"), "chunking": {"splitter": "none"},
        "embedding": {"model": str(tiny_model_dir), "precision": "fp32", "max_length": 120},
        "retrieval": {"top_k": 5, "retrievers": [{"type": "bm25", "name": "bm25", "candidate_k": 4},
                                                 {"type": "dense", "name": "dense", "candidate_k": 3, "weight": 0.7}],
                      "fusion": {"mode": "dist_based_score"}},
        "rerank": {"enabled": rerank, "model": str(tiny_cross_encoder_dir), "candidates": 3, "max_length": 64},
    }
    runner = MatrixRunner(qa, depth=20, show_progress=False)
    run = runner.run_setup("s", config_from_dict(raw))
    assert run.skipped is None and ("rerank" in run.latencies) == rerank
    pipe = Pipeline.from_config(raw)
    pipe.ingest(documents=qa.documents)
    for q in qa.questions:
        shipped = dedupe_by_doc(h.node.ref_doc_id or h.node.node_id for h in pipe.retrieve(q.text, top_k=20))
        assert run.rankings[q.qid] == shipped, q.text


def test_evaluate_command_runs_the_rerank_setup(tmp_path: Path, tiny_model_dir: Path, tiny_cross_encoder_dir: Path) -> None:
    setups = tmp_path / "configs" / "eval" / "setups"
    setups.mkdir(parents=True)
    base = {"chunking": {"splitter": "none"}, "embedding": {"model": str(tiny_model_dir), "precision": "fp32", "max_length": 120},
            "retrieval": {"retrievers": [{"type": "bm25", "name": "bm25", "candidate_k": 5}, {"type": "dense", "name": "dense", "candidate_k": 5}]}}
    (setups / "hybrid.yaml").write_text(yaml.safe_dump({"name": "hybrid", **base}, allow_unicode=True), encoding="utf-8")
    rr = {"name": "hybrid-rerank", **base, "rerank": {"enabled": True, "model": str(tiny_cross_encoder_dir), "candidates": 5}}
    (setups / "hybrid-rerank.yaml").write_text(yaml.safe_dump(rr, allow_unicode=True), encoding="utf-8")
    ecfg = tmp_path / "configs" / "eval" / "e.yaml"
    ecfg.write_text(yaml.safe_dump({"evaluation": {"dataset": {"kind": "klue_mrc", "path": str(FIXTURE)}, "setups": ["hybrid", "hybrid-rerank"],
                                                   "depth": 20, "bootstrap_resamples": 100, "output_dir": str(tmp_path / "runs")}}), encoding="utf-8")
    result = CliRunner().invoke(app, ["--quiet", "evaluate", "-c", str(ecfg), "--json"])
    assert result.exit_code == 0, result.output
    results = json.loads((Path(json.loads(result.stdout)["run_dir"]) / "results.json").read_text(encoding="utf-8"))
    row = {s["name"]: s for s in results["setups"]}["hybrid-rerank"]
    assert row["skipped"] is None and row["latency_ms"]["rerank"]["n"] == results["meta"]["n_questions"]
