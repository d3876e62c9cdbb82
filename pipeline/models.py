"""Model names -> loaded objects: embedding models, cross-encoders, LLMs.

A model name resolves in this order: an existing local path, the Hugging Face cache or hub
(when reachable), then a copy prepared by ``ragpipe models prepare``. Nothing falls back to a
hosted default: every model is named in the config.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from llama_index.core.embeddings import BaseEmbedding

from .config import EmbeddingConfig, EmbeddingProvider, LLMConfig, LLMProvider, Precision
from .errors import ConfigError, ModelResolutionError, RagpipeError

logger = logging.getLogger(__name__)


def resolve_model(name: str) -> str:
    """Return a local directory (or path) holding ``name``'s weights, or raise listing what was tried."""
    tried: list[str] = []
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    tried.append(f"local path {path} (does not exist)")

    if "/" in name and not name.startswith((".", "/")):
        hub = _from_hf_hub(name, tried)
        if hub:
            return hub

    from .model_prep import is_prepared, prepared_model_path

    prepared = prepared_model_path(name)
    if is_prepared(name):
        logger.info("model %s: using prepared copy %s", name, prepared)
        return str(prepared)
    tried.append(f"prepared copy {prepared} (missing; run `ragpipe models prepare`)")
    raise ModelResolutionError(f"cannot resolve model {name!r}; tried: " + "; ".join(tried), value=name)


def _from_hf_hub(name: str, tried: list[str]) -> str | None:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - huggingface_hub ships with sentence-transformers
        tried.append("Hugging Face hub (huggingface_hub not installed)")
        return None
    try:
        return snapshot_download(name, local_files_only=True)
    except Exception:
        tried.append("Hugging Face cache (not cached)")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        tried.append("Hugging Face hub (skipped: HF_HUB_OFFLINE=1)")
        return None
    try:
        return snapshot_download(name)
    except Exception as exc:
        tried.append(f"Hugging Face hub ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
        return None


def cpu_supports_bf16() -> bool:
    """True where the CPU has native bf16 matrix support (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def effective_precision(precision: Precision, device: str = "cpu") -> Precision:
    """``auto`` -> bf16 on CPUs with bf16 support, else fp32."""
    if precision != Precision.AUTO:
        return precision
    if device == "cpu":
        return Precision.BF16 if cpu_supports_bf16() else Precision.FP32
    return Precision.FP32


def build_embedding(cfg: EmbeddingConfig, show_progress: bool = False) -> BaseEmbedding:
    """Build the configured embedding model (loaded once; reuse the returned object)."""
    if cfg.provider == EmbeddingProvider.HUGGINGFACE:
        return _build_hf_embedding(cfg, show_progress)
    if cfg.provider == EmbeddingProvider.OPENAI:
        return _build_openai_embedding(cfg)
    if cfg.provider == EmbeddingProvider.CLIP:
        from .multimodal import build_clip_embedding

        return build_clip_embedding(cfg)
    raise ConfigError(f"embedding.provider = {cfg.provider!r} is not supported", key="embedding.provider")


def _build_hf_embedding(cfg: EmbeddingConfig, show_progress: bool) -> BaseEmbedding:
    from ._hf_embedding import PrecisionHFEmbedding
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
    from ._openai_embedding import build_openai_embedding

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


def build_cross_encoder_path(model: str) -> str:
    """Resolve a cross-encoder name the same way as embedding models."""
    return resolve_model(model)


def build_llm(cfg: LLMConfig) -> Any | None:
    """The configured LLM, or None for retrieval-only. Never a silent hosted default."""
    if cfg.provider == LLMProvider.NONE:
        return None
    if not cfg.model:
        raise ConfigError("llm.model: required when llm.provider is not 'none'", key="llm.model")
    if cfg.provider == LLMProvider.OPENAI_LIKE:
        if not cfg.base_url:
            raise ConfigError("llm.base_url: required for provider openai_like", key="llm.base_url")
        from llama_index.llms.openai_like import OpenAILike

        return OpenAILike(
            model=cfg.model,
            api_base=cfg.base_url,
            api_key=os.environ.get(cfg.api_key_env, "not-needed"),
            timeout=cfg.timeout,
            max_retries=cfg.max_retries,
            temperature=cfg.temperature,
            max_tokens=cfg.max_tokens,
            is_chat_model=True,
            context_window=32768,
        )
    if cfg.provider == LLMProvider.OLLAMA:
        from llama_index.llms.ollama import Ollama

        return Ollama(
            model=cfg.model,
            base_url=cfg.base_url or "http://localhost:11434",
            request_timeout=cfg.timeout,
            temperature=cfg.temperature,
        )
    raise ConfigError(f"llm.provider = {cfg.provider!r} is not supported", key="llm.provider")
