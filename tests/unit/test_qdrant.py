"""The Qdrant backend on qdrant-client's local mode: ingest, query, hybrid, filters, writes, reopening, BM25 parity.

Set ``RAGPIPE_QDRANT_URL`` to run the same suite against a server (tests marked ``qdrant_server``).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from llama_index.core import Document
from llama_index.core.vector_stores.types import FilterCondition, FilterOperator, MetadataFilter, MetadataFilters

from pipeline import Pipeline
from pipeline.config import config_from_dict
from pipeline.core.errors import ConfigError, IndexMismatchError, RetrievalError
from pipeline.storage.qdrant_index import local_path
from pipeline.storage.qdrant_store import close_local, point_id
from tests.conftest import REPO, TINY_DOCS

QUERIES = ["서울의 강", "김치 만드는 법", "여행 가기 좋은 섬", "항구 도시 바다", "잠이 안 와요", "식물과 햇빛", "도시"]
SERVER = os.environ.get("RAGPIPE_QDRANT_URL")
BACKENDS = ["local-mode", pytest.param("server", marks=[pytest.mark.qdrant_server, pytest.mark.skipif(
    not SERVER, reason="set RAGPIPE_QDRANT_URL to run against a Qdrant server")])]


@pytest.fixture(params=BACKENDS)
def qcfg(request: pytest.FixtureRequest, tiny_config: dict[str, Any]) -> dict[str, Any]:
    """The tiny hybrid config on qdrant (local mode in the test's folder, or the server with a fresh collection)."""
    cfg = copy.deepcopy(tiny_config)
    cfg["storage"] = {"backend": "qdrant"} if request.param == "local-mode" else \
        {"backend": "qdrant", "url": SERVER, "collection": f"ragpipe-test-{uuid.uuid4().hex[:8]}"}
    yield cfg
    close_local(local_path(config_from_dict(cfg, source="<test>", base_dir=Path.cwd())))


def _local(cfg: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    out = {k: copy.deepcopy(v) for k, v in cfg.items() if k != "storage"}
    out["index_dir"] = str(tmp_path / "faiss-index")
    return out


def _ids(hits: Any) -> list[str]:
    return [h.node.node_id for h in hits]


def _leg(pipe: Pipeline, name: str) -> Any:
    stack = pipe.load().first_stage
    return next(e.retriever for e in stack.entries if e.name == name)


def test_ingest_query_and_hybrid_rank_as_the_local_backend(qcfg: dict[str, Any], tmp_path: Path) -> None:
    q = Pipeline.from_config(qcfg)
    assert type(q).__name__ == "QdrantPipeline"
    report = q.ingest()
    assert (report.documents, report.nodes, report.added) == (6, 6, 6)
    local = Pipeline.from_config(_local(qcfg, tmp_path))
    local.ingest()
    for text in QUERIES:
        for leg in ("bm25", "dense"):
            ours = [(h.node.node_id, round(h.score, 4)) for h in _leg(q, leg).search(text, top_k=6)]
            ref = [(h.node.node_id, round(h.score, 4)) for h in local._served().legs[leg].search(text, top_k=6)]
            assert ours == ref, (leg, text)
        assert _ids(q.retrieve(text)) == _ids(local.retrieve(text)), text
    hit = q.retrieve("서울의 강")[0]
    assert hit.node.ref_doc_id == "seoul" and hit.node.metadata["category"] == "여행" and "한강" in hit.node.text


def test_filters_match_the_local_backend_and_take_any_value(qcfg: dict[str, Any], tmp_path: Path) -> None:
    q = Pipeline.from_config(qcfg)
    q.ingest()
    local = Pipeline.from_config(_local(qcfg, tmp_path))
    local.ingest()
    cases: list[Any] = [
        {"category": "여행"},
        {"category": ["요리", "건강"]},
        MetadataFilters(filters=[MetadataFilter(key="category", value="여행", operator=FilterOperator.NE)]),
        MetadataFilters(filters=[MetadataFilter(key="category", value=["여행"], operator=FilterOperator.NIN)]),
        MetadataFilters(condition=FilterCondition.OR, filters=[MetadataFilter(key="category", value="과학"),
                                                               MetadataFilter(key="category", value="요리")]),
        {"category": 'a"b] OR [c\\'}, {"missing-key": "x"},
    ]
    for flt in cases:
        for text in QUERIES[:3]:
            assert _ids(q.retrieve(text, top_k=6, filters=flt)) == _ids(local.retrieve(text, top_k=6, filters=flt)), (flt, text)
    assert q.retrieve("도시", filters={"category": 'a"b] OR [c\\'}) == []
    with pytest.raises(RetrievalError, match="not supported on storage.backend qdrant"):
        q.retrieve("도시", filters=MetadataFilters(filters=[MetadataFilter(key="category", value="x", operator=FilterOperator.ANY)]))


def test_upserts_and_deletes_write_through(qcfg: dict[str, Any]) -> None:
    q = Pipeline.from_config(qcfg)
    q.ingest()
    seoul = dict(TINY_DOCS[0], text="서울에는 남산타워와 경복궁이 있다.")
    r = q.upsert([Document(text=seoul["text"], id_="seoul", metadata={"category": "여행"}),
                  Document(text="제주도는 한라산과 귤로 유명한 섬이다.", id_="jeju", metadata={"category": "여행"})])
    assert (r.added, r.changed, r.documents, r.nodes) == (1, 1, 7, 7)
    assert q.upsert([Document(text=seoul["text"], id_="seoul", metadata={"category": "여행"})]).unchanged == 1
    assert q.retrieve("남산타워 경복궁")[0].node.text == seoul["text"]
    assert not [h for h in q.retrieve("한강이 흐른다", top_k=7) if "한강" in h.node.text]
    assert q.delete(["busan"]).removed == 1
    assert "busan" not in q.document_hashes() and "busan" not in {h.node.ref_doc_id for h in q.retrieve("부산 해운대", top_k=7)}
    with pytest.raises(RetrievalError, match="unknown document id"):
        q.delete(["nope"])
    again = q.ingest()  # the source still has busan and the old seoul: both come back, nothing else changes
    assert (again.added, again.changed, again.removed, again.unchanged) == (1, 1, 1, 4)


def test_ids_that_are_not_uuids(qcfg: dict[str, Any]) -> None:
    q = Pipeline.from_config(qcfg)
    docs = [Document(text="복지 포인트는 연 100만 원이다.", id_="hr/welfare.md", metadata={"category": "인사"}),
            Document(text="출장비는 영수증으로 정산한다.", id_="doc-001#0", metadata={"category": "재무"})]
    q.ingest(documents=docs)
    hits = q.retrieve("복지 포인트", top_k=2)
    assert hits[0].node.ref_doc_id == "hr/welfare.md" and hits[0].node.node_id.startswith("hr/welfare.md")
    assert point_id("doc-001#0") == str(uuid.uuid5(uuid.UUID("6f1c7d2e-59a8-4d8e-9b1f-7a0c3e2b4d51"), "doc-001#0"))
    q.delete(["hr/welfare.md"])
    assert set(q.document_hashes()) == {"doc-001#0"}


def test_empty_bm25_query_skips_that_leg(qcfg: dict[str, Any]) -> None:
    q = Pipeline.from_config(qcfg)
    q.ingest()
    assert _leg(q, "bm25").search("?!", top_k=5) == []
    assert len(q.retrieve("?!")) == 3  # the dense leg still answers


def test_server_side_rrf_equals_client_rrf(qcfg: dict[str, Any]) -> None:
    client = Pipeline.from_config(qcfg)
    client.ingest()
    server = Pipeline.from_config({**copy.deepcopy(qcfg), "storage": {**qcfg["storage"], "fusion": "server_rrf"}})

    for text in QUERIES:
        assert _ids(server.retrieve(text, top_k=5)) == _ids(client.retrieve(text, top_k=5)), text


def test_reopening_in_a_new_process_and_build_checks(qcfg: dict[str, Any], tmp_path: Path) -> None:
    q = Pipeline.from_config(qcfg)
    q.ingest()
    expected = {t: _ids(q.retrieve(t)) for t in QUERIES}
    cfg_file = tmp_path / "q.yaml"
    cfg_file.write_text(yaml.safe_dump(qcfg, allow_unicode=True), encoding="utf-8")
    script = ("import json, sys; from pipeline import Pipeline; p = Pipeline.from_config(sys.argv[1]); "
              f"print(json.dumps({{t: [h.node.node_id for h in p.retrieve(t)] for t in {QUERIES!r}}}))")
    if "url" not in qcfg["storage"]:  # local mode locks its folder: one process at a time, with a clear error
        out = subprocess.run([sys.executable, "-c", script, str(cfg_file)], capture_output=True, text=True, cwd=REPO, timeout=180)
        assert out.returncode != 0 and "open in another process" in out.stderr
    close_local(local_path(q.config))
    out = subprocess.run([sys.executable, "-c", script, str(cfg_file)], capture_output=True, text=True, cwd=REPO, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == expected
    changed = copy.deepcopy(qcfg)
    changed["retrieval"]["retrievers"][0]["k1"] = 2.0
    with pytest.raises(IndexMismatchError, match=r"retrievers\[bm25\].k1: the index was built with 1.2, the config asks for 2.0"):
        Pipeline.from_config(changed).retrieve("서울")


def test_unsupported_combinations_name_the_key(tiny_config: dict[str, Any]) -> None:
    def cfg(**storage: Any) -> dict[str, Any]:
        return {**copy.deepcopy(tiny_config), "storage": storage}

    tfidf = cfg(backend="qdrant")
    tfidf["retrieval"]["retrievers"][0] = {"type": "tfidf", "name": "t"}
    bad = [(tfidf, r"retrievers\[t\].type: 'tfidf' cannot run on storage.backend qdrant \(allowed: bm25, dense\)"),
           (cfg(backend="qdrant", shards=3), "storage.shards: local mode has one shard"),
           (cfg(backend="local", url="http://x:6333"), "storage.url applies only to backend qdrant"),
           (cfg(backend="qdrant", path="a", url="http://x:6333"), "exclude each other"),
           (cfg(backend="qdrant", fusion="server_rrf"), "server_rrf fuses by RRF, but retrieval.fusion.mode is 'dist_based_score'")]
    bad[-1][0]["retrieval"]["fusion"] = {"mode": "dist_based_score"}
    for raw, message in bad:
        with pytest.raises(ConfigError, match=message):
            config_from_dict(raw, source="<test>", base_dir=Path.cwd())
    with pytest.raises(ConfigError, match="environment variable RAGPIPE_TEST_NO_KEY is not set"):
        Pipeline.from_config(cfg(backend="qdrant", url="http://127.0.0.1:9", api_key_env="RAGPIPE_TEST_NO_KEY")).retrieve("서울")


def test_api_key_stays_out_of_info_and_files(tiny_config: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGPIPE_TEST_KEY", "s3cr3t-key")
    cfg = config_from_dict({**copy.deepcopy(tiny_config), "storage": {"backend": "qdrant", "url": "http://127.0.0.1:9",
                                                                       "api_key_env": "RAGPIPE_TEST_KEY"}},
                           source="<test>", base_dir=Path.cwd())
    assert "s3cr3t" not in json.dumps(cfg.model_dump(mode="json"))
    assert "s3cr3t" not in repr(cfg)


def test_the_http_service_runs_on_qdrant(qcfg: dict[str, Any]) -> None:
    from fastapi.testclient import TestClient

    from pipeline.serving.service import create_app

    pipe = Pipeline.from_config(qcfg)
    pipe.ingest()
    client = TestClient(create_app(pipe, api_key=None))
    r = client.post("/retrieve", json={"query": "서울의 강", "top_k": 2, "filters": {"category": "여행"}})
    assert r.status_code == 200 and r.json()["results"][0]["doc_id"] == "seoul"
    assert client.post("/documents", json={"documents": [{"doc_id": "hr/welfare.md", "text": "복지 포인트는 매년 바뀐다."}]}).status_code == 200
    ids = {d["doc_id"] for d in client.get("/documents").json()["documents"]}
    assert "hr/welfare.md" in ids and len(ids) == 7
    assert client.delete("/documents/hr/welfare.md").status_code == 200
    assert client.request("DELETE", "/documents", json={"doc_ids": ["seoul", "nope"]}).status_code == 404
    info = client.get("/info").json()
    assert info["storage"]["backend"] == "qdrant" and info["counts"] == {"documents": 6, "nodes": 6}
