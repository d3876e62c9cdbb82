"""BM25Retriever: a LlamaIndex ``BaseRetriever`` on bm25s, fed with our (Korean) tokenizer's token ids.

bm25s never tokenises anything itself: the base class keeps each node's token ids, and the bm25s
score matrix is built from them (on build, on load and after every upsert). bm25s's own builder loops
over documents in Python; ``_VectorBM25`` overrides ``build_index_from_ids`` (documented by bm25s as
the place to do so) with the same formulas in numpy, about 10x faster, so an incremental write stays
cheap on a large corpus. A document is returned only when it contains a query token and scores above
zero, so a query with no matching term returns ``[]``.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Sequence

import numpy as np
from llama_index.core.schema import BaseNode

from ..config import BM25Config
from .lexical import LexicalRetriever, QueryScores
from .tokenizers import Tokenizer

logger = logging.getLogger(__name__)

__all__ = ["BM25Retriever", "build_bm25"]


def build_bm25(cfg: BM25Config, tokens: Sequence[np.ndarray], n_terms: int) -> Any:
    """A bm25s index over per-document token id arrays (ids < ``n_terms``), scored exactly as bm25s scores."""
    import bm25s
    from bm25s import scoring

    class _VectorBM25(bm25s.BM25):
        def build_index_from_ids(self, unique_token_ids: Any, corpus_token_ids: Any, show_progress: bool = True,
                                 leave_progress: bool = False) -> dict[str, Any]:
            lengths = np.fromiter((len(t) for t in corpus_token_ids), dtype=np.int64, count=len(corpus_token_ids))
            n_docs, n_vocab = len(corpus_token_ids), len(unique_token_ids)
            flat = np.concatenate(corpus_token_ids).astype(np.int64) if n_docs else np.zeros(0, np.int64)
            docs = np.repeat(np.arange(n_docs, dtype=np.int64), lengths)
            width = max(n_vocab, 1)
            pairs, tf = np.unique(docs * width + flat, return_counts=True)  # (doc, term) pairs, sorted
            doc_idx, voc_idx = pairs // width, pairs % width
            df = np.bincount(voc_idx, minlength=n_vocab)
            avg = float(lengths.mean()) if n_docs else 0.0
            idf_fn = scoring._select_idf_scorer(self.idf_method)
            idf = np.zeros(n_vocab, dtype=self.dtype)
            present = np.flatnonzero(df)
            idf[present] = [idf_fn(int(d), N=n_docs) for d in df[present]]
            tfc_fn = scoring._select_tfc_scorer(self.method)
            tfc = tfc_fn(tf_array=tf.astype(self.dtype), l_d=lengths[doc_idx].astype(self.dtype), l_avg=avg, k1=self.k1,
                         b=self.b, delta=self.delta)
            scores = (idf[voc_idx] * tfc).astype(self.dtype)
            self.nonoccurrence_array = None
            if self.method in self.methods_requiring_nonoccurrence:
                zero = tfc_fn(tf_array=0, l_d=avg, l_avg=avg, k1=self.k1, b=self.b, delta=self.delta)
                self.nonoccurrence_array = (idf * zero).astype(self.dtype)
                scores -= self.nonoccurrence_array[voc_idx]
            order = np.lexsort((doc_idx, voc_idx))  # column-major (CSC), rows ascending within a column
            indptr = np.zeros(n_vocab + 1, dtype=np.int64)
            np.cumsum(df, out=indptr[1:])
            return {"data": scores[order], "indices": doc_idx[order].astype(self.int_dtype), "indptr": indptr, "num_docs": n_docs}

    from bm25s.tokenization import Tokenized

    bm25 = _VectorBM25(k1=cfg.k1, b=cfg.b, method=cfg.method.value)
    bm25.index(Tokenized(ids=list(tokens), vocab={i: i for i in range(n_terms)}), show_progress=False)
    return bm25


class BM25Retriever(LexicalRetriever):
    """BM25 over bm25s with a pluggable tokenizer; returns the original nodes.

    Usage::

        bm25 = BM25Retriever.from_nodes(nodes, BM25Config(tokenizer={"name": "kiwi"}))
        hits = bm25.search("서울의 인구는?", top_k=5, filters={"category": "여행"})
    """

    kind: ClassVar[str] = "bm25"
    config_class: ClassVar[type] = BM25Config

    def _index(self) -> None:
        self._bm25 = build_bm25(self.cfg, self._tokens, len(self._terms))

    @classmethod
    def from_nodes(cls, nodes: Sequence[BaseNode], cfg: BM25Config, top_k: int | None = None, show_progress: bool = False, *,
                   tokenizer: Tokenizer | None = None, **kwargs: Any) -> "BM25Retriever":
        """Tokenise and index ``nodes`` (pass ``tokenizer`` to reuse an already built one)."""
        return super().from_nodes(nodes, cfg, top_k, show_progress, tokenizer=tokenizer, **kwargs)  # type: ignore[return-value]

    def scores(self, query: str) -> QueryScores:
        """BM25 score per node and a mask of nodes containing at least one query token."""
        self._check_query(query)
        ids = [self._term_ids[t] for t in self._tokenizer(query) if t in self._term_ids]
        n = len(self._nodes)
        if not ids:
            return QueryScores(np.zeros(n, dtype=np.float32), np.zeros(n, dtype=bool))
        matched = np.zeros(n, dtype=bool)
        indptr, indices = self._bm25.scores["indptr"], self._bm25.scores["indices"]
        for t in set(ids):
            matched[indices[indptr[t] : indptr[t + 1]]] = True
        return QueryScores(np.asarray(self._bm25.get_scores_from_ids(ids), dtype=np.float32), matched)
