"""Retriever legs searched inside a Qdrant collection, with the same stateless ``search`` as the local legs.

``QdrantLeg`` is one named vector: the dense vector (query embedded by the configured model, or given on the
``QueryBundle``) or one BM25 sparse vector (the query's kiwi term counts; the engine applies the IDF). They
plug into the project's own ``FusionRetriever`` like FAISS and bm25s legs do, so modes, weights and depths
are the same on both backends. ``ServerFusion`` is the alternative: one Query API call with a prefetch per
leg, fused by the engine's weighted RRF (``storage.fusion: server_rrf``).
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeRelationship, NodeWithScore, QueryBundle, RelatedNodeInfo, TextNode
from qdrant_client import QdrantClient, models

from ..core.errors import RetrievalError
from ..models.batching import query_vector
from ..retrieval.filters import FilterSpec, as_filters
from .qdrant_filters import to_qdrant
from .qdrant_sparse import BM25Encoder

PAYLOAD_FIELDS = ["node_id", "doc_id", "text", "metadata"]


def node_from_payload(payload: dict[str, Any]) -> TextNode:
    """The ``TextNode`` a point carries (its original node id, document id, text and metadata)."""
    node = TextNode(id_=payload["node_id"], text=payload.get("text", ""), metadata=payload.get("metadata") or {})
    if payload.get("doc_id"):
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=payload["doc_id"])
    return node


def _hits(points: Sequence[models.ScoredPoint], positive_only: bool) -> list[NodeWithScore]:
    return [NodeWithScore(node=node_from_payload(p.payload or {}), score=float(p.score))
            for p in points if not positive_only or p.score > 0]


class QdrantLeg(BaseRetriever):
    """One named vector of the collection, searched with its own query representation.

    :param kind: ``"dense"`` (needs ``embed_model`` unless queries carry an embedding) or ``"bm25"`` (needs ``encoder``).
    """

    def __init__(self, client: QdrantClient, collection: str, name: str, kind: str, candidate_k: int,
                 embed_model: Any = None, encoder: BM25Encoder | None = None, hnsw_ef: int | None = None,
                 rescore: bool = False) -> None:
        super().__init__()
        self.client, self.collection, self.name, self.kind = client, collection, name, kind
        self.similarity_top_k = candidate_k
        self.embed_model, self.encoder = embed_model, encoder
        quant = models.QuantizationSearchParams(rescore=True) if rescore else None
        self.params = models.SearchParams(hnsw_ef=hnsw_ef, quantization=quant) if kind == "dense" and (hnsw_ef or quant) else None

    def query(self, bundle: QueryBundle, timings: dict[str, float] | None = None) -> Any:
        """The query as this leg's vector (a float list or a ``SparseVector``); None when it has no BM25 term."""
        t0 = time.perf_counter()
        if self.kind == "bm25":
            vec: Any = self.encoder.query(bundle.query_str) if self.encoder else None
            stage = "tokenize"
        elif bundle.embedding is not None:
            return [float(x) for x in bundle.embedding]
        elif self.embed_model is None:
            raise RetrievalError("dense retrieval needs an embedding model or a query embedding")
        else:
            vec, stage = query_vector(self.embed_model, bundle.query_str).tolist(), "query_embedding"
        if timings is not None:
            timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0
        return vec

    def search(self, query: QueryBundle | str, top_k: int | None = None, filters: FilterSpec = None,
               timings: dict[str, float] | None = None) -> list[NodeWithScore]:
        """The ``top_k`` best points passing ``filters``; stateless. A BM25 query without terms returns []."""
        bundle = QueryBundle(query) if isinstance(query, str) else query
        vector = self.query(bundle, timings)
        if vector is None:
            return []
        t0 = time.perf_counter()
        result = self.client.query_points(self.collection, query=vector, using=self.name, limit=top_k or self.similarity_top_k,
                                          query_filter=to_qdrant(as_filters(filters)), search_params=self.params,
                                          with_payload=PAYLOAD_FIELDS)
        if timings is not None:
            timings["qdrant"] = timings.get("qdrant", 0.0) + time.perf_counter() - t0
        return _hits(result.points, positive_only=self.kind == "bm25")

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self.search(query_bundle)


class ServerFusion(BaseRetriever):
    """All legs in one Query API call: a prefetch per leg (its ``candidate_k``), fused by the engine's weighted RRF."""

    def __init__(self, legs: Sequence[tuple[QdrantLeg, float]], rrf_k: float, top_k: int) -> None:
        super().__init__()
        self.legs = list(legs)
        self.rrf_k = int(round(rrf_k))
        self.top_k = top_k

    def search(self, query: QueryBundle | str, top_k: int | None = None, filters: FilterSpec = None,
               timings: dict[str, float] | None = None) -> list[NodeWithScore]:
        bundle = QueryBundle(query) if isinstance(query, str) else query
        flt = to_qdrant(as_filters(filters))
        prefetch, weights = [], []
        for leg, weight in self.legs:
            vector = leg.query(bundle, timings)
            if vector is None or weight == 0:
                continue  # a BM25 query without terms, or a leg fused with weight 0: skipped
            prefetch.append(models.Prefetch(query=vector, using=leg.name, limit=leg.similarity_top_k, filter=flt, params=leg.params))
            weights.append(weight)
        if not prefetch:
            return []
        leg = self.legs[0][0]
        t0 = time.perf_counter()
        result = leg.client.query_points(leg.collection, prefetch=prefetch, limit=top_k or self.top_k, with_payload=PAYLOAD_FIELDS,
                                         query=models.RrfQuery(rrf=models.Rrf(k=self.rrf_k, weights=weights)))
        if timings is not None:
            timings["qdrant"] = timings.get("qdrant", 0.0) + time.perf_counter() - t0
        return _hits(result.points, positive_only=False)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self.search(query_bundle)
