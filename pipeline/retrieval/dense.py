"""Dense retriever: query embedding -> vector store -> original nodes.

LlamaIndex's ``VectorIndexRetriever`` would do the same through an ``IndexDict``; this thin retriever
exists so that each call carries its own ``top_k`` and filters and reports query embedding and vector
search as separate timings.
"""

from __future__ import annotations

import logging
import time
from typing import Mapping

from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import BaseNode, NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import BasePydanticVectorStore, MetadataFilters, VectorStoreQuery

from ..core.errors import RetrievalError
from ..models.batching import query_vector
from .filters import FilterSpec, as_filters

logger = logging.getLogger(__name__)


class DenseRetriever(BaseRetriever):
    """Embeds the query with ``embed_model`` and searches ``vector_store``; nodes come from ``nodes_by_id``.

    A ``QueryBundle`` that already carries an ``embedding`` is searched as is (evaluation, image queries).
    """

    def __init__(self, embed_model: BaseEmbedding | None, vector_store: BasePydanticVectorStore, nodes_by_id: Mapping[str, BaseNode],
                 similarity_top_k: int = 20, filters: MetadataFilters | None = None) -> None:
        super().__init__()
        self.embed_model = embed_model
        self.vector_store = vector_store
        self.nodes_by_id = nodes_by_id
        self.similarity_top_k = similarity_top_k
        self.filters = filters

    def search(self, query: QueryBundle | str, top_k: int | None = None, filters: FilterSpec = None,
               timings: dict[str, float] | None = None) -> list[NodeWithScore]:
        """The ``top_k`` nearest nodes passing ``filters`` (ANDed with the constructor's); stateless."""
        bundle = QueryBundle(query) if isinstance(query, str) else query
        t0 = time.perf_counter()
        vector = bundle.embedding
        if vector is None:
            if self.embed_model is None:
                raise RetrievalError("dense retrieval needs an embedding model or a query embedding")
            vector = query_vector(self.embed_model, bundle.query_str)
        t1 = time.perf_counter()
        wanted = as_filters(filters)
        if self.filters is not None and wanted is not None:
            wanted = MetadataFilters(filters=[self.filters, wanted])
        result = self.vector_store.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=top_k or self.similarity_top_k,
                                                          filters=wanted or self.filters))
        t2 = time.perf_counter()
        if timings is not None:
            if bundle.embedding is None:
                timings["query_embedding"] = timings.get("query_embedding", 0.0) + (t1 - t0)
            timings["faiss"] = timings.get("faiss", 0.0) + (t2 - t1)
        out = []
        for node_id, score in zip(result.ids or [], result.similarities or []):
            node = self.nodes_by_id.get(node_id)
            if node is None:
                logger.warning("vector store returned unknown node id %s", node_id)
                continue
            out.append(NodeWithScore(node=node, score=float(score)))
        return out

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self.search(query_bundle)
