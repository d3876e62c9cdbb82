"""SparseVectorRetriever: TF-IDF and bag-of-words baselines (scikit-learn) over our tokenizer.

The base class keeps each node's token ids; ``_index`` hands them to ``TfidfVectorizer`` /
``CountVectorizer`` as token lists (identity analyzer), so scikit-learn never splits text itself.
Rows are L2-normalised, so a score is the cosine between query and passage vectors.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, NamedTuple

import numpy as np

from ..config import SparseVectorConfig
from ..core.errors import IndexStateError
from .lexical import LexicalRetriever, QueryScores

logger = logging.getLogger(__name__)

__all__ = ["QueryVector", "SparseVectorRetriever"]


class QueryVector(NamedTuple):
    """Sparse query vector: vocabulary columns and their L2-normalised weights."""

    cols: np.ndarray
    weights: np.ndarray


def _identity(tokens: Any) -> Any:
    return tokens


class SparseVectorRetriever(LexicalRetriever):
    """Cosine similarity over TF-IDF (``tfidf``) or term-count (``bow``) vectors."""

    kind: ClassVar[str] = "sparse"
    config_class: ClassVar[type] = SparseVectorConfig

    def _index(self) -> None:
        from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
        from sklearn.preprocessing import normalize

        cfg = self.cfg
        self.kind = cfg.type  # type: ignore[misc]  # timings and messages say tfidf / bow
        if cfg.type == "tfidf":
            vec: Any = TfidfVectorizer(analyzer=_identity, sublinear_tf=cfg.sublinear_tf, norm="l2")
        else:
            vec = CountVectorizer(analyzer=_identity, binary=cfg.binary)
        try:
            matrix = vec.fit_transform([t.tolist() for t in self._tokens])
        except ValueError as exc:  # empty vocabulary
            raise IndexStateError(f"cannot build a {cfg.type} index: the tokenizer found no tokens in {len(self._nodes)} nodes ({exc})") from exc
        self._idf = np.asarray(vec.idf_, dtype=np.float64) if cfg.type == "tfidf" else None
        if self._idf is None:
            matrix = normalize(matrix.astype(np.float64), norm="l2")
        self._matrix = matrix.tocsc()
        self._column = {int(term): col for term, col in vec.vocabulary_.items()}  # our term id -> matrix column

    def query_vector(self, query: str) -> QueryVector:
        """(column ids, L2-normalised weights) of the query, weighted like the documents."""
        self._check_query(query)
        cols = [self._column[i] for t in self._tokenizer(query) if (i := self._term_ids.get(t)) is not None and i in self._column]
        if not cols:
            return QueryVector(np.zeros(0, dtype=np.int64), np.zeros(0))
        ids, counts = np.unique(np.asarray(cols, dtype=np.int64), return_counts=True)
        w = counts.astype(np.float64)
        if self._idf is not None:
            if self.cfg.sublinear_tf:
                w = 1.0 + np.log(w)
            w = w * self._idf[ids]
        elif self.cfg.binary:
            w = np.ones_like(w)
        return QueryVector(ids, w / np.linalg.norm(w))

    def scores(self, query: str) -> QueryScores:
        """Cosine score per node and a mask of nodes containing at least one query token."""
        ids, w = self.query_vector(query)
        n = len(self._nodes)
        if ids.size == 0:
            return QueryScores(np.zeros(n), np.zeros(n, dtype=bool))
        sub = self._matrix[:, ids]
        scores = np.asarray(sub @ w).ravel()
        return QueryScores(scores, np.asarray(sub.getnnz(axis=1) > 0).ravel())
