"""SparseVectorRetriever: TF-IDF and bag-of-words baselines (scikit-learn) over our tokenizer.

Documents are tokenised once by ``pipeline.tokenizers`` and handed to ``TfidfVectorizer`` /
``CountVectorizer`` as token lists (identity analyzer), so scikit-learn never splits text itself.
Rows are L2-normalised, so a score is the cosine between query and passage vectors. As with BM25,
only passages sharing a token with the query are returned, and filters mask before top-k.

On disk: ``matrix.npz`` (scipy sparse, no pickle), ``vocab.json`` (terms in column order),
``idf.npy`` (tfidf only), ``node_ids.json`` and ``params.json`` (tokenizer spec + settings).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import BaseNode, NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import MetadataFilters

from ._io import atomic_directory, read_json, write_json_atomic
from .bm25 import (
    FORMAT_VERSION,
    NODE_IDS_FILE,
    PARAMS_FILE,
    QueryScores,
    check_unique_ids,
    combine_masks,
    index_text,
    load_persisted,
    metadata_mask,
    top_nodes,
)
from .config import SparseVectorConfig
from .errors import IndexStateError, RetrievalError
from .tokenizers import Tokenizer, TokenizerSpec, build_tokenizer, tokenizer_from_spec

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


class SparseVectorRetriever(BaseRetriever):
    """Cosine similarity over TF-IDF (``tfidf``) or term-count (``bow``) vectors."""

    def __init__(
        self,
        matrix: Any,
        vocab: Sequence[str],
        idf: np.ndarray | None,
        nodes: Sequence[BaseNode],
        tokenizer: Tokenizer,
        cfg: SparseVectorConfig,
        *,
        similarity_top_k: int | None = None,
        filters: MetadataFilters | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        self._matrix = matrix.tocsc()
        self._terms = list(vocab)
        self._vocab = {t: i for i, t in enumerate(self._terms)}
        self._idf = idf
        self._nodes = list(nodes)
        self._tokenizer = tokenizer
        self.cfg = cfg
        self.similarity_top_k = similarity_top_k or cfg.candidate_k
        self.filters = filters
        self.build_seconds: dict[str, float] = {}  # set by from_nodes: tokenisation and indexing times
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    @classmethod
    def from_nodes(
        cls,
        nodes: Sequence[BaseNode],
        cfg: SparseVectorConfig,
        top_k: int | None = None,
        show_progress: bool = False,
        *,
        tokenizer: Tokenizer | None = None,
        filters: MetadataFilters | None = None,
    ) -> SparseVectorRetriever:
        """Tokenise ``nodes`` and fit the vectorizer named by ``cfg.type``."""
        from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
        from sklearn.preprocessing import normalize

        check_unique_ids(nodes, cfg.type)
        tokenizer = tokenizer or build_tokenizer(cfg.tokenizer)
        t0 = time.perf_counter()
        docs = tokenizer.tokenize_many([index_text(n) for n in nodes], show_progress=show_progress)
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
        retriever = cls(matrix, terms, idf, nodes, tokenizer, cfg, similarity_top_k=top_k, filters=filters)
        retriever.build_seconds = {"tokenisation": t1 - t0, f"{cfg.type}_index": time.perf_counter() - t1}
        return retriever

    @property
    def tokenizer_spec(self) -> TokenizerSpec:
        """The full tokenizer spec this index was built with."""
        return self._tokenizer.spec()

    @property
    def nodes(self) -> list[BaseNode]:
        """Indexed nodes, in index order."""
        return list(self._nodes)

    # ----------------------------------------------------------------- search

    def query_vector(self, query: str) -> QueryVector:
        """(column ids, L2-normalised weights) of the query, weighted like the documents."""
        if not query or not query.strip():
            raise RetrievalError("empty query: pass some text to search for", value=query)
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

    def _search(self, query: str, filters: MetadataFilters | None) -> list[NodeWithScore]:
        scores, matched = self.scores(query)
        eligible = combine_masks(matched, metadata_mask(self._nodes, self.filters), metadata_mask(self._nodes, filters))
        return top_nodes(self._nodes, scores, eligible, self.similarity_top_k)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._search(query_bundle.query_str, None)

    def retrieve_with_filters(self, query: str, filters: MetadataFilters | None) -> list[NodeWithScore]:
        """Retrieve among nodes passing ``filters`` (ANDed with the retriever's own filters)."""
        return self._search(query, filters)

    # ----------------------------------------------------------------- persistence

    def persist(self, persist_dir: str | Path) -> None:
        """Write the index to ``persist_dir`` atomically (replaces what was there)."""
        import scipy.sparse as sp

        target = Path(persist_dir)
        with atomic_directory(target) as tmp:
            sp.save_npz(tmp / MATRIX_FILE, self._matrix.tocsr(), compressed=True)
            write_json_atomic(tmp / VOCAB_FILE, self._terms)
            if self._idf is not None:
                np.save(tmp / IDF_FILE, self._idf, allow_pickle=False)
            write_json_atomic(tmp / NODE_IDS_FILE, [n.node_id for n in self._nodes])
            write_json_atomic(tmp / PARAMS_FILE, {
                "format_version": FORMAT_VERSION,
                "kind": self.cfg.type,
                "tokenizer": self.tokenizer_spec,
                "config": self.cfg.model_dump(mode="json"),
                "num_docs": len(self._nodes),
                "vocab_size": len(self._terms),
            })
        logger.info("saved %s index %r to %s", self.cfg.type, self.cfg.name, target)

    @classmethod
    def from_persist_dir(
        cls,
        persist_dir: str | Path,
        nodes_by_id: Mapping[str, BaseNode],
        top_k: int | None = None,
        *,
        filters: MetadataFilters | None = None,
    ) -> SparseVectorRetriever:
        """Load an index written by ``persist``; the tokenizer comes from the persisted spec."""
        import scipy.sparse as sp

        path = Path(persist_dir)
        params, nodes = load_persisted(path, "sparse", nodes_by_id)
        try:
            spec = params["tokenizer"]
            cfg = SparseVectorConfig.model_validate(params["config"])
            matrix = sp.load_npz(path / MATRIX_FILE)
            terms = read_json(path / VOCAB_FILE)
            if not isinstance(terms, list):
                raise ValueError(f"{VOCAB_FILE} must hold a list of terms")
            idf = np.load(path / IDF_FILE, allow_pickle=False) if cfg.type == "tfidf" else None
        except Exception as exc:  # numpy/scipy/pydantic raise many types for a damaged directory
            raise IndexStateError(f"{path}: sparse index is corrupt ({type(exc).__name__}: {exc}); run `ragpipe ingest --rebuild`", path=path) from exc
        if matrix.shape != (len(nodes), len(terms)) or (idf is not None and idf.shape != (len(terms),)):
            raise IndexStateError(
                f"{path}: {MATRIX_FILE} shape {matrix.shape} does not match {len(nodes)} node ids x {len(terms)} terms; run `ragpipe ingest --rebuild`",
                path=path,
            )
        tokenizer = tokenizer_from_spec(spec)
        logger.info("loaded %s index %r from %s (%d nodes)", cfg.type, cfg.name, path, len(nodes))
        return cls(matrix, terms, idf, nodes, tokenizer, cfg, similarity_top_k=top_k, filters=filters)
