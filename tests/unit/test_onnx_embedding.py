"""embedding.backend: onnx on the tiny in-test model: export once, same vectors as sentence-transformers, int8 close."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx as onnx_graph
import pytest
from sentence_transformers import SentenceTransformer

from pipeline.config import EmbeddingConfig
from pipeline.core.errors import ConfigError
from pipeline.models.embedding import build_embedding
from pipeline.models.onnx_embedding import export_onnx

SENTENCES = ["서울은 대한민국의 수도이다.", "김치는 배추로 만든다.", "잠이 오지 않을 때는 일어나라.", "기차가 역에 들어온다.",
             "서울", "광합성을 하여 포도당과 산소를 만든다. 식물은 햇빛과 물과 이산화탄소를 쓴다."]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_onnx_vectors_match_sentence_transformers(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGPIPE_MODEL_DIR", str(tmp_path / "models"))
    st = SentenceTransformer(str(tiny_model_dir), device="cpu")
    want_q = st.encode(["query: " + s for s in SENTENCES], normalize_embeddings=True)
    want_p = st.encode(["passage: " + s for s in SENTENCES], normalize_embeddings=True)
    onnx = build_embedding(EmbeddingConfig(model=str(tiny_model_dir), backend="onnx", batch_size=4, max_length=120))
    got_q = np.asarray(onnx.embed_queries(SENTENCES))
    got_p = np.asarray(onnx.get_text_embedding_batch(SENTENCES))
    assert _cos(got_q, want_q).min() >= 0.999 and _cos(got_p, want_p).min() >= 0.999
    assert np.allclose(onnx.get_query_embedding(SENTENCES[0]), got_q[0], atol=1e-5)  # one query = the same as in a batch
    exported = export_onnx(tiny_model_dir)
    assert exported.exists() and (exported.parent / "ragpipe_onnx.json").exists()
    manifest = json.loads((exported.parent / "ragpipe_onnx.json").read_text())
    assert manifest["fused"]["Attention"] == 2 and manifest["fused"]["BiasGelu"] == 2  # both layers fused, same vectors
    ops = {n.op_type for n in onnx_graph.load(str(exported), load_external_data=False).graph.node}
    assert "LayerNormalization" in ops and "SkipLayerNormalization" not in ops  # left unfused: ORT's kernel is slower
    assert sorted(manifest["sha256"]) == ["model.onnx", "model.onnx.data"]  # the weights sit beside the graph, memory-mapped
    assert sorted(f.name for f in exported.parent.iterdir()) == ["model.onnx", "model.onnx.data", "ragpipe_onnx.json"]
    assert export_onnx(tiny_model_dir).stat().st_mtime_ns == exported.stat().st_mtime_ns  # reused, not exported again
    (exported.parent / "model.onnx.data").unlink()  # an export that lost its weights is made again, not served
    assert export_onnx(tiny_model_dir) == exported and (exported.parent / "model.onnx.data").exists()
    int8 = build_embedding(EmbeddingConfig(model=str(tiny_model_dir), backend="onnx", quantize="int8", max_length=120))
    int8_q = np.asarray(int8.embed_queries(SENTENCES))
    assert _cos(int8_q, want_q).min() >= 0.95 and _cos(int8_q, want_q).min() < 0.99999  # close, but int8
    mixed = build_embedding(EmbeddingConfig(model=str(tiny_model_dir), backend="onnx", query_quantize="int8", max_length=120))
    assert np.allclose(mixed.embed_queries(SENTENCES), int8_q, atol=1e-6)  # int8 queries ...
    assert np.allclose(mixed.get_text_embedding_batch(SENTENCES), got_p, atol=1e-6)  # ... against fp32 passages


@pytest.mark.parametrize("breakage", ["raises", "wrong outputs"])
def test_a_failed_fusion_keeps_the_plain_export(breakage: str, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    import onnxruntime.transformers.optimizer as optimizer

    monkeypatch.setenv("RAGPIPE_MODEL_DIR", str(tmp_path / "models"))
    real = optimizer.optimize_model

    def broken(path: str, **kwargs: object) -> object:
        if breakage == "raises":
            raise RuntimeError("no fusion today")
        model = real(path, **kwargs)
        for init in model.model.graph.initializer:  # scale one weight: the fused graph now computes something else
            if init.dims and len(init.dims) == 2 and init.raw_data:
                arr = np.frombuffer(init.raw_data, dtype=np.float32).copy() * 3
                init.raw_data = arr.tobytes()
                break
        return model

    monkeypatch.setattr(optimizer, "optimize_model", broken)
    exported = export_onnx(tiny_model_dir)
    assert json.loads((exported.parent / "ragpipe_onnx.json").read_text())["fused"] == {}
    assert ("fusion failed" if breakage == "raises" else "changed the outputs") in caplog.text
    st = SentenceTransformer(str(tiny_model_dir), device="cpu")
    onnx = build_embedding(EmbeddingConfig(model=str(tiny_model_dir), backend="onnx", max_length=120))
    assert _cos(np.asarray(onnx.embed_queries(SENTENCES)), st.encode(["query: " + s for s in SENTENCES])).min() >= 0.999


def test_bad_backend_settings_are_config_errors() -> None:
    from pipeline.config import config_from_dict

    with pytest.raises(ConfigError, match="quantize needs backend: onnx"):
        config_from_dict({"embedding": {"quantize": "int8"}, "retrieval": {"retrievers": [{"type": "dense"}]}})
    with pytest.raises(ConfigError, match="query_quantize needs backend: onnx"):
        config_from_dict({"embedding": {"query_quantize": "int8"}, "retrieval": {"retrievers": [{"type": "dense"}]}})
    with pytest.raises(ConfigError, match="backend onnx runs huggingface encoders only"):
        config_from_dict({"embedding": {"provider": "openai", "backend": "onnx"}, "retrieval": {"retrievers": [{"type": "dense"}]}})


def test_token_budget_batches_keep_order_and_vectors(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGPIPE_MODEL_DIR", str(tmp_path / "models"))
    texts = SENTENCES + [" ".join(SENTENCES * 3), "짧다"]
    small = build_embedding(EmbeddingConfig(model=str(tiny_model_dir), backend="onnx", batch_tokens=16, max_length=120))
    batched = small.encode(texts)  # many small batches, sorted by length, then put back in order
    one_by_one = np.stack([small.encode([t])[0] for t in texts])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert batched.dtype == np.float32 and batched.shape[0] == len(texts)


def test_backend_auto_resolves_when_the_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    assert EmbeddingConfig(backend="auto").backend == "onnx"  # onnxruntime is a dependency
    assert EmbeddingConfig(backend="auto", pooling=["cls"]).backend == "torch"  # a pooling override needs torch
    assert EmbeddingConfig(backend="auto", quantize="int8").quantize == "int8"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    assert EmbeddingConfig(backend="auto").backend == "torch"
    with pytest.raises(ValueError, match="quantize needs backend: onnx"):
        EmbeddingConfig(backend="auto", quantize="int8")
