"""``Pipeline``: the Python entry point. One config, one index directory, many doors.

    >>> from pipeline import Pipeline
    >>> p = Pipeline.from_config("configs/default.yaml")
    >>> p.ingest()                      # doctest: +SKIP
    >>> for hit in p.retrieve("김치는 어떻게 담그나요?", top_k=3):   # doctest: +SKIP
    ...     print(hit.score, hit.node.ref_doc_id)
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle

from ..config import Config, apply_overrides, config_from_dict, load_config
from ..core.errors import LoaderError, RetrievalError
from ..core.io import atomic_directory, recover_interrupted_swap, sha256_text
from ..ingest.chunking import chunk_documents, chunk_token_counter
from ..ingest.loaders import load_documents
from ..ingest.vectors import embed_nodes
from ..models.embedding import build_cached_embedding, embedding_dim
from ..retrieval.filters import FilterSpec
from ..retrieval.rerank import build_reranker
from ..retrieval.search import MAX_QUERY_CHARS, SearchPipeline, SearchResult
from ..storage import index_dir
from ..storage.snapshot import Snapshot, build_legs, open_snapshot, write_snapshot

logger = logging.getLogger(__name__)

__all__ = ["IngestReport", "MAX_QUERY_CHARS", "Pipeline", "PipelineView"]


@dataclass
class IngestReport:
    """What an ingest did."""

    index_dir: str
    documents: int
    nodes: int
    added: int
    changed: int
    removed: int
    unchanged: int
    new_embeddings: int
    cached_embeddings: int
    seconds: dict[str, float] = field(default_factory=dict)


def _doc_hash(doc: Any) -> str:
    return sha256_text(doc.text + "\x00" + repr(sorted(doc.metadata.items())))


class PipelineView(BaseRetriever):
    """A ``BaseRetriever`` over ``Pipeline.retrieve`` with fixed ``top_k`` / ``filters``."""

    def __init__(self, pipeline: "Pipeline", top_k: int | None = None, filters: FilterSpec = None) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.top_k = top_k
        self.filters = filters

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self.pipeline.retrieve(query_bundle.query_str, top_k=self.top_k, filters=self.filters)


class Pipeline:
    """Ingest, load and query one configured index. Models load once per Pipeline."""

    def __init__(self, config: Config, show_progress: bool = False) -> None:
        self.config = config
        self.show_progress = show_progress
        self._embed: BaseEmbedding | None = None
        self._reranker: Any = None
        self._snapshot: Snapshot | None = None  # immutable; replaced by reference, never changed in place
        self._open_lock = threading.Lock()  # first open only: queries never take it once a snapshot is served
        self._write_lock = threading.Lock()

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_config(cls, source: str | Path | dict[str, Any] | Config, overrides: list[str] | None = None, show_progress: bool = False) -> "Pipeline":
        """From a YAML path, a plain dict (paths relative to the cwd) or a Config."""
        if isinstance(source, Config):
            cfg = source
        elif isinstance(source, dict):
            cfg = config_from_dict(apply_overrides(source, overrides or []), source="<dict>", base_dir=Path.cwd())
        else:
            cfg = load_config(source, overrides)
        return cls(cfg, show_progress=show_progress)

    @property
    def index_path(self) -> Path:
        return self.config.resolve_path(self.config.index_dir)

    @property
    def loaded(self) -> bool:
        """True once an index snapshot is open and served."""
        return self._snapshot is not None

    @property
    def embed_model(self) -> BaseEmbedding | None:
        """The embedding model (loaded on first use; None when no dense retriever is configured)."""
        if self._embed is None and self.config.uses_dense():
            self._embed = build_cached_embedding(self.config.embedding, show_progress=self.show_progress)
        return self._embed

    def expected_embedding(self) -> dict[str, Any] | None:
        if not self.config.uses_dense():
            return None
        model = self.embed_model
        inner = getattr(model, "inner", model)
        return {"model": self.config.embedding.model, "dim": embedding_dim(inner), "normalize": self.config.embedding.normalize,
                "query_prompt": self.config.embedding.query_prompt, "passage_prompt": self.config.embedding.passage_prompt,
                "pooling": [p.value for p in self.config.embedding.pooling] if self.config.embedding.pooling else None,
                "text_model": self.config.embedding.text_model}

    # ------------------------------------------------------------------ ingest

    def ingest(self, rebuild: bool = False, documents: list[Any] | None = None) -> IngestReport:
        """Load the source (or take ``documents``), build every retriever, swap the index in atomically.

        Passage vectors come from the content-hash cache, so unchanged text is never re-embedded.
        """
        cfg = self.config
        t0 = time.perf_counter()
        docs = documents if documents is not None else load_documents(cfg, show_progress=self.show_progress)
        if not docs:
            raise LoaderError("no documents to index (empty corpus)")
        seconds = {"load": time.perf_counter() - t0}
        old_hashes = self._previous_hashes(rebuild)
        hashes = {d.doc_id: _doc_hash(d) for d in docs}
        added = sum(1 for k in hashes if k not in old_hashes)
        changed = sum(1 for k, h in hashes.items() if k in old_hashes and old_hashes[k] != h)
        removed = sum(1 for k in old_hashes if k not in hashes)

        t = time.perf_counter()
        counter = chunk_token_counter(cfg.embedding) if cfg.uses_dense() else None
        nodes = chunk_documents(docs, cfg.chunking, tokenizer=counter, show_progress=self.show_progress)
        seconds["chunking"] = time.perf_counter() - t
        vectors, new, cached = None, 0, 0
        expected = None
        if cfg.uses_dense():
            embed = self.embed_model
            if hasattr(embed, "reset_counts"):
                embed.reset_counts()
            t = time.perf_counter()
            vectors = embed_nodes(embed, nodes, show_progress=self.show_progress)
            seconds["embedding"] = time.perf_counter() - t
            new = getattr(embed, "new_embeddings", len(nodes))
            cached = getattr(embed, "cache_hits", 0)
            expected = self.expected_embedding()
            expected["dim"] = int(vectors.shape[1])

        built = build_legs(cfg, nodes, self.embed_model, vectors, show_progress=self.show_progress)
        for name, b in built.items():
            seconds.update({f"{name}.{k}": v for k, v in b.build_seconds.items()})
        with atomic_directory(self.index_path) as tmp:
            write_snapshot(tmp, cfg, built, nodes, docs, expected, hashes)
        seconds["total"] = time.perf_counter() - t0
        if self._snapshot is not None:
            # Serving: open the new folder fully first, then swap the reference in one step, so queries
            # keep running on the old snapshot meanwhile and never see a half-built one.
            self._snapshot = self._open_snapshot()
        logger.info("ingested %d documents -> %d nodes into %s", len(docs), len(nodes), self.index_path)
        return IngestReport(str(self.index_path), len(docs), len(nodes), added, changed, removed,
                            len(docs) - added - changed, new, cached, seconds)

    def documents(self) -> list[Any]:
        """The documents of the persisted index."""
        return index_dir.read_documents(self.index_path / index_dir.DOCUMENTS)

    def upsert(self, documents: list[Any]) -> IngestReport:
        """Add or replace documents (by doc_id) and persist before returning.

        The index is rebuilt beside the live one from the stored documents plus these (only new or
        changed text is embedded, via the cache) and swapped in atomically: concurrent queries see
        the old or the new index, never a mix. Upserts are serialised.
        """
        with self._write_lock:
            current = {d.doc_id: d for d in self._current_documents()}
            current.update({d.doc_id: d for d in documents})
            return self.ingest(documents=list(current.values()))

    def delete(self, doc_ids: list[str]) -> IngestReport:
        """Remove documents by id (unknown ids raise RetrievalError) and persist before returning."""
        with self._write_lock:
            current = {d.doc_id: d for d in self._current_documents()}
            missing = [i for i in doc_ids if i not in current]
            if missing:
                raise RetrievalError(f"unknown document id(s): {', '.join(missing)}", key="doc_id", value=missing)
            if set(doc_ids) >= set(current):
                raise RetrievalError("refusing to delete every document: an index needs at least one", key="doc_id")
            return self.ingest(documents=[d for k, d in current.items() if k not in set(doc_ids)])

    def _current_documents(self) -> list[Any]:
        recover_interrupted_swap(self.index_path)
        if (self.index_path / index_dir.MANIFEST).exists():
            return self.documents()
        return []

    def _previous_hashes(self, rebuild: bool) -> dict[str, str]:
        recover_interrupted_swap(self.index_path)
        if rebuild or not (self.index_path / index_dir.MANIFEST).exists():
            return {}
        try:
            return index_dir.read_manifest(self.index_path).doc_hashes
        except Exception:  # a corrupt old index is simply replaced
            return {}

    # ------------------------------------------------------------------ load / query

    def load(self) -> SearchPipeline:
        """Open the persisted index (checked against the config) once; returns its stateless search stack."""
        return self._served().search

    def _served(self) -> Snapshot:
        snapshot = self._snapshot
        if snapshot is None:
            with self._open_lock:
                if self._snapshot is None:
                    recover_interrupted_swap(self.index_path)
                    opened = self._open_snapshot()
                    self._warm_up(opened.search)
                    self._snapshot = opened
                snapshot = self._snapshot
        return snapshot

    @staticmethod
    def _warm_up(search: SearchPipeline) -> None:
        """One throw-away query, so lazy loads (kiwi's model, torch kernels) don't land on the first real one."""
        t0 = time.perf_counter()
        search.run("준비 운동")
        logger.debug("warm-up query took %.2f s", time.perf_counter() - t0)

    def _open_snapshot(self) -> Snapshot:
        """Read the persisted folder into a complete, new snapshot (touches no live state)."""
        return open_snapshot(self.index_path, self.config, self.embed_model, self._load_reranker())

    def _load_reranker(self) -> Any:
        if self._reranker is None:
            self._reranker = build_reranker(self.config.rerank)
        return self._reranker

    def search(self, query: str | QueryBundle, top_k: int | None = None, filters: FilterSpec = None) -> SearchResult:
        """Ranked passages and per-stage seconds for ``query``; safe to call from many threads at once."""
        return self._served().search.run(query, top_k=top_k, filters=filters)

    def retrieve(self, query: str | QueryBundle, top_k: int | None = None, filters: FilterSpec = None) -> list[NodeWithScore]:
        """Ranked passages for ``query`` (scores, node ids, document ids and metadata on each node).

        ``filters``: ``MetadataFilters`` or a plain dict (``{"category": "건강"}``, ANDed equality). No lock
        is taken: the served snapshot is immutable and a reload swaps it by reference.
        """
        return self.search(query, top_k=top_k, filters=filters).nodes

    async def aretrieve(self, query: str, top_k: int | None = None, filters: FilterSpec = None) -> list[NodeWithScore]:
        """Async variant: runs the (CPU-bound) retrieval in a worker thread, safe inside a running loop."""
        import asyncio

        return await asyncio.to_thread(self.retrieve, query, top_k, filters)

    def as_retriever(self, top_k: int | None = None, filters: FilterSpec = None) -> BaseRetriever:
        """The full retrieval stack as a LlamaIndex ``BaseRetriever``.

        Each call goes through ``retrieve`` (thread-safe, and it follows index swaps after an upsert).
        """
        self.load()
        return PipelineView(self, top_k=top_k, filters=filters)

    def as_query_engine(self, llm: Any = None, streaming: bool = False, top_k: int | None = None,
                        filters: FilterSpec = None) -> Any:
        """A LlamaIndex query engine; retrieval-only unless an LLM is passed or configured.

        With an LLM it is a ``RetrieverQueryEngine``: responses carry ``source_nodes`` (see
        ``engine.answer_with_sources``); ``streaming=True`` gives ``response.response_gen``.
        """
        from ..models.llm import build_llm
        from .engine import build_query_engine

        llm = llm if llm is not None else build_llm(self.config.llm)
        return build_query_engine(self.as_retriever(top_k=top_k, filters=filters), llm=llm, streaming=streaming)

    def info(self) -> dict[str, Any]:
        """Model, index size and config fingerprint (no secrets)."""
        m = self._served().manifest
        return {"name": self.config.name, "index_dir": str(self.index_path), "counts": m.counts, "embedding": m.embedding,
                "retrievers": list(m.retrievers), "config_sha256": m.config_sha256, "created_at": m.created_at}
