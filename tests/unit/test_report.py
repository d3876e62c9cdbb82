"""Report writing: results.json carries every number, report.md the tables, PNGs exist, terminal table renders."""

from __future__ import annotations

import json
import math

import pytest

from pipeline.core.errors import EvaluationError
from pipeline.core.versions import library_versions
from pipeline.evaluation.metrics import query_metrics
from pipeline.evaluation.report import (
    EvaluationResults,
    RunMeta,
    add_paired_tests,
    build_setup_result,
    latency_summary,
    question_groups,
    render_markdown,
    render_terminal_table,
    skipped_setup,
    write_report,
)
from pipeline.ingest.qa import QAQuestion

QIDS = [f"q{i}" for i in range(40)]
QTYPE = {q: (i % 3) + 1 for i, q in enumerate(QIDS)}


def _per_query(gold_rank: int | None, every: int = 1) -> dict[str, dict[str, float]]:
    """Each query's gold doc at ``gold_rank`` (1-based) for every ``every``-th query, else missed."""
    out = {}
    for i, q in enumerate(QIDS):
        ranked = [f"x{j}" for j in range(20)]
        if gold_rank is not None and i % every == 0:
            ranked.insert(gold_rank - 1, "gold")
        out[q] = query_metrics(ranked, {"gold"})
    return out


def _results() -> EvaluationResults:
    meta = RunMeta(dataset="synthetic-ko", fingerprint="f" * 64, n_documents=100, n_questions=40,
                   n_questions_total=400, seed=0, limit=40, default_setup="hybrid",
                   command="ragpipe evaluate --limit 40 --seed 0", library_versions={"numpy": "2.x"})
    hybrid = build_setup_result(
        "hybrid", _per_query(1), config={"retrieval": {"fusion": {"mode": "rrf"}}}, groups={"question_type": QTYPE},
        latencies_s={"query_embedding": [0.010] * 40, "faiss": [0.001] * 40, "bm25": [0.002] * 40,
                     "fusion": [0.0001] * 40, "end_to_end": [0.015] * 39 + [0.100]},
        build={"tokenisation": 1.5, "bm25_index": 0.5, "corpus_embedding": {"seconds": 20.0, "passages": 1000},
               "faiss_build": 0.25})
    bm25 = build_setup_result("bm25", _per_query(3, every=2), config={"retrieval": {"type": "bm25"}},
                              groups={"question_type": QTYPE},
                              latencies_s={"bm25": [0.002] * 40, "end_to_end": [0.003] * 40},
                              build={"tokenisation": 1.5, "bm25_index": 0.5})
    rerank = skipped_setup("hybrid+rerank", "cross-encoder weights not available offline")
    return add_paired_tests(EvaluationResults(meta=meta, setups=[hybrid, bm25, rerank]), n_resamples=2000)


def test_latency_summary_in_ms():
    s = latency_summary([0.001, 0.002, 0.003, 0.004])
    assert s["p50"] == pytest.approx(2.5) and s["mean"] == pytest.approx(2.5) and s["n"] == 4
    assert s["p95"] == pytest.approx(3.85)
    assert latency_summary([]) == {"p50": None, "p95": None, "mean": None, "n": 0}


def test_build_setup_result_summarises():
    r = _results()
    hybrid, bm25 = r.setup("hybrid"), r.setup("bm25")
    assert hybrid.metrics["mrr@10"] == {"mean": 1.0, "low": 1.0, "high": 1.0}
    assert bm25.metrics["hit@1"]["mean"] == 0.0 and bm25.metrics["hit@3"]["mean"] == 0.5
    assert bm25.metrics["mrr@10"]["low"] < 1 / 6 < bm25.metrics["mrr@10"]["high"]
    assert hybrid.build["corpus_embedding"]["passages_per_s"] == pytest.approx(50.0)
    assert hybrid.latency_ms["end_to_end"]["p50"] == pytest.approx(15.0)
    assert set(hybrid.breakdowns["question_type"]) == {"1", "2", "3"}
    assert bm25.paired_vs_default["mrr@10"]["p_value"] < 0.01
    assert bm25.paired_vs_default["mrr@10"]["vs"] == "hybrid"
    assert hybrid.paired_vs_default == {}
    with pytest.raises(EvaluationError, match="no setup 'dense'"):
        r.setup("dense")


