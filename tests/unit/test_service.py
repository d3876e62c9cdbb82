"""HTTP service (pipeline/service.py) over the tiny hybrid index, via FastAPI's TestClient."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from fastapi.testclient import TestClient

from pipeline.retrieval.search import MAX_QUERY_CHARS
from pipeline.serving.pipeline import Pipeline
from pipeline.serving.service import create_app
from tests.conftest import TINY_DOCS

SECRET = "s3cret-key-for-tests-only"


@pytest.fixture()
def pipe(tiny_config: dict[str, Any]) -> Pipeline:
    p = Pipeline.from_config(tiny_config)
    p.ingest()
    return p


@pytest.fixture()
def client(pipe: Pipeline) -> TestClient:
    return TestClient(create_app(pipe, api_key=None))


def _sse_events(text: str) -> list[tuple[str, Any]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        events.append((lines.get("event", "message"), json.loads(lines["data"])))
    return events


# --------------------------------------------------------------------------- read endpoints


def test_health_and_info(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "index_loaded": True}
    info = client.get("/info").json()
    assert info["counts"] == {"documents": 6, "nodes": 6}
    assert info["retrievers"] == ["bm25", "dense"]
    assert len(info["config_sha256"]) == 64
    assert info["embedding"]["dim"] == 32
    assert info["llm"] is None and info["auth"] is False


def test_retrieve_returns_ranked_passages(client: TestClient) -> None:
    r = client.post("/retrieve", json={"query": "서울", "top_k": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["results"]) == 2
    top = body["results"][0]
    assert top["doc_id"] == "seoul" and top["rank"] == 1
    assert "서울은" in top["text"] and top["node_id"] and isinstance(top["score"], float)
    assert top["metadata"]["category"] == "여행"


def test_retrieve_filters(client: TestClient) -> None:
    r = client.post("/retrieve", json={"query": "도시", "top_k": 5, "filters": {"category": "여행"}})
    assert r.status_code == 200, r.text
    docs = {h["doc_id"] for h in r.json()["results"]}
    assert docs and docs <= {"seoul", "busan", "train"}


def test_query_retrieval_only(client: TestClient) -> None:
    r = client.post("/query", json={"query": "김치는 어떻게 만드나요?", "top_k": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == "retrieval_only" and body["answer"] is None
    assert body["sources"][0]["doc_id"] == "kimchi"


def test_query_stream_retrieval_only(client: TestClient) -> None:
    r = client.post("/query", json={"query": "김치", "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = _sse_events(r.text)
    assert events[0][0] == "sources" and events[0][1]["sources"][0]["doc_id"] == "kimchi"
    assert events[-1][0] == "done" and events[-1][1]["mode"] == "retrieval_only"


def test_query_stream_with_llm(pipe: Pipeline) -> None:
    from llama_index.core.llms import MockLLM

    client = TestClient(create_app(pipe, llm=MockLLM(), api_key=None))
    r = client.post("/query", json={"query": "부산은 무엇으로 유명한가요?", "top_k": 2, "stream": True})
    assert r.status_code == 200, r.text
    events = _sse_events(r.text)
    kinds = [e for e, _ in events]
    assert kinds[0] == "sources" and kinds[-1] == "done" and "token" in kinds
    answer = "".join(d["delta"] for e, d in events if e == "token")
    assert events[-1][1]["answer"] == answer and "해운대" in answer  # MockLLM echoes the prompt: the passage reached it
    plain = client.post("/query", json={"query": "부산은 무엇으로 유명한가요?", "top_k": 2}).json()
    assert plain["mode"] == "llm" and "해운대" in plain["answer"] and plain["sources"][0]["doc_id"] == "busan"


def test_openapi_and_docs(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/retrieve", "/query", "/documents", "/documents/{doc_id}", "/health", "/info"} <= set(spec["paths"])
    assert "RetrieveRequest" in spec["components"]["schemas"]
    assert client.get("/docs").status_code == 200


def test_docs_assets_are_served_locally(client: TestClient) -> None:
    """/docs works without internet: every script and stylesheet it loads comes from this service."""
    import re

    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assets = re.findall(r"""(?:src|href)=["']([^"']+\.(?:js|css))["']""", html)
        assert assets, page
        for url in assets:
            assert url.startswith("/"), f"{page} loads {url} from elsewhere"
            r = client.get(url)
            assert r.status_code == 200 and len(r.content) > 1000, url


def test_openapi_has_response_models(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()

    def schema(path: str, method: str) -> str:
        return spec["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"].get("$ref", "")

    assert schema("/retrieve", "post").endswith("/RetrieveResponse")
    assert schema("/query", "post").endswith("/QueryResponse")
    assert schema("/documents", "get").endswith("/DocumentsPage")
    assert schema("/documents", "post").endswith("/UpsertResponse")
    assert schema("/documents/{doc_id}", "delete").endswith("/DeleteResponse")
    assert schema("/health", "get").endswith("/Health") and schema("/info", "get").endswith("/Info")
    hit = spec["components"]["schemas"]["Hit"]["properties"]
    assert {"doc_id", "node_id", "score", "text", "metadata"} <= set(hit)


# --------------------------------------------------------------------------- writes


def test_upsert_then_retrieve_then_delete(client: TestClient, pipe: Pipeline) -> None:
    doc = {"doc_id": "jeju", "text": "제주도는 한라산과 귤로 유명한 섬이다.", "metadata": {"category": "여행"}}
    r = client.post("/documents", json={"documents": [doc]})
    assert r.status_code == 200, r.text
    assert r.json()["upserted"] == ["jeju"] and r.json()["report"]["documents"] == 7
    # persisted before the reply: a fresh Pipeline over the same folder sees it
    assert "jeju" in {d.doc_id for d in Pipeline(pipe.config).documents()}
    hits = client.post("/retrieve", json={"query": "한라산", "top_k": 1}).json()["results"]
    assert hits[0]["doc_id"] == "jeju" and hits[0]["metadata"]["category"] == "여행"
    assert client.get("/info").json()["counts"]["documents"] == 7

    r = client.delete("/documents/jeju")
    assert r.status_code == 200, r.text
    assert client.get("/info").json()["counts"]["documents"] == 6
    assert all(h["doc_id"] != "jeju" for h in client.post("/retrieve", json={"query": "한라산", "top_k": 6}).json()["results"])
    r = client.delete("/documents/jeju")
    assert r.status_code == 404 and "jeju" in r.json()["detail"]


def test_queries_during_upsert_see_old_or_new(pipe: Pipeline) -> None:
    """Queries keep being answered while an upsert rebuilds, each wholly from the old or the new index.

    The old and new answer sets are disjoint, so a query that mixed the two (say new BM25, old dense)
    would return a set that is neither and fail.
    """
    client = TestClient(create_app(pipe, api_key=None))
    query = {"query": "한라산 제주도 도시", "top_k": 7, "filters": {"category": "여행"}}
    old = frozenset(h["doc_id"] for h in client.post("/retrieve", json=query).json()["results"])
    assert old == {"seoul", "train", "busan"}
    moved = [{"doc_id": d["doc_id"], "text": d["text"], "metadata": {"category": "도시"}} for d in TINY_DOCS if d["doc_id"] in old]
    new_docs = [*moved, {"doc_id": "jeju", "text": "제주도는 한라산과 귤로 유명한 섬이다.", "metadata": {"category": "여행"}}]
    seen: list[frozenset[str]] = []
    errors: list[str] = []
    done = threading.Event()

    def upsert() -> None:
        try:
            r = client.post("/documents", json={"documents": new_docs})
            if r.status_code != 200:
                errors.append(r.text)
        finally:
            done.set()

    t = threading.Thread(target=upsert)
    t.start()
    while not done.is_set():
        r = client.post("/retrieve", json=query)
        if r.status_code != 200:
            errors.append(r.text)
        seen.append(frozenset(h["doc_id"] for h in r.json()["results"]))
    t.join()
    seen.append(frozenset(h["doc_id"] for h in client.post("/retrieve", json=query).json()["results"]))
    assert not errors and len(seen) >= 2
    assert set(seen) <= {old, frozenset({"jeju"})}, set(seen) - {old, frozenset({"jeju"})}
    assert seen[-1] == {"jeju"}


def test_torn_log_tail_is_ignored_and_cut(pipe: Pipeline) -> None:
    """A kill mid-append leaves a torn last log line: it was never acknowledged, readers skip it, the next writer cuts it."""
    from llama_index.core import Document

    pipe.upsert([Document(text="제주도는 한라산이 있는 섬이다.", id_="jeju")])
    log = pipe.index_path / "v000001.wal"
    with open(log, "ab") as fh:
        fh.write(b'{"op": "upsert", "documents": [{"doc_id": "half"')
    fresh = Pipeline(pipe.config)
    assert {"jeju"} <= {d.doc_id for d in fresh.documents()} and "half" not in {d.doc_id for d in fresh.documents()}
    fresh.upsert([Document(text="울릉도는 동해의 섬이다.", id_="ulleung")])
    lines = log.read_bytes().splitlines(keepends=True)
    assert len(lines) == 2 and all(line.endswith(b"\n") for line in lines)
    assert {"jeju", "ulleung"} <= {d.doc_id for d in Pipeline(pipe.config).documents()}


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        ({"query": ""}, "query"),
        ({"query": "   "}, "query is empty"),
        ({"query": "서울", "top_k": 0}, "top_k"),
        ({"query": "서울", "top_k": 101}, "top_k"),
        ({"query": "가" * (MAX_QUERY_CHARS + 1)}, "query"),
        ({"top_k": 3}, "query: Field required"),
        ({"query": "서울", "filters": {"category": ["a", "b"]}}, "filters"),
        ({"query": "서울", "topk": 3}, "topk"),
        ({"query": "서울", "filters": {"category": True}}, "filters.category"),
    ],
)
def test_retrieve_validation(client: TestClient, payload: dict[str, Any], where: str) -> None:
    r = client.post("/retrieve", json=payload)
    assert r.status_code == 422, r.text
    assert where in r.json()["detail"]


def test_upsert_validation(client: TestClient) -> None:
    r = client.post("/documents", json={"documents": []})
    assert r.status_code == 422 and "documents" in r.json()["detail"]
    r = client.post("/documents", json={"documents": [{"doc_id": "a", "text": "x"}, {"doc_id": "a", "text": "y"}]})
    assert r.status_code == 422 and "duplicate doc_id" in r.json()["detail"]
    r = client.post("/documents", json={"documents": [{"doc_id": "a", "text": " "}]})
    assert r.status_code == 422 and "text is empty" in r.json()["detail"]
    r = client.post("/documents", json={"documents": [{"doc_id": "a", "text": "x", "metadata": {"tags": ["a"]}}]})
    assert r.status_code == 422 and "metadata.tags" in r.json()["detail"]
    r = client.post("/retrieve", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_body_size_limit(pipe: Pipeline) -> None:
    client = TestClient(create_app(pipe, api_key=None, max_body_bytes=1000))
    r = client.post("/documents", json={"documents": [{"doc_id": "big", "text": "가" * 2000}]})
    assert r.status_code == 413 and "limit" in r.json()["detail"]

    def chunks():  # no Content-Length: counted while reading
        yield b'{"query": "'
        yield "가".encode() * 1000
        yield b'"}'

    r = client.post("/retrieve", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_delete_last_document_is_refused(tiny_config: dict[str, Any]) -> None:
    p = Pipeline.from_config(tiny_config)
    from llama_index.core import Document

    p.ingest(documents=[Document(text="서울은 수도다.", id_="only", metadata={"doc_id": "only"})])
    r = TestClient(create_app(p, api_key=None)).delete("/documents/only")
    assert r.status_code == 409 and "at least one" in r.json()["detail"]


# --------------------------------------------------------------------------- auth


def test_auth_from_env(pipe: Pipeline, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("RAGPIPE_API_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    client = TestClient(create_app(pipe))
    assert client.get("/health").status_code == 200  # open
    assert client.get("/openapi.json").status_code == 200
    r = client.post("/retrieve", json={"query": "서울"})
    assert r.status_code == 401 and "API key" in r.json()["detail"]
    assert client.post("/retrieve", json={"query": "서울"}, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.post("/retrieve", json={"query": "서울"}, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/retrieve", json={"query": "서울"}, headers={"X-API-Key": SECRET}).status_code == 200
    assert client.post("/retrieve", json={"query": "서울"}, headers={"Authorization": f"Bearer {SECRET}"}).status_code == 200
    assert client.delete("/documents/seoul").status_code == 401
    info = client.get("/info", headers={"X-API-Key": SECRET})
    assert info.status_code == 200 and info.json()["auth"] is True
    assert SECRET not in info.text
    assert SECRET not in caplog.text


def test_auth_off_by_default(client: TestClient) -> None:
    assert client.post("/retrieve", json={"query": "서울"}).status_code == 200


def test_info_has_no_secrets(tiny_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("MY_LLM_KEY", "sk-very-secret-value")
    cfg = {**tiny_config, "llm": {"provider": "openai_like", "model": "m", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "MY_LLM_KEY"}}
    p = Pipeline.from_config(cfg)
    p.ingest()
    caplog.set_level(logging.DEBUG)
    client = TestClient(create_app(p, api_key=None))
    text = client.get("/info").text
    assert "sk-very-secret-value" not in text and "MY_LLM_KEY" not in text
    assert json.loads(text)["llm"] == {"provider": "openai_like", "model": "m", "base_url": "http://127.0.0.1:9/v1"}
    assert "sk-very-secret-value" not in caplog.text


def test_missing_index_fails_at_startup(tiny_config: dict[str, Any], tmp_path: Path) -> None:
    from pipeline.core.errors import IndexStateError

    p = Pipeline.from_config({**tiny_config, "index_dir": str(tmp_path / "nothing")})
    with pytest.raises(IndexStateError, match="ragpipe ingest"):
        create_app(p)
