"""OpenAI-compatible embeddings (OpenAI, vLLM, TEI, Ollama, LiteLLM ...) with errors ragpipe can explain.

LlamaIndex's ``OpenAIEmbedding`` accepts any model name through ``model_name=`` and passes
``base_url``, ``timeout`` and ``dimensions`` to the ``openai`` client as asked. Two things are
changed here:

- retries: the base class wraps the client (which already retries 408/409/429/5xx and connection
  errors ``max_retries`` times, honouring ``Retry-After``) in a second tenacity loop with its own
  ``max_retries``, so a failing server was asked up to (max_retries + 1) * max_retries times. Only the
  client's loop is kept, so ``embedding.max_retries`` means what it says.
- errors: ``openai`` exceptions become ``ModelResolutionError`` naming the URL, the HTTP status and the
  fix; a reply with the wrong number of vectors or the wrong vector size is refused.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, List, TypeVar

import openai
from llama_index.embeddings.openai import OpenAIEmbedding

from ..config import EmbeddingConfig
from ..core.errors import ModelResolutionError

logger = logging.getLogger(__name__)
T = TypeVar("T")

_HINTS = {
    400: "check embedding.model and embedding.dimensions",
    401: "check the API key in the environment variable named by embedding.api_key_env",
    403: "the key is not allowed to use this model",
    404: "check embedding.base_url (it usually ends in /v1) and embedding.model",
    429: "rate limited after all retries; lower embedding.batch_size or raise embedding.max_retries",
}


class OpenAICompatibleEmbedding(OpenAIEmbedding):
    """``OpenAIEmbedding`` with one retry loop, checked replies and ragpipe errors."""

    @classmethod
    def class_name(cls) -> str:
        return "OpenAICompatibleEmbedding"

    def _create_retry_decorator(self) -> Callable[[T], T]:
        return lambda fn: fn  # the openai client retries (see module docstring)

    @property
    def url(self) -> str:
        return f"{str(self.api_base).rstrip('/')}/embeddings"

    def _translate(self, exc: Exception) -> ModelResolutionError:
        where = f"embedding API {self.url} (model {self.model_name!r})"
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            hint = _HINTS.get(status) or ("server error after all retries; check the server's logs" if status >= 500 else "")
            body = str(getattr(exc, "message", "") or exc).splitlines()[0][:200]
            return ModelResolutionError(f"{where}: HTTP {status}: {body}" + (f"; {hint}" if hint else ""), value=status)
        if isinstance(exc, openai.APITimeoutError):
            return ModelResolutionError(f"{where}: timed out after {self.timeout:g} s and {self.max_retries} retries; raise embedding.timeout")
        if isinstance(exc, openai.APIConnectionError):
            return ModelResolutionError(f"{where}: cannot connect ({exc.__cause__ or exc}); is the server running at embedding.base_url?")
        return ModelResolutionError(f"{where}: {type(exc).__name__}: {exc}")

    def _checked(self, call: Callable[[], List[Any]], n: int) -> List[Any]:
        try:
            vectors = call()
        except (openai.OpenAIError, ValueError) as exc:  # ValueError: the client found no vectors in the reply
            raise self._translate(exc) from exc
        if n and len(vectors) != n:
            raise ModelResolutionError(f"embedding API {self.url}: sent {n} texts, got {len(vectors)} vectors back")
        sizes = {len(v) for v in vectors}
        want = self.dimensions
        if want and sizes != {want}:
            raise ModelResolutionError(
                f"embedding API {self.url}: asked for {want}-dimensional vectors (embedding.dimensions), got "
                f"{', '.join(map(str, sorted(sizes)))}; the model or server may ignore 'dimensions'"
            )
        if len(sizes) > 1:
            raise ModelResolutionError(f"embedding API {self.url}: vectors of different sizes in one reply: {sorted(sizes)}")
        return vectors

    def _get_query_embedding(self, query: str) -> List[float]:
        return self._checked(lambda: [super(OpenAICompatibleEmbedding, self)._get_query_embedding(query)], 1)[0]

    def _get_text_embedding(self, text: str) -> List[float]:
        return self._checked(lambda: [super(OpenAICompatibleEmbedding, self)._get_text_embedding(text)], 1)[0]

    def _get_text_embeddings(self, texts: List[str]) -> List[List[float]]:
        return self._checked(lambda: super(OpenAICompatibleEmbedding, self)._get_text_embeddings(texts), len(texts))

    async def _aget_query_embedding(self, query: str) -> List[float]:
        try:
            vec = await super()._aget_query_embedding(query)
        except openai.OpenAIError as exc:
            raise self._translate(exc) from exc
        return self._checked(lambda: [vec], 1)[0]

    async def _aget_text_embeddings(self, texts: List[str]) -> List[List[float]]:
        try:
            vecs = await super()._aget_text_embeddings(texts)
        except openai.OpenAIError as exc:
            raise self._translate(exc) from exc
        return self._checked(lambda: vecs, len(texts))


def build_openai_embedding(cfg: EmbeddingConfig, api_key: str) -> OpenAICompatibleEmbedding:
    """The ``embedding`` section as a client; nothing is sent until the first embedding."""
    model = OpenAICompatibleEmbedding(
        model_name=cfg.model,  # any name: model_name= bypasses OpenAIEmbedding's list of OpenAI models
        api_key=api_key,
        api_base=cfg.base_url,
        timeout=cfg.timeout,
        max_retries=cfg.max_retries,
        embed_batch_size=cfg.batch_size,
        dimensions=cfg.dimensions,
        # plain floats: base64 (the client's default) is not understood by every OpenAI-compatible server
        additional_kwargs={"encoding_format": "float"},
    )
    logger.info("embedding %s via %s (batch %d, dimensions %s)", cfg.model, model.url, cfg.batch_size, cfg.dimensions or "model default")
    return model
