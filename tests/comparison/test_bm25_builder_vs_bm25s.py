"""Our query-time BM25 (retrieval/bm25.py) against bm25s's precomputed scores: every method, before and after changes."""

from __future__ import annotations

import bm25s
import numpy as np
import pytest
from bm25s.tokenization import Tokenized

from pipeline.config import BM25Config
from pipeline.retrieval.bm25 import BM25Index

pytestmark = pytest.mark.comparison
METHODS = ["robertson", "lucene", "atire", "bm25l", "bm25+"]
QUERIES = [[1, 2, 3], [5, 9], [5, 5, 9], list(range(0, 380, 37)), [390, 7]]


def _docs(rng: np.random.Generator, n: int, n_terms: int) -> list[np.ndarray]:
    return [rng.integers(0, n_terms, size=int(rng.integers(1, 60))).astype(np.int32) for _ in range(n)]


def _bm25s(cfg: BM25Config, docs: list[np.ndarray], n_terms: int) -> bm25s.BM25:
    ref = bm25s.BM25(k1=cfg.k1, b=cfg.b, method=cfg.method.value)
    ref.index(Tokenized(ids=[d.tolist() for d in docs], vocab={i: i for i in range(n_terms)}), show_progress=False)
    return ref


@pytest.mark.parametrize("method", METHODS)
def test_scores_equal_bm25s(method: str) -> None:
    rng = np.random.default_rng(7)
    docs = _docs(rng, 300, 380)  # ids 380..399 unused: terms no live document holds score nothing
    docs[3] = np.array([5, 5, 5, 9], dtype=np.int32)
    cfg = BM25Config(k1=1.4, b=0.6, method=method)
    ours, ref = BM25Index.build(cfg, docs, 400), _bm25s(cfg, docs, 400)
    for q in QUERIES:
        assert np.allclose(ours.scores(q).scores, ref.get_scores_from_ids(q), rtol=1e-5, atol=1e-5), q


@pytest.mark.parametrize("method", METHODS)
def test_changes_score_as_a_fresh_build(method: str) -> None:
    rng = np.random.default_rng(11)
    docs = _docs(rng, 200, 380)
    cfg = BM25Config(k1=1.2, b=0.75, method=method)
    index, tokens = BM25Index.build(cfg, docs, 400), list(docs)
    for step in range(12):  # more steps than MAX_SEGMENTS: the deltas get merged on the way
        live = np.flatnonzero(index.alive)
        removed = rng.choice(live, size=3, replace=False).tolist()
        added = _docs(rng, 4, 400)
        tokens = tokens + added
        index = index.changed(tokens, removed, added, 400)
    live = np.flatnonzero(index.alive)
    fresh = _bm25s(cfg, [tokens[i] for i in live], 400)
    for q in QUERIES:
        got = index.scores(q)
        assert np.allclose(got.scores[live], fresh.get_scores_from_ids(q), rtol=1e-5, atol=1e-5), q
        assert not got.scores[~index.alive].any() and not got.matched[~index.alive].any()
