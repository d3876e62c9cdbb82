"""LexicalRetriever: the shared base of BM25, TF-IDF and BoW (token-based retrievers over our tokenizers).

The base keeps each node's tokens as ids into a growing term list, so the index can be rebuilt without
tokenising again: ``with_changes`` tokenises only added nodes and returns a new retriever (the old one
is never touched, so queries in flight keep a consistent view). A subclass supplies ``_index`` (its
arrays from the token ids) and ``scores(query)``. The base gives the stateless
``search(query, top_k, filters)``, LlamaIndex's ``_retrieve``, and persistence as a folder of
``params.json`` (tokenizer spec + full config), ``node_ids.json``, ``terms.json`` and ``tokens.npz``.
Only nodes with a positive score that share a query token are returned; filters mask before top-k.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, ClassVar, Mapping, NamedTuple, Sequence

import numpy as np
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import BaseNode, NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import MetadataFilters

from ..core.errors import IndexStateError, RetrievalError
from ..core.io import atomic_directory, read_json, write_json_atomic
from .filters import FilterIndex, FilterSpec, as_filters
from .tokenizers import Tokenizer, TokenizerSpec, build_tokenizer, tokenizer_from_spec

logger = logging.getLogger(__name__)

PARAMS_FILE = "params.json"
NODE_IDS_FILE = "node_ids.json"
TERMS_FILE = "terms.json"
TOKENS_FILE = "tokens.npz"
FORMAT_VERSION = 2  # 2: token ids persisted; the scoring arrays are rebuilt from them on load


class QueryScores(NamedTuple):
    """Score per indexed node, and which nodes contain at least one query token."""

    scores: np.ndarray
    matched: np.ndarray


def index_text(node: BaseNode, include_metadata: Sequence[str] = ()) -> str:
    """The text indexed for ``node``: its content plus the values of ``include_metadata`` keys."""
    parts = [node.get_content()]
    for key in include_metadata:
        value = node.metadata.get(key)
        if value is None:
            continue
        parts.append(" ".join(map(str, value)) if isinstance(value, (list, tuple, set)) else str(value))
    return "\n".join(parts)


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


def encode(token_lists: Sequence[Sequence[str]], terms: list[str], term_ids: dict[str, int]) -> list[np.ndarray]:
    """Token lists -> int32 id arrays, growing ``terms`` / ``term_ids`` in place with unseen tokens."""
    out = []
    for tokens in token_lists:
        ids = np.empty(len(tokens), dtype=np.int32)
        for j, t in enumerate(tokens):
            i = term_ids.get(t)
            if i is None:
                i = term_ids[t] = len(terms)
                terms.append(t)
            ids[j] = i
        out.append(ids)
    return out


class LexicalRetriever(BaseRetriever):
    """Token-based retrieval over ``nodes``; subclasses build their arrays in ``_index`` and score in ``scores``."""

    kind: ClassVar[str] = "lexical"
    config_class: ClassVar[type] = object

    def __init__(self, nodes: Sequence[BaseNode], tokenizer: Tokenizer, cfg: Any, tokens: Sequence[np.ndarray], terms: list[str], *,
                 similarity_top_k: int | None = None, filters: MetadataFilters | None = None,
                 callback_manager: CallbackManager | None = None, verbose: bool = False,
                 term_ids: dict[str, int] | None = None, row_of: dict[str, int] | None = None) -> None:
        self._nodes = list(nodes)
        self._tokenizer = tokenizer
        self._tokens = list(tokens)
        self._terms = terms
        self._term_ids = term_ids if term_ids is not None else {t: i for i, t in enumerate(terms)}
        self.cfg = cfg
        self.similarity_top_k = similarity_top_k or cfg.candidate_k
        self.filters = filters
        self._alive: np.ndarray | None = None  # rows still indexed; None: all (set by _index where rows can be deleted)
        self._filter_index = FilterIndex(self._nodes)
        self.build_seconds: dict[str, float] = {}
        super().__init__(callback_manager=callback_manager, verbose=verbose)
        t0 = time.perf_counter()
        self._index()
        self.build_seconds[f"{self.kind}_index"] = time.perf_counter() - t0
        self._row_of = row_of if row_of is not None else \
            {n.node_id: i for i, n in enumerate(self._nodes) if self._alive is None or self._alive[i]}

    def _live_rows(self) -> list[int]:
        return list(range(len(self._nodes))) if self._alive is None else np.flatnonzero(self._alive).tolist()

    def _index(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def _include_metadata(cls, cfg: Any) -> Sequence[str]:
        return getattr(cfg, "include_metadata", ())

    @classmethod
    def from_nodes(cls, nodes: Sequence[BaseNode], cfg: Any, top_k: int | None = None, show_progress: bool = False, *,
                   tokenizer: Tokenizer | None = None, filters: MetadataFilters | None = None) -> "LexicalRetriever":
        """Tokenise and index ``nodes`` (pass ``tokenizer`` to reuse an already built one)."""
        check_unique_ids(nodes, cfg.type)
        tokenizer = tokenizer or build_tokenizer(cfg.tokenizer)
        t0 = time.perf_counter()
        lists = tokenizer.tokenize_many([index_text(n, cls._include_metadata(cfg)) for n in nodes], show_progress=show_progress)
        terms: list[str] = []
        tokens = encode(lists, terms, {})
        seconds = time.perf_counter() - t0
        retriever = cls(nodes, tokenizer, cfg, tokens, terms, similarity_top_k=top_k, filters=filters)
        retriever.build_seconds = {"tokenisation": seconds, **retriever.build_seconds}
        logger.info("%s index %r: %d nodes, %d terms (tokenizer %s)", cfg.type, cfg.name, len(nodes), len(terms), tokenizer.name)
        return retriever

    def with_changes(self, remove_ids: set[str], add: Sequence[BaseNode]) -> "LexicalRetriever":
        """A new retriever without ``remove_ids`` and with ``add`` (replacing same ids); only ``add`` is tokenised.

        Statistics (document frequencies, average length) are rebuilt from the kept token ids, so the result
        scores exactly as a retriever built from scratch over the same nodes.
        """
        drop = set(remove_ids) | {n.node_id for n in add}
        keep = [i for i in self._live_rows() if self._nodes[i].node_id not in drop]
        lists = self._tokenizer.tokenize_many([index_text(n, self._include_metadata(self.cfg)) for n in add])
        terms, term_ids = list(self._terms), dict(self._term_ids)
        new_tokens = encode(lists, terms, term_ids)
        nodes = [self._nodes[i] for i in keep] + list(add)
        if not nodes:
            raise IndexStateError(f"{self.cfg.type} index {self.cfg.name!r} would hold no nodes")
        return type(self)(nodes, self._tokenizer, self.cfg, [self._tokens[i] for i in keep] + new_tokens, terms,
                          similarity_top_k=self.similarity_top_k, filters=self.filters)

    @property
    def tokenizer_spec(self) -> TokenizerSpec:
        """The full tokenizer spec this index was built with."""
        return self._tokenizer.spec()

    @property
    def nodes(self) -> list[BaseNode]:
        """Indexed (live) nodes, in index order."""
        return [self._nodes[i] for i in self._live_rows()]

    # ----------------------------------------------------------------- search

    def scores(self, query: str) -> QueryScores:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_query(self, query: str) -> None:
        if not query or not query.strip():
            raise RetrievalError("empty query: pass some text to search for", value=query)

    def search(self, query: QueryBundle | str, top_k: int | None = None, filters: FilterSpec = None,
               timings: dict[str, float] | None = None) -> list[NodeWithScore]:
        """The ``top_k`` best nodes passing ``filters``; touches no state, so threads may share one retriever.

        ``top_k`` and ``filters`` default to the constructor's; ``timings`` (when given) receives this
        retriever's seconds under its ``kind``.
        """
        t0 = time.perf_counter()
        text = query.query_str if isinstance(query, QueryBundle) else query
        scores, matched = self.scores(text)
        eligible = matched if self._alive is None else matched & self._alive
        for mask in (self._filter_index.mask(self.filters), self._filter_index.mask(as_filters(filters))):
            if mask is not None:
                eligible = eligible & mask
        out = top_nodes(self._nodes, scores, eligible, top_k or self.similarity_top_k)
        if timings is not None:
            timings[self.kind] = timings.get(self.kind, 0.0) + time.perf_counter() - t0
        return out

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self.search(query_bundle)

    # ----------------------------------------------------------------- persistence

    def persist(self, persist_dir: str | Path) -> None:
        """Write node ids, terms and token ids to ``persist_dir`` atomically (replaces what was there)."""
        target = Path(persist_dir)
        rows = self._live_rows()  # deleted rows are left out: a reload starts compact
        tokens = [self._tokens[i] for i in rows]
        lengths = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=len(tokens))
        with atomic_directory(target) as tmp:
            ids = np.concatenate(tokens) if tokens else np.zeros(0, np.int32)
            np.savez(tmp / TOKENS_FILE, ids=ids.astype(np.int32), lengths=lengths)
            write_json_atomic(tmp / TERMS_FILE, self._terms)
            write_json_atomic(tmp / NODE_IDS_FILE, [self._nodes[i].node_id for i in rows])
            write_json_atomic(tmp / PARAMS_FILE, {
                "format_version": FORMAT_VERSION, "kind": self.cfg.type, "tokenizer": self.tokenizer_spec,
                "config": self.cfg.model_dump(mode="json"), "num_docs": len(rows), "num_terms": len(self._terms),
            })
        logger.info("saved %s index %r to %s", self.cfg.type, self.cfg.name, target)

    @classmethod
    def from_persist_dir(cls, persist_dir: str | Path, nodes_by_id: Mapping[str, BaseNode], top_k: int | None = None, *,
                         filters: MetadataFilters | None = None) -> "LexicalRetriever":
        """Load an index written by ``persist``; the tokenizer comes from the persisted spec, never from defaults."""
        path = Path(persist_dir)
        if not path.is_dir():
            raise IndexStateError(f"{path}: {cls.kind} index directory not found; run `ragpipe ingest`", path=path)
        try:
            params = read_json(path / PARAMS_FILE)
            node_ids = read_json(path / NODE_IDS_FILE)
            terms = read_json(path / TERMS_FILE)
            with np.load(path / TOKENS_FILE, allow_pickle=False) as arrays:
                ids, lengths = arrays["ids"], arrays["lengths"]
        except (OSError, ValueError, KeyError) as exc:
            raise IndexStateError(f"{path}: {cls.kind} index is incomplete or corrupt ({exc}); run `ragpipe ingest --rebuild`", path=path) from exc
        if not isinstance(params, dict) or "tokenizer" not in params or not isinstance(node_ids, list) or not isinstance(terms, list):
            raise IndexStateError(f"{path}: {cls.kind} index files are malformed; run `ragpipe ingest --rebuild`", path=path)
        if len(lengths) != len(node_ids) or int(lengths.sum()) != len(ids) or (len(ids) and int(ids.max()) >= len(terms)):
            raise IndexStateError(f"{path}: {TOKENS_FILE} does not match {NODE_IDS_FILE} ({len(node_ids)} ids); "
                                  "run `ragpipe ingest --rebuild`", path=path)
        missing = [i for i in node_ids if i not in nodes_by_id]
        if missing:
            raise IndexStateError(f"{path}: {len(missing)} indexed node ids are not in the docstore (first: {missing[:3]}); "
                                  "run `ragpipe ingest --rebuild`", path=path)
        try:
            cfg = cls.config_class.model_validate(params["config"])
        except Exception as exc:  # pydantic: a damaged params.json
            raise IndexStateError(f"{path}: {cls.kind} index params are corrupt ({exc}); run `ragpipe ingest --rebuild`", path=path) from exc
        tokens = np.split(ids, np.cumsum(lengths)[:-1]) if len(lengths) else []
        nodes = [nodes_by_id[i] for i in node_ids]
        logger.info("loaded %s index %r from %s (%d nodes)", cfg.type, cfg.name, path, len(nodes))
        return cls(nodes, tokenizer_from_spec(params["tokenizer"]), cfg, tokens, terms, similarity_top_k=top_k, filters=filters)
