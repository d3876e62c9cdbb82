"""embedding.query_cache: repeated queries skip the encoder; vectors stay float32 from encoder to faiss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config import EmbeddingConfig
from pipeline.models.batching import QueryBatcher, query_vector
from pipeline.models.embedding import build_embedding
from pipeline.models.query_cache import QueryVectorCache


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path):
    return build_embedding(EmbeddingConfig(model=str(tiny_model_dir), max_length=64))


class _Counting:
    """Counts calls into the wrapped model's batch path."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, 0
        self.embed_batch_size, self.model_name = inner.embed_batch_size, "counting"

    def query_vector(self, query: str) -> np.ndarray:
        self.calls += 1
        return query_vector(self.inner, query)


def test_vectors_are_float32_and_equal_to_the_llamaindex_path(model) -> None:
    vec = query_vector(model, "서울의 인구는?")
    assert isinstance(vec, np.ndarray) and vec.dtype == np.float32
    np.testing.assert_allclose(vec, model.get_query_embedding("서울의 인구는?"), atol=1e-5)


def test_repeated_queries_are_answered_from_the_cache(model) -> None:
    counting = _Counting(model)
    cache = QueryVectorCache(counting, size=2)
    a = cache.query_vector("김치는?")
    b = cache.query_vector("김치는?")
    assert counting.calls == 1 and cache.hits == 1 and b is a
    assert not a.flags.writeable  # shared between callers
    cache.query_vector("서울은?")
    cache.query_vector("기차는?")  # evicts the least recently used: 김치는?
    cache.query_vector("김치는?")
    assert counting.calls == 4 and cache.misses == 4


def test_cache_key_includes_the_query_prompt(model) -> None:
    cache = QueryVectorCache(model, size=8)
    assert cache._prompt == "query: "


def test_batcher_behind_the_cache_gives_the_same_vector(model) -> None:
    cache = QueryVectorCache(QueryBatcher(model, wait_ms=1, max_batch=4), size=8)
    np.testing.assert_allclose(cache.query_vector("광합성이란?"), query_vector(model, "광합성이란?"), atol=1e-5)


class _Recording:
    """Records the batches the batcher hands to the model."""

    def __init__(self, model) -> None:  # no ``inner`` attribute: embed_queries would unwrap it
        self.model, self.batches = model, []
        self.embed_batch_size, self.model_name = model.embed_batch_size, "recording"

    def embed_queries(self, queries: list[str]) -> np.ndarray:
        self.batches.append(list(queries))
        return np.asarray([query_vector(self.model, q) for q in queries], dtype=np.float32)


def test_batcher_waits_for_company_only_under_concurrent_load(model) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.models.threads import INFERENCE_LOCK

    recording = _Recording(model)
    batcher = QueryBatcher(recording, wait_ms=60_000, max_batch=2)
    with ThreadPoolExecutor(1) as pool:  # quiet: a lone query is embedded at once, not after the 60 s wait
        assert pool.submit(batcher.query_vector, "서울").result(timeout=20).dtype == np.float32
    with ThreadPoolExecutor(3) as pool:  # busy: the worker is held at the model, so queries pile up behind it
        INFERENCE_LOCK.acquire()
        try:
            first = pool.submit(batcher.query_vector, "부산")
            threading.Event().wait(0.2)
            rest = [pool.submit(batcher.query_vector, q) for q in ("대전", "제주")]
            threading.Event().wait(0.2)
        finally:
            INFERENCE_LOCK.release()
        [f.result(timeout=20) for f in (first, *rest)]
    assert recording.batches == [["서울"], ["부산"], ["대전", "제주"]]
    with ThreadPoolExecutor(2) as pool:  # after a batch of two, the next query waits for the one behind it
        a = pool.submit(batcher.query_vector, "광주")
        threading.Event().wait(0.2)
        b = pool.submit(batcher.query_vector, "울산")
        a.result(timeout=20), b.result(timeout=20)
    assert recording.batches[-1] == ["광주", "울산"]
