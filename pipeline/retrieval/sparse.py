"""SparseVectorRetriever: TF-IDF and bag-of-words baselines (scikit-learn) over our tokenizer.

Documents are tokenised once by ``retrieval.tokenizers`` and handed to ``TfidfVectorizer`` /
``CountVectorizer`` as token lists (identity analyzer), so scikit-learn never splits text itself.
Rows are L2-normalised, so a score is the cosine between query and passage vectors.

On disk: ``matrix.npz`` (scipy sparse, no pickle), ``vocab.json`` (terms in column order),
``idf.npy`` (tfidf only), plus the base class's ``node_ids.json`` and ``params.json``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Sequence

import numpy as np
from llama_index.core.schema import BaseNode

from ..config import SparseVectorConfig
from ..core.errors import IndexStateError
from ..core.io import read_json, write_json_atomic
from .lexical import LexicalRetriever, QueryScores
from .tokenizers import Tokenizer

logger = logging.getLogger(__name__)

__all__ = ["QueryVector", "SparseVectorRetriever"]

MATRIX_FILE = "matrix.npz"
VOCAB_FILE = "vocab.json"
IDF_FILE = "idf.npy"


class QueryVector(NamedTuple):
    """Sparse query vector: vocabulary columns and their L2-normalised weights."""

    cols: np.ndarray
    weights: np.ndarray


def _identity(tokens: list[str]) -> list[str]:
    return tokens


class SparseVectorRetriever(LexicalRetriever):
    """Cosine similarity over TF-IDF (``tfidf``) or term-count (``bow``) vectors."""

    kind: ClassVar[str] = "sparse"
    config_class: ClassVar[type] = SparseVectorConfig

    def __init__(self, nodes: Sequence[BaseNode], tokenizer: Tokenizer, cfg: SparseVectorConfig, *, matrix: Any,
                 vocab: Sequence[str], idf: np.ndarray | None, **kwargs: Any) -> None:
        self._matrix = matrix.tocsc()
        self._terms = list(vocab)
        self._vocab = {t: i for i, t in enumerate(self._terms)}
        self._idf = idf
        super().__init__(nodes, tokenizer, cfg, **kwargs)
        self.kind = cfg.type  # type: ignore[misc]  # timings and messages say tfidf / bow

    @classmethod
    def from_nodes(cls, nodes: Sequence[BaseNode], cfg: SparseVectorConfig, top_k: int | None = None, show_progress: bool = False,
                   *, tokenizer: Tokenizer | None = None, **kwargs: Any) -> SparseVectorRetriever:
        """Tokenise ``nodes`` and fit the vectorizer named by ``cfg.type``."""
        from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
        from sklearn.preprocessing import normalize

        tokenizer, docs, tok_seconds = cls.prepare(nodes, cfg, tokenizer, (), show_progress)
        t1 = time.perf_counter()
        if cfg.type == "tfidf":
            vec: Any = TfidfVectorizer(analyzer=_identity, sublinear_tf=cfg.sublinear_tf, norm="l2")
        else:
            vec = CountVectorizer(analyzer=_identity, binary=cfg.binary)
        try:
            matrix = vec.fit_transform(docs)
        except ValueError as exc:  # empty vocabulary
            raise IndexStateError(f"cannot build a {cfg.type} index: the tokenizer found no tokens in {len(nodes)} nodes ({exc})") from exc
        idf = np.asarray(vec.idf_, dtype=np.float64) if cfg.type == "tfidf" else None
        if idf is None:
            matrix = normalize(matrix.astype(np.float64), norm="l2")
        terms = vec.get_feature_names_out().tolist()
        logger.info("%s index %r: %d nodes, %d terms (tokenizer %s)", cfg.type, cfg.name, len(nodes), len(terms), tokenizer.name)
        retriever = cls(nodes, tokenizer, cfg, matrix=matrix, vocab=terms, idf=idf, similarity_top_k=top_k, **kwargs)
        retriever.build_seconds = {"tokenisation": tok_seconds, f"{cfg.type}_index": time.perf_counter() - t1}
        return retriever

    def query_vector(self, query: str) -> QueryVector:
        """(column ids, L2-normalised weights) of the query, weighted like the documents."""
        self._check_query(query)
        cols = [self._vocab[t] for t in self._tokenizer(query) if t in self._vocab]
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

    def _write_arrays(self, folder: Path) -> dict[str, Any]:
        import scipy.sparse as sp

        sp.save_npz(folder / MATRIX_FILE, self._matrix.tocsr(), compressed=True)
        write_json_atomic(folder / VOCAB_FILE, self._terms)
        if self._idf is not None:
            np.save(folder / IDF_FILE, self._idf, allow_pickle=False)
        return {"vocab_size": len(self._terms)}

    @classmethod
    def _read_arrays(cls, folder: Path, cfg: Any, nodes: list[BaseNode]) -> dict[str, Any]:
        import scipy.sparse as sp

        matrix = sp.load_npz(folder / MATRIX_FILE)
        terms = read_json(folder / VOCAB_FILE)
        if not isinstance(terms, list):
            raise ValueError(f"{VOCAB_FILE} must hold a list of terms")
        idf = np.load(folder / IDF_FILE, allow_pickle=False) if cfg.type == "tfidf" else None
        if matrix.shape != (len(nodes), len(terms)) or (idf is not None and idf.shape != (len(terms),)):
            raise IndexStateError(f"{folder}: {MATRIX_FILE} shape {matrix.shape} does not match {len(nodes)} node ids x "
                                  f"{len(terms)} terms; run `ragpipe ingest --rebuild`", path=folder)
        return {"matrix": matrix, "vocab": terms, "idf": idf}
