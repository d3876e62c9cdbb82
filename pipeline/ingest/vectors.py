"""Passage vectors for nodes: text through the embedding model, images through CLIP."""

from __future__ import annotations

import numpy as np
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.schema import BaseNode, MetadataMode


def embed_nodes(embed_model: BaseEmbedding, nodes: list[BaseNode], show_progress: bool = False) -> np.ndarray:
    """Passage vectors for ``nodes`` (text only, metadata excluded), float32 [n, dim]."""
    if any(n.metadata.get("image_path") for n in nodes):  # image documents (data.loader: images)
        from .images import embed_image_nodes

        return embed_image_nodes(embed_model, nodes)
    texts = [n.get_content(metadata_mode=MetadataMode.NONE) for n in nodes]
    if hasattr(embed_model, "get_text_embeddings_array"):
        return embed_model.get_text_embeddings_array(texts)
    return np.asarray(embed_model.get_text_embedding_batch(texts, show_progress=show_progress), dtype=np.float32)
