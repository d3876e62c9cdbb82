"""Retriever registry: one entry per ``type`` says how to build, persist, load and describe it.

Adding a retriever type is one module (the retriever) plus one entry here. ``update`` returns a new
retriever with nodes removed and added (only the added ones are tokenised or embedded); the old one
keeps serving queries until the new snapshot replaces it. ``describe`` gives the
settings that decide what is built (persisted in the manifest and compared on load); the rest act at
search time only (``name``, ``candidate_k``, ``weight``, FAISS ``ef_search`` / ``nprobe``) and may
change without a rebuild.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.schema import BaseNode, TextNode

from ..core.errors import ConfigError
from ..retrieval.tokenizers import expected_spec
from .faiss_store import BUILD_FIELDS as FAISS_BUILD_FIELDS

_LEG_QUERY_TIME = frozenset({"name", "candidate_k", "weight"})


@dataclass
class BuiltRetriever:
    """A freshly built retriever with its build timings."""

    name: str
    retriever: Any
    build_seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RetrieverKind:
    """How one retriever type is built, updated (copy-on-write), persisted, loaded and described."""

    build: Callable[[Any, list[TextNode], BaseEmbedding | None, np.ndarray | None, bool], Any]
    update: Callable[[Any, set[str], list[TextNode], np.ndarray | None, Mapping[str, BaseNode]], Any]
    load: Callable[[Any, Path, Mapping[str, BaseNode], BaseEmbedding | None], Any]
    persist: Callable[[Any, Path], None]
    needs_vectors: bool = False

    def describe(self, rcfg: Any) -> dict[str, Any]:
        """Build-deciding settings of ``rcfg`` as dotted keys: the config without its query-time fields
        (name, candidate_k, weight), the tokenizer as its full expected spec, FAISS as the fields its index type uses."""
        raw = rcfg.model_dump(mode="json", exclude=set(_LEG_QUERY_TIME))
        if "tokenizer" in raw:
            try:
                raw["tokenizer"] = expected_spec(rcfg.tokenizer)
            except ConfigError as exc:  # name the retriever: "tokenizer.name" alone does not say which
                raise ConfigError(f"retrieval.retrievers[{rcfg.name}].{exc}", key=f"retrieval.retrievers[{rcfg.name}].{exc.key}",
                                  value=exc.value) from exc
        if "faiss" in raw:
            kind = raw["faiss"]["index_type"]
            raw["faiss"] = {"index_type": kind, **{f: raw["faiss"][f] for f in FAISS_BUILD_FIELDS[kind]}}
        return flatten(raw)


def flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


# --------------------------------------------------------------------------- lexical


def _build_bm25(rcfg: Any, nodes: list[TextNode], embed: Any, vectors: Any, show_progress: bool) -> Any:
    from ..retrieval.bm25 import BM25Retriever

    return BM25Retriever.from_nodes(nodes, rcfg, top_k=rcfg.candidate_k, show_progress=show_progress)


def _load_bm25(rcfg: Any, folder: Path, nodes_by_id: Mapping[str, BaseNode], embed: Any) -> Any:
    from ..retrieval.bm25 import BM25Retriever

    return BM25Retriever.from_persist_dir(folder, nodes_by_id, top_k=rcfg.candidate_k)


def _build_sparse(rcfg: Any, nodes: list[TextNode], embed: Any, vectors: Any, show_progress: bool) -> Any:
    from ..retrieval.sparse import SparseVectorRetriever

    return SparseVectorRetriever.from_nodes(nodes, rcfg, top_k=rcfg.candidate_k, show_progress=show_progress)


def _load_sparse(rcfg: Any, folder: Path, nodes_by_id: Mapping[str, BaseNode], embed: Any) -> Any:
    from ..retrieval.sparse import SparseVectorRetriever

    return SparseVectorRetriever.from_persist_dir(folder, nodes_by_id, top_k=rcfg.candidate_k)


def _update_lexical(leg: Any, remove: set[str], add: list[TextNode], vectors: Any, nodes_by_id: Mapping[str, BaseNode]) -> Any:
    return leg.with_changes(remove, add)


def _persist_own(retriever: Any, folder: Path) -> None:
    retriever.persist(folder)


# --------------------------------------------------------------------------- dense


def _build_dense(rcfg: Any, nodes: list[TextNode], embed: BaseEmbedding | None, vectors: np.ndarray | None, show_progress: bool) -> Any:
    from ..retrieval.dense import DenseRetriever
    from .faiss_store import FaissVectorStore

    if vectors is None:
        raise ConfigError(f"retriever {rcfg.name!r}: dense retrieval needs passage vectors (an embedding model)", key="retrieval.retrievers")
    store = FaissVectorStore(rcfg.faiss, dim=int(vectors.shape[1]))
    store.add_vectors(nodes, vectors)
    return DenseRetriever(embed, store, {n.node_id: n for n in nodes}, similarity_top_k=rcfg.candidate_k)


def _update_dense(leg: Any, remove: set[str], add: list[TextNode], vectors: np.ndarray | None, nodes_by_id: Mapping[str, BaseNode]) -> Any:
    from ..retrieval.dense import DenseRetriever

    store = leg.vector_store.copy()
    store.delete_nodes(sorted(remove))
    if add:
        store.add_vectors(add, vectors)
    return DenseRetriever(leg.embed_model, store, nodes_by_id, similarity_top_k=leg.similarity_top_k, filters=leg.filters)


def _load_dense(rcfg: Any, folder: Path, nodes_by_id: Mapping[str, BaseNode], embed: BaseEmbedding | None) -> Any:
    from ..retrieval.dense import DenseRetriever
    from .faiss_store import FaissVectorStore

    store = FaissVectorStore.from_persist_dir(folder, query_config=rcfg.faiss)
    return DenseRetriever(embed, store, nodes_by_id, similarity_top_k=rcfg.candidate_k)


def _persist_dense(retriever: Any, folder: Path) -> None:
    retriever.vector_store.persist(str(folder))


REGISTRY: dict[str, RetrieverKind] = {
    "bm25": RetrieverKind(_build_bm25, _update_lexical, _load_bm25, _persist_own),
    "tfidf": RetrieverKind(_build_sparse, _update_lexical, _load_sparse, _persist_own),
    "bow": RetrieverKind(_build_sparse, _update_lexical, _load_sparse, _persist_own),
    "dense": RetrieverKind(_build_dense, _update_dense, _load_dense, _persist_dense, needs_vectors=True),
}


def kind_of(rcfg: Any) -> RetrieverKind:
    """The registry entry for ``rcfg.type``; an unknown type names the registered ones."""
    try:
        return REGISTRY[rcfg.type]
    except KeyError:
        raise ConfigError(f"retriever type {rcfg.type!r} is not one of: {', '.join(REGISTRY)}", key="retrieval.retrievers") from None


def build_retriever(rcfg: Any, nodes: list[TextNode], embed_model: BaseEmbedding | None = None, vectors: np.ndarray | None = None,
                    show_progress: bool = False) -> BuiltRetriever:
    """Build one configured retriever over ``nodes`` (dense needs ``vectors`` in node order)."""
    t0 = time.perf_counter()
    retriever = kind_of(rcfg).build(rcfg, nodes, embed_model, vectors, show_progress)
    seconds = dict(getattr(retriever, "build_seconds", {}) or {"faiss_build": time.perf_counter() - t0})
    return BuiltRetriever(rcfg.name, retriever, seconds)
