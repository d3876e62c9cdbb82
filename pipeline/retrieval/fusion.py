"""FusionRetriever: fuse any number of LlamaIndex retrievers, matched on ``node_id``.

Modes (``FusionMode``), each applying the retriever's weight ``w``:

* ``rrf``               sum of ``w / (k + rank)``, rank from 1 (Cormack et al. 2009, https://doi.org/10.1145/1571941.1572114)
* ``relative_score``    min-max scale each retriever's scores to [0, 1], then weighted sum
* ``dist_based_score``  scale by mean +- 3 std of each retriever's scores (as LlamaIndex does), then weighted sum
* ``simple``            max over retrievers of ``w * score``

Duplicates are merged by ``node_id`` before the top-k cut; ties are broken by (best single rank, node_id).

``aggregate="document"`` fuses per document instead of per chunk: each retriever's chunks are grouped by
document (score: the best chunk's, plus ``aggregate_rest`` times the sum of the others), the documents are
fused as above, and each winning document is returned as its best chunk (the chunk of the retriever that
contributed most to its fused score). A document whose BM25 evidence and dense evidence sit in different
chunks then gets both.
Retrievers run one after another in the calling thread; no LLM is involved. Nothing is stored on the
fusion or its retrievers during a call (``search`` takes top_k, filters and depths as arguments), so
one instance serves many threads.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Sequence, Union

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, QueryType

from ..config import FusionConfig, FusionMode
from ..core.errors import ConfigError, RetrievalError
from .filters import FilterSpec, as_filters

logger = logging.getLogger(__name__)

RetrieveFn = Callable[[QueryBundle, int], list[NodeWithScore]]
"""A callable ``(query_bundle, depth) -> ranked nodes``, an alternative to a ``BaseRetriever``."""


class RetrieverEntry(NamedTuple):
    """One fused retriever: a unique name, the retriever, its weight and its candidate depth.

    Depth: a retriever with a stateless ``search(query, top_k, filters, timings)`` (all of ours) is asked for
    ``candidate_k`` nodes; a ``RetrieveFn`` gets it as its second argument; any other ``BaseRetriever`` is
    called as is and its list truncated. A retriever with weight 0 is not queried at all.
    """

    name: str
    retriever: Union[BaseRetriever, RetrieveFn]
    weight: float = 1.0
    candidate_k: int = 20


@dataclass
class FusionTrace:
    """Per-call detail: seconds per retriever (+ ``"fusion"``) and each node's (rank, score) per retriever."""

    timings: dict[str, float] = field(default_factory=dict)
    hits: dict[str, dict[str, tuple[int, float | None]]] = field(default_factory=dict)


class FusionResult(NamedTuple):
    nodes: list[NodeWithScore]
    trace: FusionTrace


