"""Cosine-similarity matrix under the configured model (``ragpipe similarity``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.config import EmbeddingConfig
from pipeline.core.errors import ConfigError
from pipeline.models.similarity import PromptKind, cosine_matrix, similarity_matrix

SENTENCES = ["잠이 오지 않을 때", "잠자리에서 일어나", "기차가 역에 들어오면", "김치는 배추"]


@pytest.fixture(scope="module")
def tiny_embed(tiny_model_dir: Path):
    from pipeline.models.embedding import build_embedding

    return build_embedding(EmbeddingConfig(model=str(tiny_model_dir), precision="fp32", max_length=120, cache=False))


def test_matrix_is_symmetric_with_unit_diagonal_and_equals_manual_cosine(tiny_embed) -> None:
    sims = similarity_matrix(tiny_embed, SENTENCES)
    assert sims.shape == (4, 4) and sims.dtype == np.float32
    np.testing.assert_allclose(sims, sims.T, atol=1e-6)
    np.testing.assert_allclose(np.diag(sims), 1.0, atol=1e-5)
    vecs = np.asarray([tiny_embed.get_query_embedding(s) for s in SENTENCES], dtype=np.float64)
    for i in range(4):
        for j in range(4):
            manual = vecs[i] @ vecs[j] / (np.linalg.norm(vecs[i]) * np.linalg.norm(vecs[j]))
            assert sims[i, j] == pytest.approx(manual, abs=1e-5)


def test_prompts_change_the_vectors(tiny_embed) -> None:
    """query and passage use the configured e5 prefixes; none embeds the bare sentences."""
    query, passage, bare = (similarity_matrix(tiny_embed, SENTENCES, p) for p in ("query", "passage", PromptKind.NONE))
    assert not np.allclose(query, bare, atol=1e-4)
    st = tiny_embed._model
    manual = cosine_matrix(st.encode(SENTENCES))
    np.testing.assert_allclose(bare, manual, atol=1e-5)
    manual_passage = cosine_matrix(st.encode(["passage: " + s for s in SENTENCES]))
    np.testing.assert_allclose(passage, manual_passage, atol=1e-5)


def test_bad_input_is_refused(tiny_embed) -> None:
    with pytest.raises(ConfigError, match="--prompt 'doc' is not one of: query, passage, none"):
        similarity_matrix(tiny_embed, SENTENCES, "doc")
    with pytest.raises(ConfigError, match="at least one sentence"):
        similarity_matrix(tiny_embed, [])
    with pytest.raises(ConfigError, match="sentence 2 is empty"):
        similarity_matrix(tiny_embed, ["김치", "  "])


def test_cosine_matrix_handles_zero_rows() -> None:
    sims = cosine_matrix(np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]))
    assert sims[1].tolist() == [0.0, 0.0, 0.0]
    assert sims[0, 2] == pytest.approx(2**-0.5)


def test_cli_prints_a_table_and_json(tmp_path: Path, tiny_model_dir: Path) -> None:
    from typer.testing import CliRunner

    from pipeline.serving.cli import app

    cfg = tmp_path / "sim.yaml"
    cfg.write_text(yaml.safe_dump({"embedding": {"model": str(tiny_model_dir), "precision": "fp32", "max_length": 120},
                                   "retrieval": {"retrievers": [{"type": "dense"}]}}), encoding="utf-8")
    more = tmp_path / "more.txt"
    more.write_text("김치는 배추\n\n", encoding="utf-8")
    runner = CliRunner()
    res = runner.invoke(app, ["-q", "similarity", "-c", str(cfg), "--json", "--file", str(more), *SENTENCES[:3]])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["sentences"] == SENTENCES and out["prompt"] == "query"
    assert np.asarray(out["matrix"]).shape == (4, 4)
    res = runner.invoke(app, ["-q", "similarity", "-c", str(cfg), *SENTENCES[:2]])
    assert res.exit_code == 0 and "1.000" in res.stdout and "잠이 오지 않을 때" in res.stdout
    res = runner.invoke(app, ["-q", "similarity", "-c", str(cfg)])
    assert res.exit_code == 2 and "give sentences" in res.output
