"""Index integrity: every build-deciding setting that differs from the index is refused by name; query-time ones apply."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterator

import pytest

from pipeline import Pipeline
from pipeline.core.errors import ConfigError, IndexMismatchError
from tests.conftest import TINY_DOCS, write_jsonl


def _config(root: Path, model: Path, faiss: dict[str, Any]) -> dict[str, Any]:
    corpus = write_jsonl(root / "corpus.jsonl", TINY_DOCS)
    return {
        "index_dir": str(root / "index"),
        "data": {"loader": "jsonl", "path": str(corpus), "id_field": "doc_id", "metadata_fields": ["category"]},
        "chunking": {"splitter": "sentence", "chunk_size": 64, "chunk_overlap": 8},
        "embedding": {"model": str(model), "precision": "fp32", "max_length": 120},
        "retrieval": {"top_k": 3, "retrievers": [
            {"type": "bm25", "name": "bm25", "tokenizer": {"name": "kiwi"}, "candidate_k": 5},
            {"type": "tfidf", "name": "tfidf", "tokenizer": {"name": "whitespace"}, "candidate_k": 5, "weight": 0.5},
            {"type": "dense", "name": "dense", "faiss": faiss, "candidate_k": 5},
        ]},
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[dict[str, dict[str, Any]]]:
    """Two indexes built once: FAISS hnsw and FAISS ivfpq (tiny codebooks)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAGPIPE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        mp.setenv("HF_HUB_OFFLINE", "1")
        out = {
            "hnsw": _config(tmp_path_factory.mktemp("hnsw"), tiny_model_dir, {"index_type": "hnsw", "hnsw_m": 8}),
            "ivfpq": _config(tmp_path_factory.mktemp("ivfpq"), tiny_model_dir,
                             {"index_type": "ivfpq", "nlist": 2, "pq_m": 4, "nbits": 2, "nprobe": 1}),
        }
        for cfg in out.values():
            Pipeline.from_config(copy.deepcopy(cfg)).ingest()
        yield out