class FusionRetriever(BaseRetriever):
    """Weighted fusion of several retrievers.

    Usage::

        fused = FusionRetriever(
            [RetrieverEntry("bm25", bm25, 1.0, 20), RetrieverEntry("dense", dense, 1.0, 20)],
            FusionConfig(mode="rrf"), top_k=5,
        )
        nodes, trace = fused.retrieve_with_trace("서울의 인구는?", top_k=3, filters={"category": "여행"})

    :raises ConfigError: no retrievers, repeated names, negative weights, all weights 0, or k < 1.
    """

    def __init__(self, retrievers: Sequence[RetrieverEntry], config: FusionConfig | None = None,
                 top_k: int = 5, aggregate: str = "chunk", aggregate_rest: float = 0.0, **kwargs: object) -> None:
        entries = [RetrieverEntry(*e) for e in retrievers]
        if not entries:
            raise ConfigError("FusionRetriever needs at least one retriever", key="retrieval.retrievers")
        names = [e.name for e in entries]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"retriever names must be unique; repeated: {', '.join(dupes)}", key="name")
        for e in entries:
            if e.weight < 0:
                raise ConfigError(f"retriever {e.name!r}: weight = {e.weight} must be >= 0", key="weight", value=e.weight)
            if e.candidate_k < 1:
                raise ConfigError(f"retriever {e.name!r}: candidate_k = {e.candidate_k} must be >= 1",
                                  key="candidate_k", value=e.candidate_k)
            if not isinstance(e.retriever, BaseRetriever) and not callable(e.retriever):
                raise ConfigError(f"retriever {e.name!r}: expected a BaseRetriever or a callable, "
                                  f"got {type(e.retriever).__name__}", key="retriever")
        if all(e.weight == 0 for e in entries):
            raise ConfigError("every retriever has weight 0; give at least one a positive weight", key="weight")
        if top_k < 1:
            raise ConfigError(f"retrieval.top_k = {top_k} must be >= 1", key="retrieval.top_k", value=top_k)
        if aggregate not in ("chunk", "document"):
            raise ConfigError(f"retrieval.aggregate = {aggregate!r}; expected chunk or document", key="retrieval.aggregate", value=aggregate)
        self.aggregate = aggregate
        self.aggregate_rest = aggregate_rest
        self.entries = entries
        self.config = config or FusionConfig()
        self.top_k = top_k
        for e in entries:
            if e.weight == 0:
                logger.info("fusion: retriever %r has weight 0 and is skipped", e.name)
        super().__init__(**kwargs)

    # ------------------------------------------------------------------ retrieval

    def retrieve_with_trace(self, query: QueryType, top_k: int | None = None, filters: FilterSpec = None,
                            timings: dict[str, float] | None = None) -> FusionResult:
        """Fused nodes and this call's trace; ``top_k`` and ``filters`` apply to this call only.

        ``timings`` (when given) also receives each retriever's own stages (e.g. query_embedding, faiss, bm25).
        """
        bundle = QueryBundle(query) if isinstance(query, str) else query
        wanted = as_filters(filters)
        trace = FusionTrace()
        ranked: dict[str, list[NodeWithScore]] = {}
        for e in self.entries:
            if e.weight == 0:
                continue
            start = time.perf_counter()
            ranked[e.name] = _dedupe(self._run_one(e, bundle, wanted, timings))[: e.candidate_k]
            if self.aggregate == "document":
                ranked[e.name] = _by_document(ranked[e.name], self.aggregate_rest)
            trace.timings[e.name] = time.perf_counter() - start
        start = time.perf_counter()
        nodes = self._fuse(ranked, trace, top_k or self.top_k)
        trace.timings["fusion"] = time.perf_counter() - start
        if timings is not None:
            timings["fusion"] = timings.get("fusion", 0.0) + trace.timings["fusion"]
        return FusionResult(nodes, trace)

    def search(self, query: QueryType, top_k: int | None = None, filters: FilterSpec = None,
               timings: dict[str, float] | None = None) -> list[NodeWithScore]:
        """Stateless retrieval, the same signature as every retriever leg."""
        return self.retrieve_with_trace(query, top_k, filters, timings).nodes

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self.search(query_bundle)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._retrieve(query_bundle)

    @staticmethod
    def _run_one(entry: RetrieverEntry, bundle: QueryBundle, filters: Any, timings: dict[str, float] | None) -> list[NodeWithScore]:
        r = entry.retriever
        search = getattr(r, "search", None)
        if callable(search):
            return search(bundle, entry.candidate_k, filters, timings)
        if filters is not None:
            raise RetrievalError(f"retriever {entry.name!r} ({type(r).__name__}) takes no per-call filters", key="filters")
        if not isinstance(r, BaseRetriever):
            return list(r(bundle, entry.candidate_k))
        return r.retrieve(bundle)

    # ------------------------------------------------------------------ fusion

    def _fuse(self, ranked: dict[str, list[NodeWithScore]], trace: FusionTrace, top_k: int) -> list[NodeWithScore]:
        weights = {e.name: e.weight for e in self.entries}
        scale = _SCALERS.get(self.config.mode)
        fused: dict[str, float] = {}
        best_rank: dict[str, int] = {}
        shown: dict[str, tuple[float, NodeWithScore]] = {}  # the node returned for a key: the largest contribution's
        by_doc = self.aggregate == "document"
        for name, nodes in ranked.items():
            w = weights[name]
            normed = scale([n.score for n in nodes]) if scale else []
            for i, nws in enumerate(nodes):
                nid, rank = (_doc_id(nws) if by_doc else nws.node.node_id), i + 1
                best_rank[nid] = min(best_rank.get(nid, rank), rank)
                trace.hits.setdefault(nid, {})[name] = (rank, nws.score)
                if self.config.mode == FusionMode.RRF:
                    part = w / (self.config.rrf_k + rank)
                    fused[nid] = fused.get(nid, 0.0) + part
                elif self.config.mode == FusionMode.SIMPLE:
                    part = w * (nws.score or 0.0)
                    fused[nid] = max(fused[nid], part) if nid in fused else part
                else:
                    part = w * normed[i]
                    fused[nid] = fused.get(nid, 0.0) + part
                if nid not in shown or part > shown[nid][0]:
                    shown[nid] = (part, nws)
        order = sorted(fused, key=lambda nid: (-fused[nid], best_rank[nid], nid))[:top_k]
        return [NodeWithScore(node=shown[nid][1].node, score=fused[nid]) for nid in order]


