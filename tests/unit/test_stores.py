"""FaissVectorStore: index types, deletes, filters, persistence, LlamaIndex integration (no network)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)

from pipeline.config import FaissConfig
from pipeline.core.errors import ConfigError, IndexStateError
from pipeline.storage.faiss_store import FaissVectorStore

DIM = 32
N = 300


def _vectors(n: int = N, dim: int = DIM, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _nodes(x: np.ndarray) -> list[TextNode]:
    out = []
    for i, vec in enumerate(x):
        node = TextNode(
            id_=f"n{i:03d}", text=f"passage {i}", embedding=vec.tolist(),
            metadata={"lang": "ko" if i % 3 == 0 else "en", "year": 2000 + i % 20, "tags": [f"t{i % 4}"]},
        )
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=f"doc{i % 10}")
        out.append(node)
    return out


CONFIGS = {
    "flat": FaissConfig(index_type="flat"),
    "hnsw": FaissConfig(index_type="hnsw", hnsw_m=16, ef_construction=64, ef_search=32),
    "ivfpq": FaissConfig(index_type="ivfpq", nlist=8, pq_m=8, nbits=4, nprobe=8),
}


@pytest.fixture(autouse=True, scope="module")
def _single_thread_faiss():
    """Tiny indexes: OpenMP start-up costs seconds on a busy machine, so run faiss on one thread here."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, list[TextNode]]:
    x = _vectors()
    return x, _nodes(x)


def _store(kind: str, nodes: list[TextNode]) -> FaissVectorStore:
    store = FaissVectorStore(CONFIGS[kind], dim=DIM)
    store.add(nodes)
    return store


def _q(vec: np.ndarray, k: int, **kw: object) -> VectorStoreQuery:
    return VectorStoreQuery(query_embedding=vec.tolist(), similarity_top_k=k, **kw)


def test_is_a_llamaindex_vector_store() -> None:
    assert issubclass(FaissVectorStore, BasePydanticVectorStore)
    assert FaissVectorStore.model_fields["stores_text"].default is False


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_self_query_finds_itself(kind: str, data) -> None:
    x, nodes = data
    store = _store(kind, nodes)
    assert store.num_vectors == N and store.dim == DIM
    hits = [store.query(_q(x[i], 5)).ids[0] for i in range(0, N, 15)]
    exact = sum(h == f"n{i:03d}" for h, i in zip(hits, range(0, N, 15)))
    assert exact == len(hits) if kind != "ivfpq" else exact >= 0.8 * len(hits)


def test_flat_scores_are_exact_cosine(data) -> None:
    x, nodes = data
    res = _store("flat", nodes).query(_q(x[7], 3))
    expected = np.argsort(-(x @ x[7]))[:3]
    assert res.ids == [f"n{i:03d}" for i in expected]
    assert res.similarities == pytest.approx((x[expected] @ x[7]).tolist(), abs=1e-5)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_delete_by_document(kind: str, data) -> None:
    x, nodes = data
    store = _store(kind, nodes)
    store.delete("doc5")
    assert store.num_vectors == N - N // 10
    res = store.query(_q(x[5], 20))
    assert len(res.ids) == 20
    assert not any(int(i[1:]) % 10 == 5 for i in res.ids)
    assert store.query(_q(x[6], 1)).ids == ["n006"] or kind == "ivfpq"


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_delete_nodes_and_readd_replaces(kind: str, data) -> None:
    x, nodes = data
    store = _store(kind, nodes[:50])
    store.delete_nodes(["n001"])
    assert "n001" not in store.query(_q(x[1], 50)).ids
    store.add([nodes[2]])  # same node_id again: replaced, not duplicated
    ids = store.query(_q(x[2], 49)).ids
    assert ids.count("n002") == 1 and len(ids) == 49


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_filters_fill_top_k_with_matches(kind: str, data) -> None:
    x, nodes = data
    store = _store(kind, nodes)
    eq = MetadataFilters(filters=[MetadataFilter(key="lang", value="ko")])
    res = store.query(_q(x[1], 10, filters=eq))  # query node itself is 'en'
    assert len(res.ids) == 10 and all(int(i[1:]) % 3 == 0 for i in res.ids)
    years = MetadataFilters(filters=[MetadataFilter(key="year", value=[2003, 2004], operator=FilterOperator.IN)])
    res = store.query(_q(x[0], 25, filters=years))
    assert len(res.ids) == 25 and all(2000 + int(i[1:]) % 20 in (2003, 2004) for i in res.ids)
    rare = MetadataFilters(filters=[MetadataFilter(key="year", value=2019), MetadataFilter(key="lang", value="ko")])
    res = store.query(_q(x[0], 50, filters=rare))  # only 5 nodes match: all of them come back
    assert sorted(res.ids) == sorted(n.node_id for n in nodes if n.metadata["year"] == 2019 and n.metadata["lang"] == "ko")