def _with(cfg: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A copy of ``cfg`` with ``retrieval.retrievers[<name>].a.b`` or ``section.key`` set to ``value``."""
    out = copy.deepcopy(cfg)
    if dotted.startswith("retrieval.retrievers["):
        name, rest = dotted[len("retrieval.retrievers["):].split("].", 1)
        cur = next(r for r in out["retrieval"]["retrievers"] if r["name"] == name)
    else:
        cur, rest = out, dotted
    *path, last = rest.split(".")
    for part in path:
        cur = cur.setdefault(part, {})
    cur[last] = value
    return out


BUILD_TIME = [
    ("hnsw", "retrieval.retrievers[bm25].k1", 2.5, 1.2),
    ("hnsw", "retrieval.retrievers[bm25].b", 0.3, 0.75),
    ("hnsw", "retrieval.retrievers[bm25].method", "bm25+", "lucene"),
    ("hnsw", "retrieval.retrievers[bm25].include_metadata", ["category"], []),
    ("hnsw", "retrieval.retrievers[bm25].tokenizer.tags", ["NNG", "NNP"], None),
    ("hnsw", "retrieval.retrievers[bm25].tokenizer.lowercase", False, True),
    ("hnsw", "retrieval.retrievers[bm25].tokenizer.stopwords", ["서울"], []),
    ("hnsw", "retrieval.retrievers[bm25].tokenizer.name", "whitespace", "kiwi"),
    ("hnsw", "retrieval.retrievers[bm25].tokenizer.multi_dict", False, True),
    ("hnsw", "retrieval.retrievers[tfidf].sublinear_tf", False, True),
    ("hnsw", "retrieval.retrievers[dense].faiss.index_type", "flat", "hnsw"),
    ("hnsw", "retrieval.retrievers[dense].faiss.hnsw_m", 16, 8),
    ("hnsw", "retrieval.retrievers[dense].faiss.ef_construction", 50, 200),
    ("ivfpq", "retrieval.retrievers[dense].faiss.nlist", 3, 2),
    ("ivfpq", "retrieval.retrievers[dense].faiss.pq_m", 8, 4),
    ("ivfpq", "retrieval.retrievers[dense].faiss.nbits", 1, 2),
    ("hnsw", "embedding.query_prompt", "question: ", "query: "),
    ("hnsw", "embedding.passage_prompt", "", "passage: "),
    ("hnsw", "embedding.normalize", False, True),
    ("hnsw", "embedding.max_length", 64, 120),
    ("hnsw", "embedding.pooling", "cls", None),
    ("hnsw", "chunking.chunk_size", 48, 64),
    ("hnsw", "chunking.chunk_overlap", 4, 8),
    ("hnsw", "chunking.splitter", "token", "sentence"),
]


@pytest.mark.parametrize(("base", "key", "asked", "built_value"), BUILD_TIME, ids=[c[1] for c in BUILD_TIME])
def test_build_time_change_names_key_built_and_asked_values(built: dict[str, Any], base: str, key: str, asked: Any,
                                                            built_value: Any) -> None:
    with pytest.raises(IndexMismatchError) as err:
        Pipeline.from_config(_with(built[base], key, asked)).load()
    msg = str(err.value)
    assert err.value.key == key and f"{key}: the index was built with" in msg and "ragpipe ingest --rebuild" in msg
    shown_built = sorted(built_value) if key.endswith(".tags") and built_value else built_value
    if key.endswith("tokenizer.tags") and built_value is None:  # the default tag set is recorded in full
        assert "'NNG'" in msg.split("config asks for")[0]
    else:
        assert repr(shown_built) in msg.split("config asks for")[0]
    shown_asked = sorted(asked) if isinstance(asked, list) else ([asked] if key.endswith("pooling") else asked)
    assert repr(shown_asked) in msg.split("config asks for")[1]


def test_missing_retriever_is_named(built: dict[str, Any]) -> None:
    cfg = copy.deepcopy(built["hnsw"])
    cfg["retrieval"]["retrievers"].append({"type": "bm25", "name": "bm25-extra"})
    with pytest.raises(IndexMismatchError, match="retriever 'bm25-extra' is not in the index"):
        Pipeline.from_config(cfg).load()


def test_unknown_tokenizer_is_named_before_any_comparison(built: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"retrieval.retrievers\[bm25\].tokenizer.name = 'mecab' is not a tokenizer; use one of: kiwi, whitespace, regex, hf:"):
        Pipeline.from_config(_with(built["hnsw"], "retrieval.retrievers[bm25].tokenizer.name", "mecab")).load()


QUERY_TIME = [
    ("hnsw", "retrieval.top_k", 1),
    ("hnsw", "retrieval.retrievers[bm25].candidate_k", 2),
    ("hnsw", "retrieval.retrievers[dense].weight", 0.1),
    ("hnsw", "retrieval.fusion.mode", "rrf"),
    ("hnsw", "retrieval.fusion.rrf_k", 5.0),
    ("hnsw", "retrieval.retrievers[dense].faiss.ef_search", 4),
    ("ivfpq", "retrieval.retrievers[dense].faiss.nprobe", 2),
    ("hnsw", "embedding.batch_size", 2),
    ("hnsw", "rerank.candidates", 7),
]


@pytest.mark.parametrize(("base", "key", "value"), QUERY_TIME, ids=[c[1] for c in QUERY_TIME])
def test_query_time_change_applies_without_rebuild(built: dict[str, Any], base: str, key: str, value: Any) -> None:
    pipe = Pipeline.from_config(_with(built[base], key, value))
    hits = pipe.retrieve("서울의 강", top_k=None)
    assert hits and len(hits) <= pipe.config.retrieval.top_k
    search = pipe.load()
    if key == "retrieval.top_k":
        assert len(hits) == 1
    elif key.endswith("candidate_k") or key.endswith("weight"):
        entry = next(e for e in search.first_stage.entries if e.name in key)
        assert getattr(entry, key.rsplit(".", 1)[1]) == value
    elif key.startswith("retrieval.fusion"):
        assert getattr(search.first_stage.config, key.rsplit(".", 1)[1]) == value
    elif ".faiss." in key:
        store = pipe._served().legs["dense"].vector_store
        assert getattr(store.config, key.rsplit(".", 1)[1]) == value
    elif key == "rerank.candidates":
        assert search.rerank_candidates == value


def test_faiss_fields_of_another_index_type_need_no_rebuild(built: dict[str, Any]) -> None:
    cfg = _with(built["hnsw"], "retrieval.retrievers[dense].faiss.nlist", 99)  # ivfpq-only: unused by hnsw
    assert Pipeline.from_config(cfg).retrieve("서울", top_k=1)


def test_an_index_from_before_a_build_setting_was_recorded_opens(built: dict[str, Any], tmp_path: Path) -> None:
    """An index whose manifest lacks ``tokenizer.multi_dict`` was built with kiwi's multi-word dictionary: it opens
    under the default, and asking for ``multi_dict: false`` names the value every older index had."""
    from pipeline.config import config_from_dict
    from pipeline.storage.index_dir import Manifest
    from pipeline.storage.integrity import check_build, expected_build

    cfg = config_from_dict(copy.deepcopy(built["hnsw"]))
    old = {k: v for k, v in expected_build(cfg).items() if not k.endswith("tokenizer.multi_dict")}
    manifest = Manifest(config_sha256="", embedding=None, build=old, retrievers={r.name: {} for r in cfg.retrieval.retrievers},
                        doc_hashes={}, counts={})
    check_build(manifest, cfg, tmp_path)  # no error: recorded later, and the default is what was built
    with pytest.raises(IndexMismatchError, match=r"tokenizer.multi_dict: the index was built with True"):
        check_build(manifest, config_from_dict(_with(built["hnsw"], "retrieval.retrievers[bm25].tokenizer.multi_dict", False)), tmp_path)
