"""The live index: incremental writes equal a full rebuild, the log survives a kill, one writer at a time, followers."""

from __future__ import annotations

import copy
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from llama_index.core import Document

from pipeline import Pipeline
from pipeline.core.errors import IndexStateError
from pipeline.serving.service import create_app
from tests.conftest import REPO, TINY_DOCS, write_jsonl

EXTRA = [
    {"doc_id": "jeju", "title": "제주", "category": "여행", "text": "제주도는 한라산과 귤로 유명한 섬이며 바다가 아름답다."},
    {"doc_id": "bibim", "title": "비빔밥", "category": "요리", "text": "비빔밥은 밥 위에 나물과 고추장을 올려 비벼 먹는 음식이다."},
]
QUERIES = ["서울의 강", "김치 만드는 법", "여행 가기 좋은 섬", "밥과 나물", "항구 도시 바다", "잠이 안 와요"]


def _docs(rows: list[dict[str, Any]]) -> list[Document]:
    return [Document(text=r["text"], id_=r["doc_id"], metadata={"category": r["category"], "title": r["title"]}) for r in rows]


@pytest.fixture()
def live_config(tiny_config: dict[str, Any]) -> dict[str, Any]:
    cfg = copy.deepcopy(tiny_config)
    cfg["retrieval"]["retrievers"] = [
        {"type": "bm25", "name": "bm25", "tokenizer": {"name": "kiwi"}, "candidate_k": 8},
        {"type": "tfidf", "name": "tfidf", "tokenizer": {"name": "kiwi"}, "candidate_k": 8, "weight": 0.5},
        {"type": "dense", "name": "dense", "faiss": {"index_type": "flat"}, "candidate_k": 8},
    ]
    cfg["retrieval"]["fusion"] = {"mode": "dist_based_score"}
    return cfg


def _scores(pipe: Pipeline, leg: str, q: str) -> dict[str, float]:
    return {h.node.node_id: round(h.score, 5) for h in pipe._served().legs[leg].search(q, top_k=20)}


def test_incremental_writes_rank_exactly_as_a_full_rebuild(live_config: dict[str, Any], tmp_path: Path) -> None:
    live = Pipeline.from_config(copy.deepcopy(live_config))
    live.ingest()
    changed = dict(TINY_DOCS[0], text=TINY_DOCS[0]["text"] + " 남산과 경복궁도 있다.")
    live.upsert(_docs([changed, EXTRA[0]]))
    live.delete(["busan", "train"])
    live.upsert(_docs([EXTRA[1]]))
    final = [changed, *(r for r in TINY_DOCS[1:] if r["doc_id"] not in ("busan", "train")), *EXTRA]
    rebuilt = Pipeline.from_config({**copy.deepcopy(live_config), "index_dir": str(tmp_path / "rebuilt")})
    rebuilt.ingest(documents=sorted(live.documents(), key=lambda d: d.doc_id))  # the same documents, another order
    reopened = Pipeline.from_config(copy.deepcopy(live_config))  # the log replayed in a fresh process state
    for q in QUERIES:
        for leg in ("bm25", "tfidf", "dense"):
            want = _scores(rebuilt, leg, q)
            assert _scores(live, leg, q) == want and _scores(reopened, leg, q) == want, (leg, q)
        fused = [(h.node.node_id, round(h.score, 5)) for h in rebuilt.retrieve(q, top_k=5)]
        assert [(h.node.node_id, round(h.score, 5)) for h in live.retrieve(q, top_k=5)] == fused
    assert {d.doc_id for d in live.documents()} == {r["doc_id"] for r in final}


def test_a_write_touches_only_its_documents(live_config: dict[str, Any]) -> None:
    pipe = Pipeline.from_config(copy.deepcopy(live_config))
    pipe.ingest()
    report = pipe.upsert(_docs([EXTRA[0]]))
    assert (report.added, report.new_embeddings, report.documents) == (1, 1, 7)
    again = pipe.upsert(_docs([EXTRA[0]]))  # unchanged: nothing to do, nothing logged
    assert again.unchanged == 1 and again.new_embeddings == 0
    log = pipe.index_path / "v000001.wal"
    assert len(log.read_text(encoding="utf-8").splitlines()) == 1
    assert pipe.retrieve("한라산 귤", top_k=1)[0].node.ref_doc_id == "jeju"


