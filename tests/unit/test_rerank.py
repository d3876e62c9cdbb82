"""CrossEncoderReranker with a tiny random BERT cross-encoder built on the fly (no download)."""

from __future__ import annotations

from pathlib import Path

import pytest
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from pipeline.config import RerankConfig
from pipeline.core.errors import ModelResolutionError, RetrievalError
from pipeline.retrieval.rerank import CrossEncoderReranker

QUERY = "한국 의 수도 는"
PASSAGES = [
    "부산 은 항구 도시 이다", "서울 은 한국 의 수도 이다", "제주 는 섬 이다", "대전 은 과학 도시 이다",
    "서울 인구", "바다 산 섬", "수도 수도 수도", "한국 의 산",
]


@pytest.fixture(scope="module")
def tiny_model(tiny_cross_encoder_dir: Path) -> Path:
    return tiny_cross_encoder_dir


@pytest.fixture(scope="module")
def reranker(tiny_model: Path) -> CrossEncoderReranker:
    return CrossEncoderReranker(model="tiny/ce", model_path=str(tiny_model), top_n=3, batch_size=2, max_length=32)


def _candidates() -> list[NodeWithScore]:
    return [NodeWithScore(node=TextNode(id_=f"p{i}", text=t), score=1.0 - i / 10) for i, t in enumerate(PASSAGES)]


def _reference_scores(tiny_model: Path) -> list[float]:
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(str(tiny_model), max_length=32, device="cpu")
    return [float(s) for s in ce.predict([(QUERY, p) for p in PASSAGES])]


def test_is_a_node_postprocessor() -> None:
    assert issubclass(CrossEncoderReranker, BaseNodePostprocessor)


def test_order_follows_cross_encoder_scores_not_input(reranker: CrossEncoderReranker, tiny_model: Path) -> None:
    scores = _reference_scores(tiny_model)
    expected = sorted(range(len(PASSAGES)), key=lambda i: -scores[i])
    assert expected[:3] != [0, 1, 2], "fixture should disagree with the input order"
    got = reranker.postprocess_nodes(_candidates(), query_bundle=QueryBundle(QUERY))
    assert [n.node.node_id for n in got] == [f"p{i}" for i in expected[:3]]
    assert [n.score for n in got] == pytest.approx([scores[i] for i in expected[:3]], abs=1e-5)


def test_top_n_and_no_mutation(tiny_model: Path) -> None:
    nodes = _candidates()
    for top_n in (1, 5, 20):
        rr = CrossEncoderReranker(model="tiny/ce", model_path=str(tiny_model), top_n=top_n)
        got = rr.postprocess_nodes(nodes, query_str=QUERY)
        assert len(got) == min(top_n, len(nodes))
    assert [n.score for n in nodes] == [1.0 - i / 10 for i in range(len(PASSAGES))]
    assert all(n.node.metadata == {} for n in nodes)


def test_keep_retrieval_score_copies_the_node(tiny_model: Path) -> None:
    rr = CrossEncoderReranker(model="tiny/ce", model_path=str(tiny_model), top_n=8, keep_retrieval_score=True)
    nodes = _candidates()
    got = rr.postprocess_nodes(nodes, query_str=QUERY)
    by_id = {n.node.node_id: n for n in nodes}
    for out in got:
        assert out.node.metadata["retrieval_score"] == by_id[out.node.node_id].score
        assert "retrieval_score" not in out.node.get_content(metadata_mode="llm")
    assert all("retrieval_score" not in n.node.metadata for n in nodes)


def test_empty_and_missing_query(reranker: CrossEncoderReranker) -> None:
    assert reranker.postprocess_nodes([], query_str=QUERY) == []
    with pytest.raises(RetrievalError, match="query"):
        reranker.postprocess_nodes(_candidates())


def test_from_config(tiny_model: Path) -> None:
    rr = CrossEncoderReranker.from_config(RerankConfig(model="tiny/ce", batch_size=4, max_length=16), model_path=str(tiny_model))
    assert (rr.model, rr.batch_size, rr.max_length) == ("tiny/ce", 4, 16)
    assert len(rr.rerank(_candidates(), QUERY, top_n=2)) == 2


def test_unloadable_model_names_it(tmp_path: Path) -> None:
    with pytest.raises(ModelResolutionError, match="no-such/reranker") as err:
        CrossEncoderReranker(model="no-such/reranker", model_path=str(tmp_path / "missing"))
    assert err.value.key == "rerank.model"


def test_onnx_backend_scores_like_sentence_transformers(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGPIPE_MODEL_DIR", str(tmp_path))  # export into a temp folder
    onnx = CrossEncoderReranker(model="tiny/ce", model_path=str(tiny_model), top_n=len(PASSAGES), max_length=32, backend="onnx")
    got = onnx.postprocess_nodes(_candidates(), query_str=QUERY)
    scores = _reference_scores(tiny_model)
    assert [n.node.node_id for n in got] == [f"p{i}" for i in sorted(range(len(PASSAGES)), key=lambda i: -scores[i])]
    assert [n.score for n in got] == pytest.approx(sorted(scores, reverse=True), abs=1e-5)
    assert list(tmp_path.rglob("model.onnx"))  # exported once, into the model cache


def test_backend_follows_the_embedding_unless_set(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.retrieval.rerank import build_reranker

    monkeypatch.setenv("RAGPIPE_MODEL_DIR", str(tmp_path))
    cfg = RerankConfig(enabled=True, model=str(tiny_model), max_length=32)
    assert build_reranker(cfg, "onnx").backend == "onnx"
    assert build_reranker(cfg.model_copy(update={"backend": "torch"}), "onnx").backend == "torch"