def _doc_id(nws: NodeWithScore) -> str:
    return nws.node.ref_doc_id or nws.node.node_id


def _by_document(nodes: list[NodeWithScore], rest: float) -> list[NodeWithScore]:
    """One retriever's ranked chunks as ranked documents: each document's best chunk, scored best + ``rest`` * sum(others)."""
    groups: dict[str, list[NodeWithScore]] = {}
    for n in nodes:
        groups.setdefault(_doc_id(n), []).append(n)
    docs = []
    for chunks in groups.values():
        best = max(chunks, key=lambda n: n.score or 0.0)
        total = sum(n.score or 0.0 for n in chunks) - (best.score or 0.0)
        docs.append(NodeWithScore(node=best.node, score=(best.score or 0.0) + rest * total))
    return sorted(docs, key=lambda n: -(n.score or 0.0))  # stable: equal scores keep the retriever's order


def _dedupe(nodes: list[NodeWithScore]) -> list[NodeWithScore]:
    """Keep the first (best-ranked) occurrence of each node_id in one retriever's list."""
    seen: set[str] = set()
    out = []
    for n in nodes:
        if n.node.node_id not in seen:
            seen.add(n.node.node_id)
            out.append(n)
    return out


def _min_max(scores: list[float | None]) -> list[float]:
    vals = [s or 0.0 for s in scores]
    return _scale(vals, min(vals, default=0.0), max(vals, default=0.0))


def _dist_based(scores: list[float | None]) -> list[float]:
    vals = [s or 0.0 for s in scores]
    if not vals:
        return []
    mean = sum(vals) / len(vals)
    std = (sum((v - mean) ** 2 for v in vals) / len(vals)) ** 0.5
    return _scale(vals, mean - 3 * std, mean + 3 * std)


def _scale(vals: list[float], lo: float, hi: float) -> list[float]:
    """Map [lo, hi] to [0, 1]; a constant list maps to 1 if positive else 0 (LlamaIndex's convention)."""
    if hi == lo:
        return [1.0 if hi > 0 else 0.0 for _ in vals]
    return [(v - lo) / (hi - lo) for v in vals]


_SCALERS: dict[FusionMode, Callable[[list[float | None]], list[float]]] = {
    FusionMode.RELATIVE_SCORE: _min_max,
    FusionMode.DIST_BASED_SCORE: _dist_based,
}
