"""An index held in a Qdrant collection: full builds behind an alias swap, incremental writes, the search stack.

The engine is the source of truth: documents, chunks, vectors and BM25 statistics live in the collection,
and nothing is cached on this side, so several service replicas and writers on other machines see one
index. A full build fills a new physical collection and then swaps the alias (``storage.qdrant_store``),
so readers see the old or the new collection, never a half-built one. An incremental write upserts the
changed documents' chunks (idempotent point ids) and then deletes their stale chunks; each request is
acknowledged by the engine before the call returns. Qdrant has no multi-request transactions, so a
reader may briefly see a changed document's new chunks beside its stale ones (never a partial chunk).
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from llama_index.core.schema import TextNode
from qdrant_client import models

from ..config import Config
from ..core.errors import IndexMismatchError
from ..core.versions import library_versions
from ..retrieval.search import SearchPipeline
from .index_dir import Manifest
from .integrity import check_build, expected_build
from .qdrant_legs import QdrantLeg, ServerFusion
from .qdrant_sparse import BM25Encoder, average_length
from .qdrant_store import QdrantStore, connect, point_id
from .snapshot import assemble

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_SCHEMA_OF = {str: models.PayloadSchemaType.KEYWORD, bool: models.PayloadSchemaType.BOOL,
              int: models.PayloadSchemaType.INTEGER, float: models.PayloadSchemaType.FLOAT}


def collection_name(cfg: Config) -> str:
    """``storage.collection``, or the config's name made safe for a collection name."""
    return cfg.storage.collection or re.sub(r"[^A-Za-z0-9_-]+", "-", cfg.name).strip("-") or "ragpipe"


def local_path(cfg: Config) -> Path:
    """Local mode's folder: ``storage.path``, or ``<index_dir>/qdrant``."""
    return cfg.resolve_path(cfg.storage.path) if cfg.storage.path else cfg.resolve_path(cfg.index_dir) / "qdrant"


def where(cfg: Config) -> str:
    """Where the index lives, for messages and ``/info`` (a URL or a folder; never a key)."""
    return f"qdrant collection {collection_name(cfg)} at {cfg.storage.url or local_path(cfg)}"


def _field_schemas(nodes: Sequence[TextNode]) -> dict[str, models.PayloadSchemaType]:
    """A payload index type per scalar metadata key (the first type seen wins; lists index their elements)."""
    out: dict[str, models.PayloadSchemaType] = {}
    for n in nodes:
        for key, value in n.metadata.items():
            v = value[0] if isinstance(value, list) and value else value
            if key not in out and type(v) in _SCHEMA_OF:
                out[key] = _SCHEMA_OF[type(v)]
    return out


