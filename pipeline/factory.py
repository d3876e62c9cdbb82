"""Validated Config -> LlamaIndex objects. The only module that reads the whole Config."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from llama_index.core import Document
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import BaseNode, MetadataMode, NodeRelationship, TextNode

from ._progress import progress_enabled
from .config import BM25Config, ChunkingConfig, Config, DenseConfig, EmbeddingConfig, EmbeddingProvider, SparseVectorConfig, SplitterType
from .errors import ConfigError

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- chunking


def build_splitter(cfg: ChunkingConfig, tokenizer: Any = None) -> Any | None:
    """LlamaIndex node parser for ``chunking``; None means one node per document."""
    if cfg.splitter == SplitterType.NONE:
        return None
    from llama_index.core.node_parser import SentenceSplitter, TokenTextSplitter

    def id_func(i: int, doc: BaseNode) -> str:
        return f"{doc.node_id}#{i}"

    kwargs: dict[str, Any] = {"chunk_size": cfg.chunk_size, "chunk_overlap": cfg.chunk_overlap, "id_func": id_func}
    if tokenizer is not None:
        kwargs["tokenizer"] = tokenizer
    if cfg.splitter == SplitterType.SENTENCE:
        # Korean sentences end in '다.' '요.' etc. followed by a space or nothing; the default regex handles both
        return SentenceSplitter(paragraph_separator="\n\n", **kwargs)
    return TokenTextSplitter(**kwargs)


def chunk_documents(docs: list[Document], cfg: ChunkingConfig, tokenizer: Any = None, show_progress: bool = False) -> list[TextNode]:
    """Split documents into nodes with stable ids ``<doc_id>#<i>``; each keeps doc id and metadata."""
    splitter = build_splitter(cfg, tokenizer)
    if splitter is None:
        return [
            TextNode(id_=f"{d.doc_id}#0", text=d.text, metadata=dict(d.metadata),
                     relationships={NodeRelationship.SOURCE: d.as_related_node_info()})
            for d in docs
        ]
    return list(splitter.get_nodes_from_documents(docs, show_progress=progress_enabled(show_progress)))


def chunk_token_counter(embedding: EmbeddingConfig) -> Any:
    """Count tokens with the embedding model's own tokenizer, so chunk_size matches its window."""
    from .models import resolve_model

    if embedding.provider == EmbeddingProvider.OPENAI:  # a hosted model: no local tokenizer to count with
        return None
    path = Path(resolve_model(embedding.model))
    tok_file = path / "tokenizer.json"
    if not tok_file.exists():
        return None
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_file))
    tok.no_truncation()
    return lambda text: tok.encode(text, add_special_tokens=False).ids


# --------------------------------------------------------------------------- embedding


def embedding_key(cfg: EmbeddingConfig) -> str:
    """Identity of a passage vector: model, precision, prompt, length, normalisation."""
    from .models import effective_precision

    precision = effective_precision(cfg.precision, cfg.device).value
    key = f"{cfg.provider.value}|{cfg.model}|{precision}|{cfg.passage_prompt}|{cfg.max_length}|{int(cfg.normalize)}|{cfg.dimensions}"
    if cfg.pooling:  # only when set, so keys of existing caches stay valid
        key += "|pooling=" + "+".join(p.value for p in cfg.pooling)
    if cfg.text_model:
        key += f"|text_model={cfg.text_model}"
    return key


def build_cached_embedding(cfg: EmbeddingConfig, show_progress: bool = False) -> BaseEmbedding:
    """The configured embedding, wrapped in the content-hash cache when ``embedding.cache``."""
    from .models import build_embedding

    inner = build_embedding(cfg, show_progress=show_progress)
    if not cfg.cache:
        return inner
    from .embed_cache import CachedEmbedding, EmbeddingCache, default_cache_path

    cached = CachedEmbedding(inner, EmbeddingCache(default_cache_path()), embedding_key(cfg))
    cached.show_progress = show_progress
    return cached


def embed_nodes(embed_model: BaseEmbedding, nodes: list[BaseNode], show_progress: bool = False) -> np.ndarray:
    """Passage vectors for ``nodes`` (text only, metadata excluded), float32 [n, dim]."""
    if any(n.metadata.get("image_path") for n in nodes):  # image documents (data.loader: images)
        from .multimodal import embed_image_nodes

        return embed_image_nodes(embed_model, nodes)
    texts = [n.get_content(metadata_mode=MetadataMode.NONE) for n in nodes]
    if hasattr(embed_model, "get_text_embeddings_array"):
        return embed_model.get_text_embeddings_array(texts)
    return np.asarray(embed_model.get_text_embedding_batch(texts, show_progress=show_progress), dtype=np.float32)


# --------------------------------------------------------------------------- retrievers