_KILLED_WRITER = """
import os, signal, sys, yaml
from llama_index.core import Document
from pipeline import Pipeline
pipe = Pipeline.from_config(yaml.safe_load(open(sys.argv[1], encoding="utf-8")))
pipe.upsert([Document(text="제주도는 한라산과 귤로 유명한 섬이다.", id_="jeju", metadata={"category": "여행"})])
print("acked", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_acknowledged_write_survives_a_kill(live_config: dict[str, Any], tmp_path: Path) -> None:
    Pipeline.from_config(copy.deepcopy(live_config)).ingest()
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(live_config, allow_unicode=True), encoding="utf-8")
    out = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(cfg_file)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.stdout.strip() == "acked" and out.returncode == -9, out.stderr[-2000:]
    index = Path(live_config["index_dir"])
    assert (index / "CURRENT").read_text(encoding="utf-8").strip() == "v000001"  # no compaction happened: only the log has it
    reopened = Pipeline.from_config(copy.deepcopy(live_config))
    assert "jeju" in {d.doc_id for d in reopened.documents()}
    assert reopened.retrieve("한라산 귤", top_k=1)[0].node.ref_doc_id == "jeju"


_LOCK_HOLDER = """
import sys, time
from pathlib import Path
from llama_index.core import Document
import yaml
from pipeline import Pipeline
from pipeline.storage.lock import writer_lock
cfg = yaml.safe_load(open(sys.argv[1], encoding="utf-8"))
with writer_lock(Path(cfg["index_dir"])):
    print("locked", flush=True)
    time.sleep(3)
    Pipeline.from_config(cfg).upsert([Document(text="울릉도는 동해에 있는 섬이다.", id_="ulleung", metadata={"category": "여행"})])
