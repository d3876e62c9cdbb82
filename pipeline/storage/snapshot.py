"""Snapshots: an index opened (or built in memory) as an immutable set of retrievers behind one ``SearchPipeline``.

The same ``assemble`` turns retriever legs into the searched stack whether they were loaded from an
index folder (``open_snapshot``: CLI, ``Pipeline``, HTTP service) or built in memory (``build_legs``:
evaluation), so every door runs the same fusion, rerank depth and validation. A new snapshot is
built beside the served one and swapped in by reference; nothing in a snapshot changes after that.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.schema import TextNode

from ..config import Config
from ..retrieval.fusion import FusionRetriever, RetrieverEntry
from ..retrieval.search import SearchPipeline
from . import index_dir
from .integrity import check_build, expected_build
from .registry import BuiltRetriever, build_retriever, kind_of

logger = logging.getLogger(__name__)

RETRIEVERS_DIR = "retrievers"


@dataclass(frozen=True)
class Snapshot:
    """One consistent view of an index: its nodes, its retriever legs and the stack that searches them."""

    search: SearchPipeline
    nodes: Mapping[str, TextNode]
    legs: Mapping[str, Any]
    manifest: index_dir.Manifest | None = None


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
        first = FusionRetriever(entries, cfg.retrieval.fusion, top_k=cfg.retrieval.top_k)
    return SearchPipeline(first, cfg.retrieval.top_k, reranker, cfg.rerank.candidates)


def build_legs(cfg: Config, nodes: list[TextNode], embed_model: BaseEmbedding | None, vectors: np.ndarray | None,
               show_progress: bool = False) -> dict[str, BuiltRetriever]:
    """Build every configured retriever over ``nodes`` (dense legs use ``vectors`` in node order)."""
    return {r.name: build_retriever(r, nodes, embed_model, vectors if kind_of(r).needs_vectors else None, show_progress)
            for r in cfg.retrieval.retrievers}


def write_snapshot(folder: Path, cfg: Config, built: Mapping[str, BuiltRetriever], nodes: list[TextNode], documents: list[Any],
                   embedding: dict[str, Any] | None, doc_hashes: dict[str, str]) -> index_dir.Manifest:
    """Write a complete index into ``folder`` (a fresh temp folder); the manifest goes last."""
    rcfgs = {r.name: r for r in cfg.retrieval.retrievers}
    for name, b in built.items():
        kind_of(rcfgs[name]).persist(b.retriever, folder / RETRIEVERS_DIR / name)
    index_dir.write_docstore(folder / index_dir.DOCSTORE, nodes)
    index_dir.write_documents(folder / index_dir.DOCUMENTS, documents)
    manifest = index_dir.Manifest(
        config_sha256=cfg.fingerprint(), embedding=embedding, build=expected_build(cfg),
        retrievers={name: {"type": rcfgs[name].type} for name in built}, doc_hashes=doc_hashes,
        counts={"documents": len(documents), "nodes": len(nodes)},
    )
    index_dir.write_manifest(folder, manifest, cfg)
    return manifest


def open_snapshot(folder: Path, cfg: Config, embed_model: BaseEmbedding | None, reranker: Any = None) -> Snapshot:
    """Read an index folder into a new snapshot, after checking every build-deciding setting against ``cfg``."""
    manifest = index_dir.read_manifest(folder)
    check_build(manifest, cfg, folder)
    nodes = index_dir.read_docstore(folder / index_dir.DOCSTORE)
    legs = {r.name: kind_of(r).load(r, folder / RETRIEVERS_DIR / r.name, nodes, embed_model) for r in cfg.retrieval.retrievers}
    return Snapshot(assemble(cfg, legs, reranker), nodes, legs, manifest)
