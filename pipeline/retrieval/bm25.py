"""BM25Retriever: a LlamaIndex ``BaseRetriever`` on bm25s, fed with our (Korean) tokenizer's tokens.

bm25s never tokenises anything itself: token lists are mapped to ids here and passed as
``bm25s.tokenization.Tokenized``. A document is returned only when it contains a query token and
scores above zero, so a query with no matching term returns ``[]``.

On disk (``persist``): bm25s arrays (``.npy``, no pickle) + ``vocab.index.json``, plus the base
class's ``node_ids.json`` and ``params.json`` (tokenizer spec + BM25 settings).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
from llama_index.core.schema import BaseNode

from ..config import BM25Config
from ..core.errors import IndexStateError
from ..core.progress import progress_enabled
from .lexical import NODE_IDS_FILE, LexicalRetriever, QueryScores
from .tokenizers import Tokenizer

logger = logging.getLogger(__name__)

__all__ = ["BM25Retriever"]


class BM25Retriever(LexicalRetriever):
    """BM25 over bm25s with a pluggable tokenizer; returns the original nodes.

    Usage::

        bm25 = BM25Retriever.from_nodes(nodes, BM25Config(tokenizer={"name": "kiwi"}))
        hits = bm25.search("서울의 인구는?", top_k=5, filters={"category": "여행"})
    """

    kind: ClassVar[str] = "bm25"
    config_class: ClassVar[type] = BM25Config

    def __init__(self, nodes: Sequence[BaseNode], tokenizer: Tokenizer, cfg: BM25Config, *, bm25: Any, **kwargs: Any) -> None:
        self._bm25 = bm25
        super().__init__(nodes, tokenizer, cfg, **kwargs)

    @classmethod
    def from_nodes(cls, nodes: Sequence[BaseNode], cfg: BM25Config, top_k: int | None = None, show_progress: bool = False, *,
                   tokenizer: Tokenizer | None = None, **kwargs: Any) -> BM25Retriever:
        """Tokenise and index ``nodes`` (pass ``tokenizer`` to reuse an already built one)."""
        import bm25s
        from bm25s.tokenization import Tokenized

        tokenizer, docs, tok_seconds = cls.prepare(nodes, cfg, tokenizer, cfg.include_metadata, show_progress)
        t1 = time.perf_counter()
        vocab: dict[str, int] = {}
        ids = [[vocab.setdefault(t, len(vocab)) for t in doc] for doc in docs]
        bm25 = bm25s.BM25(k1=cfg.k1, b=cfg.b, method=cfg.method.value)
        bm25.index(Tokenized(ids=ids, vocab=vocab), show_progress=progress_enabled(show_progress))
        logger.info("BM25 index %r: %d nodes, %d terms (tokenizer %s, %s)", cfg.name, len(nodes), len(vocab), tokenizer.name, cfg.method.value)
        retriever = cls(nodes, tokenizer, cfg, bm25=bm25, similarity_top_k=top_k, **kwargs)
        retriever.build_seconds = {"tokenisation": tok_seconds, "bm25_index": time.perf_counter() - t1}
        return retriever

    def scores(self, query: str) -> QueryScores:
        """BM25 score per node and a mask of nodes containing at least one query token."""
        self._check_query(query)
        ids = self._bm25.get_tokens_ids(self._tokenizer(query))
        n = len(self._nodes)
        if not ids:
            return QueryScores(np.zeros(n, dtype=np.float32), np.zeros(n, dtype=bool))
        matched = np.zeros(n, dtype=bool)
        indptr, indices = self._bm25.scores["indptr"], self._bm25.scores["indices"]
        for t in set(ids):
            matched[indices[indptr[t] : indptr[t + 1]]] = True
        return QueryScores(np.asarray(self._bm25.get_scores_from_ids(ids), dtype=np.float32), matched)

    def _write_arrays(self, folder: Path) -> dict[str, Any]:
        self._bm25.save(folder, corpus=None, allow_pickle=False, show_progress=False)
        return {}

    @classmethod
    def _read_arrays(cls, folder: Path, cfg: Any, nodes: list[BaseNode]) -> dict[str, Any]:
        import bm25s

        bm25 = bm25s.BM25.load(folder, load_corpus=False, allow_pickle=False, show_progress=False)
        num_docs = int(bm25.scores["num_docs"])
        max_id = max((v for k, v in bm25.vocab_dict.items() if k), default=-1)
        if num_docs != len(nodes) or max_id >= len(bm25.scores["indptr"]) - 1:
            raise IndexStateError(f"{folder}: BM25 arrays ({num_docs} docs) do not match {NODE_IDS_FILE} ({len(nodes)} ids); "
                                  "run `ragpipe ingest --rebuild`", path=folder)
        return {"bm25": bm25}
