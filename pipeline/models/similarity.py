"""Cosine similarity between sentences under an embedding model (``ragpipe similarity``).

    >>> from pipeline.config import EmbeddingConfig
    >>> from pipeline.models.embedding import build_embedding
    >>> model = build_embedding(EmbeddingConfig(model="intfloat/multilingual-e5-small"))  # doctest: +SKIP
    >>> similarity_matrix(model, ["학교", "공부", "운동"], prompt="query").round(3)        # doctest: +SKIP
"""

from __future__ import annotations

import logging
from enum import Enum
from typing import Sequence

import numpy as np
from llama_index.core.embeddings import BaseEmbedding

from ..core.errors import ConfigError

logger = logging.getLogger(__name__)


class PromptKind(str, Enum):
    """Which configured prefix the sentences get: ``embedding.query_prompt``, ``passage_prompt`` or none."""

    QUERY = "query"
    PASSAGE = "passage"
    NONE = "none"

    @classmethod
    def from_str(cls, value: str | "PromptKind") -> "PromptKind":
        try:
            return cls(getattr(value, "value", value))
        except ValueError:
            raise ConfigError(f"--prompt {value!r} is not one of: {', '.join(k.value for k in cls)}", value=value) from None


def embed_sentences(embed_model: BaseEmbedding, sentences: Sequence[str], prompt: str | PromptKind = PromptKind.QUERY) -> np.ndarray:
    """float32 [n, dim] vectors of ``sentences`` with the chosen prompt (none: bare sentences)."""
    kind = PromptKind.from_str(prompt)
    texts = list(sentences)
    if kind == PromptKind.QUERY:
        vecs = [embed_model.get_query_embedding(t) for t in texts]
    elif kind == PromptKind.PASSAGE:
        vecs = embed_model.get_text_embedding_batch(texts)
    else:
        vecs = _embed_bare(embed_model, texts)
    return np.asarray(vecs, dtype=np.float32).reshape(len(texts), -1)


def _embed_bare(embed_model: BaseEmbedding, texts: list[str]) -> list[list[float]]:
    """The sentences without any prefix (the passage cache is bypassed: its key includes the prompt)."""
    inner = getattr(embed_model, "inner", embed_model)
    bare = getattr(inner, "embed_bare", None)  # our HF and CLIP embeddings; providers without prompts have none
    return bare(texts) if callable(bare) else inner.get_text_embedding_batch(texts)


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity of the rows of ``vectors`` (zero rows give 0)."""
    x = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    sims = np.clip(x @ x.T, -1.0, 1.0)
    return sims.astype(np.float32)


def similarity_matrix(embed_model: BaseEmbedding, sentences: Sequence[str], prompt: str | PromptKind = PromptKind.QUERY) -> np.ndarray:
    """Cosine-similarity matrix [n, n] of ``sentences`` under ``embed_model``.

    :param prompt: ``query`` (default; symmetric comparison of short texts), ``passage`` or ``none``.
    :raises ConfigError: no sentences, an empty sentence, or an unknown prompt kind.
    """
    if not sentences:
        raise ConfigError("similarity: give at least one sentence")
    empty = [i for i, s in enumerate(sentences, 1) if not s.strip()]
    if empty:
        raise ConfigError(f"similarity: sentence {empty[0]} is empty")
    return cosine_matrix(embed_sentences(embed_model, sentences, prompt))
