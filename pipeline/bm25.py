"""BM25Retriever: a LlamaIndex ``BaseRetriever`` on bm25s, fed with our (Korean) tokenizer's tokens.

bm25s never tokenises anything itself: token lists are mapped to ids here and passed as
``bm25s.tokenization.Tokenized``. Results are the original nodes; a document is returned only when
it contains a query token and scores above zero, so a query with no matching term returns ``[]``.

On disk (``persist``): bm25s arrays (``.npy``, no pickle) + ``vocab.index.json``, ``node_ids.json``
(node ids in index order) and ``params.json`` (tokenizer spec + BM25 settings). Nodes themselves live
in the docstore; ``from_persist_dir`` takes them as a ``node_id -> node`` mapping.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import BaseNode, NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import FilterCondition, FilterOperator, MetadataFilter, MetadataFilters

from ._io import atomic_directory, read_json, write_json_atomic
from ._progress import progress_enabled
from .config import BM25Config
from .errors import IndexStateError, RetrievalError
from .tokenizers import Tokenizer, TokenizerSpec, build_tokenizer, check_tokenizer, tokenizer_from_spec

logger = logging.getLogger(__name__)

__all__ = ["BM25Retriever", "QueryScores", "check_tokenizer", "metadata_mask", "index_text"]

PARAMS_FILE = "params.json"
NODE_IDS_FILE = "node_ids.json"
FORMAT_VERSION = 1

# --------------------------------------------------------------------------- shared helpers (also used by sparse.py)


class QueryScores(NamedTuple):
    """Score per indexed node, and which nodes contain at least one query token."""

    scores: np.ndarray
    matched: np.ndarray


class PersistedIndex(NamedTuple):
    """``params.json`` and the nodes named by ``node_ids.json``, in index order."""

    params: dict[str, Any]
    nodes: list[BaseNode]


def index_text(node: BaseNode, include_metadata: Sequence[str] = ()) -> str:
    """The text indexed for ``node``: its content plus the values of ``include_metadata`` keys."""
    parts = [node.get_content()]
    for key in include_metadata:
        value = node.metadata.get(key)
        if value is None:
            continue
        parts.append(" ".join(map(str, value)) if isinstance(value, (list, tuple, set)) else str(value))
    return "\n".join(parts)


def _match_one(f: MetadataFilter, metadata: Mapping[str, Any]) -> bool:
    op, want, have = FilterOperator(f.operator), f.value, metadata.get(f.key)
    if op == FilterOperator.IS_EMPTY:
        return have is None or have == "" or have == []
    if have is None:
        return op in (FilterOperator.NE, FilterOperator.NIN)
    many = isinstance(have, (list, tuple, set))
    try:
        if op == FilterOperator.EQ:
            return have == want
        if op == FilterOperator.NE:
            return have != want
        if op == FilterOperator.GT:
            return have > want
        if op == FilterOperator.GTE:
            return have >= want
        if op == FilterOperator.LT:
            return have < want
        if op == FilterOperator.LTE:
            return have <= want
        if op in (FilterOperator.IN, FilterOperator.NIN):
            hit = any(h in want for h in have) if many else have in want
            return hit if op == FilterOperator.IN else not hit
        if op == FilterOperator.CONTAINS:
            return want in have
        if op == FilterOperator.ANY:
            return any(w in have for w in want)
        if op == FilterOperator.ALL:
            return all(w in have for w in want)
        if op == FilterOperator.TEXT_MATCH:
            return str(want) in str(have)
        if op == FilterOperator.TEXT_MATCH_INSENSITIVE:
            return str(want).lower() in str(have).lower()
    except TypeError as exc:
        raise RetrievalError(
            f"filter {f.key} {op.value} {want!r}: cannot compare with metadata value {have!r} ({exc})", key=f.key, value=want
        ) from exc
    raise RetrievalError(f"filter {f.key}: operator {op.value!r} is not supported", key=f.key, value=op.value)


def _matches(filters: MetadataFilters, metadata: Mapping[str, Any]) -> bool:
    hits = [_matches(f, metadata) if isinstance(f, MetadataFilters) else _match_one(f, metadata) for f in filters.filters]
    cond = filters.condition or FilterCondition.AND
    if cond == FilterCondition.AND:
        return all(hits)
    if cond == FilterCondition.OR:
        return any(hits)
    if cond == FilterCondition.NOT:
        return not any(hits)
    raise RetrievalError(f"filter condition {cond!r} is not supported (and, or, not)", value=cond)


def metadata_mask(nodes: Sequence[BaseNode], filters: MetadataFilters | None) -> np.ndarray | None:
    """Boolean mask of nodes whose metadata passes ``filters`` (``None`` when there are no filters)."""
    if filters is None or not filters.filters:
        return None
    return np.fromiter((_matches(filters, n.metadata) for n in nodes), dtype=bool, count=len(nodes))


def combine_masks(*masks: np.ndarray | None) -> np.ndarray | None:
    """AND of the masks that are set."""
    out: np.ndarray | None = None
    for m in masks:
        if m is not None:
            out = m if out is None else (out & m)
    return out


def top_nodes(nodes: Sequence[BaseNode], scores: np.ndarray, eligible: np.ndarray, k: int) -> list[NodeWithScore]:
    """The ``k`` best eligible nodes with a positive score, best first (ties keep index order)."""
    cand = np.flatnonzero(eligible & (scores > 0))
    order = cand[np.argsort(-scores[cand], kind="stable")][:k]
    return [NodeWithScore(node=nodes[i], score=float(scores[i])) for i in order]


def check_unique_ids(nodes: Sequence[BaseNode], what: str) -> None:
    """Refuse empty input and duplicate node ids (results and persistence are keyed on node_id)."""
    if not nodes:
        raise IndexStateError(f"cannot build a {what} index from 0 nodes; check the data section and the loader")
    seen: set[str] = set()
    for n in nodes:
        if n.node_id in seen:
            raise IndexStateError(f"duplicate node_id {n.node_id!r}: every node needs its own id", value=n.node_id)
        seen.add(n.node_id)


def load_persisted(path: Path, what: str, nodes_by_id: Mapping[str, BaseNode]) -> PersistedIndex:
    """Read ``params.json`` and ``node_ids.json`` from ``path`` and resolve the nodes; ``IndexStateError`` otherwise."""
    if not path.is_dir():
        raise IndexStateError(f"{path}: {what} index directory not found; run `ragpipe ingest`", path=path)
    try:
        params = read_json(path / PARAMS_FILE)
        node_ids = read_json(path / NODE_IDS_FILE)
    except (OSError, ValueError) as exc:
        raise IndexStateError(f"{path}: {what} index is incomplete or corrupt ({exc}); run `ragpipe ingest --rebuild`", path=path) from exc
    if not isinstance(params, dict) or "tokenizer" not in params or not isinstance(node_ids, list):
        raise IndexStateError(f"{path}: {what} index files {PARAMS_FILE}/{NODE_IDS_FILE} are malformed; run `ragpipe ingest --rebuild`", path=path)
    missing = [i for i in node_ids if i not in nodes_by_id]
    if missing:
        raise IndexStateError(
            f"{path}: {len(missing)} indexed node ids are not in the docstore (first: {missing[:3]}); run `ragpipe ingest --rebuild`",
            path=path,
        )
    return PersistedIndex(params, [nodes_by_id[i] for i in node_ids])


# --------------------------------------------------------------------------- retriever


class BM25Retriever(BaseRetriever):
    """BM25 over bm25s with a pluggable tokenizer; returns the original nodes."""

    def __init__(
        self,
        bm25: Any,
        nodes: Sequence[BaseNode],
        tokenizer: Tokenizer,
        cfg: BM25Config,
        *,
        similarity_top_k: int | None = None,
        filters: MetadataFilters | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        self._bm25 = bm25
        self._nodes = list(nodes)
        self._tokenizer = tokenizer
        self.cfg = cfg
        self.similarity_top_k = similarity_top_k or cfg.candidate_k
        self.filters = filters
        self.build_seconds: dict[str, float] = {}  # set by from_nodes: tokenisation and indexing times
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    @classmethod
    def from_nodes(
        cls,
        nodes: Sequence[BaseNode],
        cfg: BM25Config,
        top_k: int | None = None,
        show_progress: bool = False,
        *,
        tokenizer: Tokenizer | None = None,
        filters: MetadataFilters | None = None,
    ) -> BM25Retriever:
        """Tokenise and index ``nodes`` (pass ``tokenizer`` to reuse an already built one)."""
        import bm25s
        from bm25s.tokenization import Tokenized

        check_unique_ids(nodes, "BM25")
        tokenizer = tokenizer or build_tokenizer(cfg.tokenizer)
        t0 = time.perf_counter()
        docs = tokenizer.tokenize_many([index_text(n, cfg.include_metadata) for n in nodes], show_progress=show_progress)
        t1 = time.perf_counter()
        vocab: dict[str, int] = {}
        ids = [[vocab.setdefault(t, len(vocab)) for t in doc] for doc in docs]
        bm25 = bm25s.BM25(k1=cfg.k1, b=cfg.b, method=cfg.method.value)
        bm25.index(Tokenized(ids=ids, vocab=vocab), show_progress=progress_enabled(show_progress))
        logger.info("BM25 index %r: %d nodes, %d terms (tokenizer %s, %s)", cfg.name, len(nodes), len(vocab), tokenizer.name, cfg.method.value)
        retriever = cls(bm25, nodes, tokenizer, cfg, similarity_top_k=top_k, filters=filters)
        retriever.build_seconds = {"tokenisation": t1 - t0, "bm25_index": time.perf_counter() - t1}
        return retriever

    @property
    def tokenizer_spec(self) -> TokenizerSpec:
        """The full tokenizer spec this index was built with."""
        return self._tokenizer.spec()

    @property
    def nodes(self) -> list[BaseNode]:
        """Indexed nodes, in index order."""
        return list(self._nodes)

    # ----------------------------------------------------------------- search

    def scores(self, query: str) -> QueryScores:
        """BM25 score per node and a mask of nodes containing at least one query token."""
        if not query or not query.strip():
            raise RetrievalError("empty query: pass some text to search for", value=query)
        ids = self._bm25.get_tokens_ids(self._tokenizer(query))
        n = len(self._nodes)
        if not ids:
            return QueryScores(np.zeros(n, dtype=np.float32), np.zeros(n, dtype=bool))
        matched = np.zeros(n, dtype=bool)
        indptr, indices = self._bm25.scores["indptr"], self._bm25.scores["indices"]
        for t in set(ids):
            matched[indices[indptr[t] : indptr[t + 1]]] = True
        return QueryScores(np.asarray(self._bm25.get_scores_from_ids(ids), dtype=np.float32), matched)

    def _search(self, query: str, filters: MetadataFilters | None) -> list[NodeWithScore]:
        scores, matched = self.scores(query)
        eligible = combine_masks(matched, metadata_mask(self._nodes, self.filters), metadata_mask(self._nodes, filters))
        return top_nodes(self._nodes, scores, eligible, self.similarity_top_k)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._search(query_bundle.query_str, None)

    def retrieve_with_filters(self, query: str, filters: MetadataFilters | None) -> list[NodeWithScore]:
        """Retrieve among nodes passing ``filters`` (ANDed with the retriever's own filters)."""
        return self._search(query, filters)

    # ----------------------------------------------------------------- persistence

    def persist(self, persist_dir: str | Path) -> None:
        """Write the index to ``persist_dir`` atomically (replaces what was there)."""
        target = Path(persist_dir)
        with atomic_directory(target) as tmp:
            self._bm25.save(tmp, corpus=None, allow_pickle=False, show_progress=False)
            write_json_atomic(tmp / NODE_IDS_FILE, [n.node_id for n in self._nodes])
            write_json_atomic(tmp / PARAMS_FILE, {
                "format_version": FORMAT_VERSION,
                "kind": "bm25",
                "tokenizer": self.tokenizer_spec,
                "config": self.cfg.model_dump(mode="json"),
                "num_docs": len(self._nodes),
            })
        logger.info("saved BM25 index %r to %s", self.cfg.name, target)

    @classmethod
    def from_persist_dir(
        cls,
        persist_dir: str | Path,
        nodes_by_id: Mapping[str, BaseNode],
        top_k: int | None = None,
        *,
        filters: MetadataFilters | None = None,
    ) -> BM25Retriever:
        """Load an index written by ``persist``; the tokenizer comes from the persisted spec."""
        import bm25s

        path = Path(persist_dir)
        params, nodes = load_persisted(path, "BM25", nodes_by_id)
        try:
            spec = params["tokenizer"]
            cfg = BM25Config.model_validate(params["config"])
            bm25 = bm25s.BM25.load(path, load_corpus=False, allow_pickle=False, show_progress=False)
            num_docs = int(bm25.scores["num_docs"])
            max_id = max((v for k, v in bm25.vocab_dict.items() if k), default=-1)
        except Exception as exc:  # bm25s/numpy/pydantic raise many types for a damaged directory
            raise IndexStateError(f"{path}: BM25 index is corrupt ({type(exc).__name__}: {exc}); run `ragpipe ingest --rebuild`", path=path) from exc
        if num_docs != len(nodes) or max_id >= len(bm25.scores["indptr"]) - 1:
            raise IndexStateError(f"{path}: BM25 arrays ({num_docs} docs) do not match {NODE_IDS_FILE} ({len(nodes)} ids); run `ragpipe ingest --rebuild`", path=path)
        tokenizer = tokenizer_from_spec(spec)
        logger.info("loaded BM25 index %r from %s (%d nodes)", cfg.name, path, num_docs)
        return cls(bm25, nodes, tokenizer, cfg, similarity_top_k=top_k, filters=filters)
