"""Stateless retrieval: many threads with different top_k and filters get exactly the sequential results, lock-free."""

from __future__ import annotations

import copy
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters

from pipeline import Pipeline

QUERIES = ["서울의 강", "김치는 어떻게 만드나요?", "잠이 안 와요", "기차 타는 곳", "식물은 무엇을 만드나", "부산 바다", "여행 가기 좋은 도시"]
FILTERS: list[Any] = [
    None,
    {"category": "여행"},
    {"category": ["요리", "건강"]},
    MetadataFilters(filters=[MetadataFilter(key="category", value="여행", operator=FilterOperator.NE)]),
    {"category": "없는 분류"},
]


def _ranking(hits: list[Any]) -> list[tuple[str, float]]:
    return [(h.node.node_id, round(float(h.score), 6)) for h in hits]


def test_eight_threads_get_exactly_the_sequential_results(tiny_config: dict[str, Any]) -> None:
    pipe = Pipeline.from_config(copy.deepcopy(tiny_config))
    pipe.ingest()
    rng = random.Random(0)
    calls = [(rng.choice(QUERIES), rng.randint(1, 6), rng.choice(FILTERS)) for _ in range(8 * 200)]
    expected = [_ranking(pipe.retrieve(q, top_k=k, filters=f)) for q, k, f in calls]
    assert len({tuple(map(tuple, e)) for e in expected}) > 20  # the mix really varies top_k and filters

    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda c: _ranking(pipe.retrieve(c[0], top_k=c[1], filters=c[2])), calls))
    assert got == expected
    for (q, k, f), ranking in zip(calls, got):
        assert len(ranking) <= k
    # the served objects were not changed by 3,200 queries with other settings
    search = pipe.load()
    assert search.top_k == tiny_config["retrieval"]["top_k"]
    assert [e.candidate_k for e in search.first_stage.entries] == [5, 5]


def test_retrieve_takes_no_lock(tiny_config: dict[str, Any]) -> None:
    pipe = Pipeline.from_config(copy.deepcopy(tiny_config))
    pipe.ingest()
    pipe.load()
    done = threading.Event()
    with pipe._open_lock, pipe._write_lock:  # a writer or a first open holds both: queries still run
        worker = threading.Thread(target=lambda: (pipe.retrieve("서울", top_k=2), done.set()))
        worker.start()
        worker.join(timeout=30)
    assert done.is_set()
