"""SparseVectorRetriever (tfidf / bow): contract, ranking, filters, persistence and errors."""

from __future__ import annotations

import numpy as np
import pytest
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters

from pipeline.config import SparseVectorConfig, TokenizerConfig
from pipeline.core.errors import IndexStateError, RetrievalError
from pipeline.retrieval.sparse import SparseVectorRetriever

CORPUS = [
    ("seoul", "서울은 대한민국의 수도이며 가장 큰 도시이다.", {"city": "서울", "topic": "geo"}),
    ("busan", "부산은 한국 제2의 도시로 해운대 해수욕장이 유명하다.", {"city": "부산", "topic": "geo"}),
    ("kimchi", "김치는 배추와 고춧가루로 만드는 한국의 전통 발효 음식이다. 김치 김치", {"topic": "food"}),
    ("bibim", "비빔밥은 밥 위에 나물과 고추장을 올려 비벼 먹는 음식이다.", {"topic": "food"}),
    ("palace", "경복궁은 서울 종로구에 있는 조선 시대의 궁궐이다.", {"city": "서울", "topic": "history"}),
    ("hangul", "한글은 세종대왕이 창제한 한국의 고유 문자이다.", {"topic": "history"}),
]


@pytest.fixture()
def nodes() -> list[TextNode]:
    return [TextNode(text=text, id_=nid, metadata=dict(md)) for nid, text, md in CORPUS]


def ids(results) -> list[str]:
    return [r.node.node_id for r in results]


@pytest.mark.parametrize("kind", ["tfidf", "bow"])
def test_contract_recall_ranking_and_no_match(nodes, kind):
    r = SparseVectorRetriever.from_nodes(nodes, SparseVectorConfig(type=kind))
    assert isinstance(r, BaseRetriever)
    assert set(ids(r.retrieve("서울"))) == {"seoul", "palace"}  # bare noun finds '서울은'
    assert ids(r.retrieve("김치 만드는 법"))[0] == "kimchi"
    assert ids(r.retrieve("비빔밥 나물"))[0] == "bibim"
    res = r.retrieve("한국 음식")
    assert all(0 < x.score <= 1 + 1e-9 for x in res) and [x.score for x in res] == sorted((x.score for x in res), reverse=True)
    assert r.retrieve("우주선") == []
    top = r.retrieve("경복궁")[0]
    assert top.node is nodes[4] and top.node.metadata["topic"] == "history"
    with pytest.raises(RetrievalError, match="empty query"):
        r.retrieve("")


def test_tfidf_query_vector_matches_sklearn(nodes):
    from sklearn.feature_extraction.text import TfidfVectorizer

    r = SparseVectorRetriever.from_nodes(nodes, SparseVectorConfig(type="tfidf"))
    docs = r._tokenizer.tokenize_many([n.get_content() for n in nodes])
    vec = TfidfVectorizer(analyzer=lambda x: x, sublinear_tf=True).fit(docs)
    q = "김치 김치 한국 음식"
    want = vec.transform([r._tokenizer(q)]).toarray().ravel()
    cols, w = r.query_vector(q)
    term_of_col = {col: r._terms[term_id] for term_id, col in r._column.items()}
    got = {term_of_col[int(c)]: float(x) for c, x in zip(cols, w)}
    assert got == pytest.approx({t: want[i] for t, i in vec.vocabulary_.items() if want[i]})
    assert np.allclose(r.scores(q)[0], (vec.transform(docs) @ want))


def test_bow_binary_ignores_repeats(nodes):
    counts = SparseVectorRetriever.from_nodes(nodes, SparseVectorConfig(type="bow"))
    onehot = SparseVectorRetriever.from_nodes(nodes, SparseVectorConfig(type="bow", binary=True))
    assert counts.scores("김치")[0][2] > onehot.scores("김치")[0][2]  # 'kimchi' repeats 김치 three times


def test_filters_mask_before_top_k(nodes):
    r = SparseVectorRetriever.from_nodes(nodes, SparseVectorConfig(type="tfidf", candidate_k=1))
    eq = MetadataFilters(filters=[MetadataFilter(key="topic", value="history")])
    assert ids(r.search("한국", filters=eq)) == ["hangul"]
    isin = MetadataFilters(filters=[MetadataFilter(key="city", value=["부산"], operator=FilterOperator.IN)])
    assert ids(r.search("한국 도시", filters=isin)) == ["busan"]
    scoped = SparseVectorRetriever.from_nodes(nodes, SparseVectorConfig(type="bow"), filters=eq)
    assert scoped.retrieve("음식") == []


@pytest.mark.parametrize(
    "cfg",
    [
        SparseVectorConfig(type="tfidf", name="t", sublinear_tf=False, candidate_k=3, tokenizer=TokenizerConfig(tags=["NNG", "NNP"])),
        SparseVectorConfig(type="bow", name="b", binary=True, tokenizer=TokenizerConfig(stopwords=["한국"])),
    ],
)
def test_persist_round_trip_keeps_settings(nodes, tmp_path, cfg):
    r = SparseVectorRetriever.from_nodes(nodes, cfg)
    r.persist(tmp_path / "sparse")
    names = {p.name for p in (tmp_path / "sparse").iterdir()}
    assert {"tokens.npz", "terms.json", "node_ids.json", "params.json"} <= names  # weights are rebuilt from token ids
    assert "서울" in (tmp_path / "sparse" / "terms.json").read_text(encoding="utf-8")
    loaded = SparseVectorRetriever.from_persist_dir(tmp_path / "sparse", {n.node_id: n for n in nodes})
    assert loaded.cfg == cfg and loaded.tokenizer_spec == r.tokenizer_spec
    for q in ["서울", "한국 음식", "김치 김치", "먹다", "우주선"]:
        a, b = r.retrieve(q), loaded.retrieve(q)
        assert ids(a) == ids(b) and np.allclose([x.score for x in a], [x.score for x in b])


def test_missing_and_corrupt_dirs(nodes, tmp_path):
    by_id = {n.node_id: n for n in nodes}
    with pytest.raises(IndexStateError, match="not found"):
        SparseVectorRetriever.from_persist_dir(tmp_path / "nope", by_id)
    r = SparseVectorRetriever.from_nodes(nodes, SparseVectorConfig(type="tfidf"))
    d = tmp_path / "sparse"
    r.persist(d)
    (d / "tokens.npz").write_bytes(b"garbage")
    with pytest.raises(IndexStateError, match="corrupt"):
        SparseVectorRetriever.from_persist_dir(d, by_id)
    r.persist(d)
    (d / "terms.json").write_text('["only-one-term"]', encoding="utf-8")
    with pytest.raises(IndexStateError, match="does not match"):
        SparseVectorRetriever.from_persist_dir(d, by_id)


def test_no_tokens_at_all_is_refused():
    with pytest.raises(IndexStateError, match="no tokens"):
        SparseVectorRetriever.from_nodes([TextNode(text="!!! ... ???", id_="x")], SparseVectorConfig(type="tfidf"))
