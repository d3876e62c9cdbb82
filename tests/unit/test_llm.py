"""LLM answers against a real local HTTP server speaking the OpenAI chat-completions protocol.

The server (stdlib ``http.server`` in a thread on 127.0.0.1, random port) records every request
body, answers plain or as SSE chunks, and can fail with HTTP 500 or hang past the client timeout.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from pipeline.serving.pipeline import Pipeline
from pipeline.serving.engine import LLMError, RetrievalOnlyQueryEngine, answer_with_sources

ANSWER_TOKENS = ["서울은 ", "대한민국의 ", "수도입니다."]
ANSWER = "".join(ANSWER_TOKENS)


class _FakeOpenAI(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self.server.requests.append({"path": self.path, "body": body, "authorization": self.headers.get("Authorization")})
        mode = self.server.mode
        if mode == "error":
            self._json(500, {"error": {"message": "model exploded", "type": "server_error"}})
            return
        if mode == "hang":
            time.sleep(3)
        if not self.path.endswith("/chat/completions"):
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return
        if body.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            for i, tok in enumerate([None, *ANSWER_TOKENS]):
                delta = {"role": "assistant", "content": ""} if tok is None else {"content": tok}
                self._event({"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                             "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
            self._event({"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                         "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            return
        self._json(200, {
            "id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        })

    def _event(self, data: dict[str, Any]) -> None:
        self.wfile.write(f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode())
        self.wfile.flush()

    def _json(self, status: int, data: dict[str, Any]) -> None:
        raw = json.dumps(data, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    requests: list[dict[str, Any]]
    mode: str

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


@pytest.fixture()
def llm_server() -> Iterator[_Server]:
    server = _Server(("127.0.0.1", 0), _FakeOpenAI)
    server.requests, server.mode = [], "ok"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture()
def llm_pipe(tiny_config: dict[str, Any], llm_server: _Server, monkeypatch: pytest.MonkeyPatch) -> Pipeline:
    monkeypatch.setenv("FAKE_LLM_KEY", "sk-test-123")
    cfg = {**tiny_config, "llm": {"provider": "openai_like", "model": "fake-model", "base_url": llm_server.base_url,
                                  "api_key_env": "FAKE_LLM_KEY", "timeout": 1.0, "max_retries": 0, "max_tokens": 64}}
    p = Pipeline.from_config(cfg)
    p.ingest()
    return p


def _prompt_text(request: dict[str, Any]) -> str:
    return "\n".join(str(m.get("content")) for m in request["body"]["messages"])


def test_query_engine_answers_with_sources(llm_pipe: Pipeline, llm_server: _Server) -> None:
    from llama_index.core.query_engine import RetrieverQueryEngine

    engine = llm_pipe.as_query_engine(top_k=2)
    assert isinstance(engine, RetrieverQueryEngine)
    result = answer_with_sources(engine.query("서울은 어떤 도시인가요?"))
    assert result["answer"] == ANSWER and result["mode"] == "llm"
    assert result["sources"][0]["doc_id"] == "seoul"
    assert len(result["sources"]) == 2
    assert {"doc_id", "node_id", "score", "text"} <= set(result["sources"][0])
    assert "한강이 도시를 가로질러" in result["sources"][0]["text"]

    (req,) = llm_server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["body"]["model"] == "fake-model" and req["body"]["temperature"] == 0.0 and req["body"].get("stream") in (None, False)
    assert req["authorization"] == "Bearer sk-test-123"  # from llm.api_key_env
    prompt = _prompt_text(req)
    assert "서울은 어떤 도시인가요?" in prompt
    for src in result["sources"]:  # every retrieved passage reached the prompt
        assert src["text"] in prompt


def test_query_engine_streams(llm_pipe: Pipeline, llm_server: _Server) -> None:
    response = llm_pipe.as_query_engine(streaming=True, top_k=2).query("서울은 어떤 도시인가요?")
    assert [s.node.ref_doc_id for s in response.source_nodes][0] == "seoul"  # sources before any token
    tokens = list(response.response_gen)
    assert "".join(tokens) == ANSWER and len(tokens) >= len(ANSWER_TOKENS)
    (req,) = llm_server.requests
    assert req["body"]["stream"] is True
    assert "한강이 도시를 가로질러" in _prompt_text(req)


def test_answer_with_sources_consumes_a_stream(llm_pipe: Pipeline) -> None:
    result = answer_with_sources(llm_pipe.as_query_engine(streaming=True).query("김치는 어떻게 만드나요?"))
    assert result["answer"] == ANSWER and result["sources"][0]["doc_id"] == "kimchi"


def test_service_query_over_llm(llm_pipe: Pipeline, llm_server: _Server) -> None:
    from fastapi.testclient import TestClient

    from pipeline.serving.service import create_app

    client = TestClient(create_app(llm_pipe, api_key=None))
    body = client.post("/query", json={"query": "서울은 어떤 도시인가요?", "top_k": 2}).json()
    assert body["answer"] == ANSWER and body["sources"][0]["doc_id"] == "seoul"
    r = client.post("/query", json={"query": "서울은 어떤 도시인가요?", "top_k": 2, "stream": True})
    tokens = [json.loads(line[6:])["delta"] for line in r.text.splitlines() if line.startswith("data: ") and '"delta"' in line]
    assert "".join(tokens) == ANSWER
    assert client.get("/info").json()["llm"]["model"] == "fake-model"
    llm_server.mode = "error"
    r = client.post("/query", json={"query": "서울"})
    assert r.status_code == 502 and "500" in r.json()["detail"]
    r = client.post("/query", json={"query": "서울", "stream": True})
    assert r.status_code == 200 and "event: error" in r.text and "500" in r.text


def test_server_error_is_a_clear_error(llm_pipe: Pipeline, llm_server: _Server) -> None:
    llm_server.mode = "error"
    with pytest.raises(LLMError, match=r"LLM request to http://127\.0\.0\.1:\d+/v1 \(model 'fake-model'\) failed: .*500"):
        llm_pipe.as_query_engine().query("서울")
    assert len(llm_server.requests) == 1  # max_retries: 0


def test_server_error_while_streaming(llm_pipe: Pipeline, llm_server: _Server) -> None:
    llm_server.mode = "error"
    response = llm_pipe.as_query_engine(streaming=True).query("서울")
    with pytest.raises(LLMError, match="500"):
        list(response.response_gen)


def test_timeout_is_a_clear_error(llm_pipe: Pipeline, llm_server: _Server) -> None:
    llm_server.mode = "hang"
    t0 = time.perf_counter()
    with pytest.raises(LLMError, match="(?i)timed out|timeout"):
        llm_pipe.as_query_engine().query("서울")
    assert time.perf_counter() - t0 < 2.9  # llm.timeout = 1 s, not the server's 3 s


def test_retrieval_only_default_never_touches_an_llm(tiny_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Default config, no API key anywhere: no LLM is built or resolved, Settings.llm is never read."""
    import os

    import llama_index.core.settings as li_settings
    from llama_index.core import Settings

    assert "OPENAI_API_KEY" not in os.environ

    def boom(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an LLM was resolved")

    monkeypatch.setattr(li_settings, "resolve_llm", boom)
    monkeypatch.setattr(Settings, "_llm", None)
    monkeypatch.setattr("pipeline.serving.engine.SourcedQueryEngine.__init__", boom)
    p = Pipeline.from_config(tiny_config)
    assert p.config.llm.provider.value == "none"
    p.ingest()
    engine = p.as_query_engine()
    assert isinstance(engine, RetrievalOnlyQueryEngine)
    result = answer_with_sources(engine.query("김치는 어떻게 만드나요?"))
    assert result["answer"] is None and result["mode"] == "retrieval_only"
    assert result["sources"][0]["doc_id"] == "kimchi"
    assert Settings._llm is None


def test_query_engine_tool(llm_pipe: Pipeline) -> None:
    from llama_index.core.tools import QueryEngineTool

    tool = QueryEngineTool.from_defaults(llm_pipe.as_query_engine(), name="korean_docs", description="한국어 문서 검색")
    out = tool.call("서울은 어떤 도시인가요?")
    assert out.content == ANSWER and out.raw_output.source_nodes[0].node.ref_doc_id == "seoul"
