"""Documents -> nodes: LlamaIndex sentence/token splitters counting in the embedding model's tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llama_index.core import Document
from llama_index.core.schema import BaseNode, NodeRelationship, TextNode

from ..config import ChunkingConfig, EmbeddingConfig, EmbeddingProvider, SplitterType
from ..core.progress import progress_enabled


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
    from ..models.resolve import resolve_model

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
