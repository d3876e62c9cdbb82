"""scripts/bench.py runs end to end on a tiny model and a tiny KLUE-format file (numbers are not checked)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_script", REPO / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_smoke(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RAGPIPE_MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("RAGPIPE_CACHE_DIR", str(tmp_path / "cache"))  # the script points it at temp folders
    rows = [{"guid": f"q{i}", "context_id": f"c{i}", "context": ctx, "question": q, "answers": {"text": ["x"], "answer_start": [0]}}
            for i, (ctx, q) in enumerate([("서울은 대한민국의 수도이다. 인구가 많다.", "대한민국의 수도는?"),
                                           ("김치는 배추로 만든다.", "김치는 무엇으로 만드나?")])]
    data = tmp_path / "qa.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    out = tmp_path / "bench.json"
    assert _bench().main(["--model", str(tiny_model_dir), "--data", str(data), "--questions", "2", "--documents", "2",
                          "--backends", "torch-fp32,onnx-fp32", "--json", str(out)]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert set(result["rows"]) == {"llamaindex-anchor", "torch-fp32", "onnx-fp32"}
    for row in result["rows"].values():
        assert row["single_query"]["p50_ms"] > 0 and row["passages_per_s"] > 0 and row["hybrid_p50_ms"] > 0
    assert "| onnx-fp32 |" in capsys.readouterr().out


def test_bench_rejects_unknown_backend() -> None:
    with pytest.raises(SystemExit, match="unknown"):
        _bench().main(["--backends", "tensorrt"])


def test_scale_bench_smoke(tmp_path: Path) -> None:
    """scripts/scale_bench.py: every backend runs in its own process and reports a row (numbers are not checked)."""
    import subprocess
    import sys

    out = tmp_path / "scale.json"
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "scale_bench.py"), "--sizes", "300", "--json", str(out)],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads(out.read_text(encoding="utf-8"))
    assert [r["backend"] for r in rows] == ["faiss-flat", "faiss-hnsw", "qdrant-local"]
    assert all("error" not in r and r["n"] == 300 and r["peak_rss_mib"] > 0 for r in rows), rows