def test_filter_operators_and_conditions(data) -> None:
    x, nodes = data
    store = _store("flat", nodes[:40])

    def ids(*filters: MetadataFilter, cond: str = "and") -> set[int]:
        f = MetadataFilters(filters=list(filters), condition=FilterCondition(cond))
        return {int(i[1:]) for i in store.query(_q(x[0], 40, filters=f)).ids}

    every = set(range(40))
    assert ids(MetadataFilter(key="lang", value="ko", operator=FilterOperator.NE)) == {i for i in every if i % 3}
    assert ids(MetadataFilter(key="year", value=[2000, 2001], operator=FilterOperator.NIN)) == {
        i for i in every if i % 20 > 1}
    assert ids(MetadataFilter(key="year", value=2017, operator=FilterOperator.GT)) == {18, 19, 38, 39}
    assert ids(MetadataFilter(key="year", value=2018, operator=FilterOperator.GTE)) == {18, 19, 38, 39}
    assert ids(MetadataFilter(key="year", value=2001, operator=FilterOperator.LT)) == {0, 20}
    assert ids(MetadataFilter(key="year", value=2000, operator=FilterOperator.LTE)) == {0, 20}
    assert ids(MetadataFilter(key="year", value=2000), MetadataFilter(key="year", value=2019), cond="or") == {
        0, 19, 20, 39}
    assert ids(MetadataFilter(key="tags", value="t1", operator=FilterOperator.CONTAINS)) == {
        i for i in every if i % 4 == 1}
    nested = MetadataFilters(filters=[MetadataFilter(key="year", value=2000), MetadataFilter(key="year", value=2001)],
                             condition=FilterCondition.OR)
    f = MetadataFilters(filters=[nested, MetadataFilter(key="lang", value="en")])
    assert {int(i[1:]) for i in store.query(_q(x[0], 40, filters=f)).ids} == {1, 20}
    assert store.query(_q(x[0], 40, doc_ids=["doc3"])).ids == [
        i for i in store.query(_q(x[0], 40)).ids if int(i[1:]) % 10 == 3]


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_persist_round_trip(kind: str, data, tmp_path) -> None:
    x, nodes = data
    store = _store(kind, nodes)
    store.delete("doc2")
    before = [store.query(_q(x[i], 5)) for i in (0, 11, 123)]
    store.persist(str(tmp_path / "faiss"))
    assert {p.name for p in (tmp_path / "faiss").iterdir()} == {"index.faiss", "ids.json", "params.json"}
    loaded = FaissVectorStore.from_persist_dir(tmp_path / "faiss")
    assert loaded.config == CONFIGS[kind] and loaded.num_vectors == store.num_vectors
    after = [loaded.query(_q(x[i], 5)) for i in (0, 11, 123)]
    assert [r.ids for r in after] == [r.ids for r in before]
    for a, b in zip(after, before):
        assert a.similarities == pytest.approx(b.similarities, abs=1e-5)
    f = MetadataFilters(filters=[MetadataFilter(key="lang", value="ko")])
    assert loaded.query(_q(x[0], 5, filters=f)).ids == store.query(_q(x[0], 5, filters=f)).ids


