"""Cross-check ``pipeline.evaluation.metrics`` against the reference library ``ranx``.

~300 seeded random queries (binary relevance, 1-3 relevant docs each, some with no relevant doc ranked,
some missing from the run, some rankings with repeated doc ids) are scored by our ``evaluate_run`` /
``mean_metrics`` and the single-metric functions, and by ``ranx.evaluate``; per-query and mean values
must agree to 1e-6.

Definitions checked equal (no known definitional difference for binary relevance):
* hit@k = ranx ``hit_rate@k``; recall@k; mrr@10 (0 when no relevant doc in the top 10);
* ndcg@k = ranx ``ndcg@k`` (Jarvelin gains 1/log2(rank+1), ideal over min(|R|, k) hits);
* map@k / AP@k: both divide by |R|, all relevant docs, not min(|R|, k) (ranx ``_average_precision``
  divides by ``qrels.shape[0]``; trec_eval's map_cut does the same).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import ranx

from pipeline.evaluation.metrics import (
    CUTOFF,
    K_VALUES,
    METRIC_NAMES,
    average_precision_at_k,
    dedupe_by_doc,
    evaluate_run,
    hit_at_k,
    mean_metrics,
    ndcg_at_k,
    recall_at_k,
    reciprocal_rank,
)

pytestmark = pytest.mark.comparison

N_QUERIES = 300
VOCAB = [f"d{i:04d}" for i in range(500)]
TOL = 1e-6


@dataclass(frozen=True)
class Dataset:
    """Our inputs (``run`` may repeat doc ids and omit queries) and the equivalent ranx inputs."""

    run: dict[str, list[str]]
    qrels: dict[str, set[str]]
    ranx_run: dict[str, dict[str, float]]
    ranx_qrels: dict[str, dict[str, int]]


def _make_dataset(seed: int = 20240607) -> Dataset:
    rng = np.random.default_rng(seed)
    run: dict[str, list[str]] = {}
    qrels: dict[str, set[str]] = {}
    ranx_run: dict[str, dict[str, float]] = {}
    for qi in range(N_QUERIES):
        qid = f"q{qi:03d}"  # zero-padded: ranx sorts query ids
        length = int(rng.integers(1, 41))  # shorter and longer than every cutoff
        ranking = [str(d) for d in rng.choice(VOCAB, size=length, replace=False)]
        outside = [d for d in VOCAB if d not in set(ranking)]
        n_rel = int(rng.integers(1, 4))
        if rng.random() < 0.15:  # no relevant doc anywhere in the ranking
            rel = {str(d) for d in rng.choice(outside, size=n_rel, replace=False)}
        else:
            n_in = min(int(rng.integers(1, n_rel + 1)), length)
            rel = {str(d) for d in rng.choice(ranking, size=n_in, replace=False)}
            rel |= {str(d) for d in rng.choice(outside, size=n_rel - n_in, replace=False)}
        qrels[qid] = rel
        if rng.random() < 0.03:  # query with no ranking at all: ours scores 0, ranx via make_comparable
            continue
        ours = list(ranking)
        if rng.random() < 0.25:  # node-level repeats (chunks of one doc) after the doc's first occurrence
            for _ in range(int(rng.integers(1, 6))):
                src = int(rng.integers(0, len(ours)))
                ours.insert(int(rng.integers(src + 1, len(ours) + 1)), ours[src])
        assert dedupe_by_doc(ours) == ranking
        run[qid] = ours
        # ranx ranks by score: strictly descending scores in our rank order
        ranx_run[qid] = {d: float(length - i) for i, d in enumerate(ranking)}
    ranx_qrels = {qid: {d: 1 for d in rel} for qid, rel in qrels.items()}
    return Dataset(run, qrels, ranx_run, ranx_qrels)


def _ranx_name(ours: str) -> str:
    """Our metric name -> ranx's (only ``hit@k`` is spelled differently)."""
    name, k = ours.split("@")
    return f"{'hit_rate' if name == 'hit' else name}@{k}"


def _ranx_per_query(data: Dataset, metrics: list[str]) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """(``metric -> qid -> value``, ``metric -> mean``) from ``ranx.evaluate``."""
    run = ranx.Run(data.ranx_run)
    means = ranx.evaluate(ranx.Qrels(data.ranx_qrels), run, metrics, make_comparable=True)
    return {m: dict(run.scores[m]) for m in metrics}, {m: float(v) for m, v in means.items()}


@pytest.fixture(scope="module")
def data() -> Dataset:
    return _make_dataset()


def test_dataset_covers_edge_cases(data: Dataset) -> None:
    """Guard against a seed that loses the interesting cases."""
    ranked = {q: set(r) for q, r in data.run.items()}
    assert len(data.qrels) == N_QUERIES
    assert sum(not (data.qrels[q] & ranked.get(q, set())) for q in data.qrels) >= 30
    assert sum(q not in data.run for q in data.qrels) >= 3
    assert sum(len(r) != len(set(r)) for r in data.run.values()) >= 30
    assert sum(len(r) < 10 for r in data.run.values()) >= 30


def test_evaluate_run_matches_ranx(data: Dataset) -> None:
    """Every metric of ``evaluate_run`` (per query) and ``mean_metrics`` (mean) equals ranx's."""
    ours = evaluate_run(data.run, data.qrels, K_VALUES)
    names = list(next(iter(ours.values())))
    assert sorted(names) == sorted(METRIC_NAMES)
    theirs, theirs_mean = _ranx_per_query(data, [_ranx_name(m) for m in names])

    mismatches = [
        (m, qid, ours[qid][m], theirs[_ranx_name(m)][qid])
        for m in names for qid in data.qrels
        if ours[qid][m] != pytest.approx(theirs[_ranx_name(m)][qid], abs=TOL)
    ]
    assert not mismatches, f"{len(mismatches)} per-query mismatches (metric, qid, ours, ranx), first: {mismatches[:10]}"

    ours_mean = mean_metrics(ours)
    for m in names:
        assert ours_mean[m] == pytest.approx(theirs_mean[_ranx_name(m)], abs=TOL), m


def test_metric_functions_match_ranx_at_other_cutoffs(data: Dataset) -> None:
    """The single-metric functions at cutoffs beyond ``query_metrics``'s fixed ones (mrr/ndcg/map at 1, 5, 20...)."""
    funcs = {"hit_rate": hit_at_k, "recall": recall_at_k, "mrr": reciprocal_rank,
             "ndcg": ndcg_at_k, "map": average_precision_at_k}
    cutoffs = (1, 2, 5, CUTOFF, 20, 50)
    metrics = [f"{name}@{k}" for name in funcs for k in cutoffs]
    theirs, _ = _ranx_per_query(data, metrics)

    mismatches = []
    for name, fn in funcs.items():
        for k in cutoffs:
            for qid, rel in data.qrels.items():
                value = fn(data.run.get(qid, []), rel, k)
                expected = theirs[f"{name}@{k}"][qid]
                if value != pytest.approx(expected, abs=TOL):
                    mismatches.append((f"{name}@{k}", qid, value, expected))
    assert not mismatches, f"{len(mismatches)} mismatches (metric, qid, ours, ranx), first: {mismatches[:10]}"
