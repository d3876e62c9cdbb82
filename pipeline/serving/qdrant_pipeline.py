"""``Pipeline`` on ``storage.backend: qdrant``: the same API, with the collection as the index.

Documents, chunks, vectors and BM25 statistics live in the engine; this process keeps only the models
and a stateless search stack over the collection's alias, so several replicas serve one index and a
write by any of them (or by ``ragpipe ingest`` elsewhere) is visible to all at once. There are no
versions, log or local snapshot: ``refresh`` and ``compact`` have nothing to do. The index directory
keeps ``qdrant.json`` (where the collection is and what it was built with) and the writer lock.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import yaml

from ..core.errors import IndexMismatchError, RetrievalError
from ..core.io import write_json_atomic, write_text_atomic
from ..retrieval.filters import FilterSpec
from ..retrieval.search import SearchPipeline, SearchResult
from ..storage.live import Changes
from ..storage.qdrant_index import QdrantIndex, where
from ..storage.snapshot import doc_hash
from .pipeline import IngestReport, Pipeline

logger = logging.getLogger(__name__)

POINTER = "qdrant.json"


class QdrantPipeline(Pipeline):
    """Ingest into, write to and query one Qdrant collection (``Pipeline.from_config`` picks it from the config)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._qdrant: QdrantIndex | None = None
        self._stack: SearchPipeline | None = None
        self._meta: dict[str, Any] | None = None

    @property
    def qdrant(self) -> QdrantIndex:
        if self._qdrant is None:
            self._qdrant = QdrantIndex(self.config)
        return self._qdrant

    @property
    def loaded(self) -> bool:
        return self._stack is not None

    # ------------------------------------------------------------------ writes

    def ingest(self, rebuild: bool = False, documents: list[Any] | None = None, take_over: bool = True) -> IngestReport:
        """Bring the collection in line with the source: a new collection on ``rebuild`` (or none yet), else only
        the added, changed and removed documents are written. The collection does not record who wrote a document,
        so the source always wins here (``take_over`` is accepted for the same signature)."""
        t0 = time.perf_counter()
        docs, skipped = self._source_documents(documents)
        with self._writing():
            if rebuild or self.qdrant.store.physical() is None:
                self._build(docs)
                counts: tuple[int, ...] = (len(docs), 0, 0, 0)
            else:
                wanted = {d.doc_id: d for d in docs}
                have = self.qdrant.document_hashes()
                upserts = [d for k, d in wanted.items() if have.get(k) != doc_hash(d)]
                removed = [k for k in have if k not in wanted]
                counts = tuple(self._write(upserts, removed, have)._replace(unchanged=len(wanted) - len(upserts)))
        return replace(self._report_counts(counts, t0), skipped=skipped)

    def _build(self, docs: list[Any]) -> None:
        nodes, vectors = self._prepare(docs)
        self._meta = self.qdrant.build(nodes, vectors, {d.doc_id: doc_hash(d) for d in docs}, self._embedding_info(vectors),
                                       show_progress=self.show_progress)
        self.index_path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.index_path / "config.yaml",
                          yaml.safe_dump(self.config.model_dump(mode="json", exclude={"base_dir"}), allow_unicode=True, sort_keys=False))
        write_json_atomic(self.index_path / POINTER, {"where": where(self.config), "url": self.config.storage.url,
                                                      "collection": self.qdrant.store.alias, "metadata": self._meta})

    def _write(self, upserts: list[Any], deletes: list[str], have: dict[str, str]) -> Changes:
        """Write changed documents and deletions (the caller holds the writer locks)."""
        meta = self._checked()
        fresh = {d.doc_id: d for d in upserts}
        new_docs = [d for k, d in fresh.items() if have.get(k) != doc_hash(d)]
        nodes, vectors = self._prepare(new_docs) if new_docs else ([], None)
        hashes = {d.doc_id: doc_hash(d) for d in new_docs}
        self.qdrant.write(nodes, vectors, hashes, deletes, meta)
        added = sum(1 for d in new_docs if d.doc_id not in have)
        return Changes(added, len(new_docs) - added, len(set(deletes)), len(fresh) - len(new_docs))

    def _change(self, upserts: list[Any], deletes: list[str]) -> IngestReport:
        t0 = time.perf_counter()
        self._reset_counts()
        with self._writing():
            if self.qdrant.store.physical() is None and upserts and not deletes:
                self._build(upserts)
                return self._report_counts((len(upserts), 0, 0, 0), t0)
            have = self.qdrant.document_hashes()
            missing = [i for i in deletes if i not in have]
            if missing:
                raise RetrievalError(f"unknown document id(s): {', '.join(missing[:10])}", key="doc_id", value=missing)
            if deletes and not upserts and set(deletes) >= set(have):
                raise RetrievalError("refusing to delete every document: an index needs at least one", key="doc_id")
            counts = self._write(upserts, deletes, have)
        return self._report_counts(tuple(counts), t0)

    def _report_counts(self, counts: tuple[int, ...], t0: float) -> IngestReport:
        embed = self.embed_model
        sizes = self.qdrant.counts()
        return IngestReport(where(self.config), sizes["documents"], sizes["nodes"], *counts, getattr(embed, "new_embeddings", 0),
                            getattr(embed, "cache_hits", 0),
                            {"embedding": getattr(embed, "embed_seconds", 0.0), "total": time.perf_counter() - t0})

    def compact(self) -> str:
        """Nothing to fold: every write is already in the collection. Returns the collection's name."""
        return str(self.qdrant.store.physical())

    def refresh(self) -> bool:
        """Nothing to follow: every replica queries the same collection."""
        return False

    # ------------------------------------------------------------------ reads

    def _checked(self) -> dict[str, Any]:
        if self._meta is None:
            self._meta = self.qdrant.check()
        return self._meta

    def load(self) -> SearchPipeline:
        """Check the collection against the config once; returns the stateless search stack."""
        stack = self._stack
        if stack is None:
            with self._open_lock:
                if self._stack is None:
                    self._check_dimension(self._checked())
                    opened = self.qdrant.search_stack(self._query_model, self._load_reranker())
                    self._warm_up(opened)
                    self._stack = opened
                stack = self._stack
        return stack

    def _check_dimension(self, meta: dict[str, Any]) -> None:
        size = self.qdrant.dense_size()
        if size is None:
            return
        have = (self.expected_embedding() or {}).get("dim")
        if have is not None and have != size:
            raise IndexMismatchError(f"{where(self.config)}: dense vectors have {size} dimensions, the embedding model gives {have}; "
                                     "run `ragpipe ingest --rebuild`", key="embedding.model")

    def search(self, query: Any, top_k: int | None = None, filters: FilterSpec = None) -> SearchResult:
        return self.load().run(query, top_k=top_k, filters=filters)

    def document_hashes(self) -> dict[str, str]:
        return self.qdrant.document_hashes()

    def documents(self) -> list[Any]:
        raise RetrievalError("the qdrant backend keeps chunks, not source documents: list ids and hashes with "
                             "document_hashes() (GET /documents)", key="storage.backend")

    def info(self) -> dict[str, Any]:
        meta = self._checked()
        return {"name": self.config.name, "index_dir": where(self.config), "version": self.qdrant.store.physical(),
                "logged_changes": 0, "counts": self.qdrant.counts(), "embedding": meta.get("embedding"),
                "retrievers": [r.name for r in self.config.retrieval.retrievers], "config_sha256": self.config.fingerprint(),
                "created_at": meta.get("created_at"), "storage": {"backend": "qdrant", "collection": self.qdrant.store.alias,
                                                                  "url": self.config.storage.url}}