def test_non_default_params_survive_reload(data, tmp_path) -> None:
    _, nodes = data
    store = _store("hnsw", nodes[:20])
    store.persist(str(tmp_path / "s"))
    loaded = FaissVectorStore.from_persist_dir(tmp_path / "s")
    assert loaded.config.hnsw_m == 16 and loaded.config.ef_search == 32 and loaded.config.ef_construction == 64
    assert loaded.client.hnsw.efSearch == 32
    params = json.loads((tmp_path / "s" / "params.json").read_text(encoding="utf-8"))
    assert params["dim"] == DIM and "faiss_version" in params
    ivf = _store("ivfpq", nodes)
    ivf.persist(str(tmp_path / "i"))
    assert FaissVectorStore.from_persist_dir(tmp_path / "i").client.nprobe == 8


def test_hangul_metadata_stays_readable(tmp_path) -> None:
    node = TextNode(id_="서울-1", text="서울은 수도", embedding=_vectors(1)[0].tolist(), metadata={"지역": "서울"})
    store = FaissVectorStore(FaissConfig(), dim=DIM)
    store.add([node])
    store.persist(str(tmp_path / "k"))
    assert "서울" in (tmp_path / "k" / "ids.json").read_text(encoding="utf-8")
    f = MetadataFilters(filters=[MetadataFilter(key="지역", value="서울")])
    assert FaissVectorStore.from_persist_dir(tmp_path / "k").query(_q(_vectors(1)[0], 1, filters=f)).ids == ["서울-1"]


def test_missing_and_corrupt_dirs_raise(data, tmp_path) -> None:
    with pytest.raises(IndexStateError, match="missing"):
        FaissVectorStore.from_persist_dir(tmp_path / "nope")
    _, nodes = data
    _store("flat", nodes[:10]).persist(str(tmp_path / "c"))
    (tmp_path / "c" / "index.faiss").write_bytes(b"not a faiss index")
    with pytest.raises(IndexStateError, match=str(tmp_path / "c")):
        FaissVectorStore.from_persist_dir(tmp_path / "c")
    _store("flat", nodes[:10]).persist(str(tmp_path / "j"))
    (tmp_path / "j" / "ids.json").write_text("{", encoding="utf-8")
    with pytest.raises(IndexStateError, match="corrupt"):
        FaissVectorStore.from_persist_dir(tmp_path / "j")


def test_ivfpq_config_errors(data) -> None:
    with pytest.raises(ConfigError, match="pq_m"):
        FaissVectorStore(FaissConfig(index_type="ivfpq", pq_m=5), dim=DIM)
    _, nodes = data
    store = FaissVectorStore(FaissConfig(index_type="ivfpq", pq_m=8, nbits=8), dim=DIM)
    store.add(nodes[:100])
    with pytest.raises(ConfigError, match="nbits"):
        store.query(_q(_vectors(1)[0], 3))


def test_vector_store_index_integration() -> None:
    texts = ["서울은 한국의 수도이다.", "부산은 항구 도시이다.", "제주도는 섬이다.", "대전은 과학 도시이다.", "광주는 빛고을이다."]
    nodes = [TextNode(id_=f"k{i}", text=t) for i, t in enumerate(texts)]
    store = FaissVectorStore(FaissConfig(), dim=8)
    ctx = StorageContext.from_defaults(vector_store=store)
    index = VectorStoreIndex(nodes, storage_context=ctx, embed_model=MockEmbedding(embed_dim=8))
    assert store.num_vectors == 5
    got = index.as_retriever(similarity_top_k=3).retrieve("서울")
    assert len(got) == 3
    assert all(n.node.get_content() in texts for n in got)