@dataclass
class BuiltRetriever:
    """A retriever plus what fusion and the manifest need to know about it."""

    name: str
    retriever: BaseRetriever
    weight: float
    candidate_k: int
    info: dict[str, Any] = field(default_factory=dict)
    build_seconds: dict[str, float] = field(default_factory=dict)


def build_retriever(
    rcfg: BM25Config | SparseVectorConfig | DenseConfig,
    nodes: list[TextNode],
    embed_model: BaseEmbedding | None = None,
    vectors: np.ndarray | None = None,
    show_progress: bool = False,
) -> BuiltRetriever:
    """Build one configured retriever over ``nodes`` (dense needs ``vectors`` in node order)."""
    t0 = time.perf_counter()
    if rcfg.type == "bm25":
        from .bm25 import BM25Retriever

        r = BM25Retriever.from_nodes(nodes, rcfg, top_k=rcfg.candidate_k, show_progress=show_progress)
        info = {"type": "bm25", "tokenizer": r.tokenizer_spec, "k1": rcfg.k1, "b": rcfg.b, "method": rcfg.method.value}
        seconds = r.build_seconds  # tokenisation and indexing, timed apart
    elif rcfg.type in ("tfidf", "bow"):
        from .sparse import SparseVectorRetriever

        r = SparseVectorRetriever.from_nodes(nodes, rcfg, top_k=rcfg.candidate_k, show_progress=show_progress)
        info = {"type": rcfg.type, "tokenizer": r.tokenizer_spec}
        seconds = r.build_seconds
    elif rcfg.type == "dense":
        if embed_model is None or vectors is None:
            raise ConfigError(f"retriever {rcfg.name!r}: dense retrieval needs an embedding model")
        r = _build_dense(rcfg, nodes, embed_model, vectors)
        info = {"type": "dense", "faiss": rcfg.faiss.model_dump(mode="json")}
        seconds = {"faiss_build": time.perf_counter() - t0}
    else:  # pragma: no cover - pydantic rejects unknown types first
        raise ConfigError(f"unknown retriever type {rcfg.type!r}")
    return BuiltRetriever(rcfg.name, r, rcfg.weight, rcfg.candidate_k, info, seconds)


def _build_dense(rcfg: DenseConfig, nodes: list[TextNode], embed_model: BaseEmbedding, vectors: np.ndarray) -> BaseRetriever:
    from .dense import DenseRetriever
    from .stores import FaissVectorStore

    store = FaissVectorStore(rcfg.faiss, dim=int(vectors.shape[1]))
    for node, vec in zip(nodes, vectors):
        node.embedding = vec.tolist()
    store.add(nodes)
    for node in nodes:
        node.embedding = None
    return DenseRetriever(embed_model, store, {n.node_id: n for n in nodes}, similarity_top_k=rcfg.candidate_k)


def persist_retriever(built: BuiltRetriever, folder: Path) -> None:
    """Write one retriever's files into ``folder``."""
    r = built.retriever
    if built.info["type"] == "dense":
        r.vector_store.persist(str(folder))
    else:
        r.persist(folder)


def load_retriever(
    rcfg: BM25Config | SparseVectorConfig | DenseConfig,
    folder: Path,
    nodes_by_id: Mapping[str, BaseNode],
    embed_model: BaseEmbedding | None,
) -> BaseRetriever:
    """Load one persisted retriever, its tokenizer rebuilt from the persisted spec."""
    if rcfg.type == "bm25":
        from .bm25 import BM25Retriever, check_tokenizer

        r = BM25Retriever.from_persist_dir(folder, nodes_by_id)
        check_tokenizer(r.tokenizer_spec, rcfg.tokenizer)
    elif rcfg.type in ("tfidf", "bow"):
        from .bm25 import check_tokenizer
        from .sparse import SparseVectorRetriever

        r = SparseVectorRetriever.from_persist_dir(folder, nodes_by_id)
        check_tokenizer(r.tokenizer_spec, rcfg.tokenizer)
    else:
        from .dense import DenseRetriever
        from .stores import FaissVectorStore

        store = FaissVectorStore.from_persist_dir(str(folder))
        r = DenseRetriever(embed_model, store, nodes_by_id, similarity_top_k=rcfg.candidate_k)
    r.similarity_top_k = rcfg.candidate_k
    return r


def build_fusion(built: list[BuiltRetriever], cfg: Config, top_k: int) -> BaseRetriever:
    """One retriever as is, several fused by ``retrieval.fusion``."""
    if len(built) == 1:
        only = built[0].retriever
        only.similarity_top_k = max(top_k, built[0].candidate_k)
        return only
    from .fusion import FusionRetriever, RetrieverEntry

    entries = [RetrieverEntry(b.name, b.retriever, b.weight, b.candidate_k) for b in built]
    return FusionRetriever(entries, cfg.retrieval.fusion, top_k=top_k)
