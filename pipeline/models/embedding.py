"""Embedding models by provider (sentence-transformers, OpenAI-compatible, CLIP), cached by content hash."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from llama_index.core.embeddings import BaseEmbedding

from ..config import EmbeddingConfig, EmbeddingProvider, Precision
from ..core.errors import ConfigError, ModelResolutionError, RagpipeError
from .resolve import effective_precision, resolve_model, weights_stamp

logger = logging.getLogger(__name__)


def build_embedding(cfg: EmbeddingConfig, show_progress: bool = False) -> BaseEmbedding:
    """Build the configured embedding model (loaded once; reuse the returned object)."""
    if cfg.provider == EmbeddingProvider.HUGGINGFACE:
        return _build_hf_embedding(cfg, show_progress)
    if cfg.provider == EmbeddingProvider.OPENAI:
        return _build_openai_embedding(cfg)
    if cfg.provider == EmbeddingProvider.CLIP:
        from .clip import build_clip_embedding

        return build_clip_embedding(cfg)
    raise ConfigError(f"embedding.provider = {cfg.provider!r} is not supported", key="embedding.provider")


def _build_onnx_embedding(cfg: EmbeddingConfig) -> BaseEmbedding:
    from .onnx_embedding import OnnxEmbedding

    if cfg.pooling is not None:
        raise ConfigError("embedding.pooling: set with backend torch only (onnx uses the model's own pooling)", key="embedding.pooling")
    path = resolve_model(cfg.model)
    model = OnnxEmbedding(path, quantize=cfg.quantize, query_quantize=cfg.query_quantize, model_name=cfg.model, max_length=cfg.max_length,
                          normalize=cfg.normalize, batch_tokens=cfg.batch_tokens,
                          query_instruction=cfg.query_prompt, text_instruction=cfg.passage_prompt, embed_batch_size=cfg.batch_size)
    logger.info("embedding %s (%s) backend=onnx quantize=%s, queries %s", cfg.model, path, cfg.quantize, cfg.query_quantize or cfg.quantize)
    return model


def _build_hf_embedding(cfg: EmbeddingConfig, show_progress: bool) -> BaseEmbedding:
    if cfg.backend == "onnx":
        return _build_onnx_embedding(cfg)
    from .hf_embedding import PrecisionHFEmbedding
    from .pooling import build_pooled_model, is_sentence_transformer

    path = resolve_model(cfg.model)
    precision = effective_precision(cfg.precision, cfg.device)
    try:
        if cfg.pooling is None and is_sentence_transformer(path):
            model = PrecisionHFEmbedding(
                model_name=path,
                max_length=cfg.max_length,
                query_instruction=cfg.query_prompt,
                text_instruction=cfg.passage_prompt,
                normalize=cfg.normalize,
                embed_batch_size=cfg.batch_size,
                device=cfg.device,
                show_progress_bar=False,
            )
        else:  # a plain encoder, or a sentence-transformers model whose pooling is overridden
            st = build_pooled_model(path, cfg.pooling, device=cfg.device, max_length=cfg.max_length)
            model = PrecisionHFEmbedding.from_model(
                st, model_name=path, max_length=cfg.max_length, query_instruction=cfg.query_prompt,
                text_instruction=cfg.passage_prompt, normalize=cfg.normalize, embed_batch_size=cfg.batch_size,
                device=cfg.device,
            )
    except RagpipeError:
        raise
    except Exception as exc:
        raise ModelResolutionError(f"embedding model {cfg.model!r} at {path} failed to load: {exc}", value=cfg.model) from exc
    model._bf16 = precision == Precision.BF16
    model.model_name = cfg.model  # report the id, not the resolved path
    pooling = "+".join(p.value for p in cfg.pooling) if cfg.pooling else "model default"
    logger.info("embedding %s (%s) precision=%s pooling=%s dim=%d", cfg.model, path, precision.value, pooling, embedding_dim(model))
    return model


def _build_openai_embedding(cfg: EmbeddingConfig) -> BaseEmbedding:
    """An OpenAI-compatible ``/v1/embeddings`` client; errors surface as ``ModelResolutionError`` naming URL and status."""
    from .openai_embedding import build_openai_embedding

    key = os.environ.get(cfg.api_key_env)
    if not key and not cfg.base_url:
        raise ConfigError(f"embedding.api_key_env: environment variable {cfg.api_key_env} is not set", key="embedding.api_key_env")
    return build_openai_embedding(cfg, api_key=key or "not-needed")


def embedding_dim(model: BaseEmbedding) -> int:
    """Vector size of ``model`` (asks sentence-transformers when possible, else embeds a probe)."""
    st = getattr(model, "_model", None)
    get = getattr(st, "get_embedding_dimension", None) or getattr(st, "get_sentence_embedding_dimension", None)
    if callable(get):
        dim = get()
        if dim:
            return int(dim)
    return len(model.get_query_embedding("dimension probe"))


def embedding_key(cfg: EmbeddingConfig) -> str:
    """Identity of a passage vector: model, precision, prompt, length, normalisation."""
    precision = effective_precision(cfg.precision, cfg.device).value
    key = f"{cfg.provider.value}|{cfg.model}|{precision}|{cfg.passage_prompt}|{cfg.max_length}|{int(cfg.normalize)}|{cfg.dimensions}"
    if cfg.pooling:  # only when set, so keys of existing caches stay valid
        key += "|pooling=" + "+".join(p.value for p in cfg.pooling)
    if cfg.text_model:
        key += f"|text_model={cfg.text_model}"
    if cfg.backend != "torch":  # only when set, so keys of existing caches stay valid
        from .onnx_embedding import RECIPES

        key += f"|backend={cfg.backend}|quantize={RECIPES[cfg.quantize]}"
    local = Path(cfg.model).expanduser()
    if local.is_dir():  # a local folder (e.g. a fine-tune): a model retrained into it must not reuse the old vectors
        key += "|weights=" + hashlib.sha256(weights_stamp(local).encode()).hexdigest()[:16]
    return key


def build_cached_embedding(cfg: EmbeddingConfig, show_progress: bool = False) -> BaseEmbedding:
    """The configured embedding, wrapped in the content-hash cache when ``embedding.cache``."""
    inner = build_embedding(cfg, show_progress=show_progress)
    if not cfg.cache:
        return inner
    from .cache import CachedEmbedding, EmbeddingCache, default_cache_path

    cached = CachedEmbedding(inner, EmbeddingCache(default_cache_path()), embedding_key(cfg))
    cached.show_progress = show_progress
    return cached
