"""FAISS vector store for LlamaIndex: flat | hnsw | ivfpq, deletes, metadata filters, atomic persistence.

Text lives in the docstore (``stores_text = False``); the store keeps row id -> node_id, ref_doc_id and the
node's scalar metadata (for filters). Files: ``index.faiss`` + ``ids.json`` + ``params.json``, no pickle.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)

from ..core.io import atomic_directory, read_json, write_json_atomic
from ..config import FaissConfig, FaissIndexType
from ..core.errors import ConfigError, IndexStateError, RetrievalError
from ..retrieval.filters import FilterIndex, matches

logger = logging.getLogger(__name__)

INDEX_FILE, IDS_FILE, PARAMS_FILE = "index.faiss", "ids.json", "params.json"
QUERY_TIME_FIELDS = ("ef_search", "nprobe")
"""FAISS settings that act at search time only."""
BUILD_FIELDS = {"flat": (), "hnsw": ("hnsw_m", "ef_construction"), "ivfpq": ("nlist", "pq_m", "nbits")}
"""Per index type, the FAISS settings that change what is built (besides ``index_type`` itself)."""
FORMAT_VERSION = 1
_SCALARS = (str, int, float, bool, type(None))


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("FaissVectorStore needs faiss: pip install faiss-cpu") from exc
    return faiss


def _filterable(metadata: dict[str, Any]) -> dict[str, Any]:
    """Keep the metadata values a filter can compare: scalars and lists of scalars."""
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        if isinstance(value, _SCALARS):
            out[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, _SCALARS) for v in value):
            out[key] = list(value)
    return out


class FaissVectorStore(BasePydanticVectorStore):
    """LlamaIndex vector store over one FAISS index (inner product on L2-normalised vectors).

    ``flat`` is exact (IndexIDMap2 over IndexFlatIP); ``hnsw`` is IndexHNSWFlat; ``ivfpq`` is IndexIVFPQ,
    trained lazily on every vector added so far at the first query / persist (or by ``train()``), with
    ``nlist`` capped to the corpus size. Too few vectors for the PQ codebooks (< 2**nbits) raise
    ``ConfigError``: we refuse rather than silently shrink ``nbits``.

    Usage::

        store = FaissVectorStore(FaissConfig(index_type="hnsw"), dim=384)
        ctx = StorageContext.from_defaults(vector_store=store)
        index = VectorStoreIndex(nodes, storage_context=ctx, embed_model=embed_model)
    """

    stores_text: bool = False
    config: FaissConfig
    dim: int
    normalize: bool = True

    _index: Any = PrivateAttr(default=None)
    _rows: dict[int, dict[str, Any]] = PrivateAttr(default_factory=dict)  # row -> node_id/ref_doc_id/metadata
    _row_of: dict[str, int] = PrivateAttr(default_factory=dict)  # node_id -> row
    _tombstones: set[int] = PrivateAttr(default_factory=set)  # hnsw only: deleted rows still in the graph
    _pending: dict[int, np.ndarray] = PrivateAttr(default_factory=dict)  # ivfpq before training
    _next_row: int = PrivateAttr(default=0)
    _nlist: int | None = PrivateAttr(default=None)
    _filter_index: Any = PrivateAttr(default=None)  # (row ids, FilterIndex), rebuilt after a change

    def __init__(self, config: FaissConfig | None = None, dim: int = 0, normalize: bool = True) -> None:
        config = config or FaissConfig()
        if dim < 1:
            raise ConfigError(f"FaissVectorStore: dim must be >= 1, got {dim}", key="dim", value=dim)
        if config.index_type == FaissIndexType.IVFPQ and dim % config.pq_m:
            raise ConfigError(
                f"faiss.pq_m = {config.pq_m} must divide the embedding dimension {dim}; "
                f"try one of {[m for m in range(1, min(dim, 64) + 1) if dim % m == 0][-6:]}",
                key="faiss.pq_m",
                value=config.pq_m,
            )
        super().__init__(config=config, dim=dim, normalize=normalize)
        self._index = self._new_index()

    @classmethod
    def class_name(cls) -> str:
        return "FaissVectorStore"

    @property
    def client(self) -> Any:
        """The underlying faiss index (None for an untrained ivfpq store)."""
        return self._index

    @property
    def num_vectors(self) -> int:
        """Live (not deleted) vectors, including ivfpq vectors waiting for training."""
        return len(self._rows)

    # ------------------------------------------------------------------ building

    def _new_index(self, nlist: int | None = None) -> Any:
        faiss, cfg = _faiss(), self.config
        if cfg.index_type == FaissIndexType.FLAT:
            return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        if cfg.index_type == FaissIndexType.HNSW:
            index = faiss.IndexHNSWFlat(self.dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction, index.hnsw.efSearch = cfg.ef_construction, cfg.ef_search
            return index
        if nlist is None:
            return None  # ivfpq: built in train(), once the corpus size is known
        index = faiss.IndexIVFPQ(
            faiss.IndexFlatIP(self.dim), self.dim, nlist, cfg.pq_m, cfg.nbits, faiss.METRIC_INNER_PRODUCT
        )
        index.nprobe = min(cfg.nprobe, nlist)
        return index

    def _prepare(self, vectors: np.ndarray) -> np.ndarray:
        x = np.array(vectors, dtype=np.float32, copy=True).reshape(-1, self.dim)  # never normalise caller's array
        if self.normalize:
            _faiss().normalize_L2(x)
        return x

    def train(self, vectors: np.ndarray | None = None) -> None:
        """Train an ivfpq index on ``vectors`` (default: every vector added so far), then add pending rows."""
        if self.config.index_type != FaissIndexType.IVFPQ:
            return
        if self._index is not None:
            if vectors is None:
                return
            if self._index.ntotal:
                raise IndexStateError("ivfpq index is already trained and holds vectors; build a new store to retrain")
        if vectors is None and not self._pending:
            return
        x = self._prepare(np.stack(list(self._pending.values())) if vectors is None else vectors)
        n, nbits = len(x), self.config.nbits
        if n < 2**nbits:
            raise ConfigError(
                f"faiss ivfpq needs at least 2**nbits = {2**nbits} vectors to train its codebooks, got {n}; "
                f"use faiss.index_type: flat (exact) or faiss.nbits <= {max(1, int(math.log2(max(n, 2))))}",
                key="faiss.nbits",
                value=nbits,
            )
        self._nlist = min(self.config.nlist, n)
        index = self._new_index(self._nlist)
        index.train(x)
        self._index = index
        if self._pending:
            rows = list(self._pending)
            index.add_with_ids(self._prepare(np.stack([self._pending[r] for r in rows])), np.asarray(rows, np.int64))
            self._pending.clear()
        logger.info("faiss ivfpq trained on %d vectors (nlist=%d, pq_m=%d, nbits=%d)", n, self._nlist,
                    self.config.pq_m, nbits)

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Add nodes (each with ``.embedding``); a node_id already present is replaced."""
        if not nodes:
            return []
        missing = [n.node_id for n in nodes if n.embedding is None]
        if missing:
            raise IndexStateError(f"{len(missing)} node(s) have no embedding, e.g. {missing[0]!r}", value=missing[0])
        return self.add_vectors(nodes, np.asarray([n.get_embedding() for n in nodes], dtype=np.float32))

    def add_vectors(self, nodes: Sequence[BaseNode], x: np.ndarray) -> list[str]:
        """Add ``nodes`` with their vectors as one float32 array (row i belongs to node i); replaces known ids."""
        if not nodes:
            return []
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim or x.shape[0] != len(nodes):
            raise IndexStateError(f"vectors of shape {x.shape} for {len(nodes)} nodes; the store holds dim {self.dim}")
        self.delete_nodes([n.node_id for n in nodes if n.node_id in self._row_of])
        self._filter_index = None
        rows = np.arange(self._next_row, self._next_row + len(nodes), dtype=np.int64)
        for row, node in zip(rows.tolist(), nodes):
            self._rows[row] = {"node_id": node.node_id, "ref_doc_id": node.ref_doc_id,
                               "metadata": _filterable(node.metadata)}
            self._row_of[node.node_id] = row
        self._next_row += len(nodes)
        if self.config.index_type == FaissIndexType.HNSW:
            self._index.add(self._prepare(x))  # hnsw ids are insertion order == row ids
        elif self._index is None:
            self._pending.update(zip(rows.tolist(), x))
        else:
            self._index.add_with_ids(self._prepare(x), rows)
        return [n.node_id for n in nodes]

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Remove every node of document ``ref_doc_id``."""
        self._drop_rows([r for r, rec in self._rows.items() if rec["ref_doc_id"] == ref_doc_id])

    def delete_nodes(self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None,
                     **delete_kwargs: Any) -> None:
        """Remove nodes by id and/or by metadata filter."""
        rows = {self._row_of[i] for i in node_ids or [] if i in self._row_of}
        if filters is not None:
            rows |= {r for r, rec in self._rows.items() if matches(filters, rec["metadata"])}
        self._drop_rows(sorted(rows))

    def clear(self) -> None:
        """Remove everything."""
        self._drop_rows(list(self._rows))

    def _drop_rows(self, rows: list[int]) -> None:
        if not rows:
            return
        self._filter_index = None
        for row in rows:
            self._row_of.pop(self._rows.pop(row)["node_id"], None)
            self._pending.pop(row, None)
        if self.config.index_type == FaissIndexType.HNSW:
            self._tombstones.update(rows)  # HNSW can't remove from its graph: hide rows at query time
        elif self._index is not None:
            self._index.remove_ids(np.asarray(rows, dtype=np.int64))
        logger.debug("faiss: removed %d vectors", len(rows))

    # ------------------------------------------------------------------ querying

    def _allowed_rows(self, query: VectorStoreQuery) -> list[int] | None:
        """Rows the query may return, or None for 'every live row' (no restriction)."""
        if not (query.filters and query.filters.filters) and not query.doc_ids and not query.node_ids:
            return None
        cached = self._filter_index
        if cached is None:
            rows = np.fromiter(self._rows, dtype=np.int64, count=len(self._rows))
            cached = self._filter_index = (rows, FilterIndex([rec["metadata"] for rec in self._rows.values()]))
        rows, index = cached
        mask = index.mask(query.filters)
        allowed = rows if mask is None else rows[mask]
        if query.doc_ids or query.node_ids:
            docs, nodes = set(query.doc_ids or []), set(query.node_ids or [])
            allowed = [r for r in allowed.tolist() if (not docs or self._rows[r]["ref_doc_id"] in docs)
                       and (not nodes or self._rows[r]["node_id"] in nodes)]
        return list(allowed)

    def copy(self) -> FaissVectorStore:
        """An independent copy (the FAISS index cloned), for copy-on-write updates while this one serves queries."""
        faiss = _faiss()
        if self._pending:
            self.train()
        other = type(self)(self.config, dim=self.dim, normalize=self.normalize)
        other._index = faiss.clone_index(self._index) if self._index is not None else None
        other._rows = dict(self._rows)  # records are replaced, never changed in place: a shallow copy suffices
        other._row_of = dict(self._row_of)
        other._tombstones = set(self._tombstones)
        other._next_row = self._next_row
        other._nlist = self._nlist
        return other

    def _search(self, q: np.ndarray, k: int, allowed: list[int] | None, exhaustive: bool) -> list[tuple[int, float]]:
        faiss, cfg = _faiss(), self.config
        sel = faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64)) if allowed is not None else None
        k = min(k, self._index.ntotal)
        if cfg.index_type == FaissIndexType.HNSW:
            params = faiss.SearchParametersHNSW(efSearch=max(cfg.ef_search, k * (4 if exhaustive else 1)))
        elif cfg.index_type == FaissIndexType.IVFPQ:
            params = faiss.SearchParametersIVF(nprobe=self._nlist if exhaustive else min(cfg.nprobe, self._nlist))
        else:
            params = faiss.SearchParameters()
        if sel is not None:
            params.sel = sel
        scores, ids = self._index.search(q, k, params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0 and i not in self._tombstones]

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Top ``similarity_top_k`` node ids by inner product; filters still fill top-k from matching nodes."""
        if query.mode != VectorStoreQueryMode.DEFAULT:
            raise RetrievalError(f"FaissVectorStore supports query mode 'default' only, got {query.mode.value!r}")
        if query.query_embedding is None:
            raise RetrievalError("FaissVectorStore.query needs a query_embedding")
        if self._pending:
            self.train()
        allowed = self._allowed_rows(query)
        want = min(query.similarity_top_k, len(self._rows) if allowed is None else len(allowed))
        if want <= 0 or self._index is None:
            return VectorStoreQueryResult(nodes=None, ids=[], similarities=[])
        q = self._prepare(np.asarray(query.query_embedding, dtype=np.float32))
        fetch = want + (len(self._tombstones) if allowed is None else 0)  # the selector already skips tombstones
        hits = self._search(q, fetch, allowed, exhaustive=False)
        while len(hits) < want and fetch < self._index.ntotal:  # approximate index missed matches: widen
            fetch = min(fetch * 4, self._index.ntotal)
            hits = self._search(q, fetch, allowed, exhaustive=True)
        if len(hits) < want and self.config.index_type == FaissIndexType.HNSW:  # unreachable in graph: exact scan
            rows = np.asarray(allowed if allowed is not None else list(self._rows), dtype=np.int64)
            sims = self._index.reconstruct_batch(rows) @ q[0]
            hits = [(int(rows[i]), float(sims[i])) for i in np.argsort(-sims, kind="stable")[:want]]
            logger.debug("faiss: hnsw search found too few matches; scanned %d rows exactly", len(rows))
        hits = hits[:want]
        return VectorStoreQueryResult(
            nodes=None, ids=[self._rows[r]["node_id"] for r, _ in hits], similarities=[s for _, s in hits]
        )

    # ------------------------------------------------------------------ persistence

    def persist(self, persist_path: str, fs: Any = None) -> None:
        """Write ``index.faiss``, ``ids.json`` and ``params.json`` into the folder ``persist_path`` atomically.

        ``persist_path`` is always a folder (also when ``StorageContext.persist`` passes a ``.json`` name).
        """
        if fs is not None and "file" not in np.atleast_1d(getattr(fs, "protocol", "file")):
            raise NotImplementedError("FaissVectorStore.persist writes to the local filesystem only")
        faiss = _faiss()
        if self._pending:
            self.train()
        index = self._index if self._index is not None else self._new_index(self.config.nlist)
        params = {
            "format_version": FORMAT_VERSION, "faiss_version": faiss.__version__, "dim": self.dim,
            "normalize": self.normalize, "nlist_effective": self._nlist,
            "config": self.config.model_dump(mode="json"),
        }
        ids = {
            "next_row": self._next_row,
            "tombstones": sorted(self._tombstones),
            "rows": [{"row": r, **rec} for r, rec in sorted(self._rows.items())],
        }
        with atomic_directory(Path(persist_path)) as tmp:
            faiss.write_index(index, str(tmp / INDEX_FILE))
            write_json_atomic(tmp / IDS_FILE, ids)
            write_json_atomic(tmp / PARAMS_FILE, params)
        logger.info("faiss: saved %d vectors to %s", self.num_vectors, persist_path)

    @classmethod
    def from_persist_dir(cls, persist_dir: str | Path, query_config: FaissConfig | None = None) -> FaissVectorStore:
        """Load a store written by ``persist``; a missing or corrupt folder raises ``IndexStateError``.

        ``query_config``: the config asked for now; its query-time settings (``QUERY_TIME_FIELDS``) replace
        the persisted ones, so ``ef_search`` and ``nprobe`` apply without a rebuild.
        """
        path = Path(persist_dir)
        files = [path / INDEX_FILE, path / IDS_FILE, path / PARAMS_FILE]
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            raise IndexStateError(
                f"{path}: not a saved FAISS store (missing {', '.join(absent)}); run ingest again", path=path
            )
        faiss = _faiss()
        try:
            params, ids = read_json(path / PARAMS_FILE), read_json(path / IDS_FILE)
            built = FaissConfig.model_validate(params["config"])
            if query_config is not None:
                built = built.model_copy(update={f: getattr(query_config, f) for f in QUERY_TIME_FIELDS})
            store = cls(built, dim=int(params["dim"]), normalize=bool(params["normalize"]))
            index = faiss.read_index(str(path / INDEX_FILE))
            store._rows = {int(rec.pop("row")): rec for rec in ids["rows"]}
            store._tombstones = {int(r) for r in ids["tombstones"]}
            store._next_row = int(ids["next_row"])
            store._nlist = params.get("nlist_effective")
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, ConfigError) as exc:
            raise IndexStateError(f"{path}: corrupt FAISS store ({type(exc).__name__}: {exc})", path=path) from exc
        store._row_of = {rec["node_id"]: r for r, rec in store._rows.items()}
        if index.d != store.dim:
            raise IndexStateError(f"{path}: {INDEX_FILE} has dim {index.d}, params.json says {store.dim}", path=path)
        if store.config.index_type == FaissIndexType.IVFPQ and not index.is_trained:
            index = None
        live = 0 if index is None else index.ntotal - len(store._tombstones)
        if live != len(store._rows):
            raise IndexStateError(f"{path}: {INDEX_FILE} holds {live} live vectors, {IDS_FILE} lists "
                                  f"{len(store._rows)}; re-ingest", path=path)
        if store.config.index_type == FaissIndexType.HNSW:
            index.hnsw.efSearch = store.config.ef_search
        elif index is not None and store.config.index_type == FaissIndexType.IVFPQ:
            index.nprobe = min(store.config.nprobe, store._nlist or index.nlist)
        store._index = index
        return store

