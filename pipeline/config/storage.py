"""The ``storage:`` section: the in-process backend (default) or a Qdrant collection (docs/scale-out.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .section import _Section


class QdrantHnswConfig(_Section):
    m: int = Field(16, ge=2, description="HNSW links per node (build time)")
    ef_construct: int = Field(100, ge=4, description="HNSW build-time candidate list")
    ef: int | None = Field(None, ge=1, description="HNSW search-time candidate list; unset: the engine's default")


class StorageConfig(_Section):
    """Where the index lives: in this process (FAISS + bm25s files, the default) or in a Qdrant collection (docs/scale-out.md)."""

    backend: Literal["local", "qdrant"] = Field("local", description="local (FAISS + bm25s under index_dir) | qdrant")
    path: str | None = Field(None, description="qdrant: local-mode folder (no server; development and tests); default <index_dir>/qdrant")
    url: str | None = Field(None, description="qdrant: server or cluster URL, e.g. http://host:6333 (instead of path)")
    api_key_env: str | None = Field(None, description="qdrant: env var holding the API key (the key itself is never stored)")
    collection: str | None = Field(None, description="qdrant: collection alias; default: the config's name")
    shards: int = Field(1, ge=1, description="qdrant: shards of a new collection (server only)")
    replicas: int = Field(1, ge=1, description="qdrant: copies of each shard (server only)")
    hnsw: QdrantHnswConfig = Field(default_factory=QdrantHnswConfig)
    on_disk: bool = Field(False, description="qdrant: keep vectors and payload on disk (memory-mapped) instead of in RAM")
    quantization: Literal["none", "scalar"] = Field("none", description="qdrant: none | scalar (int8 dense vectors, rescored)")
    fusion: Literal["client", "server_rrf"] = Field(
        "client", description="qdrant: client (retrieval.fusion, as on the local backend) | server_rrf (the Query API's RRF)")
    batch_size: int = Field(256, ge=1, description="qdrant: points per upsert request")
    timeout: float = Field(30.0, gt=0, description="qdrant: seconds per request")
    retries: int = Field(3, ge=0, description="qdrant: retries of a failed write (writes are idempotent)")

    @model_validator(mode="after")
    def _combinations(self) -> "StorageConfig":
        qdrant_only = {"path": self.path, "url": self.url, "api_key_env": self.api_key_env, "collection": self.collection}
        if self.backend == "local":
            given = [k for k, v in qdrant_only.items() if v is not None]
            if given:
                raise ValueError(f"storage.{given[0]} applies only to backend qdrant (storage.backend is local; allowed: local, qdrant)")
            return self
        if self.path and self.url:
            raise ValueError("storage.path (local mode) and storage.url (server) exclude each other; give one")
        if not self.url and (self.shards > 1 or self.replicas > 1):
            key = "shards" if self.shards > 1 else "replicas"
            raise ValueError(f"storage.{key}: local mode has one shard and one copy; set storage.url for a cluster")
        if not self.url and self.api_key_env:
            raise ValueError("storage.api_key_env: local mode takes no API key; it applies with storage.url")
        return self
