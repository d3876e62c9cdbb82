"""FusionRetriever: hand-computed scores, node_id merging, tie-breaks, weights, depth, traces."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from pipeline.config import FusionConfig, FusionMode
from pipeline.core.errors import ConfigError
from pipeline.retrieval.fusion import FusionRetriever, RetrieverEntry

NODES = {name: TextNode(id_=name, text=f"text of {name}") for name in "abcdefgmnpqxyz"}


class StubRetriever(BaseRetriever):
    """Returns a fixed ranked list (cut to ``similarity_top_k``) and counts its calls."""

    def __init__(self, ranked: list[tuple[str | TextNode, float]]) -> None:
        super().__init__()
        self.ranked = [(NODES[n] if isinstance(n, str) else n, s) for n, s in ranked]
        self.similarity_top_k = 100
        self.calls = 0

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        self.calls += 1
        return [NodeWithScore(node=n, score=s) for n, s in self.ranked[: self.similarity_top_k]]


def _fuse(entries: list[RetrieverEntry], mode: str = "rrf", top_k: int = 10, **cfg: float) -> list[tuple[str, float]]:
    fused = FusionRetriever(entries, FusionConfig(mode=FusionMode(mode), **cfg), top_k=top_k)
    return [(n.node.node_id, n.score) for n in fused.retrieve("질문")]


def test_is_a_base_retriever() -> None:
    assert issubclass(FusionRetriever, BaseRetriever)


def test_rrf_hand_computed_with_k_and_weights() -> None:
    a = StubRetriever([("a", 9.0), ("b", 8.0), ("c", 7.0)])
    b = StubRetriever([("c", 0.9), ("d", 0.8)])
    got = _fuse([RetrieverEntry("lex", a, 2.0, 10), RetrieverEntry("dense", b, 1.0, 10)], rrf_k=10.0)
    expected = {"a": 2 / 11, "b": 2 / 12, "c": 2 / 13 + 1 / 11, "d": 1 / 12}
    assert [nid for nid, _ in got] == ["c", "a", "b", "d"]
    assert dict(got) == pytest.approx(expected)


def test_relative_score_min_max_with_weights() -> None:
    a = StubRetriever([("a", 10.0), ("b", 6.0), ("c", 2.0)])  # -> 1, 0.5, 0
    b = StubRetriever([("c", 0.9), ("d", 0.3)])  # -> 1, 0
    got = _fuse([RetrieverEntry("lex", a, 1.0, 10), RetrieverEntry("dense", b, 3.0, 10)], mode="relative_score")
    assert got == [("c", pytest.approx(3.0)), ("a", pytest.approx(1.0)), ("b", pytest.approx(0.5)),
                   ("d", pytest.approx(0.0))]


def test_dist_based_score_with_weights() -> None:
    scores = [4.0, 2.0, 0.0]
    a = StubRetriever(list(zip("abc", scores)))
    b = StubRetriever([("a", 5.0)])  # constant list -> 1.0
    got = dict(_fuse([RetrieverEntry("x", a, 2.0, 10), RetrieverEntry("y", b, 0.5, 10)], mode="dist_based_score"))
    mean, std = 2.0, (8 / 3) ** 0.5
    lo, hi = mean - 3 * std, mean + 3 * std
    norm = {n: (s - lo) / (hi - lo) for n, s in zip("abc", scores)}
    assert got == pytest.approx({"a": 2 * norm["a"] + 0.5, "b": 2 * norm["b"], "c": 2 * norm["c"]})


def test_simple_takes_max_weighted_score() -> None:
    a = StubRetriever([("a", 0.9), ("b", 0.2)])
    b = StubRetriever([("b", 0.5), ("c", 0.1)])
    got = _fuse([RetrieverEntry("x", a, 1.0, 10), RetrieverEntry("y", b, 2.0, 10)], mode="simple")
    assert got == [("b", pytest.approx(1.0)), ("a", pytest.approx(0.9)), ("c", pytest.approx(0.2))]


def test_merges_by_node_id_not_text() -> None:
    twin1 = TextNode(id_="twin1", text="같은 문장", metadata={"src": "1"})
    twin2 = TextNode(id_="twin2", text="같은 문장", metadata={"src": "2"})
    a = StubRetriever([(twin1, 1.0), ("a", 0.5)])
    b = StubRetriever([(twin2, 1.0), ("a", 0.4)])
    got = [nid for nid, _ in _fuse([RetrieverEntry("x", a), RetrieverEntry("y", b)])]
    assert sorted(got) == ["a", "twin1", "twin2"]


@pytest.mark.parametrize("mode", [m.value for m in FusionMode])
def test_overlap_still_returns_top_k_distinct(mode: str) -> None:
    a = StubRetriever([("a", 0.9), ("b", 0.8), ("c", 0.7), ("d", 0.6)])
    b = StubRetriever([("b", 0.95), ("a", 0.85), ("c", 0.5), ("e", 0.4)])
    got = [nid for nid, _ in _fuse([RetrieverEntry("x", a), RetrieverEntry("y", b)], mode=mode, top_k=4)]
    assert len(got) == 4 and len(set(got)) == 4
    few = _fuse([RetrieverEntry("x", StubRetriever([("a", 1.0)])), RetrieverEntry("y", StubRetriever([("a", 1.0)]))],
                mode=mode, top_k=5)
    assert [nid for nid, _ in few] == ["a"]


def test_tie_break_independent_of_retriever_order() -> None:
    def run(order: list[int]) -> list[str]:
        entries = [RetrieverEntry("x", StubRetriever([("x", 1.0), ("y", 0.5)])),
                   RetrieverEntry("y", StubRetriever([("y", 1.0), ("x", 0.5)]))]
        return [nid for nid, _ in _fuse([entries[i] for i in order])]

    assert run([0, 1]) == run([1, 0]) == ["x", "y"]  # equal RRF scores, equal best rank -> node_id

    def run_simple(order: list[int]) -> list[str]:
        entries = [RetrieverEntry("p", StubRetriever([("z", 0.9), ("m", 0.5)])),
                   RetrieverEntry("q", StubRetriever([("n", 0.5)]))]
        return [nid for nid, _ in _fuse([entries[i] for i in order], mode="simple")]

    assert run_simple([0, 1]) == run_simple([1, 0]) == ["z", "n", "m"]  # n ranked 1st somewhere, m only 2nd


@pytest.mark.parametrize("mode", [m.value for m in FusionMode])
def test_zero_weight_retriever_has_no_influence(mode: str) -> None:
    main = StubRetriever([("a", 0.9), ("b", 0.5), ("c", 0.1)])
    noise = StubRetriever([("c", 100.0), ("z", 50.0), ("a", 1.0)])
    alone = _fuse([RetrieverEntry("main", main)], mode=mode, top_k=5)
    both = _fuse([RetrieverEntry("noise", noise, 0.0), RetrieverEntry("main", main)], mode=mode, top_k=5)
    assert both == alone and noise.calls == 0


def test_candidate_k_cuts_plain_retrievers_and_callables_get_it() -> None:
    stub = StubRetriever([(n, 1.0 - i / 10) for i, n in enumerate("abcdefg")])
    seen: list[int] = []

    def fn(query: QueryBundle, depth: int) -> list[NodeWithScore]:
        seen.append(depth)
        return [NodeWithScore(node=NODES[n], score=1.0) for n in "xyzpq"][:depth]

    fused = FusionRetriever([RetrieverEntry("s", stub, 1.0, 3), RetrieverEntry("f", fn, 1.0, 2)], top_k=50)
    got = {n.node.node_id for n in fused.retrieve("q")}
    assert stub.similarity_top_k == 100 and seen == [2]  # a plain retriever is cut, never mutated
    assert got == {"a", "b", "c", "x", "y"}


def test_trace_timings_and_no_mutation() -> None:
    original = NodeWithScore(node=NODES["a"], score=0.7)

    class Fixed(BaseRetriever):
        def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
            return [original]

    fused = FusionRetriever([RetrieverEntry("one", Fixed()), RetrieverEntry("two", StubRetriever([("a", 0.1)]))],
                            FusionConfig(mode="relative_score"))
    nodes, trace = fused.retrieve_with_trace("q")
    assert set(trace.timings) == {"one", "two", "fusion"} and all(t >= 0 for t in trace.timings.values())
    assert trace.hits["a"] == {"one": (1, 0.7), "two": (1, 0.1)}
    assert original.score == 0.7 and NODES["a"].metadata == {}
    timings: dict[str, float] = {}
    fused.search("q", top_k=1, timings=timings)
    assert set(timings) == {"fusion"} and not hasattr(fused, "last_timings")  # per-call, never on the object
    assert [n.node.node_id for n in asyncio.run(fused.aretrieve("q"))] == ["a"]


def test_config_errors() -> None:
    stub = StubRetriever([("a", 1.0)])
    with pytest.raises(ConfigError, match="unique"):
        FusionRetriever([RetrieverEntry("x", stub), RetrieverEntry("x", stub)])
    with pytest.raises(ConfigError, match="weight 0"):
        FusionRetriever([RetrieverEntry("x", stub, 0.0)])
    with pytest.raises(ConfigError, match="candidate_k"):
        FusionRetriever([RetrieverEntry("x", stub, 1.0, 0)])
    with pytest.raises(ConfigError, match="at least one"):
        FusionRetriever([])


def _chunk(doc: str, i: int) -> TextNode:
    from llama_index.core.schema import NodeRelationship, RelatedNodeInfo

    node = TextNode(id_=f"{doc}#{i}", text=f"{doc} chunk {i}")
    node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=doc)
    return node


def test_document_aggregation_meets_evidence_from_different_chunks() -> None:
    """Page A's BM25 evidence is in A#0 and its dense evidence in A#1; page B has one middling chunk on both legs."""
    a0, a1, b0, c0 = _chunk("A", 0), _chunk("A", 1), _chunk("B", 0), _chunk("C", 0)
    lex = StubRetriever([(a0, 10.0), (b0, 6.0), (c0, 1.0), (a1, 0.5)])
    dense = StubRetriever([(a1, 0.90), (b0, 0.85), (c0, 0.20), (a0, 0.10)])
    entries = [RetrieverEntry("bm25", lex, 1.0, 10), RetrieverEntry("dense", dense, 1.0, 10)]
    chunks = FusionRetriever(entries, FusionConfig(mode=FusionMode.RELATIVE_SCORE), top_k=3).retrieve("질문")
    assert chunks[0].node.node_id == "B#0"  # per chunk, A's two halves never meet
    docs = FusionRetriever(entries, FusionConfig(mode=FusionMode.RELATIVE_SCORE), top_k=3, aggregate="document").retrieve("질문")
    assert [n.node.ref_doc_id for n in docs] == ["A", "B", "C"]  # one best chunk per document
    assert docs[0].score == pytest.approx(2.0)  # A: best on both legs after min-max per document
    assert docs[0].node.node_id == "A#0"  # the chunk of the leg that gave A the most (ties: the first leg)
    rest = FusionRetriever(entries, FusionConfig(mode=FusionMode.RRF), top_k=3, aggregate="document", aggregate_rest=0.5)
    assert [n.node.ref_doc_id for n in rest.retrieve("질문")] == ["A", "B", "C"]
    with pytest.raises(ConfigError, match="retrieval.aggregate"):
        FusionRetriever(entries, aggregate="page")
