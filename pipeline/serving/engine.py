"""Query engines: retrieval-only (no LLM anywhere) or retrieve -> synthesise with a configured LLM.

Every answer keeps its source passages; ``answer_with_sources`` turns a response into plain JSON.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.response.schema import Response
from llama_index.core.callbacks import CallbackManager
from llama_index.core.prompts.mixin import PromptMixinType
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle

from ..core.errors import RagpipeError

logger = logging.getLogger(__name__)


class RetrievalOnlyQueryEngine(BaseQueryEngine):
    """Returns the ranked passages as ``source_nodes`` and a plain listing as the response text."""

    def __init__(self, retriever: BaseRetriever) -> None:
        super().__init__(callback_manager=CallbackManager([]))
        self.retriever = retriever

    def _get_prompt_modules(self) -> PromptMixinType:
        return {}

    def _query(self, query_bundle: QueryBundle) -> Response:
        nodes = self.retriever.retrieve(query_bundle)
        lines = [f"[{i}] ({n.score:.4f}) {n.node.ref_doc_id}: {n.node.get_content()[:200]}" for i, n in enumerate(nodes, 1)]
        return Response(response="\n".join(lines), source_nodes=nodes, metadata={"mode": "retrieval_only"})

    async def _aquery(self, query_bundle: QueryBundle) -> Response:
        return self._query(query_bundle)


class LLMError(RagpipeError):
    """The LLM endpoint failed: HTTP error status, timeout, refused connection or a malformed reply."""


def _llm_error_types() -> tuple[type[BaseException], ...]:
    """Exception types of the LLM client libraries (imported only if installed)."""
    types: list[type[BaseException]] = []
    try:
        import openai

        types.append(openai.APIError)
    except ImportError:  # pragma: no cover - openai_like not installed
        pass
    try:
        import httpx

        types.append(httpx.HTTPError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


def _llm_error(llm: Any, exc: BaseException) -> LLMError:
    where = getattr(llm, "api_base", None) or getattr(llm, "base_url", None) or "the LLM endpoint"
    model = getattr(llm, "model", None)
    return LLMError(f"LLM request to {where} (model {model!r}) failed: {type(exc).__name__}: {exc}; "
                    "check llm.base_url, llm.model and the server's logs", key="llm", value=model)


def _translated(gen: Iterator[str], llm: Any) -> Iterator[str]:
    """Re-raise client errors from a token stream as LLMError."""
    try:
        yield from gen
    except _llm_error_types() as exc:
        raise _llm_error(llm, exc) from exc


class SourcedQueryEngine(RetrieverQueryEngine):
    """LlamaIndex's RetrieverQueryEngine with LLM client errors raised as ``LLMError``.

    Responses keep their ``source_nodes`` (streaming ones too); see ``answer_with_sources``.
    """

    def _query(self, query_bundle: QueryBundle) -> Any:
        llm = getattr(self._response_synthesizer, "_llm", None)
        try:
            response = super()._query(query_bundle)
        except _llm_error_types() as exc:
            raise _llm_error(llm, exc) from exc
        if getattr(response, "response_gen", None) is not None:
            response.response_gen = _translated(response.response_gen, llm)
        return response

    async def _aquery(self, query_bundle: QueryBundle) -> Any:
        llm = getattr(self._response_synthesizer, "_llm", None)
        try:
            return await super()._aquery(query_bundle)
        except _llm_error_types() as exc:
            raise _llm_error(llm, exc) from exc


def build_query_engine(retriever: BaseRetriever, llm: Any = None, streaming: bool = False) -> BaseQueryEngine:
    """Retrieval-only when ``llm`` is None; else a RetrieverQueryEngine with that LLM, never a default one.

    LLM client failures (HTTP 5xx, timeouts, refused connections) raise ``LLMError``; with
    ``streaming=True`` they surface while iterating ``response.response_gen``.
    """
    if llm is None:
        return RetrievalOnlyQueryEngine(retriever)
    from llama_index.core.response_synthesizers import ResponseMode, get_response_synthesizer

    synth = get_response_synthesizer(llm=llm, response_mode=ResponseMode.COMPACT, streaming=streaming)
    return SourcedQueryEngine(retriever=retriever, response_synthesizer=synth)


def source_dicts(nodes: list[NodeWithScore]) -> list[dict[str, Any]]:
    """Plain-JSON source passages: rank, doc_id, node_id, score, text, char span, metadata."""
    out = []
    for rank, hit in enumerate(nodes, 1):
        node = hit.node
        out.append({
            "rank": rank, "doc_id": node.ref_doc_id or node.metadata.get("doc_id"), "node_id": node.node_id,
            "score": None if hit.score is None else float(hit.score), "text": node.get_content(),
            "start_char_idx": getattr(node, "start_char_idx", None), "end_char_idx": getattr(node, "end_char_idx", None),
            "metadata": dict(node.metadata),
        })
    return out


def answer_with_sources(response: Any) -> dict[str, Any]:
    """``{answer, mode, sources: [{doc_id, node_id, score, text, ...}]}`` from any query-engine response.

    A streaming response is consumed first. ``answer`` is None for a retrieval-only engine (no LLM ran).

        >>> result = answer_with_sources(pipe.as_query_engine().query("김치는 어떻게 만드나요?"))  # doctest: +SKIP
        >>> result["sources"][0]["doc_id"]                                                      # doctest: +SKIP
    """
    if getattr(response, "response_gen", None) is not None and getattr(response, "response_txt", None) is None:
        response = response.get_response()
    metadata = getattr(response, "metadata", None) or {}
    retrieval_only = metadata.get("mode") == "retrieval_only"
    text = getattr(response, "response", None)
    if text is None:
        text = getattr(response, "response_txt", None)
    return {"answer": None if retrieval_only else text, "mode": "retrieval_only" if retrieval_only else "llm",
            "sources": source_dicts(list(response.source_nodes or []))}