def test_write_report(tmp_path):
    r = _results()
    files = write_report(r, tmp_path / "out")
    assert files.results_json.is_file() and files.report_md.is_file()
    assert [p.name for p in files.plots] == ["hit_at_k.png", "quality_vs_latency.png"]
    for p in files.plots:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    data = json.loads(files.results_json.read_text(encoding="utf-8"))
    assert data["schema_version"] == 1 and data["meta"]["fingerprint"] == "f" * 64
    bm25 = next(s for s in data["setups"] if s["name"] == "bm25")
    assert bm25["metrics"]["mrr@10"]["mean"] == pytest.approx(1 / 6)
    assert bm25["per_query"]["q0"]["mrr@10"] == pytest.approx(1 / 3)
    assert bm25["latency_ms"]["end_to_end"]["p95"] == pytest.approx(3.0)
    assert next(s for s in data["setups"] if s["name"] == "hybrid+rerank")["skipped"].startswith("cross-encoder")
    assert EvaluationResults.from_dict(data).to_dict() == data

    md = files.report_md.read_text(encoding="utf-8")
    for text in ("## Quality", "## Speed", "## Build", "## Breakdown by question_type", "## Skipped setups",
                 "cross-encoder weights not available offline", "any retrieved node (chunk) of a relevant document",
                 "0.167 [", "(default)", "<0.001", "50.0 passages/s", "15.0/", "![hit_at_k](hit_at_k.png)",
                 "400", "ragpipe evaluate --limit 40"):
        assert text in md, text
    header = next(line for line in md.splitlines() if line.startswith("| setup | hit@1"))
    assert "MRR@10" in header and "p vs default" in header and "recall@10" in header


def test_report_without_latency_skips_scatter(tmp_path):
    meta = RunMeta(dataset="d", fingerprint="0", n_documents=1, n_questions=40, default_setup="bm25")
    r = EvaluationResults(meta=meta, setups=[build_setup_result("bm25", _per_query(2), n_resamples=50)])
    files = write_report(r, tmp_path, include_per_query=False)
    assert json.loads(files.results_json.read_text())["setups"][0]["per_query"] == {}
    assert r.setups[0].per_query  # the in-memory results are untouched
    assert [p.name for p in files.plots] == ["hit_at_k.png"]
    md = render_markdown(r)
    assert "## Speed" not in md and "## Build" not in md and "## Skipped" not in md
    assert not math.isnan(json.loads(files.results_json.read_text())["setups"][0]["metrics"]["ndcg@10"]["mean"])


def test_render_terminal_table():
    text = render_terminal_table(_results())
    assert "hybrid" in text and "bm25" in text and "skipped: cross-encoder" in text
    assert "1.000" in text and "0.167" in text and "synthetic-ko" in text


def test_question_groups_and_versions():
    qs = [QAQuestion("a", "질문", ["d"], metadata={"question_type": 1}), QAQuestion("b", "질문", ["d"])]
    assert question_groups(qs) == {"question_type": {"a": 1}}
    v = library_versions(["numpy", "surely-not-a-package-xyz"])
    assert "surely-not-a-package-xyz" not in v and v["numpy"][0].isdigit() and v["python"][0].isdigit()


def test_plots_readable_with_many_setups():
    """12 setups: 12 distinct colours, legends outside the axes, latency on a log axis (sparse ~1 ms vs dense ~100 ms)."""
    from pipeline.evaluation.plots import hit_curves_figure, quality_latency_figure

    base = _results()
    setups = [build_setup_result(f"s{i}", _per_query(1 + i % 5), latencies_s={"end_to_end": [0.001 * (i + 1) ** 2] * 40})
              for i in range(12)]
    r = EvaluationResults(meta=base.meta, setups=setups)
    for fig in (hit_curves_figure(r), quality_latency_figure(r)):
        ax = fig.axes[0]
        legend = ax.get_legend()
        fig.canvas.draw()
        assert legend.get_window_extent().x0 >= ax.get_window_extent().x1  # right of the plot, covering nothing
        assert len(legend.get_texts()) == 12
    lines = hit_curves_figure(r).axes[0].get_lines()
    assert len({tuple(line.get_color()) for line in lines}) == 12
    assert quality_latency_figure(r).axes[0].get_xscale() == "log"
