"""BM25Retriever on bm25s: contract, Korean recall, ranking, filters, persistence and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import FilterCondition, FilterOperator, MetadataFilter, MetadataFilters

from pipeline.retrieval.bm25 import BM25Retriever
from pipeline.config import BM25Config, TokenizerConfig
from pipeline.core.errors import IndexStateError, RetrievalError

CORPUS = [
    ("seoul", "서울은 대한민국의 수도이며 가장 큰 도시이다.", {"city": "서울", "year": 2020, "topic": "geo"}),
    ("busan", "부산은 한국 제2의 도시로 해운대 해수욕장이 유명하다.", {"city": "부산", "year": 2021, "topic": "geo"}),
    ("jeju", "제주도는 화산섬으로 한라산과 올레길로 알려져 있다.", {"city": "제주", "year": 2019, "topic": "geo"}),
    ("kimchi", "김치는 배추와 고춧가루로 만드는 한국의 전통 발효 음식이다.", {"year": 2022, "topic": "food"}),
    ("bibim", "비빔밥은 밥 위에 나물과 고추장을 올려 비벼 먹는 음식이다.", {"year": 2023, "topic": "food"}),
    ("palace", "경복궁은 서울 종로구에 있는 조선 시대의 궁궐이다.", {"city": "서울", "year": 2018, "topic": "history"}),
    ("hangul", "한글은 세종대왕이 창제한 한국의 고유 문자이다.", {"year": 2017, "topic": "history"}),
    ("airport", "인천국제공항은 인천 영종도에 있으며 서울에서 가깝다.", {"city": "인천", "year": 2024, "topic": "travel"}),
]


@pytest.fixture()
def nodes() -> list[TextNode]:
    return [TextNode(text=text, id_=nid, metadata=dict(md)) for nid, text, md in CORPUS]


@pytest.fixture()
def retriever(nodes) -> BM25Retriever:
    return BM25Retriever.from_nodes(nodes, BM25Config())


def ids(results) -> list[str]:
    return [r.node.node_id for r in results]


def f(key, value, op=FilterOperator.EQ) -> MetadataFilter:
    return MetadataFilter(key=key, value=value, operator=op)


def test_is_a_llamaindex_retriever(retriever):
    assert isinstance(retriever, BaseRetriever)
    assert retriever.tokenizer_spec["name"] == "kiwi"


def test_bare_noun_finds_noun_with_particle(retriever):
    assert set(ids(retriever.retrieve("서울"))) == {"seoul", "palace", "airport"}


@pytest.mark.parametrize("name", ["whitespace", "regex"])
def test_whitespace_and_regex_miss_the_particle_form(nodes, name):
    r = BM25Retriever.from_nodes(nodes, BM25Config(tokenizer=TokenizerConfig(name=name)))
    assert "seoul" not in ids(r.retrieve("서울"))


def test_ranking_sanity(retriever):
    assert ids(retriever.retrieve("김치 만드는 법"))[0] == "kimchi"
    assert ids(retriever.retrieve("비빔밥에 들어가는 나물"))[0] == "bibim"
    assert ids(retriever.retrieve("대한민국의 수도는 어디인가요?"))[0] == "seoul"
    scores = [r.score for r in retriever.retrieve("한국 음식")]
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)


def test_returns_original_nodes_with_metadata(retriever, nodes):
    top = retriever.retrieve("경복궁")[0]
    assert top.node is nodes[5]
    assert top.node.metadata == {"city": "서울", "year": 2018, "topic": "history"}
    assert top.node.get_content() == CORPUS[5][1]


def test_no_matching_term_returns_nothing(retriever):
    assert retriever.retrieve("우주선 로켓") == []
    assert retriever.retrieve("은는이가") == []  # particles only: no content morpheme
    with pytest.raises(RetrievalError, match="empty query"):
        retriever.retrieve("   ")


def test_bm25plus_returns_only_matching_docs(nodes):
    # BM25+/BM25L give every doc a non-occurrence bonus; unmatched docs must still not appear.
    r = BM25Retriever.from_nodes(nodes, BM25Config(method="bm25+"))
    assert ids(r.retrieve("경복궁")) == ["palace"]
    assert r.retrieve("우주선") == []


def test_top_k_from_config_argument_and_attribute(nodes):
    r = BM25Retriever.from_nodes(nodes, BM25Config(candidate_k=2))
    assert len(r.retrieve("한국 서울 음식")) == 2
    r = BM25Retriever.from_nodes(nodes, BM25Config(candidate_k=2), top_k=5)
    assert len(r.retrieve("한국 서울 음식")) == 5
    r.similarity_top_k = 1
    assert len(r.retrieve("한국 서울 음식")) == 1


def test_include_metadata_is_indexed(nodes):
    plain = BM25Retriever.from_nodes(nodes, BM25Config())
    assert plain.retrieve("history") == []
    with_md = BM25Retriever.from_nodes(nodes, BM25Config(include_metadata=["topic"]))
    assert set(ids(with_md.retrieve("history"))) == {"palace", "hangul"}
    assert with_md.retrieve("history")[0].node.get_content() in {CORPUS[5][1], CORPUS[6][1]}  # text, not metadata


def test_regex_tokenizer_scores_like_llamaindex_bm25retriever():
    import llama_index.retrievers.bm25 as li
    texts = ["The cats were running in the garden", "Dogs are running fast", "A garden of roses and cats", "Seoul is big"]
    english = [TextNode(text=t, id_=f"e{i}") for i, t in enumerate(texts)]
    theirs = li.BM25Retriever.from_defaults(nodes=english, similarity_top_k=3).retrieve("running cats")
    ours = BM25Retriever.from_nodes(english, BM25Config(k1=1.5, tokenizer=TokenizerConfig(name="regex")), top_k=3).retrieve("running cats")
    theirs = [t for t in theirs if t.score > 0]
    assert ids(ours)[0] == "e0"
    want = {t.node.node_id: t.score for t in theirs}  # ties (e1/e2) may come in either order
    assert {o.node.node_id: pytest.approx(o.score, rel=1e-5) for o in ours} == want


# --------------------------------------------------------------------------- filters


def test_filter_eq_masks_before_top_k(retriever):
    res = retriever.search("서울", filters=MetadataFilters(filters=[f("city", "서울")]))
    assert set(ids(res)) == {"seoul", "palace"}
    res = retriever.search("한국", top_k=1, filters=MetadataFilters(filters=[f("topic", "history")]))  # filled from matches only
    assert ids(res) == ["hangul"]


def test_filter_in_nin_range_and_or(retriever):
    assert set(ids(retriever.search("서울", filters=MetadataFilters(filters=[f("year", [2018, 2024], FilterOperator.IN)])))) == {"palace", "airport"}
    assert set(ids(retriever.search("서울", filters=MetadataFilters(filters=[f("city", ["서울"], FilterOperator.NIN)])))) == {"airport"}
    assert ids(retriever.search("서울", filters=MetadataFilters(filters=[f("year", 2020, FilterOperator.GTE), f("topic", "geo")]))) == ["seoul"]
    either = MetadataFilters(filters=[f("year", 2018, FilterOperator.LTE), f("topic", "travel")], condition=FilterCondition.OR)
    assert set(ids(retriever.search("서울", filters=either))) == {"palace", "airport"}
    nested = MetadataFilters(filters=[f("topic", "geo"), MetadataFilters(filters=[f("year", 2021, FilterOperator.GT)])])
    assert retriever.search("서울", filters=nested) == []


def test_constructor_filters_and_bad_filter(nodes):
    r = BM25Retriever.from_nodes(nodes, BM25Config(), filters=MetadataFilters(filters=[f("topic", "food")]))
    assert ids(r.retrieve("한국")) == ["kimchi"]
    # a value of another type never matches (the same on every leg: see test_filters.py)
    assert r.search("한국", filters=MetadataFilters(filters=[f("year", "2020", FilterOperator.GT)])) == []


# --------------------------------------------------------------------------- persistence


def test_persist_round_trip_same_results(retriever, nodes, tmp_path):
    retriever.persist(tmp_path / "bm25")
    names = {p.name for p in (tmp_path / "bm25").iterdir()}
    assert {"params.json", "node_ids.json", "terms.json", "tokens.npz"} <= names
    assert json.loads((tmp_path / "bm25" / "node_ids.json").read_text(encoding="utf-8")) == [n.node_id for n in nodes]
    assert "서울" in (tmp_path / "bm25" / "terms.json").read_text(encoding="utf-8")  # Hangul not escaped
    loaded = BM25Retriever.from_persist_dir(tmp_path / "bm25", {n.node_id: n for n in nodes})
    for q in ["서울", "한국 음식", "김치 만드는 법", "우주선"]:
        a, b = retriever.retrieve(q), loaded.retrieve(q)
        assert ids(a) == ids(b)
        assert np.allclose([x.score for x in a], [x.score for x in b])


def test_non_default_settings_survive_reload(nodes, tmp_path):
    cfg = BM25Config(name="kw", k1=0.9, b=0.3, method="atire", candidate_k=3, include_metadata=["topic"],
                     tokenizer=TokenizerConfig(tags=["NNG", "NNP", "SL"], stopwords=["도시"]))
    r = BM25Retriever.from_nodes(nodes, cfg)
    r.persist(tmp_path / "bm25")
    loaded = BM25Retriever.from_persist_dir(tmp_path / "bm25", {n.node_id: n for n in nodes})
    assert loaded.cfg == cfg
    assert loaded.tokenizer_spec == r.tokenizer_spec
    assert loaded.tokenizer_spec["tags"] == ["NNG", "NNP", "SL"] and loaded.tokenizer_spec["stopwords"] == ["도시"]
    assert loaded._state.cfg.k1 == 0.9 and loaded._state.cfg.b == 0.3 and loaded._state.cfg.method.value == "atire"
    assert loaded.retrieve("먹는 도시") == []  # verb stems and the stopword are not indexed
    assert ids(loaded.retrieve("history 한국")) == ids(r.retrieve("history 한국"))


def test_missing_and_corrupt_dirs_raise_index_state_error(retriever, nodes, tmp_path):
    by_id = {n.node_id: n for n in nodes}
    with pytest.raises(IndexStateError, match="not found") as exc:
        BM25Retriever.from_persist_dir(tmp_path / "nope", by_id)
    assert str(tmp_path / "nope") in str(exc.value)

    d = tmp_path / "bm25"
    retriever.persist(d)
    (d / "tokens.npz").write_bytes(b"garbage")
    with pytest.raises(IndexStateError, match="corrupt"):
        BM25Retriever.from_persist_dir(d, by_id)

    retriever.persist(d)
    (d / "terms.json").unlink()
    with pytest.raises(IndexStateError, match=str(d)):
        BM25Retriever.from_persist_dir(d, by_id)

    retriever.persist(d)
    (d / "params.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(IndexStateError, match="corrupt"):
        BM25Retriever.from_persist_dir(d, by_id)

    retriever.persist(d)
    with pytest.raises(IndexStateError, match="not in the docstore"):
        BM25Retriever.from_persist_dir(d, {k: v for k, v in by_id.items() if k != "seoul"})


def test_refuses_empty_and_duplicate_nodes():
    with pytest.raises(IndexStateError, match="0 nodes"):
        BM25Retriever.from_nodes([], BM25Config())
    dup = [TextNode(text="서울", id_="a"), TextNode(text="부산", id_="a")]
    with pytest.raises(IndexStateError, match="duplicate node_id 'a'"):
        BM25Retriever.from_nodes(dup, BM25Config())
