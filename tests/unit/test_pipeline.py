"""Pipeline end to end on the tiny corpus and model: ingest, persist, query, incremental updates, bad input."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

from pipeline import Pipeline
from pipeline.core.errors import IndexMismatchError, IndexStateError, LoaderError, RetrievalError
from tests.conftest import TINY_DOCS, version_dir, write_jsonl


def _pipe(cfg: dict[str, Any]) -> Pipeline:
    return Pipeline.from_config(copy.deepcopy(cfg))


def test_ingest_then_query_from_a_fresh_pipeline(tiny_config: dict[str, Any]) -> None:
    report = _pipe(tiny_config).ingest()
    assert (report.documents, report.nodes, report.added) == (6, 6, 6)
    assert report.new_embeddings == 6
    fresh = _pipe(tiny_config)  # loads from disk, no re-embedding of passages
    hits = fresh.retrieve("서울의 강", top_k=3)
    assert hits[0].node.ref_doc_id == "seoul"
    assert hits[0].node.metadata["category"] == "여행"
    assert len(hits) <= 3 and all(h.score is not None for h in hits)
    assert fresh.embed_model.new_embeddings == 0


def test_index_dir_layout_and_manifest(tiny_config: dict[str, Any]) -> None:
    _pipe(tiny_config).ingest()
    index = version_dir(Path(tiny_config["index_dir"]))
    assert index.name == "v000001"
    assert {p.name for p in index.iterdir()} >= {"manifest.json", "config.yaml", "docstore.jsonl", "documents.jsonl", "retrievers"}
    manifest = json.loads((index / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["embedding"]["dim"] == 32
    assert manifest["build"]["retrieval.retrievers[bm25].tokenizer.name"] == "kiwi"
    assert manifest["build"]["chunking.splitter"] == "none" and manifest["retrievers"]["dense"] == {"type": "dense"}
    assert manifest["counts"] == {"documents": 6, "nodes": 6}
    assert "서울은" in (index / "docstore.jsonl").read_text(encoding="utf-8")  # Hangul unescaped


def test_second_ingest_makes_no_embedding_calls_and_applies_changes(tiny_config: dict[str, Any], tiny_corpus: Path) -> None:
    _pipe(tiny_config).ingest()
    again = _pipe(tiny_config).ingest()
    assert (again.new_embeddings, again.unchanged, again.added) == (0, 6, 0)
    rows = [dict(r) for r in TINY_DOCS if r["doc_id"] != "busan"]
    rows[0]["text"] += " 남산타워도 있다."
    rows.append({"doc_id": "jeju", "title": "제주", "category": "여행", "text": "제주도는 한라산이 있는 섬이다."})
    write_jsonl(tiny_corpus, rows)
    report = _pipe(tiny_config).ingest()
    assert (report.added, report.changed, report.removed, report.unchanged) == (1, 1, 1, 4)
    assert report.new_embeddings == 2
    hits = _pipe(tiny_config).retrieve("한라산", top_k=6)
    ids = [h.node.ref_doc_id for h in hits]
    assert "jeju" in ids and "busan" not in ids


def test_upsert_and_delete(tiny_config: dict[str, Any]) -> None:
    from llama_index.core import Document

    pipe = _pipe(tiny_config)
    pipe.ingest()
    pipe.upsert([Document(text="독도는 동해에 있는 섬이다.", id_="dokdo", metadata={"category": "지리"})])
    assert _pipe(tiny_config).retrieve("독도", top_k=1)[0].node.ref_doc_id == "dokdo"
    pipe.delete(["dokdo"])
    assert all(h.node.ref_doc_id != "dokdo" for h in _pipe(tiny_config).retrieve("독도", top_k=6))
    with pytest.raises(RetrievalError, match="unknown document id"):
        pipe.delete(["nope"])


def test_metadata_filters_and_retriever_contract(tiny_config: dict[str, Any]) -> None:
    pipe = _pipe(tiny_config)
    pipe.ingest()
    only_food = MetadataFilters(filters=[MetadataFilter(key="category", value="요리")])
    hits = pipe.retrieve("서울 김치", top_k=3, filters=only_food)
    assert [h.node.ref_doc_id for h in hits] == ["kimchi"]
    retriever = pipe.as_retriever()
    assert isinstance(retriever, BaseRetriever)
    assert retriever.retrieve("김치")[0].node.ref_doc_id == "kimchi"


def test_dict_filters_and_unknown_key_warning(tiny_config: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    pipe = _pipe(tiny_config)
    pipe.ingest()
    with caplog.at_level("WARNING", logger="pipeline.retrieval.filters"):
        assert [h.node.ref_doc_id for h in pipe.retrieve("잠 수면", top_k=3, filters={"category": "건강"})] == ["sleep"]
        assert not caplog.records  # a key the passages have: no warning
        assert pipe.retrieve("잠 수면", top_k=3, filters={"categry": "건강"}) == []
    [warning] = caplog.records
    assert "filter on categry: no passage has this key" in warning.message and "category" in warning.message


def test_retrieval_only_engine_needs_no_llm(tiny_config: dict[str, Any]) -> None:
    pipe = _pipe(tiny_config)
    pipe.ingest()
    response = pipe.as_query_engine().query("기차는 어디에 들어오나요?")
    assert response.source_nodes and response.source_nodes[0].node.ref_doc_id == "train"


def test_empty_query_is_rejected(tiny_config: dict[str, Any]) -> None:
    pipe = _pipe(tiny_config)
    pipe.ingest()
    with pytest.raises(RetrievalError, match="empty query"):
        pipe.retrieve("   ")


def test_query_without_index(tiny_config: dict[str, Any]) -> None:
    with pytest.raises(IndexStateError, match="no index here"):
        _pipe(tiny_config).retrieve("서울")


def test_corrupt_index_is_refused(tiny_config: dict[str, Any]) -> None:
    _pipe(tiny_config).ingest()
    manifest = version_dir(Path(tiny_config["index_dir"])) / "manifest.json"
    manifest.write_text("{not json", encoding="utf-8")
    with pytest.raises(IndexStateError, match="corrupt manifest"):
        _pipe(tiny_config).retrieve("서울")
    manifest.unlink()
    with pytest.raises(IndexStateError, match="incomplete index"):
        _pipe(tiny_config).retrieve("서울")


def test_other_embedding_model_or_tokenizer_is_a_mismatch(tiny_config: dict[str, Any], tmp_path: Path) -> None:
    _pipe(tiny_config).ingest()
    other = copy.deepcopy(tiny_config)
    other["embedding"]["model"] = str(tmp_path / "other-model")
    import shutil

    shutil.copytree(tiny_config["embedding"]["model"], other["embedding"]["model"])
    with pytest.raises(IndexMismatchError, match="embedding.model"):
        _pipe(other).retrieve("서울")
    other = copy.deepcopy(tiny_config)
    other["retrieval"]["retrievers"][0]["tokenizer"] = {"name": "whitespace"}
    with pytest.raises(IndexMismatchError, match="tokenizer"):
        _pipe(other).retrieve("서울")


def test_failed_ingest_leaves_previous_index_unchanged(tiny_config: dict[str, Any], tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _pipe(tiny_config).ingest()
    index = Path(tiny_config["index_dir"])
    before = {p.relative_to(index): p.read_bytes() for p in index.rglob("*") if p.is_file()}
    write_jsonl(tiny_corpus, [*TINY_DOCS, {"doc_id": "new", "title": "새", "category": "기타", "text": "새 문서이다."}])
    from pipeline.storage import index_dir

    def boom(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt  # killed half-way through writing

    monkeypatch.setattr(index_dir, "write_docstore", boom)
    with pytest.raises(KeyboardInterrupt):
        _pipe(tiny_config).ingest()
    after = {p.relative_to(index): p.read_bytes() for p in index.rglob("*") if p.is_file()}
    assert after == before
    assert not [p for p in index.iterdir() if ".tmp-" in p.name]  # no temp folder left
    monkeypatch.undo()
    assert _pipe(tiny_config).retrieve("서울", top_k=1)[0].node.ref_doc_id == "seoul"


def test_bad_source_keeps_previous_index(tiny_config: dict[str, Any], tiny_corpus: Path) -> None:
    _pipe(tiny_config).ingest()
    tiny_corpus.write_bytes("{\"doc_id\": \"x\", \"text\": \"서울\"}\n".encode("cp949"))
    with pytest.raises(LoaderError, match="not UTF-8"):
        _pipe(tiny_config).ingest()
    tiny_corpus.write_text("", encoding="utf-8")
    with pytest.raises(LoaderError, match="empty corpus"):
        _pipe(tiny_config).ingest()
    assert _pipe(tiny_config).retrieve("김치", top_k=1)[0].node.ref_doc_id == "kimchi"


def test_default_config_builds_without_api_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OpenAI key anywhere, and nothing resolves LlamaIndex's global (OpenAI) defaults."""
    from llama_index.core import Settings

    from pipeline.config import load_config
    from pipeline.models.llm import build_llm

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "default.yaml")
    assert build_llm(cfg.llm) is None
    assert Settings._llm is None and Settings._embed_model is None


