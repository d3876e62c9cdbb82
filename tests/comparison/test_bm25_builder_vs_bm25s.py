"""Our numpy BM25 builder (retrieval/bm25.py) against bm25s's own builder: the same score matrix, every method."""

from __future__ import annotations

import bm25s
import numpy as np
import pytest
from bm25s.tokenization import Tokenized

from pipeline.config import BM25Config
from pipeline.retrieval.bm25 import build_bm25

pytestmark = pytest.mark.comparison


@pytest.mark.parametrize("method", ["robertson", "lucene", "atire", "bm25l", "bm25+"])
def test_vector_builder_equals_bm25s(method: str) -> None:
    rng = np.random.default_rng(7)
    n_terms = 400
    docs = [rng.integers(0, n_terms - 20, size=int(rng.integers(1, 60))).astype(np.int32) for _ in range(300)]
    docs[3] = np.array([5, 5, 5, 9], dtype=np.int32)  # repeats
    unused = np.setdiff1d(np.arange(n_terms), np.concatenate(docs))
    assert unused.size  # terms no document holds any more (after deletes) must score nothing
    cfg = BM25Config(k1=1.4, b=0.6, method=method)
    ours = build_bm25(cfg, docs, n_terms)
    ref = bm25s.BM25(k1=1.4, b=0.6, method=method)
    ref.index(Tokenized(ids=[d.tolist() for d in docs], vocab={i: i for i in range(n_terms)}), show_progress=False)
    for key in ("indptr", "indices"):
        assert np.array_equal(ours.scores[key], ref.scores[key]), key
    assert np.allclose(ours.scores["data"], ref.scores["data"], rtol=1e-6, atol=1e-7)
    for q in ([1, 2, 3], [5, 9], [int(unused[0]), 7], list(range(0, 400, 37))):
        assert np.allclose(ours.get_scores_from_ids(q), ref.get_scores_from_ids(q), rtol=1e-5, atol=1e-6)
