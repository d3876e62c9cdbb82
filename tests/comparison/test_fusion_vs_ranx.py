"""Cross-check ``pipeline.retrieval.fusion.FusionRetriever`` against ``ranx.fuse``.

Seeded random ranked lists from two and three callable retrievers (overlapping doc ids, scores on
different scales, some negative) are fused by ours and by ranx, query by query; the fused score of
every doc must agree to 1e-6 and the fused order must agree wherever scores are distinct (ours breaks
ties by best single rank then node_id, ranx by its own dict order).

* ``rrf``            vs ``ranx.fuse(norm=None, method="rrf", params={"k": k})``, unweighted: ranx 0.3.21
                     ``rrf(runs, k, name)`` takes no weights and has no weighted-RRF method.
* ``relative_score`` vs ``ranx.fuse(norm="min-max", method="wsum", params={"weights": w})``.

Not compared: ``dist_based_score`` (ranx has no mean +- 3 std scaler) and ``simple``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pytest
import ranx
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from pipeline.config import FusionConfig, FusionMode
from pipeline.retrieval.fusion import FusionRetriever, RetrieverEntry

pytestmark = pytest.mark.comparison

N_QUERIES = 100
NODES = {f"n{i:03d}": TextNode(id_=f"n{i:03d}", text=f"text {i}") for i in range(60)}
TOL = 1e-6
TIE_GAP = 1e-9

# retriever name -> draws `size` raw scores (any order; sorted descending per list)
ScoreDraw = Callable[[np.random.Generator, int], np.ndarray]
SCORERS: dict[str, ScoreDraw] = {
    "bm25": lambda rng, n: rng.gamma(2.0, 4.0, size=n),  # [0, ~30)
    "dense": lambda rng, n: rng.uniform(-0.3, 0.95, size=n),  # cosine-like, some negative
    "sparse": lambda rng, n: rng.exponential(1.0, size=n) * 100.0,
}

Lists = dict[str, dict[str, list[tuple[str, float]]]]  # retriever -> qid -> ranked (node_id, score)


def _make_lists(names: Sequence[str], seed: int) -> Lists:
    """Random ranked lists per retriever and query, 2-30 distinct nodes each.

    Lists have >= 2 continuous random scores, so never a constant list: min-max on a constant list
    differs by convention (ours: 1.0 if positive else 0.0; ranx: 0.0, denominator clamped to 1e-9).
    """
    rng = np.random.default_rng(seed)
    ids = list(NODES)
    out: Lists = {name: {} for name in names}
    for qi in range(N_QUERIES):
        qid = f"q{qi:03d}"
        for name in names:
            n = int(rng.integers(2, 31))
            docs = [str(d) for d in rng.choice(ids, size=n, replace=False)]
            scores = np.sort(SCORERS[name](rng, n))[::-1]
            assert np.all(np.diff(scores) < 0), "scores must be distinct so both sides see one rank order"
            out[name][qid] = [(d, float(s)) for d, s in zip(docs, scores)]
    return out


def _retriever(lists: dict[str, list[tuple[str, float]]]) -> Callable[[QueryBundle, int], list[NodeWithScore]]:
    def retrieve(bundle: QueryBundle, depth: int) -> list[NodeWithScore]:
        return [NodeWithScore(node=NODES[d], score=s) for d, s in lists[bundle.query_str][:depth]]

    return retrieve


def _ours(lists: Lists, weights: Sequence[float], config: FusionConfig) -> dict[str, list[tuple[str, float]]]:
    """qid -> our fused (node_id, score), in our order, with every candidate kept."""
    entries = [RetrieverEntry(name, _retriever(lists[name]), w, 30) for name, w in zip(lists, weights)]
    fusion = FusionRetriever(entries, config, top_k=len(NODES))
    qids = next(iter(lists.values()))
    return {qid: [(n.node.node_id, float(n.score)) for n in fusion.search(qid, top_k=len(NODES))] for qid in qids}


def _ranx_runs(lists: Lists) -> list[ranx.Run]:
    return [ranx.Run({qid: dict(ranked) for qid, ranked in per_q.items()}, name=name) for name, per_q in lists.items()]


def _tie_groups(ranked: Sequence[tuple[str, float]]) -> list[frozenset[str]]:
    """Split a ranked list into runs of (near-)equal scores, in the given order."""
    groups: list[set[str]] = []
    prev: float | None = None
    for doc, score in ranked:
        if prev is None or abs(prev - score) > TIE_GAP:
            groups.append(set())
        groups[-1].add(doc)
        prev = score
    return [frozenset(g) for g in groups]


def _compare(ours: dict[str, list[tuple[str, float]]], fused: ranx.Run) -> None:
    theirs = fused.to_dict()
    assert set(ours) == set(theirs)
    score_mismatches, order_mismatches = [], []
    for qid, ranked in ours.items():
        ref = theirs[qid]
        ours_scores = dict(ranked)
        assert len(ours_scores) == len(ranked), f"{qid}: duplicate node ids in fused output"
        assert set(ours_scores) == set(ref), f"{qid}: fused doc sets differ"
        score_mismatches += [(qid, d, s, ref[d]) for d, s in ranked if s != pytest.approx(ref[d], abs=TOL)]
        assert all(a[1] >= b[1] - TIE_GAP for a, b in zip(ranked, ranked[1:])), f"{qid}: ours not by descending score"
        ref_ranked = sorted(ref.items(), key=lambda kv: -kv[1])
        if _tie_groups(ranked) != _tie_groups(ref_ranked):
            order_mismatches.append((qid, [d for d, _ in ranked], [d for d, _ in ref_ranked]))
    assert not score_mismatches, f"{len(score_mismatches)} score mismatches (qid, doc, ours, ranx), first: {score_mismatches[:10]}"
    assert not order_mismatches, f"{len(order_mismatches)} order mismatches (qid, ours, ranx), first: {order_mismatches[:3]}"


@pytest.mark.parametrize("names", [("bm25", "dense"), ("bm25", "dense", "sparse")])
def test_rrf_matches_ranx(names: tuple[str, ...]) -> None:
    """Unweighted RRF, sum of 1 / (k + rank), for several k."""
    lists = _make_lists(names, seed=len(names))
    runs = _ranx_runs(lists)
    for k in (60, 10, 1):
        ours = _ours(lists, [1.0] * len(names), FusionConfig(mode=FusionMode.RRF, rrf_k=float(k)))
        # norm=None: RRF uses only the rank order, which ranx takes from the score-sorted run
        _compare(ours, ranx.fuse(runs=runs, norm=None, method="rrf", params={"k": k}))


@pytest.mark.parametrize(("names", "weights"), [
    (("bm25", "dense"), (1.0, 1.0)),
    (("bm25", "dense"), (0.7, 0.3)),
    (("bm25", "dense", "sparse"), (1.0, 0.5, 2.0)),
])
def test_relative_score_matches_ranx_minmax_wsum(names: tuple[str, ...], weights: tuple[float, ...]) -> None:
    """relative_score: per-retriever min-max to [0, 1], weighted sum (a doc absent from a list adds 0)."""
    lists = _make_lists(names, seed=10 + len(names))
    ours = _ours(lists, weights, FusionConfig(mode=FusionMode.RELATIVE_SCORE))
    fused = ranx.fuse(runs=_ranx_runs(lists), norm="min-max", method="wsum", params={"weights": list(weights)})
    _compare(ours, fused)
