"""Image queries (``ragpipe query-image``): ask a CLIP-embedded index with an image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llama_index.core.schema import NodeWithScore, QueryBundle

from ..core.errors import ConfigError, RetrievalError
from ..models.clip import ClipEmbedding


def retrieve_by_image(pipeline: Any, image: str | Path, top_k: int | None = None) -> list[NodeWithScore]:
    """Ask a dense-only ``Pipeline`` built with ``embedding.provider: clip`` with an image.

    An image index answers with similar images, a text index with matching texts.

    :raises ConfigError: the pipeline has a non-dense retriever or a text-only embedding.
    :raises LoaderError: the image can't be read.
    """
    cfg = pipeline.config
    others = [r.name for r in cfg.retrieval.retrievers if r.type != "dense"]
    if others:
        raise ConfigError(f"image queries need dense retrievers only; {', '.join(others)} can't read an image",
                          key="retrieval.retrievers")
    embed = pipeline.embed_model
    inner = getattr(embed, "inner", embed)
    if not isinstance(inner, ClipEmbedding):
        raise ConfigError("image queries need embedding.provider: clip", key="embedding.provider")
    path = Path(image)
    if not path.is_file():
        raise RetrievalError(f"{path}: image not found", path=path)
    if cfg.rerank.enabled:
        raise ConfigError("image queries can't be reranked by a text cross-encoder; set rerank.enabled: false",
                          key="rerank.enabled")
    vector = inner.get_image_embeddings_array([path])[0].tolist()
    # Pipeline.retrieve hands the bundle through; the dense retriever uses its embedding as is
    return pipeline.retrieve(QueryBundle(query_str=f"image:{path.name}", embedding=vector), top_k=top_k)