"""


def test_second_writer_waits_or_fails_clearly_and_nothing_is_lost(live_config: dict[str, Any], tmp_path: Path) -> None:
    Pipeline.from_config(copy.deepcopy(live_config)).ingest()
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(live_config, allow_unicode=True), encoding="utf-8")
    holder = subprocess.Popen([sys.executable, "-c", _LOCK_HOLDER, str(cfg_file)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        impatient = Pipeline.from_config({**copy.deepcopy(live_config), "serving": {"write_lock_timeout": 0.3}})
        with pytest.raises(IndexStateError, match="another process kept the writer lock"):
            impatient.upsert(_docs([EXTRA[0]]))
        patient = Pipeline.from_config(copy.deepcopy(live_config))
        t0 = time.perf_counter()
        patient.upsert(_docs([EXTRA[1]]))
        assert time.perf_counter() - t0 > 0.5  # it waited for the holder
    finally:
        holder.wait(timeout=120)
    assert holder.returncode == 0
    assert {"ulleung", "bibim"} <= {d.doc_id for d in Pipeline.from_config(copy.deepcopy(live_config)).documents()}
    assert "jeju" not in {d.doc_id for d in patient.documents()}  # the refused write left nothing behind


def test_cli_ingest_while_the_service_runs(live_config: dict[str, Any], tiny_corpus: Path, tmp_path: Path) -> None:
    pipe = Pipeline.from_config(copy.deepcopy(live_config))
    pipe.ingest()
    client = TestClient(create_app(pipe, api_key=None))
    assert client.get("/documents").json()["total"] == 6
    write_jsonl(tiny_corpus, [*TINY_DOCS, EXTRA[0]])
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(live_config, allow_unicode=True), encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "pipeline.serving.cli", "--quiet", "ingest", "-c", str(cfg_file), "--json"],
                         capture_output=True, text=True, cwd=REPO, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert '"added": 1' in out.stdout and '"unchanged": 6' in out.stdout
    assert client.get("/health").json() == {"status": "ok", "index_loaded": True}  # follows the new version
    hit = client.post("/retrieve", json={"query": "한라산 귤", "top_k": 1}).json()["results"][0]
    assert hit["doc_id"] == "jeju" and pipe.info()["version"] == "v000002"
    page = client.get("/documents", params={"offset": 5, "limit": 5}).json()
    assert page["total"] == 7 and [d["doc_id"] for d in page["documents"]] == ["sleep", "train"]


def test_compaction_writes_a_new_version_and_keeps_one_previous(live_config: dict[str, Any]) -> None:
    pipe = Pipeline.from_config({**copy.deepcopy(live_config), "serving": {"compact_after": 2}})
    pipe.ingest()
    index = pipe.index_path
    pipe.upsert(_docs([EXTRA[0]]))
    assert pipe.info()["version"] == "v000001" and pipe.info()["logged_changes"] == 1
    pipe.upsert(_docs([EXTRA[1]]))  # the second logged change compacts
    assert (index / "CURRENT").read_text(encoding="utf-8").strip() == "v000002" and pipe.info()["logged_changes"] == 0
    pipe.delete(["sleep"])
    pipe.upsert(_docs([dict(EXTRA[0], text="제주도는 바람과 돌이 많은 섬이다.")]))
    names = sorted(p.name for p in index.iterdir() if p.name.startswith("v"))
    assert names == ["v000002", "v000002.wal", "v000003"]
    assert {d.doc_id for d in Pipeline.from_config(copy.deepcopy(live_config)).documents()} == \
        {r["doc_id"] for r in TINY_DOCS if r["doc_id"] != "sleep"} | {"jeju", "bibim"}


def test_delete_many_and_ids_with_slashes_over_http(live_config: dict[str, Any]) -> None:
    pipe = Pipeline.from_config(copy.deepcopy(live_config))
    pipe.ingest()
    client = TestClient(create_app(pipe, api_key=None))
    r = client.post("/documents", json={"documents": [{"doc_id": "hr/welfare.md", "text": "복지 제도는 매년 바뀐다."}]})
    assert r.status_code == 200
    assert client.delete("/documents/hr/welfare.md").status_code == 200
    client.post("/documents", json={"documents": [{"doc_id": "hr/leave.md", "text": "연차는 열하루이다."}]})
    r = client.delete("/documents/hr%2Fleave.md")  # percent-encoded, as some HTTP clients send it
    assert r.status_code == 200 and r.json()["deleted"] == ["hr/leave.md"]
    assert client.request("DELETE", "/documents", json={"doc_ids": ["seoul", "nope"]}).status_code == 404
    assert "seoul" in {d.doc_id for d in pipe.documents()}  # all or none
    r = client.request("DELETE", "/documents", json={"doc_ids": ["seoul", "kimchi"]})
    assert r.status_code == 200 and r.json()["report"]["documents"] == 4


def test_the_api_owns_what_it_wrote(tiny_config: dict[str, Any]) -> None:
    """Re-ingesting the source keeps API-only documents, refuses to revert API writes, and --take-over lets the source win."""
    from pipeline.core.errors import OwnershipError

    Pipeline.from_config(tiny_config).ingest()
    seoul = next(r for r in TINY_DOCS if r["doc_id"] == "seoul")
    api = Pipeline.from_config(tiny_config)
    api.upsert(_docs(EXTRA[:1]) + _docs([{**seoul, "text": "서울은 API로 고친 글이다."}]))
    before = Pipeline.from_config(tiny_config).document_hashes()
    with pytest.raises(OwnershipError, match=r"replace 1 document\(s\) last written through the API.*seoul.*--take-over"):
        Pipeline.from_config(tiny_config).ingest()  # a fresh process: ownership comes from the log
    assert Pipeline.from_config(tiny_config).document_hashes() == before  # nothing was undone
    api.delete(["seoul"])  # the API gives seoul up; jeju stays the API's
    api.compact()  # ownership now comes from the manifest
    report = Pipeline.from_config(tiny_config).ingest()
    assert (report.added, report.removed) == (1, 0)  # seoul back from the source; jeju, which the source lacks, kept
    assert "jeju" in Pipeline.from_config(tiny_config).document_hashes()
    with pytest.raises(OwnershipError, match=r"--rebuild would drop 1 document\(s\).*jeju"):
        Pipeline.from_config(tiny_config).ingest(rebuild=True)
    api.upsert([next(d for d in api.documents() if d.doc_id == "busan")])  # the source's own copy: the API owns it now
    report = Pipeline.from_config(tiny_config).ingest(take_over=True)
    assert report.removed == 1 and "jeju" not in Pipeline.from_config(tiny_config).document_hashes()
    Pipeline.from_config(tiny_config).ingest(rebuild=True)  # nothing of the API's left to drop
