"""The default config with the real (prepared) e5 model over the embedded sample corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import Pipeline
from pipeline.models.prepare import is_prepared, prepare_model
from tests.conftest import REPO

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def real_model() -> None:
    if not is_prepared():
        prepare_model()


def test_default_pipeline_finds_gold_documents(real_model: None, tmp_path: Path) -> None:
    pipe = Pipeline.from_config(REPO / "configs" / "default.yaml", [f"index_dir={tmp_path / 'index'}"])
    first = pipe.ingest()
    assert first.documents == 45
    rows = [json.loads(line) for line in (REPO / "data" / "sample_questions.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    found = sum(any(h.node.ref_doc_id in r["relevant_doc_ids"] for h in pipe.retrieve(r["question"], top_k=3)) for r in rows)
    assert found >= 9, f"only {found}/{len(rows)} sample questions found their gold document in the top 3"
    again = Pipeline.from_config(REPO / "configs" / "default.yaml", [f"index_dir={tmp_path / 'index'}"]).ingest()
    assert again.new_embeddings == 0 and again.unchanged == 45


def test_korean_sentence_similarity_order(real_model: None) -> None:
    from pipeline.config import load_config
    from pipeline.models.embedding import build_embedding
    from pipeline.models.similarity import similarity_matrix

    model = build_embedding(load_config(REPO / "configs" / "default.yaml").embedding)
    sim = similarity_matrix(model, ["잠이 안 옵니다", "졸음이 옵니다", "기차가 옵니다"], prompt="query")
    assert sim[0, 1] > sim[0, 2]


def test_qdrant_demo_runs_from_the_cli(real_model: None, tmp_path: Path) -> None:
    """`ragpipe demo -c configs/qdrant.yaml`: the default pipeline in a Qdrant collection (local mode)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "pipeline.serving.cli", "--quiet", "demo", "-c", str(REPO / "configs" / "qdrant.yaml"),
                          "--set", f"index_dir={tmp_path / 'index'}"], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "indexed 45 documents" in out.stdout
    found = int(out.stdout.strip().splitlines()[-1].split("/")[0])
    assert found >= 9, out.stdout[-1500:]


def test_demo_runs_from_outside_the_repo(real_model: None, tmp_path: Path) -> None:
    """`ragpipe demo` with no -c, started in a folder that is not the repo, finds the default config and its data."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "pipeline.serving.cli", "--quiet", "demo", "--set", f"index_dir={tmp_path / 'index'}"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "indexed 45 documents" in out.stdout and int(out.stdout.strip().splitlines()[-1].split("/")[0]) >= 9
