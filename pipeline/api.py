"""``Pipeline``: the Python entry point. One config, one index directory, many doors.

    >>> from pipeline import Pipeline
    >>> p = Pipeline.from_config("configs/default.yaml")
    >>> p.ingest()                      # doctest: +SKIP
    >>> for hit in p.retrieve("김치는 어떻게 담그나요?", top_k=3):   # doctest: +SKIP
    ...     print(hit.score, hit.node.ref_doc_id)
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.core.vector_stores.types import MetadataFilters

from . import factory, index_dir
from ._io import atomic_directory, sha256_text
from .config import Config, config_from_dict, load_config
from .errors import LoaderError, RetrievalError
from .loaders import load_documents

logger = logging.getLogger(__name__)

MAX_QUERY_CHARS = 2000


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


class PipelineRetriever(BaseRetriever):
    """Fused retrieval, then optional rerank, cut to ``top_k``; usable anywhere LlamaIndex takes a retriever."""

    def __init__(self, first_stage: BaseRetriever, subs: list[BaseRetriever], top_k: int, reranker: Any = None, rerank_candidates: int = 20) -> None:
        super().__init__()
        self.first_stage = first_stage
        self.subs = subs
        self.top_k = top_k
        self.reranker = reranker
        self.rerank_candidates = rerank_candidates
        self.filters: MetadataFilters | None = None

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        query = (query_bundle.query_str or "").strip()
        if not query:
            raise RetrievalError("empty query: give a question or keywords", key="query")
        if len(query) > MAX_QUERY_CHARS:
            raise RetrievalError(f"query is {len(query)} characters; the limit is {MAX_QUERY_CHARS}", key="query")
        for sub in self.subs:
            sub.filters = self.filters
        depth = self.rerank_candidates if self.reranker is not None else self.top_k
        if hasattr(self.first_stage, "top_k"):
            self.first_stage.top_k = max(depth, self.top_k)
        else:
            self.first_stage.similarity_top_k = max(depth, self.top_k)
        nodes = self.first_stage.retrieve(query_bundle)
        if self.reranker is not None:
            self.reranker.top_n = self.top_k
            nodes = self.reranker.postprocess_nodes(nodes, query_bundle=query_bundle)
        return nodes[: self.top_k]


class PipelineView(BaseRetriever):
    """A ``BaseRetriever`` over ``Pipeline.retrieve`` with fixed ``top_k`` / ``filters``."""

    def __init__(self, pipeline: "Pipeline", top_k: int | None = None, filters: MetadataFilters | None = None) -> None:
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
        self._retriever: PipelineRetriever | None = None
        self._reranker: Any = None
        self._nodes: dict[str, TextNode] = {}
        self._manifest: index_dir.Manifest | None = None
        self._lock = threading.RLock()
        self._write_lock = threading.Lock()

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_config(cls, source: str | Path | dict[str, Any] | Config, overrides: list[str] | None = None, show_progress: bool = False) -> "Pipeline":
        """From a YAML path, a plain dict (paths relative to the cwd) or a Config."""
        if isinstance(source, Config):
            cfg = source
        elif isinstance(source, dict):
            from .config import apply_overrides

            cfg = config_from_dict(apply_overrides(source, overrides or []), source="<dict>", base_dir=Path.cwd())
        else:
            cfg = load_config(source, overrides)
        return cls(cfg, show_progress=show_progress)

    @property
    def index_path(self) -> Path:
        return self.config.resolve_path(self.config.index_dir)

    @property
    def embed_model(self) -> BaseEmbedding | None:
        """The embedding model (loaded on first use; None when no dense retriever is configured)."""
        if self._embed is None and self.config.uses_dense():
            self._embed = factory.build_cached_embedding(self.config.embedding, show_progress=self.show_progress)
        return self._embed

    def expected_embedding(self) -> dict[str, Any] | None:
        if not self.config.uses_dense():
            return None
        from .models import embedding_dim

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
        counter = factory.chunk_token_counter(cfg.embedding) if cfg.uses_dense() else None
        nodes = factory.chunk_documents(docs, cfg.chunking, tokenizer=counter, show_progress=self.show_progress)
        seconds["chunking"] = time.perf_counter() - t
        vectors, new, cached = None, 0, 0
        expected = None
        if cfg.uses_dense():
            embed = self.embed_model
            if hasattr(embed, "reset_counts"):
                embed.reset_counts()
            t = time.perf_counter()
            vectors = factory.embed_nodes(embed, nodes, show_progress=self.show_progress)
            seconds["embedding"] = time.perf_counter() - t
            new = getattr(embed, "new_embeddings", len(nodes))
            cached = getattr(embed, "cache_hits", 0)
            expected = self.expected_embedding()
            expected["dim"] = int(vectors.shape[1])

        with atomic_directory(self.index_path) as tmp:
            retrievers: dict[str, dict[str, Any]] = {}
            for rcfg in cfg.retrieval.retrievers:
                built = factory.build_retriever(rcfg, nodes, self.embed_model, vectors, show_progress=self.show_progress)
                factory.persist_retriever(built, tmp / "retrievers" / rcfg.name)
                retrievers[rcfg.name] = built.info
                seconds.update({f"{rcfg.name}.{k}": v for k, v in built.build_seconds.items()})
            index_dir.write_docstore(tmp / index_dir.DOCSTORE, nodes)
            index_dir.write_documents(tmp / index_dir.DOCUMENTS, docs)
            manifest = index_dir.Manifest(
                config_sha256=cfg.fingerprint(), embedding=expected, chunking=cfg.chunking.model_dump(mode="json"),
                retrievers=retrievers, doc_hashes=hashes, counts={"documents": len(docs), "nodes": len(nodes)},
            )
            index_dir.write_manifest(tmp, manifest, cfg)
        seconds["total"] = time.perf_counter() - t0
        if self._retriever is not None:
            # Serving: open the new folder fully first, then swap the reference in one step, so
            # queries keep running on the old stack meanwhile and never see a half-built one.
            stack = self._open_stack()
            with self._lock:
                self._retriever, self._nodes, self._manifest = stack
        else:
            with self._lock:
                self._retriever = None  # a load that raced this ingest read the old folder: reload lazily
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

    def _recover_interrupted_swap(self) -> None:
        """Put back the previous index when a crash hit between the two renames of a swap.

        ``atomic_directory`` moves the live folder to ``.<name>.old-<pid>`` and then the new one into
        place; a kill in between leaves no index folder. The unacknowledged new one is dropped.
        """
        target = self.index_path
        if target.exists():
            return
        olds = [p for p in target.parent.glob(f".{target.name}.old-*") if (p / index_dir.MANIFEST).exists()]
        if olds:
            old = max(olds, key=lambda p: p.stat().st_mtime)
            os.replace(old, target)
            logger.warning("restored %s from %s (an index swap was interrupted)", target, old.name)

    def _current_documents(self) -> list[Any]:
        self._recover_interrupted_swap()
        if (self.index_path / index_dir.MANIFEST).exists():
            return self.documents()
        return []

    def _previous_hashes(self, rebuild: bool) -> dict[str, str]:
        self._recover_interrupted_swap()
        if rebuild or not (self.index_path / index_dir.MANIFEST).exists():
            return {}
        try:
            return index_dir.read_manifest(self.index_path).doc_hashes
        except Exception:  # a corrupt old index is simply replaced
            return {}

    # ------------------------------------------------------------------ load / query

    def load(self) -> PipelineRetriever:
        """Open the persisted index (checked against the config) and build the retriever stack."""
        with self._lock:
            if self._retriever is None:
                self._recover_interrupted_swap()
                self._retriever, self._nodes, self._manifest = self._open_stack()
                self._warm_up(self._retriever)
            return self._retriever

    @staticmethod
    def _warm_up(retriever: PipelineRetriever) -> None:
        """One throw-away query, so lazy loads (kiwi's model, torch kernels) don't land on the first real one."""
        t0 = time.perf_counter()
        retriever.retrieve("준비 운동")
        logger.debug("warm-up query took %.2f s", time.perf_counter() - t0)

    def _open_stack(self) -> tuple[PipelineRetriever, dict[str, TextNode], index_dir.Manifest]:
        """Read the persisted folder into a complete, new retriever stack (touches no live state)."""
        cfg = self.config
        manifest = index_dir.read_manifest(self.index_path)
        index_dir.check_compatible(manifest, self.expected_embedding() if manifest.embedding else None, cfg, self.index_path)
        nodes = index_dir.read_docstore(self.index_path / index_dir.DOCSTORE)
        subs, built = [], []
        for rcfg in cfg.retrieval.retrievers:
            r = factory.load_retriever(rcfg, self.index_path / "retrievers" / rcfg.name, nodes, self.embed_model)
            subs.append(r)
            built.append(factory.BuiltRetriever(rcfg.name, r, rcfg.weight, rcfg.candidate_k))
        first = factory.build_fusion(built, cfg, cfg.retrieval.top_k)
        retriever = PipelineRetriever(first, subs, cfg.retrieval.top_k, self._load_reranker(), cfg.rerank.candidates)
        return retriever, nodes, manifest

    def _load_reranker(self) -> Any:
        if not self.config.rerank.enabled:
            return None
        if self._reranker is None:
            from .models import build_cross_encoder_path
            from .rerank import CrossEncoderReranker

            rc = self.config.rerank
            self._reranker = CrossEncoderReranker(model=build_cross_encoder_path(rc.model), top_n=rc.top_n, batch_size=rc.batch_size, max_length=rc.max_length)
        return self._reranker

    def retrieve(self, query: str, top_k: int | None = None, filters: MetadataFilters | None = None) -> list[NodeWithScore]:
        """Ranked passages for ``query`` (scores, node ids, document ids and metadata on each node)."""
        with self._lock:  # retrievers hold per-call settings (depth, filters); calls are serialised
            retriever = self.load()
            retriever.top_k = top_k or self.config.retrieval.top_k
            retriever.filters = filters
            try:
                return retriever.retrieve(query)
            finally:
                retriever.top_k, retriever.filters = self.config.retrieval.top_k, None

    async def aretrieve(self, query: str, top_k: int | None = None, filters: MetadataFilters | None = None) -> list[NodeWithScore]:
        """Async variant: runs the (CPU-bound) retrieval in a worker thread, safe inside a running loop."""
        import asyncio

        return await asyncio.to_thread(self.retrieve, query, top_k, filters)

    def as_retriever(self, top_k: int | None = None, filters: MetadataFilters | None = None) -> BaseRetriever:
        """The full retrieval stack as a LlamaIndex ``BaseRetriever``.

        Each call goes through ``retrieve`` (thread-safe, and it follows index swaps after an upsert).
        """
        self.load()
        return PipelineView(self, top_k=top_k, filters=filters)

    def as_query_engine(self, llm: Any = None, streaming: bool = False, top_k: int | None = None,
                        filters: MetadataFilters | None = None) -> Any:
        """A LlamaIndex query engine; retrieval-only unless an LLM is passed or configured.

        With an LLM it is a ``RetrieverQueryEngine``: responses carry ``source_nodes`` (see
        ``engine.answer_with_sources``); ``streaming=True`` gives ``response.response_gen``.
        """
        from .engine import build_query_engine
        from .models import build_llm

        llm = llm if llm is not None else build_llm(self.config.llm)
        return build_query_engine(self.as_retriever(top_k=top_k, filters=filters), llm=llm, streaming=streaming)

    def info(self) -> dict[str, Any]:
        """Model, index size and config fingerprint (no secrets)."""
        self.load()
        m = self._manifest
        return {"name": self.config.name, "index_dir": str(self.index_path), "counts": m.counts, "embedding": m.embedding,
                "retrievers": list(m.retrievers), "config_sha256": m.config_sha256, "created_at": m.created_at}
