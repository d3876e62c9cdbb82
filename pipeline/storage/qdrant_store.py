"""One Qdrant collection per index: the connection, the collection schema, idempotent batched writes.

Our own thin layer on ``qdrant_client`` rather than LlamaIndex's ``QdrantVectorStore``: that store uses the
node id as the point id (Qdrant takes only integers and UUIDs, so ``doc-001#0`` fails) and has no
per-collection average length or ``modifier: idf`` sparse leg for kiwi term ids.

Layout: the name users configure (``storage.collection``) is an *alias*. It points at a physical
collection ``<alias>--r<stamp>``, so ``--rebuild`` fills a new collection while the old one serves and then
swaps the alias in one call. Each point has named vectors (``dense`` cosine; one sparse vector per BM25
retriever, ``modifier: idf``) and the payload ``node_id``, ``doc_id``, ``doc_hash``, ``first`` (the
document's first chunk), ``text`` and ``metadata``. Point ids are uuid5 of the node id, so a re-sent write
overwrites instead of duplicating. The collection's ``metadata`` holds what ragpipe built it with (the
build settings, each BM25 leg's frozen ``avgdl``, the embedding), so any writer on any machine checks
and writes the same way; the API key is read from the named env var and never stored.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

from qdrant_client import QdrantClient, models

from ..config import StorageConfig
from ..core.errors import ConfigError, IndexStateError

logger = logging.getLogger(__name__)

NAMESPACE = uuid.UUID("6f1c7d2e-59a8-4d8e-9b1f-7a0c3e2b4d51")  # fixed forever: point ids derive from it
META_KEY = "ragpipe"
_PHYSICAL = "--r"
_LOCAL_CLIENTS: dict[str, QdrantClient] = {}  # local mode locks its folder: one client per folder per process
_LOCAL_LOCK = threading.Lock()
T = TypeVar("T")


def point_id(node_id: str) -> str:
    """The point id of a node: uuid5 of its id (Qdrant takes only integers and UUIDs)."""
    return str(uuid.uuid5(NAMESPACE, node_id))


def connect(storage: StorageConfig, local_path: Path) -> QdrantClient:
    """A client for ``storage.url`` (API key from ``storage.api_key_env``) or local mode at ``local_path``."""
    if storage.url:
        key = None
        if storage.api_key_env:
            key = os.environ.get(storage.api_key_env)
            if not key:
                raise ConfigError(f"storage.api_key_env: environment variable {storage.api_key_env} is not set",
                                  key="storage.api_key_env", value=storage.api_key_env)
        return QdrantClient(url=storage.url, api_key=key, timeout=int(storage.timeout))
    folder = str(Path(local_path).resolve())
    with _LOCAL_LOCK:
        client = _LOCAL_CLIENTS.get(folder)
        if client is None:
            Path(folder).mkdir(parents=True, exist_ok=True)
            try:
                client = QdrantClient(path=folder)
            except (RuntimeError, BlockingIOError) as exc:
                raise IndexStateError(f"{folder}: Qdrant local mode is open in another process; local mode serves one "
                                      "process at a time (use storage.url for several)", path=folder) from exc
            _LOCAL_CLIENTS[folder] = client
        return client


@atexit.register
def _close_all() -> None:
    """Close local-mode clients before interpreter shutdown (their own ``__del__`` fails that late)."""
    with _LOCAL_LOCK:
        clients = list(_LOCAL_CLIENTS.values())
        _LOCAL_CLIENTS.clear()
    for client in clients:
        client.close()


def close_local(local_path: Path) -> None:
    """Release a local-mode folder (its lock) held by this process."""
    with _LOCAL_LOCK:
        client = _LOCAL_CLIENTS.pop(str(Path(local_path).resolve()), None)
    if client is not None:
        client.close()


def retrying(call: Callable[[], T], retries: int, what: str) -> T:
    """``call()``, retried with backoff on connection errors, timeouts, 429 and 5xx (writes are idempotent)."""
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    for attempt in range(retries + 1):
        try:
            return call()
        except (ResponseHandlingException, UnexpectedResponse, ConnectionError, TimeoutError) as exc:
            status = getattr(exc, "status_code", None)
            if attempt == retries or (status is not None and status != 429 and status < 500):
                raise
            wait = 0.5 * 2**attempt
            logger.warning("qdrant %s failed (%s); retry %d/%d in %.1f s", what, exc, attempt + 1, retries, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


class QdrantStore:
    """The collection behind one index alias: create, swap, write, delete, list."""

    def __init__(self, client: QdrantClient, alias: str, storage: StorageConfig) -> None:
        self.client = client
        self.alias = alias
        self.storage = storage

    # ------------------------------------------------------------------ schema

    def physical(self) -> str | None:
        """The collection the alias points at (None when there is no index yet)."""
        for a in self.client.get_aliases().aliases:
            if a.alias_name == self.alias:
                return a.collection_name
        if self.client.collection_exists(self.alias):
            raise IndexStateError(f"qdrant collection {self.alias!r} exists but was not made by ragpipe (no alias); "
                                  "choose another storage.collection", key="storage.collection", value=self.alias)
        return None

    def metadata(self) -> dict[str, Any]:
        """What ragpipe recorded on the collection (build settings, avgdl, embedding)."""
        name = self.physical()
        if name is None:
            raise IndexStateError(f"qdrant collection {self.alias!r}: no index here; run `ragpipe ingest -c CONFIG` first",
                                  key="storage.collection", value=self.alias)
        meta = (self.client.get_collection(name).config.metadata or {}).get(META_KEY)
        if not isinstance(meta, dict):
            raise IndexStateError(f"qdrant collection {name!r} carries no ragpipe metadata; run `ragpipe ingest --rebuild`",
                                  key="storage.collection", value=self.alias)
        return meta

    def create(self, dim: int | None, sparse: Sequence[str], meta: dict[str, Any], dense_name: str | None) -> str:
        """A new physical collection for this alias (not yet pointed at); returns its name."""
        s = self.storage
        name = f"{self.alias}{_PHYSICAL}{time.time_ns() // 1_000_000}"
        vectors = {}
        if dense_name is not None and dim is not None:
            vectors[dense_name] = models.VectorParams(size=dim, distance=models.Distance.COSINE, on_disk=s.on_disk or None)
        quant = (models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, always_ram=True))
                 if s.quantization == "scalar" else None)
        self.client.create_collection(
            name, vectors_config=vectors,
            sparse_vectors_config={n: models.SparseVectorParams(modifier=models.Modifier.IDF,
                                                                index=models.SparseIndexParams(on_disk=s.on_disk or None))
                                   for n in sparse},
            shard_number=s.shards if s.url else None, replication_factor=s.replicas if s.url else None,
            hnsw_config=models.HnswConfigDiff(m=s.hnsw.m, ef_construct=s.hnsw.ef_construct),
            on_disk_payload=s.on_disk or None, quantization_config=quant, metadata={META_KEY: meta},
        )
        self.index_fields(name, {"doc_id": models.PayloadSchemaType.KEYWORD, "first": models.PayloadSchemaType.BOOL}, prefix="")
        return name

    def index_fields(self, collection: str, fields: dict[str, models.PayloadSchemaType], prefix: str = "metadata.") -> None:
        """Payload indexes (filters and deletes by ``doc_id`` use them on a server; local mode scans and has none)."""
        if self.storage.url is None:
            return
        for key, schema in fields.items():
            self.client.create_payload_index(collection, prefix + key, schema)

    def point_alias(self, collection: str) -> None:
        """Point the alias at ``collection`` in one call, then drop every other physical collection of this alias."""
        old = self.physical()
        ops: list[Any] = []
        if old is not None:
            ops.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=self.alias)))
        ops.append(models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=collection, alias_name=self.alias)))
        self.client.update_collection_aliases(change_aliases_operations=ops)
        self.drop_stale(keep=collection)

    def drop_stale(self, keep: str | None) -> None:
        """Remove this alias's physical collections other than ``keep`` (old versions, or a rebuild a crash left)."""
        for c in self.client.get_collections().collections:
            if c.name.startswith(self.alias + _PHYSICAL) and c.name != keep:
                logger.info("dropping stale qdrant collection %s", c.name)
                self.client.delete_collection(c.name)

    # ------------------------------------------------------------------ writes

    def upsert(self, collection: str, points: Iterable[models.PointStruct]) -> int:
        """Write points in ``storage.batch_size`` batches, each acknowledged (``wait``) and retried; returns the count."""
        n = 0
        for batch in _batches(points, self.storage.batch_size):
            retrying(lambda b=batch: self.client.upsert(collection, points=b, wait=True), self.storage.retries, "upsert")
            n += len(batch)
        return n

    def delete_where(self, collection: str, flt: models.Filter) -> None:
        retrying(lambda: self.client.delete(collection, points_selector=models.FilterSelector(filter=flt), wait=True),
                 self.storage.retries, "delete")

    def delete_documents(self, collection: str, doc_ids: Sequence[str], keep_points: Sequence[str] = ()) -> None:
        """Delete every chunk of ``doc_ids`` except the point ids in ``keep_points``."""
        if not doc_ids:
            return
        must: list[Any] = [models.FieldCondition(key="doc_id", match=models.MatchAny(any=list(doc_ids)))]
        must_not: list[Any] = [models.HasIdCondition(has_id=list(keep_points))] if keep_points else []
        self.delete_where(collection, models.Filter(must=must, must_not=must_not or None))

    # ------------------------------------------------------------------ reads

    def document_hashes(self, collection: str | None = None) -> dict[str, str]:
        """doc_id -> content hash, from each document's first chunk."""
        name = collection or self.physical()
        if name is None:
            return {}
        out: dict[str, str] = {}
        offset = None
        flt = models.Filter(must=[models.FieldCondition(key="first", match=models.MatchValue(value=True))])
        while True:
            points, offset = self.client.scroll(name, scroll_filter=flt, limit=1024, offset=offset,
                                                with_payload=["doc_id", "doc_hash"], with_vectors=False)
            out.update({p.payload["doc_id"]: p.payload["doc_hash"] for p in points if p.payload})
            if offset is None:
                return out

    def count(self, collection: str | None = None) -> int:
        name = collection or self.physical()
        return 0 if name is None else int(self.client.count(name, exact=True).count)


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
