"""SearchPipeline: the retriever every door uses (CLI, ``Pipeline``, HTTP service, evaluation).

First stage (one retriever, or the fusion of several), then an optional cross-encoder over the first
``rerank_candidates`` fused nodes, cut to ``top_k``. Every per-call setting travels with the call, as
Haystack components take ``run(query, filters, top_k)``; nothing is written on this object or its
parts during a query, so one instance serves any number of threads without a lock.

    >>> result = search.run("서울의 인구는?", top_k=3, filters={"category": "여행"})   # doctest: +SKIP
    >>> result.nodes[0].node.ref_doc_id, result.timings["end_to_end"]                 # doctest: +SKIP
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle

from ..core.errors import RetrievalError
from .filters import FilterSpec, as_filters

MAX_QUERY_CHARS = 2000


class SearchResult(NamedTuple):
    """Ranked nodes and this call's seconds per stage (query_embedding, faiss, bm25, fusion, rerank, end_to_end)."""

    nodes: list[NodeWithScore]
    timings: dict[str, float]


class SearchPipeline(BaseRetriever):
    """First stage + optional rerank; a LlamaIndex ``BaseRetriever`` whose ``run`` is stateless.

    :param first_stage: anything with ``search(query, top_k, filters, timings)`` (a leg or a ``FusionRetriever``).
    :param top_k: default passages returned (``retrieval.top_k``).
    :param reranker: a ``CrossEncoderReranker`` or None.
    :param rerank_candidates: fused nodes the reranker scores (``rerank.candidates``).
    """

    def __init__(self, first_stage: Any, top_k: int, reranker: Any = None, rerank_candidates: int = 20) -> None:
        super().__init__()
        self.first_stage = first_stage
        self.top_k = top_k
        self.reranker = reranker
        self.rerank_candidates = rerank_candidates

    def run(self, query: str | QueryBundle, top_k: int | None = None, filters: FilterSpec = None) -> SearchResult:
        """Ranked passages for ``query``; ``top_k`` and ``filters`` apply to this call only.

        A ``QueryBundle`` with an ``embedding`` skips query embedding (evaluation, image queries).
        With a reranker, the first ``rerank_candidates`` fused nodes are reordered by the cross-encoder and
        any further fused nodes follow in fused order, so ``top_k`` may exceed the candidates.
        """
        bundle = QueryBundle(query) if isinstance(query, str) else query
        text = (bundle.query_str or "").strip()
        if not text and bundle.embedding is None:
            raise RetrievalError("empty query: give a question or keywords", key="query")
        if len(text) > MAX_QUERY_CHARS:
            raise RetrievalError(f"query is {len(text)} characters; the limit is {MAX_QUERY_CHARS}", key="query")
        k = top_k or self.top_k
        if k < 1:
            raise RetrievalError(f"top_k = {k} must be >= 1", key="top_k", value=k)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        depth = max(k, self.rerank_candidates) if self.reranker is not None else k
        nodes = self.first_stage.search(bundle, depth, as_filters(filters), timings)
        if self.reranker is not None and nodes:
            t1 = time.perf_counter()
            head = self.reranker.rerank(nodes[: self.rerank_candidates], bundle.query_str, top_n=self.rerank_candidates)
            nodes = head + nodes[self.rerank_candidates :]
            timings["rerank"] = time.perf_counter() - t1
        timings["end_to_end"] = time.perf_counter() - t0
        return SearchResult(nodes[:k], timings)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self.run(query_bundle).nodes
