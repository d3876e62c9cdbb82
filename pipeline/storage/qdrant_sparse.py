"""Korean BM25 as Qdrant sparse vectors: kiwi morphemes in, the engine keeps the statistics.

A chunk is sent as its BM25-saturated term frequencies, ``tf / (tf + k1 * (1 - b + b * len / avgdl))``
(bm25s's own Lucene formula), with ``avgdl`` fixed per collection at its first build. The query is sent as
its term counts. The collection's sparse vector has ``modifier: idf``, so the engine multiplies each query
term by ``ln(1 + (N - df + 0.5) / (df + 0.5))`` over the *live* collection, which is bm25s's Lucene IDF:
``sum(count * idf * saturated tf)`` is the Lucene BM25 score. Writers hold no shared vocabulary or
statistics: a term's id is a 32-bit hash of the morpheme (1 expected collision pair at ~100k distinct
terms), and a frozen ``avgdl`` barely matters (measured: 2x off moved KLUE MRR@10 by at most 0.011),
while IDF, which does matter, is always the engine's own.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any, Sequence

import numpy as np
from llama_index.core.schema import BaseNode
from qdrant_client import models

from ..retrieval.bm25 import saturated_tf
from ..retrieval.lexical import index_text
from ..retrieval.tokenizers import Tokenizer, build_tokenizer


def term_id(token: str) -> int:
    """A stable unsigned 32-bit id for a token (the same on every writer, without a shared vocabulary)."""
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=4).digest(), "little")


def _counts(tokens: Sequence[str]) -> tuple[list[int], np.ndarray]:
    """Sorted unique term ids and their counts (colliding tokens add up, as one term)."""
    counter = Counter(term_id(t) for t in tokens)
    ids = sorted(counter)
    return ids, np.fromiter((counter[i] for i in ids), dtype=np.float32, count=len(ids))


class BM25Encoder:
    """Tokenises chunks and queries for one BM25 retriever config and turns them into sparse vectors."""

    def __init__(self, rcfg: Any, tokenizer: Tokenizer | None = None) -> None:
        self.cfg = rcfg
        self.tokenizer = tokenizer or build_tokenizer(rcfg.tokenizer)

    def tokens(self, nodes: Sequence[BaseNode], show_progress: bool = False) -> list[list[str]]:
        """Each node's indexed tokens (text plus ``include_metadata`` values)."""
        return self.tokenizer.tokenize_many([index_text(n, self.cfg.include_metadata) for n in nodes], show_progress=show_progress)

    def documents(self, token_lists: Sequence[Sequence[str]], avgdl: float) -> list[models.SparseVector]:
        """Saturated term frequencies per chunk (an empty vector for a chunk without tokens)."""
        out = []
        for tokens in token_lists:
            ids, tf = _counts(tokens)
            values = saturated_tf(tf, float(len(tokens)), avgdl, self.cfg) if ids else tf
            out.append(models.SparseVector(indices=ids, values=[float(v) for v in values]))
        return out

    def query(self, text: str) -> models.SparseVector | None:
        """The query's term counts; None when it has no indexable term (the leg is then skipped)."""
        ids, counts = _counts(self.tokenizer(text))
        return models.SparseVector(indices=ids, values=[float(c) for c in counts]) if ids else None


def average_length(token_lists: Sequence[Sequence[str]]) -> float:
    """The average document length a new collection freezes (1.0 for an empty corpus)."""
    return float(np.mean([len(t) for t in token_lists])) if token_lists else 1.0
