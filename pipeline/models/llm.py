"""The configured LLM (OpenAI-compatible or Ollama), or None for retrieval only."""

from __future__ import annotations

import os
from typing import Any

from ..config import LLMConfig, LLMProvider
from ..core.errors import ConfigError


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
