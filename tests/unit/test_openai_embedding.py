"""embedding.provider: openai against a real OpenAI-compatible HTTP server on 127.0.0.1 (stdlib, in a thread)."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from pipeline.config import EmbeddingConfig
from pipeline.core.errors import ConfigError, ModelResolutionError, RagpipeError

KEY = "sk-test-secret"
DEFAULT_DIM = 8


def fake_vector(text: str, dim: int) -> list[float]:
    """Deterministic vector from the text's hash (what the server returns)."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32).tolist()


class FakeEmbeddingServer:
    """Speaks POST /v1/embeddings; records every request; can be told to fail."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[int] = []  # status codes for the next requests (then 200)
        self.fail_after: int | None = None  # every request after this many answers ``fail_status``
        self.fail_status = 500
        self.extra_dim = 0  # > 0: return vectors of the wrong size
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with server.lock:
                    n = len(server.requests)
                    server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                    status = server.script.pop(0) if server.script else 200
                    if server.fail_after is not None and n >= server.fail_after:
                        status = server.fail_status
                if self.path != "/v1/embeddings":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if self.headers.get("Authorization") != f"Bearer {KEY}":
                    return self._send(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
                if status != 200:
                    return self._send(status, {"error": {"message": f"simulated {status}"}}, {"retry-after-ms": "5"})
                texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
                dim = (body.get("dimensions") or DEFAULT_DIM) + server.extra_dim
                data = []
                for i, text in enumerate(texts):
                    vec = fake_vector(text, dim)
                    if body.get("encoding_format") == "base64":
                        vec = base64.b64encode(np.asarray(vec, dtype="<f4").tobytes()).decode()
                    data.append({"object": "embedding", "index": i, "embedding": vec})
                self._send(200, {"object": "list", "data": data, "model": body["model"],
                                 "usage": {"prompt_tokens": 1, "total_tokens": 1}})

            def _send(self, status: int, obj: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                raw = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def embedding_texts(self) -> list[list[str]]:
        """Texts of every embeddings request, one list per request."""
        return [r["body"]["input"] for r in self.requests]


@pytest.fixture()
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEmbeddingServer]:
    srv = FakeEmbeddingServer()
    srv.thread.start()
    monkeypatch.setenv("RAGPIPE_TEST_EMBED_KEY", KEY)
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def _cfg(server: FakeEmbeddingServer, **kw: Any) -> EmbeddingConfig:
    base = dict(provider="openai", model="local/bge-m3-ko", base_url=server.url, api_key_env="RAGPIPE_TEST_EMBED_KEY",
                batch_size=3, max_retries=2, timeout=5)
    return EmbeddingConfig(**{**base, **kw})


def _build(cfg: EmbeddingConfig):
    from pipeline.models.embedding import build_embedding

    return build_embedding(cfg)


def test_contract_is_a_llamaindex_openai_embedding(server: FakeEmbeddingServer) -> None:
    from llama_index.embeddings.openai import OpenAIEmbedding

    model = _build(_cfg(server, dimensions=12))
    assert isinstance(model, OpenAIEmbedding)
    assert model.api_base == server.url and model.timeout == 5 and model.max_retries == 2 and model.embed_batch_size == 3
    assert not server.requests  # nothing is sent before the first embedding


def test_batches_model_name_dimensions_and_key_reach_the_server(server: FakeEmbeddingServer) -> None:
    texts = [f"문서 {i}번: 서울은 대한민국의 수도" for i in range(7)]
    model = _build(_cfg(server, dimensions=12))
    vecs = model.get_text_embedding_batch(texts)
    assert [len(b) for b in server.embedding_texts()] == [3, 3, 1]  # embedding.batch_size
    for req in server.requests:
        assert req["path"] == "/v1/embeddings" and req["auth"] == f"Bearer {KEY}"
        assert req["body"]["model"] == "local/bge-m3-ko" and req["body"]["dimensions"] == 12
    np.testing.assert_allclose(vecs, [fake_vector(t, 12) for t in texts], rtol=1e-6)
    q = model.get_query_embedding("수도는 어디인가요?")
    np.testing.assert_allclose(q, fake_vector("수도는 어디인가요?", 12), rtol=1e-6)
    assert len(server.requests) == 4


def test_unauthorized_names_url_status_and_fix(server: FakeEmbeddingServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGPIPE_TEST_EMBED_KEY", "sk-wrong")
    with pytest.raises(ModelResolutionError, match=r"/v1/embeddings.*HTTP 401.*api_key_env") as info:
        _build(_cfg(server)).get_text_embedding_batch(["김치"])
    assert server.url in str(info.value)
    assert len(server.requests) == 1  # 401 is not retried


def test_rate_limit_is_retried_then_succeeds(server: FakeEmbeddingServer) -> None:
    server.script = [429, 429]
    vecs = _build(_cfg(server, max_retries=2)).get_text_embedding_batch(["김치", "기차"])
    assert len(server.requests) == 3 and len(vecs) == 2


def test_rate_limit_after_all_retries_is_a_clear_error(server: FakeEmbeddingServer) -> None:
    server.script = [429] * 10
    with pytest.raises(ModelResolutionError, match=r"HTTP 429.*rate limited"):
        _build(_cfg(server, max_retries=1)).get_text_embedding_batch(["김치"])
    assert len(server.requests) == 2  # one try + max_retries, not (max_retries + 1) * max_retries


def test_server_error_after_retries(server: FakeEmbeddingServer) -> None:
    server.fail_after, server.fail_status = 0, 503
    with pytest.raises(RagpipeError, match=r"127\.0\.0\.1.*HTTP 503.*server error"):
        _build(_cfg(server, max_retries=2)).get_query_embedding("김치")
    assert len(server.requests) == 3


def test_wrong_dimension_is_refused(server: FakeEmbeddingServer) -> None:
    server.extra_dim = 1
    with pytest.raises(ModelResolutionError, match=r"asked for 12-dimensional vectors.*got 13"):
        _build(_cfg(server, dimensions=12)).get_text_embedding_batch(["김치"])


def test_connection_refused_is_a_clear_error(server: FakeEmbeddingServer) -> None:
    url = server.url
    server.httpd.shutdown()
    server.httpd.server_close()
    with pytest.raises(ModelResolutionError, match=r"cannot connect.*embedding.base_url"):
        _build(_cfg(server, base_url=url, max_retries=0, timeout=2)).get_query_embedding("김치")
    server.httpd = ThreadingHTTPServer(("127.0.0.1", 0), server.httpd.RequestHandlerClass)  # for the fixture's teardown
    threading.Thread(target=server.httpd.serve_forever, daemon=True).start()


def test_missing_key_is_a_config_error_only_for_the_hosted_default(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        _build(EmbeddingConfig(provider="openai", model="text-embedding-3-small"))
    # a self-hosted server needs no key
    model = _build(EmbeddingConfig(provider="openai", model="x", base_url="http://127.0.0.1:9/v1", api_key_env="NOPE_NOT_SET"))
    assert model.api_key == "not-needed"


def test_interrupted_ingest_keeps_the_embeddings_already_paid_for(
    server: FakeEmbeddingServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.serving import pipeline as pipeline_module
    from pipeline.serving.pipeline import Pipeline

    from tests.conftest import write_jsonl

    rows = [{"doc_id": f"d{i}", "text": f"{i}번째 문서: 잠이 오지 않을 때는 조용한 활동을 한다 {'가' * i}"} for i in range(10)]
    corpus = write_jsonl(tmp_path / "corpus.jsonl", rows)
    build = pipeline_module.build_cached_embedding

    def small_chunks(*args: Any, **kwargs: Any):
        emb = build(*args, **kwargs)
        emb.chunk_size = 2  # commit every 2 texts instead of 256
        return emb

    monkeypatch.setattr(pipeline_module, "build_cached_embedding", small_chunks)
    config = {
        "index_dir": str(tmp_path / "index"),
        "data": {"loader": "jsonl", "path": str(corpus), "id_field": "doc_id"},
        "chunking": {"splitter": "none"},
        "embedding": {"provider": "openai", "model": "local/bge-m3-ko", "base_url": server.url,
                      "api_key_env": "RAGPIPE_TEST_EMBED_KEY", "batch_size": 2, "max_retries": 0, "dimensions": 16},
        "retrieval": {"retrievers": [{"type": "dense", "candidate_k": 3}], "top_k": 3},
    }
    server.fail_after = 2  # two chunks (4 texts) succeed, then the server breaks
    with pytest.raises(ModelResolutionError, match=r"HTTP 500") as info:
        Pipeline.from_config(config).ingest()
    assert server.url in str(info.value)
    first = [t for batch in server.embedding_texts()[:2] for t in batch]
    assert len(first) == 4 and not (tmp_path / "index" / "CURRENT").exists()

    server.fail_after, server.requests = None, []
    report = Pipeline.from_config(config).ingest()
    second = [t for batch in server.embedding_texts() for t in (batch if isinstance(batch, list) else [batch])]
    passages = second[:-1]  # the last request is the query-side dimension probe
    assert len(passages) == 6 and not set(passages) & set(first)
    assert report.new_embeddings == 6 and report.cached_embeddings == 4
    hits = Pipeline.from_config(config).retrieve(rows[3]["text"], top_k=1)
    assert hits[0].node.ref_doc_id == "d3"
