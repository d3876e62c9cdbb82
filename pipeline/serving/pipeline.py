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
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle

from ..config import Config, apply_overrides, config_from_dict, load_config
from ..core.errors import LoaderError
from ..ingest.chunking import chunk_documents, chunk_token_counter
from ..ingest.loaders import SkippedFile, load_documents
from ..ingest.vectors import embed_nodes
from ..models.embedding import build_cached_embedding, embedding_dim
from ..models.threads import configure_threads
from ..retrieval.filters import FilterSpec, warn_unknown_keys
from ..retrieval.rerank import build_reranker
from ..retrieval.search import MAX_QUERY_CHARS, SearchPipeline, SearchResult
from ..storage import index_dir
from ..storage.live import apply_changes, refuse_dropping_api_writes, open_latest, replay, source_changes, to_record
from ..storage.lock import writer_lock
from ..storage.snapshot import Snapshot, build_legs, doc_hash, in_memory, write_version
from ..storage.wal import append_wal, wal_path

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
    skipped: list[SkippedFile] = field(default_factory=list)  # source files that could not be read (left out)


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
    """Ingest, load and query one configured index. Models load once per Pipeline.

    With ``storage.backend: qdrant`` the constructor returns a ``QdrantPipeline`` (same API, the index in a collection).
    """

    def __new__(cls, config: Config, *args: Any, **kwargs: Any) -> "Pipeline":
        if cls is Pipeline and config.storage.backend == "qdrant":
            from .qdrant_pipeline import QdrantPipeline

            return super().__new__(QdrantPipeline)
        return super().__new__(cls)

    def __init__(self, config: Config, show_progress: bool = False) -> None:
        self.config = config
        self.show_progress = show_progress
        self._embed: BaseEmbedding | None = None
        self._reranker: Any = None
        self._snapshot: Snapshot | None = None  # immutable; replaced by reference, never changed in place
        self._counter: Any = None  # chunk token counter (False: the model has none)
        self._batcher: Any = None  # QueryBatcher when serving many threads (batch_queries)
        self._query_cache: Any = None  # QueryVectorCache (embedding.query_cache) around the query model
        self._open_lock = threading.Lock()  # first open only: queries never take it once a snapshot is served
        self._write_lock = threading.RLock()  # writes in this process; storage.lock covers other processes
        configure_threads(config.runtime.threads)

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

    def batch_queries(self) -> None:
        """Gather concurrent query embeddings into micro-batches (``serving.batch_wait_ms``, ``serving.max_batch``).

        Call before the index is opened; the HTTP service does. Without a dense retriever it does nothing.
        """
        if self.embed_model is not None and self._batcher is None:
            from ..models.batching import QueryBatcher

            s = self.config.serving
            self._batcher = QueryBatcher(self.embed_model, wait_ms=s.batch_wait_ms, max_batch=s.max_batch)

    @property
    def _query_model(self) -> BaseEmbedding | None:
        """The model dense retrievers embed queries with: the query LRU, then the batcher when enabled."""
        model = self._batcher or self.embed_model
        size = self.config.embedding.query_cache
        if model is None or not size:
            return model
        if self._query_cache is None or self._query_cache.inner is not model:
            from ..models.query_cache import QueryVectorCache

            self._query_cache = QueryVectorCache(model, size)
        return self._query_cache

    def expected_embedding(self) -> dict[str, Any] | None:
        if not self.config.uses_dense():
            return None
        model = self.embed_model
        inner = getattr(model, "inner", model)
        return {"model": self.config.embedding.model, "dim": embedding_dim(inner), "normalize": self.config.embedding.normalize,
                "query_prompt": self.config.embedding.query_prompt, "passage_prompt": self.config.embedding.passage_prompt,
                "pooling": [p.value for p in self.config.embedding.pooling] if self.config.embedding.pooling else None,
                "text_model": self.config.embedding.text_model}

    # ------------------------------------------------------------------ writes

    def _prepare(self, docs: list[Any]) -> tuple[list[Any], Any]:
        """Documents -> (nodes, passage vectors or None): chunking in the embedding's tokens, vectors via the cache."""
        cfg = self.config
        if cfg.uses_dense() and self._counter is None:
            self._counter = chunk_token_counter(cfg.embedding) or False
        nodes = chunk_documents(docs, cfg.chunking, tokenizer=self._counter or None, show_progress=self.show_progress)
        vectors = embed_nodes(self.embed_model, nodes, show_progress=self.show_progress) if cfg.uses_dense() else None
        return nodes, vectors

    def ingest(self, rebuild: bool = False, documents: list[Any] | None = None, take_over: bool = False) -> IngestReport:
        """Bring the index in line with the source (or with ``documents``) and write a new version.

        Only added or changed documents are chunked, embedded (the cache skips known text) and tokenised;
        removed ones are dropped. ``rebuild`` (or a missing index) builds everything from scratch. Writers
        in other processes wait for the writer lock.

        Documents written through ``upsert`` (the API) belong to the API: ingest keeps those the source lacks and
        refuses (``OwnershipError``) to replace them with the source's version, or to rebuild without them, unless
        ``take_over``, when the source wins and the index becomes exactly the source.
        """
        t0 = time.perf_counter()
        docs, skipped = self._source_documents(documents)
        with self._writing():
            if rebuild or index_dir.read_current(self.index_path) is None:
                if not take_over:
                    refuse_dropping_api_writes(self.index_path)
                snapshot = write_version(self.index_path, self.config, self._fresh(docs))
                counts: tuple[int, ...] = (len(docs), 0, 0, 0)
            else:
                base = self._latest()
                upserts, deletes, change = source_changes(base, docs, take_over)
                snapshot, _ = apply_changes(base, self.config, upserts, deletes, self._prepare, self._load_reranker())
                if take_over and snapshot.api_ids:  # the source owns everything now, unchanged copies included
                    snapshot = replace(snapshot, api_ids=frozenset())
                counts = tuple(change)
                if snapshot is not base or base.wal_records:  # else nothing changed: nothing to write
                    snapshot = write_version(self.index_path, self.config, snapshot)
            self._publish(snapshot)
        logger.info("ingested %d documents -> %d nodes into %s (%s)", len(docs), len(snapshot.nodes), self.index_path, snapshot.version)
        return replace(self._report(snapshot, counts, t0), skipped=skipped)

    def _source_documents(self, documents: list[Any] | None) -> tuple[list[Any], list[SkippedFile]]:
        """(``documents`` or the configured source's, the source files left out as unreadable); an empty corpus is
        an error. Resets the embedding counters."""
        skipped: list[SkippedFile] = []
        docs = documents if documents is not None else load_documents(self.config, self.show_progress, skipped)
        if not docs:
            raise LoaderError("no documents to index (empty corpus)")
        self._reset_counts()
        return docs, skipped

    def _fresh(self, docs: list[Any]) -> Snapshot:
        """Everything built from scratch over ``docs`` (not yet persisted)."""
        nodes, vectors = self._prepare(docs)
        built = build_legs(self.config, nodes, self._query_model, vectors, show_progress=self.show_progress)
        return in_memory(self.config, docs, nodes, {k: b.retriever for k, b in built.items()}, self._load_reranker(),
                         self._embedding_info(vectors))

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """The writer locks: this process's threads, then other processes (``storage.lock``)."""
        with self._write_lock, writer_lock(self.index_path, self.config.serving.write_lock_timeout):
            yield

    def _reset_counts(self) -> None:
        if hasattr(self.embed_model, "reset_counts"):
            self.embed_model.reset_counts()

    def _report(self, snapshot: Snapshot, counts: tuple[int, ...], t0: float) -> IngestReport:
        embed = self.embed_model
        return IngestReport(str(self.index_path), len(snapshot.documents), len(snapshot.nodes), *counts,
                            getattr(embed, "new_embeddings", 0), getattr(embed, "cache_hits", 0),
                            {"embedding": getattr(embed, "embed_seconds", 0.0), "total": time.perf_counter() - t0})

    def _embedding_info(self, vectors: Any) -> dict[str, Any] | None:
        info = self.expected_embedding()
        if info is not None and vectors is not None:
            info["dim"] = int(vectors.shape[1])
        return info

    def document_hashes(self) -> dict[str, str]:
        """doc_id -> content hash of every served document."""
        return {k: doc_hash(d) for k, d in self._served().documents.items()}

    def documents(self) -> list[Any]:
        """The documents of the served index (every acknowledged write included)."""
        return list(self._served().documents.values())

    def upsert(self, documents: list[Any]) -> IngestReport:
        """Add or replace documents (by doc_id); durable (logged and fsynced) before returning.

        Only these documents are chunked, embedded and tokenised; queries see the old or the new
        snapshot, never a mix. A first write to an empty index builds it.
        """
        return self._change(list(documents), [])

    def delete(self, doc_ids: list[str]) -> IngestReport:
        """Remove documents by id (unknown ids raise RetrievalError); durable before returning."""
        return self._change([], list(doc_ids))

    def _change(self, upserts: list[Any], deletes: list[str]) -> IngestReport:
        t0 = time.perf_counter()
        self._reset_counts()
        with self._writing():
            if index_dir.read_current(self.index_path) is None and upserts and not deletes:
                new = write_version(self.index_path, self.config,
                                    replace(self._fresh(upserts), api_ids=frozenset(d.doc_id for d in upserts)))
                self._publish(new)
                return self._report(new, (len(upserts), 0, 0, 0), t0)
            base = self._latest()
            new, change = apply_changes(base, self.config, upserts, deletes, self._prepare, self._load_reranker(), by_api=True)
            if new is not base:  # log first (the acknowledgement), then serve
                end = append_wal(wal_path(self.index_path, str(base.version)), to_record(upserts, deletes))
                new = replace(new, wal_end=end, wal_records=base.wal_records + 1)
                if new.wal_records >= self.config.serving.compact_after:
                    new = write_version(self.index_path, self.config, new)
            self._publish(new)
        return self._report(new, tuple(change), t0)

    def compact(self) -> str:
        """Write the served state (version + log) as a new version with an empty log; returns its name."""
        with self._writing():
            snapshot = write_version(self.index_path, self.config, self._latest())
            self._publish(snapshot)
        return str(snapshot.version)

    def refresh(self) -> bool:
        """Follow writes made by other processes (a new version, or new log records); True when it changed.

        Cheap when nothing changed (two small reads). A running service calls it on a timer and on ``/health``.
        """
        served = self._snapshot
        if served is None:
            return False
        current = index_dir.read_current(self.index_path)
        log = wal_path(self.index_path, str(current))
        if current == served.version and (log.stat().st_size if log.exists() else 0) <= served.wal_end:
            return False
        with self._write_lock:
            latest = self._latest()
            changed = latest is not self._snapshot
            self._publish(latest)
        return changed

    def _latest(self) -> Snapshot:
        """The served snapshot brought up to date with the persisted index (the caller holds ``_write_lock``)."""
        served = self._snapshot
        if served is not None and index_dir.read_current(self.index_path) == served.version:
            return replay(served, self.config, self.index_path, self._prepare, self._load_reranker())
        return open_latest(self.index_path, self.config, self._query_model, self._prepare, self._load_reranker())

    def _publish(self, snapshot: Snapshot) -> None:
        """Serve ``snapshot`` from now on (one reference assignment: queries in flight keep theirs)."""
        self._snapshot = snapshot

    # ------------------------------------------------------------------ load / query

    def load(self) -> SearchPipeline:
        """Open the persisted index (checked against the config) once; returns its stateless search stack."""
        return self._served().search

    def _served(self) -> Snapshot:
        snapshot = self._snapshot
        if snapshot is None:
            with self._open_lock:
                if self._snapshot is None:
                    opened = open_latest(self.index_path, self.config, self._query_model, self._prepare, self._load_reranker())
                    first = next(iter(opened.nodes.values()), None)  # indexed words reach every leg's scoring
                    self._warm_up(opened.search, " ".join(first.get_content().split()[:8]) if first is not None else "준비 운동")
                    self._snapshot = opened
                snapshot = self._snapshot
        return snapshot

    @staticmethod
    def _warm_up(search: SearchPipeline, text: str = "준비 운동") -> None:
        """One throw-away query, so lazy loads (kiwi's model, bm25s's formulas, the encoder's first run) don't land
        on the first real one."""
        t0 = time.perf_counter()
        search.run(text)
        logger.debug("warm-up query took %.2f s", time.perf_counter() - t0)

    def _load_reranker(self) -> Any:
        if self._reranker is None:
            self._reranker = build_reranker(self.config.rerank, self.config.embedding.backend)
        return self._reranker

    def search(self, query: str | QueryBundle, top_k: int | None = None, filters: FilterSpec = None) -> SearchResult:
        """Ranked passages and per-stage seconds for ``query``; safe to call from many threads at once."""
        served = self._served()
        if filters:
            warn_unknown_keys(filters, served.metadata_keys)
        return served.search.run(query, top_k=top_k, filters=filters)

    def retrieve(self, query: str | QueryBundle, top_k: int | None = None, filters: FilterSpec = None) -> list[NodeWithScore]:
        """Ranked passages for ``query`` (scores, node ids, document ids and metadata on each node).

        ``filters``: ``MetadataFilters`` or a plain dict (``{"category": "건강"}``, ANDed equality); a key no
        passage has is warned about, naming the known keys. No lock
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
        snap = self._served()
        m = snap.manifest
        return {"name": self.config.name, "index_dir": str(self.index_path), "version": snap.version, "logged_changes": snap.wal_records,
                "counts": {"documents": len(snap.documents), "nodes": len(snap.nodes)}, "embedding": snap.embedding,
                "retrievers": list(snap.legs), "config_sha256": m.config_sha256 if m else None, "created_at": m.created_at if m else None}
