"""Micro-batching of concurrent query embeddings (``serving.batch_wait_ms`` / ``serving.max_batch``).

Many threads asking for one query vector each would each run a forward pass and fight for the cores.
``QueryBatcher`` hands their queries to one worker thread, which waits at most ``wait_ms`` for company
and then embeds up to ``max_batch`` queries in one call. It waits only while queries keep arriving
together (the last batch held more than one): a lone query on a quiet service is not held back.
Passage embedding goes straight through.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, List

import numpy as np
from llama_index.core.embeddings import BaseEmbedding
from pydantic import PrivateAttr

from .threads import INFERENCE_LOCK

logger = logging.getLogger(__name__)


def embed_queries(model: BaseEmbedding, queries: list[str]) -> np.ndarray:
    """float32 [n, dim] query vectors in one call where the model can batch (ours can), else one by one."""
    inner = getattr(model, "inner", model)
    batch = getattr(inner, "embed_queries", None)
    if callable(batch):
        return np.asarray(batch(queries), dtype=np.float32)
    return np.asarray([model.get_query_embedding(q) for q in queries], dtype=np.float32)


def query_vector(model: BaseEmbedding, query: str) -> np.ndarray:
    """One float32 query vector, through the model's own lean path (cache, batcher) when it has one."""
    own = getattr(model, "query_vector", None)
    return own(query) if callable(own) else embed_queries(model, [query])[0]


class QueryModelWrapper(BaseEmbedding):
    """A query-side wrapper around an embedding: subclasses give ``query_vector``; passages pass straight through."""

    _inner: Any = PrivateAttr()

    def __init__(self, inner: BaseEmbedding, **kwargs: Any) -> None:
        super().__init__(model_name=getattr(inner, "model_name", "wrapped"), embed_batch_size=inner.embed_batch_size, **kwargs)
        self._inner = inner

    @property
    def inner(self) -> BaseEmbedding:
        return self._inner

    def query_vector(self, query: str) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _get_query_embedding(self, query: str) -> List[float]:
        return self.query_vector(query).tolist()

    async def _aget_query_embedding(self, query: str) -> List[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> List[float]:
        return self._inner.get_text_embedding(text)

    def _get_text_embeddings(self, texts: List[str]) -> List[List[float]]:
        return self._inner.get_text_embedding_batch(texts)


class QueryBatcher(QueryModelWrapper):
    """Wraps an embedding; concurrent ``get_query_embedding`` calls share batched forward passes."""

    _queue: Any = PrivateAttr()
    _wait: float = PrivateAttr()
    _max: int = PrivateAttr()
    _last: int = PrivateAttr(default=1)

    def __init__(self, inner: BaseEmbedding, wait_ms: float = 2.0, max_batch: int = 16, **kwargs: Any) -> None:
        super().__init__(inner, **kwargs)
        self._queue = queue.Queue()
        self._wait = wait_ms / 1000.0
        self._max = max_batch
        threading.Thread(target=self._work, name="ragpipe-query-batcher", daemon=True).start()

    @classmethod
    def class_name(cls) -> str:
        return "QueryBatcher"

    def _work(self) -> None:
        while True:
            batch = [self._queue.get()]
            # company is likely only under concurrent load; at concurrency 1 the wait was pure latency
            deadline = time.perf_counter() + (self._wait if self._last > 1 else 0.0)
            while len(batch) < self._max:
                left = deadline - time.perf_counter()
                try:
                    batch.append(self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                with INFERENCE_LOCK:
                    vectors = embed_queries(self._inner, [q for q, _ in batch])
            except BaseException as exc:  # noqa: BLE001 - every waiting caller gets the error
                for _, fut in batch:
                    fut.set_exception(exc)
                continue
            self._last = len(batch)
            for (_, fut), vec in zip(batch, vectors):
                fut.set_result(vec)
            logger.debug("embedded %d queries in one batch", len(batch))

    def query_vector(self, query: str) -> np.ndarray:
        """This query's float32 vector, computed in a batch with the queries that arrive with it."""
        fut: Future = Future()
        self._queue.put((query, fut))
        return fut.result()
