"""Snapshots: an index opened (or built in memory) as an immutable set of retrievers behind one ``SearchPipeline``.

The same ``assemble`` turns retriever legs into the searched stack whether they were loaded from an
index version (CLI, ``Pipeline``, HTTP service) or built in memory (evaluation), so every door runs
the same fusion, rerank depth and validation. A changed snapshot is always a new object built beside
the served one and swapped in by reference; nothing in a snapshot changes after that.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.schema import TextNode

from ..config import Config
from ..core.errors import IndexStateError
from ..core.io import atomic_directory, sha256_text
from ..retrieval.fusion import FusionRetriever, RetrieverEntry
from ..retrieval.search import SearchPipeline
from . import index_dir
from .integrity import check_build, expected_build
from .registry import BuiltRetriever, build_retriever, kind_of

logger = logging.getLogger(__name__)

RETRIEVERS_DIR = "retrievers"


def doc_hash(doc: Any) -> str:
    """Content identity of a document: its text and metadata."""
    return sha256_text(doc.text + "\x00" + repr(sorted(doc.metadata.items())))


def group_nodes(nodes: Mapping[str, TextNode]) -> dict[str, tuple[str, ...]]:
    """doc_id -> its node ids, in node order."""
    out: dict[str, list[str]] = {}
    for node_id, node in nodes.items():
        out.setdefault(node.ref_doc_id or node_id, []).append(node_id)
    return {k: tuple(v) for k, v in out.items()}


@dataclass(frozen=True)
class Snapshot:
    """One consistent view of an index: documents, nodes, retriever legs and the stack that searches them.

    ``version`` and ``wal_end`` say which persisted version and how much of its write-ahead log it holds.
    """

    search: SearchPipeline
    nodes: Mapping[str, TextNode]
    legs: Mapping[str, Any]
    documents: Mapping[str, Any] = field(default_factory=dict)
    doc_nodes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    version: str | None = None
    wal_end: int = 0
    wal_records: int = 0
    manifest: index_dir.Manifest | None = None
    embedding: dict[str, Any] | None = None
    api_ids: frozenset[str] = frozenset()  # documents whose last write came through upsert (the API owns them)

    @cached_property
    def metadata_keys(self) -> frozenset[str]:
        """Every metadata key some node has (what a filter can match; computed on first use)."""
        return frozenset(k for n in self.nodes.values() for k in n.metadata)


def assemble(cfg: Config, legs: Mapping[str, Any], reranker: Any = None) -> SearchPipeline:
    """The search stack for ``cfg`` over ready legs: one leg as is, several fused by ``retrieval.fusion``.

    Only query-time settings are read here (top_k, candidate_k, weights, fusion, rerank depth), so a
    legs set may be shared by setups that differ in those (evaluation sweeps).
    """
    rcfgs = cfg.retrieval.retrievers
    if len(rcfgs) == 1:
        first: Any = legs[rcfgs[0].name]
    else:
        entries = [RetrieverEntry(r.name, legs[r.name], r.weight, r.candidate_k) for r in rcfgs]
        first = FusionRetriever(entries, cfg.retrieval.fusion, top_k=cfg.retrieval.top_k, aggregate=cfg.retrieval.aggregate,
                                aggregate_rest=cfg.retrieval.aggregate_rest)
    return SearchPipeline(first, cfg.retrieval.top_k, reranker, cfg.rerank.candidates)


def build_legs(cfg: Config, nodes: list[TextNode], embed_model: BaseEmbedding | None, vectors: np.ndarray | None,
               show_progress: bool = False) -> dict[str, BuiltRetriever]:
    """Build every configured retriever over ``nodes`` (dense legs use ``vectors`` in node order)."""
    return {r.name: build_retriever(r, nodes, embed_model, vectors if kind_of(r).needs_vectors else None, show_progress)
            for r in cfg.retrieval.retrievers}


def in_memory(cfg: Config, documents: list[Any], nodes: list[TextNode], legs: Mapping[str, Any], reranker: Any = None,
              embedding: dict[str, Any] | None = None) -> Snapshot:
    """A snapshot of freshly built legs (not yet persisted)."""
    by_id = {n.node_id: n for n in nodes}
    return Snapshot(assemble(cfg, legs, reranker), by_id, dict(legs), {d.doc_id: d for d in documents}, group_nodes(by_id),
                    embedding=embedding)


def write_version(folder: Path, cfg: Config, snapshot: Snapshot) -> Snapshot:
    """Persist ``snapshot`` as the next version, point ``CURRENT`` at it, drop all but the previous version.

    The caller holds the writer lock. Returns the snapshot tagged with its version and an empty log.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        previous = index_dir.read_current(folder)
    except IndexStateError:  # a rebuild over a damaged or older index: nothing to keep
        previous = None
    version = index_dir.next_version(folder)
    rcfgs = {r.name: r for r in cfg.retrieval.retrievers}
    documents = list(snapshot.documents.values())
    hashes = {d.doc_id: doc_hash(d) for d in documents}
    with atomic_directory(folder / version) as tmp:
        for name, leg in snapshot.legs.items():
            kind_of(rcfgs[name]).persist(leg, tmp / RETRIEVERS_DIR / name)
        index_dir.write_docstore(tmp / index_dir.DOCSTORE, list(snapshot.nodes.values()))
        index_dir.write_documents(tmp / index_dir.DOCUMENTS, documents)
        manifest = index_dir.Manifest(
            config_sha256=cfg.fingerprint(), embedding=snapshot.embedding, build=expected_build(cfg),
            retrievers={name: {"type": rcfgs[name].type} for name in snapshot.legs}, doc_hashes=hashes,
            counts={"documents": len(documents), "nodes": len(snapshot.nodes)}, api_written=sorted(snapshot.api_ids),
        )
        index_dir.write_manifest(tmp, manifest, cfg)
    index_dir.write_current(folder, version)
    index_dir.prune_versions(folder, {version, previous} - {None})
    logger.info("wrote index version %s (%d documents, %d nodes) in %s", version, len(documents), len(snapshot.nodes), folder)
    return replace(snapshot, version=version, wal_end=0, wal_records=0, manifest=manifest)


def open_version(folder: Path, version: str, cfg: Config, embed_model: BaseEmbedding | None, reranker: Any = None) -> Snapshot:
    """Read one version folder into a new snapshot, after checking every build-deciding setting against ``cfg``."""
    path = Path(folder) / version
    manifest = index_dir.read_manifest(path)
    check_build(manifest, cfg, path)
    nodes = index_dir.read_docstore(path / index_dir.DOCSTORE)
    documents = index_dir.read_documents(path / index_dir.DOCUMENTS)
    legs = {r.name: kind_of(r).load(r, path / RETRIEVERS_DIR / r.name, nodes, embed_model) for r in cfg.retrieval.retrievers}
    return Snapshot(assemble(cfg, legs, reranker), nodes, legs, {d.doc_id: d for d in documents}, group_nodes(nodes),
                    version=version, manifest=manifest, embedding=manifest.embedding, api_ids=frozenset(manifest.api_written))
