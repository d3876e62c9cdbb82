"""LexicalRetriever: the shared base of BM25, TF-IDF and BoW (token-based retrievers over our tokenizers).

A subclass supplies ``scores(query)`` (one score per indexed node plus a mask of nodes sharing a query
token), ``_write_arrays`` / ``_read_arrays`` for its own files and ``kind``. The base gives everything
else: the stateless ``search(query, top_k, filters)``, LlamaIndex's ``_retrieve``, and persistence as a
folder of ``params.json`` (tokenizer spec + full config) and ``node_ids.json`` next to the arrays.
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
from .filters import FilterSpec, as_filters, metadata_mask
from .tokenizers import Tokenizer, TokenizerSpec, build_tokenizer, tokenizer_from_spec

logger = logging.getLogger(__name__)

PARAMS_FILE = "params.json"
NODE_IDS_FILE = "node_ids.json"
FORMAT_VERSION = 1


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


class LexicalRetriever(BaseRetriever):
    """Token-based retrieval over ``nodes``; subclasses implement ``scores`` and their array files."""

    kind: ClassVar[str] = "lexical"
    config_class: ClassVar[type] = object

    def __init__(self, nodes: Sequence[BaseNode], tokenizer: Tokenizer, cfg: Any, *, similarity_top_k: int | None = None,
                 filters: MetadataFilters | None = None, callback_manager: CallbackManager | None = None,
                 verbose: bool = False) -> None:
        self._nodes = list(nodes)
        self._tokenizer = tokenizer
        self.cfg = cfg
        self.similarity_top_k = similarity_top_k or cfg.candidate_k
        self.filters = filters
        self.build_seconds: dict[str, float] = {}  # set by from_nodes: tokenisation and indexing times
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    @property
    def tokenizer_spec(self) -> TokenizerSpec:
        """The full tokenizer spec this index was built with."""
        return self._tokenizer.spec()

    @property
    def nodes(self) -> list[BaseNode]:
        """Indexed nodes, in index order."""
        return list(self._nodes)

    @staticmethod
    def prepare(nodes: Sequence[BaseNode], cfg: Any, tokenizer: Tokenizer | None, include_metadata: Sequence[str] = (),
                show_progress: bool = False) -> tuple[Tokenizer, list[list[str]], float]:
        """Check ids, build the tokenizer and tokenise the corpus; returns (tokenizer, token lists, seconds)."""
        check_unique_ids(nodes, cfg.type)
        tokenizer = tokenizer or build_tokenizer(cfg.tokenizer)
        t0 = time.perf_counter()
        docs = tokenizer.tokenize_many([index_text(n, include_metadata) for n in nodes], show_progress=show_progress)
        return tokenizer, docs, time.perf_counter() - t0

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
        eligible = matched
        for mask in (metadata_mask(self._nodes, self.filters), metadata_mask(self._nodes, as_filters(filters))):
            if mask is not None:
                eligible = eligible & mask
        out = top_nodes(self._nodes, scores, eligible, top_k or self.similarity_top_k)
        if timings is not None:
            timings[self.kind] = timings.get(self.kind, 0.0) + time.perf_counter() - t0
        return out

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self.search(query_bundle)

    # ----------------------------------------------------------------- persistence

    def _write_arrays(self, folder: Path) -> dict[str, Any]:  # pragma: no cover - abstract
        """Write the subclass's files into ``folder``; return extra params to record."""
        raise NotImplementedError

    @classmethod
    def _read_arrays(cls, folder: Path, cfg: Any, nodes: list[BaseNode]) -> dict[str, Any]:  # pragma: no cover
        """Read the subclass's files; return the constructor's keyword arguments (besides nodes/tokenizer/cfg)."""
        raise NotImplementedError

    def persist(self, persist_dir: str | Path) -> None:
        """Write the index to ``persist_dir`` atomically (replaces what was there)."""
        target = Path(persist_dir)
        with atomic_directory(target) as tmp:
            extra = self._write_arrays(tmp)
            write_json_atomic(tmp / NODE_IDS_FILE, [n.node_id for n in self._nodes])
            write_json_atomic(tmp / PARAMS_FILE, {
                "format_version": FORMAT_VERSION, "kind": self.cfg.type, "tokenizer": self.tokenizer_spec,
                "config": self.cfg.model_dump(mode="json"), "num_docs": len(self._nodes), **extra,
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
        except (OSError, ValueError) as exc:
            raise IndexStateError(f"{path}: {cls.kind} index is incomplete or corrupt ({exc}); run `ragpipe ingest --rebuild`", path=path) from exc
        if not isinstance(params, dict) or "tokenizer" not in params or not isinstance(node_ids, list):
            raise IndexStateError(f"{path}: {cls.kind} index files {PARAMS_FILE}/{NODE_IDS_FILE} are malformed; run `ragpipe ingest --rebuild`", path=path)
        missing = [i for i in node_ids if i not in nodes_by_id]
        if missing:
            raise IndexStateError(f"{path}: {len(missing)} indexed node ids are not in the docstore (first: {missing[:3]}); "
                                  "run `ragpipe ingest --rebuild`", path=path)
        nodes = [nodes_by_id[i] for i in node_ids]
        try:
            cfg = cls.config_class.model_validate(params["config"])
            kwargs = cls._read_arrays(path, cfg, nodes)
        except IndexStateError:
            raise
        except Exception as exc:  # numpy/scipy/bm25s/pydantic raise many types for a damaged directory
            raise IndexStateError(f"{path}: {cls.kind} index is corrupt ({type(exc).__name__}: {exc}); run `ragpipe ingest --rebuild`", path=path) from exc
        logger.info("loaded %s index %r from %s (%d nodes)", cfg.type, cfg.name, path, len(nodes))
        return cls(nodes=nodes, tokenizer=tokenizer_from_spec(params["tokenizer"]), cfg=cfg, similarity_top_k=top_k,
                   filters=filters, **kwargs)
