"""The HTTP service's request and response bodies (pydantic), so the OpenAPI schema documents every field."""

from __future__ import annotations

from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, field_validator

from ..retrieval.search import MAX_QUERY_CHARS
from .pipeline import IngestReport

MAX_TOP_K = 100
MAX_DOCUMENTS_PER_REQUEST = 1000

FilterValue = Union[StrictStr, StrictInt, StrictFloat]
MetadataValue = Union[StrictStr, StrictInt, StrictFloat, None]


# --------------------------------------------------------------------------- requests


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetrieveRequest(_Request):
    query: str = Field(..., description="Question or keywords", max_length=MAX_QUERY_CHARS, examples=["김치는 어떻게 만드나요?"])
    top_k: Optional[int] = Field(None, ge=1, le=MAX_TOP_K, description=f"Passages to return (1..{MAX_TOP_K}; default: retrieval.top_k)")
    filters: Optional[dict[str, FilterValue]] = Field(None, description="Metadata equality filters, ANDed: {\"category\": \"여행\"}")

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("query is empty: give a question or keywords")
        return value


class QueryRequest(RetrieveRequest):
    stream: bool = Field(False, description="Stream the answer as server-sent events (event: sources | token | done | error)")


class DocumentIn(_Request):
    doc_id: str = Field(..., min_length=1, max_length=512, description="Stable document id (an existing id is replaced)")
    text: str = Field(..., min_length=1, description="Document text")
    metadata: dict[str, MetadataValue] = Field(default_factory=dict, description="Flat metadata (str, int, float or null values)")

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is empty")
        return value


class DeleteRequest(_Request):
    doc_ids: list[StrictStr] = Field(..., min_length=1, max_length=MAX_DOCUMENTS_PER_REQUEST, description="Documents to remove")


class UpsertRequest(_Request):
    documents: list[DocumentIn] = Field(..., min_length=1, max_length=MAX_DOCUMENTS_PER_REQUEST)

    @field_validator("documents")
    @classmethod
    def _unique_ids(cls, docs: list[DocumentIn]) -> list[DocumentIn]:
        seen: set[str] = set()
        dupes = sorted({d.doc_id for d in docs if d.doc_id in seen or seen.add(d.doc_id)})
        if dupes:
            raise ValueError(f"duplicate doc_id in one request: {', '.join(dupes[:10])}")
        return docs


# --------------------------------------------------------------------------- responses


class Hit(BaseModel):
    """One retrieved passage."""

    rank: int = Field(..., description="1 = best")
    doc_id: Optional[str] = Field(None, description="The document the passage belongs to")
    node_id: str = Field(..., description="The passage (chunk) id")
    score: Optional[float] = Field(None, description="Fused (or reranked) score; higher is better")
    text: str
    start_char_idx: Optional[int] = Field(None, description="Where the passage starts in its document's text")
    end_char_idx: Optional[int] = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class RetrieveResponse(BaseModel):
    query: str
    latency_ms: float
    results: list[Hit]


class QueryResponse(BaseModel):
    query: str
    latency_ms: float
    answer: Optional[str] = Field(None, description="null when no LLM is configured (mode retrieval_only)")
    mode: str = Field(..., description="llm | retrieval_only")
    sources: list[Hit]


class UpsertResponse(BaseModel):
    upserted: list[str]
    report: IngestReport = Field(..., description="What the write did; documents and nodes: the index after it")


class DeleteResponse(BaseModel):
    deleted: list[str]
    report: IngestReport


class DocumentRef(BaseModel):
    doc_id: str
    sha256: str = Field(..., description="Content hash of text and metadata: compare to find changed documents")


class DocumentsPage(BaseModel):
    total: int
    offset: int
    documents: list[DocumentRef]


class Health(BaseModel):
    status: str = Field(..., description="ok | degraded (serving the last good snapshot; see detail)")
    index_loaded: bool
    detail: Optional[str] = None


class Info(BaseModel):
    """The served index: model, size, retrievers, config fingerprint. No secrets."""

    model_config = ConfigDict(extra="allow")

    name: str
    index_dir: str
    version: Optional[str] = None
    logged_changes: int = Field(0, description="Writes in the log since the version was written")
    counts: dict[str, int]
    embedding: Optional[dict[str, Any]] = None
    retrievers: list[str]
    config_sha256: Optional[str] = None
    created_at: Optional[str] = None
    top_k_default: int
    rerank: dict[str, Any]
    llm: Optional[dict[str, Any]] = None
    auth: bool = Field(..., description="Whether an API key is required")
    rss_mb: Optional[float] = Field(None, description="The service's resident memory in MiB")
