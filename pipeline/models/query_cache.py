"""A bounded in-memory LRU of query vectors (``embedding.query_cache``), in front of the query model.

Repeated questions (a chat app's retries, a UI's suggested questions) skip the encoder. The key is the
query text plus the model's query prompt, so one cache never mixes prompts. Vectors stay float32 arrays.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np
from llama_index.core.embeddings import BaseEmbedding
from pydantic import PrivateAttr

from .batching import QueryModelWrapper, query_vector


class QueryVectorCache(QueryModelWrapper):
    """Wraps a query model; ``query_vector`` answers repeated queries from the last ``size`` distinct ones."""

    _size: int = PrivateAttr()
    _prompt: str = PrivateAttr()
    _lru: Any = PrivateAttr()
    _lock: Any = PrivateAttr()
    hits: int = 0
    misses: int = 0

    def __init__(self, inner: BaseEmbedding, size: int, **kwargs: Any) -> None:
        super().__init__(inner, **kwargs)
        self._size = size
        model = inner
        while not hasattr(model, "query_instruction") and hasattr(model, "inner"):  # through batcher and passage cache
            model = model.inner
        self._prompt = str(getattr(model, "query_instruction", None) or "")
        self._lru: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def class_name(cls) -> str:
        return "QueryVectorCache"

    def query_vector(self, query: str) -> np.ndarray:
        """The cached vector of ``query``, or the inner model's (then remembered, the oldest evicted)."""
        key = (self._prompt, query)
        with self._lock:
            vec = self._lru.get(key)
            if vec is not None:
                self._lru.move_to_end(key)
                self.hits += 1
                return vec
        vec = query_vector(self._inner, query)
        vec.setflags(write=False)  # shared between callers
        with self._lock:
            self.misses += 1
            self._lru[key] = vec
            self._lru.move_to_end(key)
            while len(self._lru) > self._size:
                self._lru.popitem(last=False)
        return vec
