"""Dense retriever: query embedding -> FAISS store -> original nodes.

LlamaIndex's ``VectorIndexRetriever`` would do the same through an ``IndexDict``; this thin
retriever exists so that query embedding and FAISS search are timed separately (evaluation).
"""

from __future__ import annotations

import logging
import time
from typing import Mapping

from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import BaseNode, NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import BasePydanticVectorStore, MetadataFilters, VectorStoreQuery

logger = logging.getLogger(__name__)


class DenseRetriever(BaseRetriever):
    """Embeds the query with ``embed_model`` and searches ``vector_store``; nodes come from ``nodes_by_id``."""

    def __init__(
        self,
        embed_model: BaseEmbedding,
        vector_store: BasePydanticVectorStore,
        nodes_by_id: Mapping[str, BaseNode],
        similarity_top_k: int = 20,
        filters: MetadataFilters | None = None,
    ) -> None:
        super().__init__()
        self.embed_model = embed_model
        self.vector_store = vector_store
        self.nodes_by_id = nodes_by_id
        self.similarity_top_k = similarity_top_k
        self.filters = filters
        self.last_timings: dict[str, float] = {}

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        t0 = time.perf_counter()
        vector = query_bundle.embedding or self.embed_model.get_query_embedding(query_bundle.query_str)
        t1 = time.perf_counter()
        result = self.vector_store.query(
            VectorStoreQuery(query_embedding=vector, similarity_top_k=self.similarity_top_k, filters=self.filters)
        )
        t2 = time.perf_counter()
        self.last_timings = {"query_embedding": t1 - t0, "faiss": t2 - t1}
        out = []
        for node_id, score in zip(result.ids or [], result.similarities or []):
            node = self.nodes_by_id.get(node_id)
            if node is None:
                logger.warning("vector store returned unknown node id %s", node_id)
                continue
            out.append(NodeWithScore(node=node, score=float(score)))
        return out
