"""Content-hash embedding cache: unchanged text is never embedded twice.

Vectors live in one SQLite file keyed by sha256(model key + text). Each batch is committed as
soon as it is computed, so an ingest killed half-way keeps what it already paid for.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, List

import numpy as np
from llama_index.core.embeddings import BaseEmbedding
from pydantic import PrivateAttr

from ..core.progress import progress

logger = logging.getLogger(__name__)


def default_cache_path() -> Path:
    """``$RAGPIPE_CACHE_DIR/embeddings.sqlite`` (default ``~/.cache/ragpipe``)."""
    root = os.environ.get("RAGPIPE_CACHE_DIR") or Path.home() / ".cache" / "ragpipe"
    return Path(root) / "embeddings.sqlite"


class EmbeddingCache:
    """A persistent (key -> float32 vector) map in SQLite."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
        self._db.commit()

    def get_many(self, keys: list[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                marks = ",".join("?" * len(chunk))
                for key, blob in self._db.execute(f"SELECT key, vec FROM vectors WHERE key IN ({marks})", chunk):
                    out[key] = np.frombuffer(blob, dtype=np.float32)
        return out

    def put_many(self, items: list[tuple[str, np.ndarray]]) -> None:
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO vectors (key, vec) VALUES (?, ?)",
                [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items],
            )
            self._db.commit()

    def size_bytes(self) -> int:
        """Bytes the database file holds (pages in use)."""
        with self._lock:
            pages, size = self._db.execute("PRAGMA page_count").fetchone()[0], self._db.execute("PRAGMA page_size").fetchone()[0]
            free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * size)

    def prune(self, max_bytes: int) -> int:
        """Evict the least recently written vectors until the file is under ``max_bytes``; returns how many went."""
        size, n = self.size_bytes(), len(self)
        if size <= max_bytes or n == 0:
            return 0
        drop = min(n, n - int(max_bytes / (size / n)) + 1)
        with self._lock:
            self._db.execute("DELETE FROM vectors WHERE rowid IN (SELECT rowid FROM vectors ORDER BY rowid LIMIT ?)", (drop,))
            self._db.commit()
            self._db.execute("VACUUM")
        logger.info("embedding cache: evicted %d of %d vectors (%.1f MB -> %.1f MB)", drop, n, size / 1e6, self.size_bytes() / 1e6)
        return drop

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])


class CachedEmbedding(BaseEmbedding):
    """Wraps any LlamaIndex embedding; passage vectors are cached, queries always computed.

    ``new_embeddings`` and ``cache_hits`` count passage texts since the last ``reset_counts()``;
    ``embed_seconds`` is the time spent computing the new ones.
    """

    new_embeddings: int = 0
    cache_hits: int = 0
    embed_seconds: float = 0.0
    chunk_size: int = 256
    show_progress: bool = False
    _inner: BaseEmbedding = PrivateAttr()
    _cache: EmbeddingCache = PrivateAttr()
    _key_prefix: str = PrivateAttr()

    def __init__(self, inner: BaseEmbedding, cache: EmbeddingCache, model_key: str, **kwargs: Any) -> None:
        super().__init__(model_name=inner.model_name, embed_batch_size=2048, **kwargs)
        self._inner = inner
        self._cache = cache
        self._key_prefix = model_key + "\x00"

    @property
    def inner(self) -> BaseEmbedding:
        return self._inner

    def reset_counts(self) -> None:
        self.new_embeddings = 0
        self.cache_hits = 0
        self.embed_seconds = 0.0

    def _key(self, text: str) -> str:
        return hashlib.sha256((self._key_prefix + text).encode("utf-8")).hexdigest()

    def _get_query_embedding(self, query: str) -> List[float]:
        return self._inner.get_query_embedding(query)

    async def _aget_query_embedding(self, query: str) -> List[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> List[float]:
        return self._get_text_embeddings([text])[0]

    async def _aget_text_embedding(self, text: str) -> List[float]:
        return self._get_text_embedding(text)

    def _get_text_embeddings(self, texts: List[str]) -> List[List[float]]:
        keys = [self._key(t) for t in texts]
        found = self._cache.get_many(list(dict.fromkeys(keys)))
        missing = list(dict.fromkeys(k for k in keys if k not in found))
        self.cache_hits += len(texts) - sum(1 for k in keys if k not in found)
        if missing:
            text_of = {k: t for k, t in zip(keys, texts)}
            # longest first: similar lengths share a batch (less padding) and the ETA is honest
            missing.sort(key=lambda k: -len(text_of[k]))
            starts = range(0, len(missing), self.chunk_size)
            for start in progress(starts, "embedding", total=len(starts), show_progress=self.show_progress, unit="chunk"):
                chunk = missing[start : start + self.chunk_size]
                t0 = time.perf_counter()
                vecs = self._inner.get_text_embedding_batch([text_of[k] for k in chunk])
                self.embed_seconds += time.perf_counter() - t0
                pairs = [(k, np.asarray(v, dtype=np.float32)) for k, v in zip(chunk, vecs)]
                self._cache.put_many(pairs)
                found.update(pairs)
                self.new_embeddings += len(chunk)
        return [found[k].tolist() for k in keys]

    def get_query_embedding_cached(self, query: str) -> List[float]:
        """A query vector through the cache (parameter sweeps only: it hides query-embedding latency)."""
        prompt = getattr(self._inner, "query_instruction", None) or ""  # the passage key does not cover the query prompt
        key = self._key(f"\x01query\x00{prompt}\x00{query}")
        found = self._cache.get_many([key])
        if key not in found:
            found[key] = np.asarray(self._inner.get_query_embedding(query), dtype=np.float32)
            self._cache.put_many([(key, found[key])])
        return found[key].tolist()

    def get_text_embeddings_array(self, texts: List[str]) -> np.ndarray:
        """Passage vectors as one float32 array (for bulk indexing and evaluation)."""
        return np.asarray(self._get_text_embeddings(texts), dtype=np.float32)

    def get_image_embeddings_array(self, paths: List[Any]) -> np.ndarray:
        """Image vectors (inner model must embed images), cached by the file's content hash."""
        from ..core.io import sha256_file

        keys = [self._key("\x00image\x00" + sha256_file(Path(p))) for p in paths]
        found = self._cache.get_many(list(dict.fromkeys(keys)))
        todo = {k: p for k, p in zip(keys, paths) if k not in found}
        self.cache_hits += len(keys) - sum(1 for k in keys if k not in found)
        items = list(todo.items())
        for start in range(0, len(items), self.chunk_size):
            chunk = items[start : start + self.chunk_size]
            vecs = self._inner.get_image_embeddings_array([p for _, p in chunk])
            pairs = [(k, np.asarray(v, dtype=np.float32)) for (k, _), v in zip(chunk, vecs)]
            self._cache.put_many(pairs)
            found.update(pairs)
            self.new_embeddings += len(chunk)
        return np.asarray([found[k] for k in keys], dtype=np.float32).reshape(len(keys), -1)
