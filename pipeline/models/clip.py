"""CLIP embedding: text and images in one vector space (``embedding.provider: clip``).

Text goes through ``text_model`` when given (a multilingual text encoder distilled into the CLIP
space), else through the CLIP text tower. Image corpora are read by ``ingest.images`` and asked
with an image by ``serving.image_query``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, List, Sequence

import numpy as np
from llama_index.core.embeddings import BaseEmbedding, MultiModalEmbedding
from pydantic import Field, PrivateAttr

from ..config import EmbeddingConfig
from ..core.errors import ConfigError, LoaderError, ModelResolutionError

logger = logging.getLogger(__name__)


def _open_rgb(path: str | Path) -> Any:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except OSError as exc:
        raise LoaderError(f"{path}: cannot read image ({exc})", path=path) from exc


class ClipEmbedding(MultiModalEmbedding):
    """Text and images into one space with a sentence-transformers CLIP model.

    Text goes through ``text_model`` when given (e.g. a multilingual text encoder distilled into the
    CLIP space), else through the CLIP text tower. Vectors are L2-normalised when ``normalize``.
    """

    normalize: bool = Field(True, description="L2-normalise vectors")
    query_instruction: str = Field("", description="Prefix for queries")
    text_instruction: str = Field("", description="Prefix for passages")
    _model: Any = PrivateAttr()
    _text_model: Any = PrivateAttr(default=None)

    def __init__(self, model: Any, text_model: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._model = model
        self._text_model = text_model

    @classmethod
    def class_name(cls) -> str:
        return "ClipEmbedding"

    def _encode(self, inputs: list[Any], text: bool) -> np.ndarray:
        import torch

        model = self._text_model if text and self._text_model is not None else self._model
        with torch.inference_mode():
            vecs = model.encode(inputs, batch_size=self.embed_batch_size, normalize_embeddings=self.normalize,
                                show_progress_bar=False, convert_to_numpy=True)
        return np.asarray(vecs, dtype=np.float32)

    def embed_bare(self, texts: List[str]) -> List[List[float]]:
        """Text vectors with no prompt prefix."""
        return self._encode(list(texts), text=True).tolist()

    def _get_query_embedding(self, query: str) -> List[float]:
        return self._encode([self.query_instruction + query], text=True)[0].tolist()

    async def _aget_query_embedding(self, query: str) -> List[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> List[float]:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: List[str]) -> List[List[float]]:
        return self._encode([self.text_instruction + t for t in texts], text=True).tolist()

    def _get_image_embedding(self, img_file_path: Any) -> List[float]:
        return self.get_image_embeddings_array([img_file_path])[0].tolist()

    async def _aget_image_embedding(self, img_file_path: Any) -> List[float]:
        return self._get_image_embedding(img_file_path)

    def _get_image_embeddings(self, img_file_paths: List[Any]) -> List[List[float]]:
        return self.get_image_embeddings_array(img_file_paths).tolist()

    def get_image_embeddings_array(self, paths: Sequence[Any]) -> np.ndarray:
        """Image vectors as one float32 array; items are paths or PIL images."""
        images = [p if hasattr(p, "convert") else _open_rgb(p) for p in paths]
        return self._encode(images, text=False) if images else np.zeros((0, self.dim), np.float32)

    @property
    def dim(self) -> int:
        return int(self._model.get_embedding_dimension())


def build_clip_embedding(cfg: EmbeddingConfig) -> ClipEmbedding:
    """``embedding.provider: clip`` -> ``ClipEmbedding`` (models resolved like any other, loaded once)."""
    from .resolve import resolve_model

    model = _load_st(resolve_model(cfg.model), cfg)
    text_model = _load_st(resolve_model(cfg.text_model), cfg) if cfg.text_model else None
    dim = model.get_embedding_dimension()
    if text_model is not None and text_model.get_embedding_dimension() != dim:
        raise ConfigError(
            f"embedding.text_model {cfg.text_model!r} gives {text_model.get_embedding_dimension()}-dimensional vectors, "
            f"embedding.model {cfg.model!r} gives {dim}: the text model must be trained into the image model's space",
            key="embedding.text_model", value=cfg.text_model,
        )
    logger.info("embedding %s (clip%s) dim=%d", cfg.model, f", text via {cfg.text_model}" if cfg.text_model else "", dim)
    emb = ClipEmbedding(model, text_model, model_name=cfg.model, embed_batch_size=cfg.batch_size, normalize=cfg.normalize,
                        query_instruction=cfg.query_prompt, text_instruction=cfg.passage_prompt)
    return emb


def _load_st(path: str, cfg: EmbeddingConfig) -> Any:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ModelResolutionError("embedding.provider clip needs sentence-transformers: pip install sentence-transformers") from exc
    try:
        model = SentenceTransformer(path, device=cfg.device)
    except Exception as exc:
        raise ModelResolutionError(f"CLIP model at {path} failed to load: {type(exc).__name__}: {exc}", value=path) from exc
    native = model.max_seq_length
    if native:
        model.max_seq_length = min(native, cfg.max_length)  # CLIP's text tower has 77 positions
    return model


def can_embed_images(embed_model: BaseEmbedding) -> bool:
    return callable(getattr(embed_model, "get_image_embeddings_array", None)) and isinstance(
        getattr(embed_model, "inner", embed_model), ClipEmbedding
    )