class QdrantIndex:
    """One configured index in a Qdrant collection (``storage.backend: qdrant``)."""

    def __init__(self, cfg: Config, client: Any = None) -> None:
        self.cfg = cfg
        self.client = client if client is not None else connect(cfg.storage, local_path(cfg))
        self.store = QdrantStore(self.client, collection_name(cfg), cfg.storage)
        self.encoders = {r.name: BM25Encoder(r) for r in cfg.retrieval.retrievers if r.type == "bm25"}
        self.dense_name = next((r.name for r in cfg.retrieval.retrievers if r.type == "dense"), None)

    # ------------------------------------------------------------------ build and write

    def build(self, nodes: Sequence[TextNode], vectors: np.ndarray | None, doc_hashes: Mapping[str, str],
              embedding: dict[str, Any] | None, show_progress: bool = False) -> dict[str, Any]:
        """Fill a new collection with ``nodes`` and point the alias at it; returns the recorded metadata."""
        tokens = {name: enc.tokens(nodes, show_progress=show_progress) for name, enc in self.encoders.items()}
        meta = {"schema_version": SCHEMA_VERSION, "build": expected_build(self.cfg), "embedding": embedding,
                "avgdl": {name: average_length(t) for name, t in tokens.items()},
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "libraries": library_versions()}
        dim = int(vectors.shape[1]) if vectors is not None else None
        name = self.store.create(dim, list(self.encoders), meta, self.dense_name)
        self.store.index_fields(name, _field_schemas(nodes))
        n = self.store.upsert(name, self._points(nodes, vectors, tokens, meta["avgdl"], doc_hashes))
        self.store.point_alias(name)
        logger.info("built qdrant collection %s (%d points) behind alias %s", name, n, self.store.alias)
        return meta

    def write(self, nodes: Sequence[TextNode], vectors: np.ndarray | None, doc_hashes: Mapping[str, str],
              deletes: Sequence[str], meta: Mapping[str, Any]) -> None:
        """Upsert the chunks of changed documents, then drop their stale chunks and every chunk of ``deletes``."""
        collection = self.store.physical()
        if nodes:
            tokens = {name: enc.tokens(nodes) for name, enc in self.encoders.items()}
            self.store.index_fields(collection, _field_schemas(nodes))
            self.store.upsert(collection, self._points(nodes, vectors, tokens, meta["avgdl"], doc_hashes))
            changed = sorted({n.ref_doc_id or n.node_id for n in nodes})
            self.store.delete_documents(collection, changed, keep_points=[point_id(n.node_id) for n in nodes])
        self.store.delete_documents(collection, list(deletes))

    def _points(self, nodes: Sequence[TextNode], vectors: np.ndarray | None, tokens: Mapping[str, list[list[str]]],
                avgdl: Mapping[str, float], doc_hashes: Mapping[str, str]) -> Any:
        sparse = {name: enc.documents(tokens[name], avgdl[name]) for name, enc in self.encoders.items()}
        seen: set[str] = set()
        for i, node in enumerate(nodes):
            doc = node.ref_doc_id or node.node_id
            vector: dict[str, Any] = {name: sparse[name][i] for name in sparse}
            if self.dense_name is not None and vectors is not None:
                vector[self.dense_name] = vectors[i].astype(np.float32).tolist()
            payload = {"node_id": node.node_id, "doc_id": doc, "doc_hash": doc_hashes.get(doc, ""), "first": doc not in seen,
                       "text": node.get_content(), "metadata": dict(node.metadata)}
            seen.add(doc)
            yield models.PointStruct(id=point_id(node.node_id), vector=vector, payload=payload)

    # ------------------------------------------------------------------ open and search

    def check(self) -> dict[str, Any]:
        """The collection's recorded metadata, after checking every build-deciding setting against the config."""
        meta = self.store.metadata()
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise IndexMismatchError(f"{where(self.cfg)}: ragpipe collection format {meta.get('schema_version')}, this ragpipe "
                                     f"reads {SCHEMA_VERSION}; run `ragpipe ingest --rebuild`", key="storage.collection")
        self._check_schema(meta)
        built = {r.name: {"type": r.type} for r in self.cfg.retrieval.retrievers if f"retrieval.retrievers[{r.name}].type" in meta["build"]}
        manifest = Manifest(config_sha256="", embedding=meta.get("embedding"), build=meta["build"], retrievers=built, doc_hashes={}, counts={})
        check_build(manifest, self.cfg, where(self.cfg))
        return meta

    def _check_schema(self, meta: Mapping[str, Any]) -> None:
        """The collection has a named vector per retriever (sparse with ``modifier: idf``) and an avgdl per BM25 leg."""
        params = self.client.get_collection(self.store.physical()).config.params
        dense = params.vectors if isinstance(params.vectors, dict) else {}
        sparse = params.sparse_vectors or {}
        for r in self.cfg.retrieval.retrievers:
            ok = (r.name in dense) if r.type == "dense" else \
                (r.name in sparse and sparse[r.name].modifier == models.Modifier.IDF and r.name in meta.get("avgdl", {}))
            if not ok:
                raise IndexMismatchError(f"{where(self.cfg)}: the collection has no {r.type} vector {r.name!r} as ragpipe builds it; "
                                         "run `ragpipe ingest --rebuild`", key=f"retrieval.retrievers[{r.name}]")

    def dense_size(self) -> int | None:
        """The dense vector's dimension in the collection (None without a dense retriever)."""
        if self.dense_name is None:
            return None
        return int(self.client.get_collection(self.store.physical()).config.params.vectors[self.dense_name].size)

    def search_stack(self, embed_model: Any, reranker: Any = None) -> SearchPipeline:
        """The ``SearchPipeline`` over this collection: legs fused by ``retrieval.fusion`` (or the engine's RRF)."""
        cfg, alias = self.cfg, self.store.alias
        rescore = cfg.storage.quantization != "none"
        legs = {r.name: QdrantLeg(self.client, alias, r.name, r.type, r.candidate_k, embed_model=embed_model,
                                  encoder=self.encoders.get(r.name), hnsw_ef=cfg.storage.hnsw.ef, rescore=rescore)
                for r in cfg.retrieval.retrievers}
        if cfg.storage.fusion == "server_rrf" and len(legs) > 1:
            first = ServerFusion([(legs[r.name], r.weight) for r in cfg.retrieval.retrievers], cfg.retrieval.fusion.rrf_k,
                                 cfg.retrieval.top_k)
            return SearchPipeline(first, cfg.retrieval.top_k, reranker, cfg.rerank.candidates)
        return assemble(cfg, legs, reranker)

    def document_hashes(self) -> dict[str, str]:
        return self.store.document_hashes()

    def counts(self) -> dict[str, int]:
        return {"documents": len(self.document_hashes()), "nodes": self.store.count()}
