"""``ragpipe serve`` as a real process: SIGKILL in the middle of an upsert, restart, index consistent.

Also a short smoke run of ``scripts/loadtest.py`` against the restarted server. Uses the tiny model,
so it needs no download; it is marked e2e because it starts subprocesses and takes about a minute.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import yaml

from tests.conftest import REPO, TINY_DOCS

pytestmark = pytest.mark.e2e

BULK = 400  # documents in the upsert that gets killed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    def __init__(self, config: Path, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline.serving.cli", "--quiet", "serve", "-c", str(config), "--port", str(self.port), "--no-access-log"],
                cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=os.environ.copy(),
            )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"server did not come up in 180 s:\n{log.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture()
def config_file(tiny_config: dict[str, Any], tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config, allow_unicode=True), encoding="utf-8")
    from pipeline.serving.pipeline import Pipeline

    Pipeline.from_config(path).ingest()
    return path


@pytest.fixture()
def servers() -> Iterator[list[_Server]]:
    started: list[_Server] = []
    yield started
    for s in started:
        s.stop()


def _bulk_docs() -> list[dict[str, Any]]:
    base = [d["text"] for d in TINY_DOCS]
    return [{"doc_id": f"bulk-{i:04d}", "text": f"{base[i % len(base)]} 추가 문서 {i}번.", "metadata": {"batch": "bulk"}} for i in range(BULK)]


def test_kill_during_upsert_leaves_old_or_new_index(config_file: Path, tmp_path: Path, servers: list[_Server]) -> None:
    from pipeline.serving.pipeline import Pipeline

    index = Path(yaml.safe_load(config_file.read_text(encoding="utf-8"))["index_dir"])
    log = tmp_path / "server.log"
    server = _Server(config_file, log)
    servers.append(server)

    acked = httpx.post(server.url + "/documents", timeout=120,
                       json={"documents": [{"doc_id": "acked", "text": "울릉도는 독도와 가까운 화산섬이다.", "metadata": {"batch": "acked"}}]})
    assert acked.status_code == 200, acked.text
    old_ids = {d["doc_id"] for d in TINY_DOCS} | {"acked"}

    reply: dict[str, Any] = {}

    def big_upsert() -> None:
        try:
            reply["response"] = httpx.post(server.url + "/documents", json={"documents": _bulk_docs()}, timeout=300)
        except httpx.HTTPError as exc:
            reply["error"] = exc

    log_file = index / "v000001.wal"
    logged_before = log_file.stat().st_size if log_file.exists() else 0
    sender = threading.Thread(target=big_upsert)
    sender.start()
    # Kill while the server embeds and indexes the bulk documents, or right as their record reaches the log.
    deadline, killed_while_writing = time.monotonic() + 60, False
    while time.monotonic() < deadline and sender.is_alive():
        if log_file.exists() and log_file.stat().st_size > logged_before:
            killed_while_writing = True
            break
        time.sleep(0.002)
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(timeout=30)
    sender.join(timeout=60)
    acknowledged = "response" in reply and reply["response"].status_code == 200

    # On disk: a complete index in exactly the old or the new state.
    on_disk = Pipeline.from_config(config_file)
    on_disk.load()  # the current version plus every complete log record
    ids = {d.doc_id for d in on_disk.documents()}
    new_ids = old_ids | {d["doc_id"] for d in _bulk_docs()}
    assert ids in (old_ids, new_ids), f"half-applied upsert: {len(ids)} documents"
    if acknowledged:
        assert ids == new_ids
    assert on_disk.info()["counts"]["documents"] == len(ids)

    # Restart: the server loads it, serves it, and takes writes again.
    restarted = _Server(config_file, log)
    servers.append(restarted)
    info = httpx.get(restarted.url + "/info", timeout=30).json()
    assert info["counts"]["documents"] == len(ids)
    hits = httpx.post(restarted.url + "/retrieve", json={"query": "울릉도 화산섬", "top_k": 1}, timeout=30).json()["results"]
    assert hits[0]["doc_id"] == "acked"  # acknowledged before the kill: survived
    bulk = httpx.post(restarted.url + "/retrieve", json={"query": "추가 문서", "top_k": 3, "filters": {"batch": "bulk"}}, timeout=30).json()["results"]
    assert bool(bulk) == (ids == new_ids)
    again = httpx.post(restarted.url + "/documents", json={"documents": [{"doc_id": "after", "text": "재시작 후에 추가한 문서."}]}, timeout=120)
    assert again.status_code == 200 and again.json()["report"]["documents"] == len(ids) + 1
    print(f"killed as the record reached the log: {killed_while_writing}; upsert acknowledged: {acknowledged}; state: {'new' if ids == new_ids else 'old'}")

    # Short load-test smoke run against the restarted server.
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"question": q}, ensure_ascii=False) + "\n" for q in ("서울은 어떤 도시인가요?", "김치 만드는 법", "부산 해운대")), encoding="utf-8")
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "loadtest.py"), "--url", restarted.url, "--questions", str(questions),
         "--concurrency", "2", "--duration", "2", "--max-requests", "500", "--warmup", "0.5", "--json"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert run.returncode == 0, run.stderr + run.stdout
    (level,) = json.loads(run.stdout)
    assert level["concurrency"] == 2 and level["requests"] > 0 and level["errors"] == 0
    assert level["rps"] > 0 and level["p50_ms"] <= level["p95_ms"] <= level["p99_ms"]
    assert 0 < level["server_p50_ms"] <= level["p99_ms"]  # the server's own time, read from each answer
