"""Retrieval metrics against hand-computed values; bootstrap CI and paired test behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.core.errors import EvaluationError
from pipeline.evaluation.metrics import (
    METRIC_NAMES,
    average_precision_at_k,
    bootstrap_ci,
    breakdown,
    dedupe_by_doc,
    evaluate_run,
    mean_metrics,
    ndcg_at_k,
    paired_test,
    query_metrics,
    recall_at_k,
    reciprocal_rank,
    summarize,
)


def test_dedupe_by_doc_keeps_first():
    assert dedupe_by_doc(["a", "b", "a", "c", "b"]) == ["a", "b", "c"]
    assert dedupe_by_doc([]) == []


def test_relevant_at_rank_three():
    m = query_metrics(["x", "y", "gold", "z"], {"gold"})
    assert m["hit@1"] == 0.0 and m["hit@3"] == 1.0 and m["hit@20"] == 1.0
    assert m["recall@1"] == 0.0 and m["recall@3"] == 1.0
    assert m["mrr@10"] == pytest.approx(1 / 3)
    assert m["ndcg@10"] == pytest.approx(1 / math.log2(4))
    assert m["map@10"] == pytest.approx(1 / 3)
    assert set(m) == set(METRIC_NAMES)


def test_multiple_relevant():
    ranked = ["a", "x", "b", "y", "z", "c"]
    rel = {"a", "b", "c", "d"}
    m = query_metrics(ranked, rel)
    assert m["hit@1"] == 1.0
    assert m["recall@1"] == pytest.approx(1 / 4)
    assert m["recall@3"] == pytest.approx(2 / 4)
    assert m["recall@10"] == pytest.approx(3 / 4)
    assert m["mrr@10"] == 1.0
    dcg = 1 + 1 / math.log2(4) + 1 / math.log2(7)
    idcg = sum(1 / math.log2(i + 1) for i in range(1, 5))
    assert m["ndcg@10"] == pytest.approx(dcg / idcg)
    assert m["map@10"] == pytest.approx((1 + 2 / 3 + 3 / 6) / 4)


def test_none_retrieved_and_empty_ranking():
    for ranked in (["x", "y"], []):
        m = query_metrics(ranked, {"gold"})
        assert all(v == 0.0 for v in m.values())


def test_beyond_cutoff_and_duplicates():
    ranked = [f"d{i}" for i in range(10)] + ["gold"]
    assert reciprocal_rank(ranked, {"gold"}) == 0.0
    assert query_metrics(ranked, {"gold"})["hit@20"] == 1.0
    # a document split into chunks counts once, at its best rank
    m = query_metrics(["a", "a", "a", "gold"], {"gold"})
    assert m["hit@1"] == 0.0 and m["hit@3"] == 1.0
    assert m["mrr@10"] == 0.5
    assert recall_at_k(["gold", "gold"], {"gold", "other"}, 2) == 0.5


def test_perfect_ranking():
    assert ndcg_at_k(["a", "b"], {"a", "b"}) == pytest.approx(1.0)
    assert average_precision_at_k(["a", "b"], {"a", "b"}) == pytest.approx(1.0)


def test_no_relevant_is_an_error():
    with pytest.raises(EvaluationError, match="no relevant"):
        query_metrics(["a"], set())
    with pytest.raises(EvaluationError, match="k must be"):
        recall_at_k(["a"], {"a"}, 0)


def test_evaluate_run_and_mean():
    run = {"q1": ["a", "b"], "q2": ["c", "d"]}
    qrels = {"q1": ["a"], "q2": ["d"], "q3": ["e"]}
    per_q = evaluate_run(run, qrels)
    assert per_q["q3"]["hit@20"] == 0.0
    means = mean_metrics(per_q)
    assert means["mrr@10"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert means["hit@1"] == pytest.approx(1 / 3)


def test_bootstrap_ci_contains_mean_and_is_deterministic():
    rng = np.random.default_rng(1)
    values = rng.random(200).tolist()
    ci = bootstrap_ci(values, n_resamples=500, seed=3)
    assert ci.low < ci.mean < ci.high
    assert ci.mean == pytest.approx(float(np.mean(values)))
    assert ci == bootstrap_ci(values, n_resamples=500, seed=3)
    assert bootstrap_ci([0.5], seed=0) == bootstrap_ci([0.5], seed=1)
    assert bootstrap_ci([0.5]).low == bootstrap_ci([0.5]).high == 0.5
    # a wider interval for fewer values
    assert (ci.high - ci.low) < (bootstrap_ci(values[:20], seed=3).high - bootstrap_ci(values[:20], seed=3).low)
    with pytest.raises(EvaluationError):
        bootstrap_ci([])


def test_summarize():
    per_q = {f"q{i}": {"mrr@10": float(i % 2)} for i in range(10)}
    s = summarize(per_q, n_resamples=200)
    assert s["mrr@10"]["mean"] == 0.5 and s["mrr@10"]["low"] <= 0.5 <= s["mrr@10"]["high"]


def test_paired_test():
    rng = np.random.default_rng(0)
    a = rng.random(100)
    same = paired_test(a, a, seed=0)
    assert same.p_value == pytest.approx(1.0) and same.mean_diff == 0.0 and same.n == 100
    better = paired_test(np.clip(a + 0.2, 0, 1), a, seed=0, n_resamples=2000)
    assert better.p_value < 0.01 and better.mean_diff > 0
    assert "randomization" in better.method
    noise = paired_test(a, rng.permutation(a), seed=0, n_resamples=2000)
    assert noise.p_value > 0.05
    assert paired_test(a, a[::-1], seed=5) == paired_test(a, a[::-1], seed=5)
    with pytest.raises(EvaluationError, match="equal-length"):
        paired_test([1.0, 0.0], [1.0])


def test_breakdown():
    per_q = {"q1": {"hit@1": 1.0}, "q2": {"hit@1": 0.0}, "q3": {"hit@1": 1.0}, "q4": {"hit@1": 0.0}}
    groups = {"q1": 1, "q2": 1, "q3": 2, "q4": None}
    assert breakdown(per_q, groups) == {"1": {"n": 2, "hit@1": 0.5}, "2": {"n": 1, "hit@1": 1.0}}
    assert breakdown(per_q, {}) == {}
    assert list(breakdown(per_q, {"q1": 10, "q2": 2, "q3": "기타"})) == ["2", "10", "기타"]
