"""BM25Retriever: BM25 with bm25s's scoring formulas over our (Korean) tokenizer's token ids, updatable in place.

bm25s precomputes every (document, term) score, so any change to the corpus (its size or average
length) means recomputing them all: a write would cost what the corpus costs. Ours keeps term
frequencies in posting segments and scores at query time with bm25s's own idf and tf functions
(``bm25s.scoring``), so a write costs what it changes: deleted rows are masked, added documents
become a small new segment, and document frequencies, the live count and the total length are
adjusted by the changed documents only. Segments are merged as they pile up and rebuilt whole when the
index is persisted. ``tests/comparison`` checks the scores against bm25s for all five methods.

A document is returned only when it contains a query token and scores above zero, so a query with no
matching term returns ``[]``.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Sequence

import numpy as np
from llama_index.core.schema import BaseNode

from ..config import BM25Config
from .lexical import LexicalRetriever, QueryScores, encode, index_text

logger = logging.getLogger(__name__)

__all__ = ["BM25Index", "BM25Retriever"]

MAX_SEGMENTS = 8  # delta segments beyond the first are merged past this
_NONOCCURRENCE = ("bm25l", "bm25+")


class _Segment(NamedTuple):
    """Postings of rows ``start..start+n``: for term t, ``rows[indptr[t]:indptr[t+1]]`` with their ``tf``."""

    start: int
    indptr: np.ndarray
    rows: np.ndarray
    tf: np.ndarray


def _segment(tokens: Sequence[np.ndarray], start: int, n_terms: int) -> _Segment:
    lengths = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=len(tokens))
    flat = np.concatenate(tokens).astype(np.int64) if len(tokens) else np.zeros(0, np.int64)
    width = max(n_terms, 1)
    pairs, tf = np.unique(np.repeat(np.arange(len(tokens), dtype=np.int64), lengths) * width + flat, return_counts=True)
    terms, docs = pairs % width, pairs // width
    order = np.argsort(terms, kind="stable")  # by term, rows ascending within a term
    indptr = np.zeros(n_terms + 1, dtype=np.int64)
    np.cumsum(np.bincount(terms, minlength=n_terms), out=indptr[1:])
    return _Segment(start, indptr, (docs[order] + start).astype(np.int64), tf[order].astype(np.float32))


@functools.lru_cache(maxsize=None)
def _formulas(method: str) -> tuple[Any, Any, float]:
    """bm25s's idf and tf functions for ``method``, and its default ``delta`` (looked up once, not per query)."""
    import bm25s
    from bm25s import scoring

    delta = float(inspect.signature(bm25s.BM25).parameters["delta"].default)
    return scoring._select_idf_scorer(method), scoring._select_tfc_scorer(method), delta


def saturated_tf(tf: np.ndarray, length: float, avgdl: float, cfg: BM25Config) -> np.ndarray:
    """bm25s's term-frequency component for ``cfg.method`` (a document of ``length`` tokens, corpus average ``avgdl``).

    The Qdrant backend sends it as a chunk's sparse vector and lets the engine apply the IDF.
    """
    _, tfc_fn, delta = _formulas(cfg.method.value)
    return np.asarray(tfc_fn(tf_array=np.asarray(tf, dtype=np.float32), l_d=np.float32(length), l_avg=np.float32(avgdl),
                             k1=cfg.k1, b=cfg.b, delta=delta), dtype=np.float32)