def test_fusion_modes_switch_from_config(tiny_config: dict[str, Any]) -> None:
    _pipe(tiny_config).ingest()
    for mode in ("rrf", "relative_score", "dist_based_score", "simple"):
        cfg = copy.deepcopy(tiny_config)
        cfg["retrieval"]["fusion"]["mode"] = mode
        hits = _pipe(cfg).retrieve("김치 양념", top_k=3)
        assert hits[0].node.ref_doc_id == "kimchi", mode
        assert len({h.node.node_id for h in hits}) == len(hits) == 3


def test_a_model_retrained_in_place_is_not_served_from_the_cache(tiny_config: dict[str, Any], tiny_model_dir: Path,
                                                                   tmp_path: Path) -> None:
    """The vector cache keys a local model folder by its weights too: retraining into the same folder re-embeds."""
    import shutil

    import numpy as np
    from safetensors.numpy import load_file, save_file

    folder = tmp_path / "my-model"
    shutil.copytree(tiny_model_dir, folder)
    cfg = {**tiny_config, "embedding": {**tiny_config["embedding"], "model": str(folder)}}
    first = Pipeline.from_config(cfg).ingest()
    assert first.new_embeddings == 6
    weights = folder / "model.safetensors"
    tensors = {k: v + np.float32(0.01) if v.dtype == np.float32 else v for k, v in load_file(str(weights)).items()}
    save_file(tensors, str(weights))  # "retrained" into the same folder
    again = Pipeline.from_config(cfg).ingest(rebuild=True)
    assert again.new_embeddings == 6 and again.cached_embeddings == 0
