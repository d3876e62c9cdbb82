"""CrossEncoderReranker: re-score fused candidates with a sentence-transformers CrossEncoder."""

from __future__ import annotations

import logging
from typing import Any, Optional

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from ..config import RerankConfig
from ..core.errors import ModelResolutionError, RetrievalError
from ..models.threads import INFERENCE_LOCK

logger = logging.getLogger(__name__)

RETRIEVAL_SCORE_KEY = "retrieval_score"


class CrossEncoderReranker(BaseNodePostprocessor):
    """Score (query, passage) pairs with a cross-encoder and keep the ``top_n`` best.

    The model is loaded once, here; ``model_path`` is the already-resolved local folder (``model`` is then
    only the name reported in logs and errors). Input nodes are never mutated: each output is a new
    ``NodeWithScore`` carrying the cross-encoder score. With ``keep_retrieval_score`` the node is copied and
    the first-stage score stored in the copy's ``metadata["retrieval_score"]`` (hidden from LLM/embed text).

    Usage::

        reranker = CrossEncoderReranker(model="BAAI/bge-reranker-v2-m3", model_path="/models/bge-rr", top_n=5)
        best = reranker.postprocess_nodes(nodes, query_str="서울의 인구는?")

    :raises ModelResolutionError: the model can't be loaded from ``model_path`` (or ``model``).
    """

    model: str = Field(description="CrossEncoder id or path, as named in the config (rerank.model)")
    model_path: Optional[str] = Field(default=None, description="Resolved local folder to load; defaults to model")
    top_n: int = Field(default=5, ge=1, description="Passages kept after reranking")
    batch_size: int = Field(default=16, ge=1, description="Pairs per cross-encoder forward pass")
    max_length: int = Field(default=512, ge=8, description="Max tokens of query + passage (longer is truncated)")
    device: str = Field(default="cpu", description="torch device for the model")
    backend: str = Field(default="torch", description="torch (sentence-transformers) | onnx (ONNX Runtime, exported once)")
    keep_retrieval_score: bool = Field(
        default=False, description="Copy each node and keep its first-stage score in metadata['retrieval_score']"
    )
    _model: Any = PrivateAttr(default=None)

    def __init__(self, model: str, model_path: str | None = None, **kwargs: Any) -> None:
        super().__init__(model=model, model_path=model_path, **kwargs)
        source = model_path or model
        try:
            if self.backend == "onnx":
                from ..models.onnx_cross_encoder import OnnxCrossEncoder

                self._model = OnnxCrossEncoder(source, max_length=self.max_length)
            else:
                from sentence_transformers import CrossEncoder

                self._model = CrossEncoder(source, max_length=self.max_length, device=self.device,
                                           local_files_only=model_path is not None)
        except Exception as exc:  # noqa: BLE001 - any loader failure means the model isn't usable
            where = f" from {model_path}" if model_path else ""
            raise ModelResolutionError(
                f"rerank.model = {model!r}: cannot load the cross-encoder{where} ({type(exc).__name__}: {exc})",
                path=model_path, key="rerank.model", value=model,
            ) from exc
        logger.info("rerank: loaded cross-encoder %s (backend %s)", source, self.backend)

    @classmethod
    def from_config(cls, config: RerankConfig, model_path: str | None = None, device: str = "cpu",
                    backend: str = "torch") -> CrossEncoderReranker:
        """Build from the ``rerank`` config section (``model_path``: the resolved model folder)."""
        return cls(model=config.model, model_path=model_path, batch_size=config.batch_size, max_length=config.max_length,
                   device=device, backend=config.backend or backend)

    @classmethod
    def class_name(cls) -> str:
        return "CrossEncoderReranker"

    def rerank(self, nodes: list[NodeWithScore], query: str, top_n: int | None = None) -> list[NodeWithScore]:
        """The ``top_n`` best of ``nodes`` by cross-encoder score; stateless, so threads may share one reranker."""
        if not nodes:
            return []
        pairs = [(query, n.node.get_content(metadata_mode=MetadataMode.EMBED)) for n in nodes]
        with INFERENCE_LOCK:  # one model call at a time in a serving process (models/threads.py)
            scores = self._model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False)
        if len(scores) != len(nodes):
            raise RetrievalError(f"cross-encoder returned {len(scores)} scores for {len(nodes)} passages")
        order = sorted(range(len(nodes)), key=lambda i: (-float(scores[i]), i))[: top_n or self.top_n]
        logger.debug("rerank: %d -> %d passages", len(nodes), len(order))
        return [NodeWithScore(node=self._output_node(nodes[i]), score=float(scores[i])) for i in order]

    def _postprocess_nodes(self, nodes: list[NodeWithScore], query_bundle: Optional[QueryBundle] = None) -> list[NodeWithScore]:
        if query_bundle is None:
            raise RetrievalError("CrossEncoderReranker needs the query: pass query_bundle or query_str")
        return self.rerank(nodes, query_bundle.query_str)

    def _output_node(self, nws: NodeWithScore) -> Any:
        if not self.keep_retrieval_score:
            return nws.node
        node = nws.node.model_copy(deep=False)
        node.metadata = {**nws.node.metadata, RETRIEVAL_SCORE_KEY: nws.score}
        node.excluded_llm_metadata_keys = [*nws.node.excluded_llm_metadata_keys, RETRIEVAL_SCORE_KEY]
        node.excluded_embed_metadata_keys = [*nws.node.excluded_embed_metadata_keys, RETRIEVAL_SCORE_KEY]
        return node


def build_reranker(config: RerankConfig, backend: str = "torch") -> CrossEncoderReranker | None:
    """The configured cross-encoder (None when ``rerank.enabled`` is false): the one place a reranker is built.

    ``backend``: the embedding's, used when ``rerank.backend`` is unset.
    """
    if not config.enabled:
        return None
    from ..models.resolve import resolve_model

    return CrossEncoderReranker.from_config(config, model_path=resolve_model(config.model), backend=backend)