@dataclass(frozen=True)
class BM25Index:
    """Immutable BM25 statistics and postings over rows (a row is a node, live or deleted)."""

    cfg: BM25Config
    segments: tuple[_Segment, ...]
    lengths: np.ndarray  # float32 per row
    alive: np.ndarray  # bool per row
    df: np.ndarray  # live document frequency per term
    n_live: int
    total_length: float

    @classmethod
    def build(cls, cfg: BM25Config, tokens: Sequence[np.ndarray], n_terms: int) -> "BM25Index":
        lengths = np.fromiter((len(t) for t in tokens), dtype=np.float32, count=len(tokens))
        seg = _segment(tokens, 0, n_terms)
        return cls(cfg, (seg,), lengths, np.ones(len(tokens), dtype=bool), np.diff(seg.indptr), len(tokens), float(lengths.sum()))

    def changed(self, tokens: Sequence[np.ndarray], removed: Sequence[int], added: Sequence[np.ndarray], n_terms: int) -> "BM25Index":
        """Rows ``removed`` masked and ``added`` appended (``tokens``: every row's token ids, added ones last)."""
        alive = self.alive.copy()
        df = np.zeros(n_terms, dtype=np.int64)
        df[: len(self.df)] = self.df
        gone = [r for r in removed if alive[r]]
        alive[gone] = False
        for r in gone:
            df[np.unique(tokens[r])] -= 1
        for t in added:
            df[np.unique(t)] += 1
        start = len(self.lengths)
        new_lengths = np.fromiter((len(t) for t in added), dtype=np.float32, count=len(added))
        segments = self.segments + ((_segment(added, start, n_terms),) if len(added) else ())
        if len(segments) > MAX_SEGMENTS:  # merge the deltas: cost of the deltas only
            first = segments[1].start
            segments = (segments[0], _segment(tokens[first:], first, n_terms))
        return BM25Index(self.cfg, segments, np.concatenate([self.lengths, new_lengths]), np.concatenate([alive, np.ones(len(added), bool)]),
                         df, self.n_live - len(gone) + len(added), self.total_length - float(self.lengths[gone].sum()) + float(new_lengths.sum()))

    def scores(self, ids: Sequence[int]) -> QueryScores:
        """Score per row (bm25s's formulas; a query token counts as often as it occurs) and rows holding a query token."""
        n = len(self.lengths)
        out, matched = np.zeros(n, dtype=np.float32), np.zeros(n, dtype=bool)
        if not ids or not self.n_live:
            return QueryScores(out, matched)
        cfg, method = self.cfg, self.cfg.method.value
        idf_fn, tfc_fn, delta = _formulas(method)
        avg = np.float32(self.total_length / self.n_live)
        background = 0.0
        for t, count in Counter(ids).items():
            if t >= len(self.df) or self.df[t] <= 0:
                continue
            idf = np.float32(idf_fn(int(self.df[t]), N=self.n_live))
            zero = idf * np.float32(tfc_fn(tf_array=0, l_d=avg, l_avg=avg, k1=cfg.k1, b=cfg.b, delta=delta)) if method in _NONOCCURRENCE else 0.0
            background += count * zero
            for seg in self.segments:
                if t + 1 >= len(seg.indptr) or seg.indptr[t] == seg.indptr[t + 1]:
                    continue
                rows, tf = seg.rows[seg.indptr[t] : seg.indptr[t + 1]], seg.tf[seg.indptr[t] : seg.indptr[t + 1]]
                s = idf * tfc_fn(tf_array=tf, l_d=self.lengths[rows], l_avg=avg, k1=cfg.k1, b=cfg.b, delta=delta) - zero
                out[rows] += np.float32(count) * s.astype(np.float32)
                matched[rows] = True
        if background:
            out += np.float32(background)
        matched &= self.alive
        out[~self.alive] = 0.0
        return QueryScores(out, matched)


class BM25Retriever(LexicalRetriever):
    """BM25 with a pluggable tokenizer; returns the original nodes.

    Usage::

        bm25 = BM25Retriever.from_nodes(nodes, BM25Config(tokenizer={"name": "kiwi"}))
        hits = bm25.search("서울의 인구는?", top_k=5, filters={"category": "여행"})
    """

    kind: ClassVar[str] = "bm25"
    config_class: ClassVar[type] = BM25Config

    def __init__(self, *args: Any, state: BM25Index | None = None, **kwargs: Any) -> None:
        self._state = state
        super().__init__(*args, **kwargs)

    def _index(self) -> None:
        if self._state is None:
            self._state = BM25Index.build(self.cfg, self._tokens, len(self._terms))
        self._alive = self._state.alive

    def with_changes(self, remove_ids: set[str], add: Sequence[BaseNode]) -> "BM25Retriever":
        """A new retriever without ``remove_ids`` and with ``add``: only ``add`` is tokenised, and the statistics
        change by the changed documents only (no rebuild); scores equal those of a retriever built from scratch."""
        drop = set(remove_ids) | {n.node_id for n in add}
        removed = [r for node_id in drop if (r := self._row_of.get(node_id)) is not None]
        lists = self._tokenizer.tokenize_many([index_text(n, self.cfg.include_metadata) for n in add])
        terms, term_ids = list(self._terms), dict(self._term_ids)
        added = encode(lists, terms, term_ids)
        tokens = self._tokens + added
        state = self._state.changed(tokens, removed, added, len(terms))
        row_of = {k: r for k, r in self._row_of.items() if k not in drop} if drop else dict(self._row_of)
        row_of.update({n.node_id: len(self._nodes) + i for i, n in enumerate(add)})
        return BM25Retriever(self._nodes + list(add), self._tokenizer, self.cfg, tokens, terms, state=state, term_ids=term_ids,
                             row_of=row_of, similarity_top_k=self.similarity_top_k, filters=self.filters)

    def scores(self, query: str) -> QueryScores:
        """BM25 score per row and a mask of live rows containing at least one query token."""
        self._check_query(query)
        return self._state.scores([self._term_ids[t] for t in self._tokenizer(query) if t in self._term_ids])
