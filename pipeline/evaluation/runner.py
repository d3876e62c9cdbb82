"""Run a matrix of retriever setups over one QA set: one corpus, one embedding pass, shared indexes.

Every setup sees the same documents and questions. Nodes are built once per chunking config,
passage vectors once per (embedding, chunking) through the persistent content-hash cache, BM25 /
sparse indexes once per identical retriever config, and query vectors once per embedding config
(timed per query, then handed to each dense setup so its latency is still counted).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from .. import factory
from .._progress import progress
from ..config import Config
from ..errors import EvaluationError, ModelResolutionError
from ..qa import QASet
from . import metrics

logger = logging.getLogger(__name__)


@dataclass
class SetupRun:
    """One setup's rankings and timings."""

    name: str
    rankings: dict[str, list[str]] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    build_seconds: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None


def _key(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)


class MatrixRunner:
    """Builds each setup over shared, cached artefacts and runs every question through it."""

    def __init__(self, qa: QASet, depth: int = 40, show_progress: bool = True, cache_queries: bool = False) -> None:
        if not qa.documents or not qa.questions:
            raise EvaluationError(f"{qa.name}: empty dataset ({len(qa.documents)} documents, {len(qa.questions)} questions)")
        self.qa = qa
        self.depth = depth
        self.show_progress = show_progress
        self.cache_queries = cache_queries  # sweeps only: cached query vectors make query-embedding latency meaningless
        self._nodes: dict[str, list[TextNode]] = {}
        self._embed: dict[str, Any] = {}
        self._vectors: dict[str, np.ndarray] = {}
        self._query_vecs: dict[str, tuple[list[list[float]], list[float]]] = {}
        self._retrievers: dict[str, factory.BuiltRetriever] = {}
        self.build_log: dict[str, dict[str, float]] = {}

    # ------------------------------------------------------------------ shared artefacts

    def nodes(self, cfg: Config) -> tuple[list[TextNode], dict[str, Any]]:
        key = _key([cfg.chunking.model_dump(mode="json"), cfg.embedding.model if cfg.uses_dense() else None])
        if key not in self._nodes:
            t0 = time.perf_counter()
            counter = factory.chunk_token_counter(cfg.embedding) if cfg.uses_dense() else None
            self._nodes[key] = factory.chunk_documents(self.qa.documents, cfg.chunking, tokenizer=counter)
            self.build_log[key] = {"seconds": time.perf_counter() - t0, "nodes": len(self._nodes[key])}
        return self._nodes[key], {"chunking": self.build_log[key]}

    def embed_model(self, cfg: Config) -> Any:
        key = factory.embedding_key(cfg.embedding)
        if key not in self._embed:
            self._embed[key] = factory.build_cached_embedding(cfg.embedding, show_progress=self.show_progress)
        return self._embed[key]

    def vectors(self, cfg: Config, nodes: list[TextNode]) -> tuple[np.ndarray, dict[str, Any]]:
        key = _key([factory.embedding_key(cfg.embedding), cfg.chunking.model_dump(mode="json")])
        if key not in self._vectors:
            model = self.embed_model(cfg)
            if hasattr(model, "reset_counts"):
                model.reset_counts()
            t0 = time.perf_counter()
            self._vectors[key] = factory.embed_nodes(model, nodes, show_progress=self.show_progress)
            secs = time.perf_counter() - t0
            new = getattr(model, "new_embeddings", len(nodes))
            self.build_log[key] = {"seconds": secs, "passages": len(nodes), "new_embeddings": new, "cached": len(nodes) - new,
                                   "passages_per_s": (new / secs) if new and secs else 0.0}
        return self._vectors[key], {"corpus_embedding": self.build_log[key]}

    def query_vectors(self, cfg: Config) -> tuple[list[list[float]], list[float]]:
        """Every question's vector, each embedded alone and timed (the query-embedding stage)."""
        key = factory.embedding_key(cfg.embedding) + cfg.embedding.query_prompt
        if key not in self._query_vecs:
            model = self.embed_model(cfg)
            embed = model.get_query_embedding_cached if self.cache_queries and hasattr(model, "get_query_embedding_cached") else model.get_query_embedding
            vecs, secs = [], []
            for q in progress(self.qa.questions, "query embedding", show_progress=self.show_progress):
                t0 = time.perf_counter()
                vecs.append(embed(q.text))
                secs.append(time.perf_counter() - t0)
            self._query_vecs[key] = (vecs, secs)
        return self._query_vecs[key]

    def retriever(self, rcfg: Any, cfg: Config, nodes: list[TextNode]) -> tuple[factory.BuiltRetriever, dict[str, Any]]:
        """Built once per identical (retriever settings, chunking, embedding); returns its build times."""
        settings = rcfg.model_dump(mode="json", exclude={"name", "weight", "candidate_k"})
        key = _key([settings, cfg.chunking.model_dump(mode="json"), factory.embedding_key(cfg.embedding) if rcfg.type == "dense" else None])
        build: dict[str, Any] = {}
        if rcfg.type == "dense":
            build.update(self.vectors(cfg, nodes)[1])
        if key not in self._retrievers:
            vectors = self.vectors(cfg, nodes)[0] if rcfg.type == "dense" else None
            model = self.embed_model(cfg) if rcfg.type == "dense" else None
            self._retrievers[key] = factory.build_retriever(rcfg, nodes, model, vectors)
        built = self._retrievers[key]
        build.update({stage: {"seconds": secs} for stage, secs in built.build_seconds.items()})
        return built, build

    # ------------------------------------------------------------------ one setup

    def build_setup(self, name: str, cfg: Config, anchor: str | None, build: dict[str, Any]) -> tuple[BaseRetriever, list[factory.BuiltRetriever], Any]:
        nodes, chunk_build = self.nodes(cfg)
        build.update(chunk_build)
        if anchor not in (None, "llamaindex"):
            raise EvaluationError(f"unknown anchor kind {anchor!r}; expected: llamaindex")
        built = []
        for rcfg in cfg.retrieval.retrievers:
            if anchor == "llamaindex" and rcfg.type != "dense":
                continue  # the anchor brings LlamaIndex's own BM25Retriever
            b, b_build = self.retriever(rcfg, cfg, nodes)
            build.update(b_build)
            built.append(factory.BuiltRetriever(rcfg.name, b.retriever, rcfg.weight, rcfg.candidate_k, b.info))
        reranker = None
        if cfg.rerank.enabled:
            from ..models import build_cross_encoder_path
            from ..rerank import CrossEncoderReranker

            rc = cfg.rerank
            reranker = CrossEncoderReranker(model=build_cross_encoder_path(rc.model), top_n=rc.top_n, batch_size=rc.batch_size, max_length=rc.max_length)
        if anchor == "llamaindex":
            t0 = time.perf_counter()
            first = _llamaindex_anchor(built, nodes, self.depth)
            build["bm25_index"] = {"seconds": time.perf_counter() - t0}
            return first, built, None
        first = factory.build_fusion(built, cfg, self.depth)
        return first, built, reranker

    def run_setup(self, name: str, cfg: Config, anchor: str | None = None) -> SetupRun:
        run = SetupRun(name)
        try:
            first, built, reranker = self.build_setup(name, cfg, anchor, run.build_seconds)
        except ModelResolutionError as exc:
            run.skipped = f"model unavailable: {exc}"
            logger.warning("setup %s skipped: %s", name, run.skipped)
            return run
        qvecs, qsecs = self.query_vectors(cfg) if cfg.uses_dense() else (None, None)
        for i, q in enumerate(progress(self.qa.questions, f"queries {name}", show_progress=self.show_progress)):
            bundle = QueryBundle(q.text, embedding=qvecs[i] if qvecs else None)
            stages: dict[str, float] = {}
            t0 = time.perf_counter()
            nodes = self._retrieve(first, built, bundle, stages)
            if reranker is not None:
                t1 = time.perf_counter()
                reranker.top_n = min(cfg.rerank.candidates, len(nodes))
                nodes = reranker.postprocess_nodes(nodes[: cfg.rerank.candidates], query_bundle=bundle) + nodes[cfg.rerank.candidates :]
                stages["rerank"] = time.perf_counter() - t1
            total = time.perf_counter() - t0
            if qsecs:
                stages["query_embedding"] = qsecs[i]
                total += qsecs[i]
            stages["end_to_end"] = total
            for stage, secs in stages.items():
                run.latencies.setdefault(stage, []).append(secs)
            run.rankings[q.qid] = metrics.dedupe_by_doc(n.node.ref_doc_id or n.node.node_id for n in nodes)
        return run

    @staticmethod
    def _retrieve(first: BaseRetriever, built: list[factory.BuiltRetriever], bundle: QueryBundle, stages: dict[str, float]) -> list[NodeWithScore]:
        """Retrieve and record stage times: ``faiss`` for dense search, the retriever type for lexical ones, ``fusion``."""
        t0 = time.perf_counter()
        nodes = first.retrieve(bundle)
        elapsed = time.perf_counter() - t0
        kinds = {b.name: b.info.get("type") for b in built}
        trace = getattr(first, "last_timings", None)
        if isinstance(trace, dict) and "fusion" in trace:  # our FusionRetriever
            for name, secs in trace.items():
                if kinds.get(name) != "dense":  # dense time = faiss search (query vector given), below
                    stages[kinds.get(name, name)] = secs
        elif len(built) == 1 and kinds[built[0].name] != "dense":
            stages[kinds[built[0].name]] = elapsed
        for b in built:
            sub = getattr(b.retriever, "last_timings", None)
            if b.info.get("type") == "dense" and isinstance(sub, dict) and "faiss" in sub:
                stages["faiss"] = sub["faiss"]
        return nodes


def _llamaindex_anchor(built: list[factory.BuiltRetriever], nodes: list[TextNode], depth: int) -> BaseRetriever:
    """LlamaIndex's own BM25Retriever (defaults) + our dense retriever, fused by QueryFusionRetriever (RRF, 1 query)."""
    from llama_index.core.llms import MockLLM
    from llama_index.core.retrievers import QueryFusionRetriever
    from llama_index.retrievers.bm25 import BM25Retriever as LlamaBM25

    dense = [b for b in built if b.info.get("type") == "dense"]
    if not dense:
        raise EvaluationError("anchor 'llamaindex' needs a dense retriever in its setup config")
    k = dense[0].candidate_k
    bm25 = LlamaBM25.from_defaults(nodes=nodes, similarity_top_k=k)
    dense[0].retriever.similarity_top_k = k
    # MockLLM is never called: num_queries=1 generates no queries. use_async=False keeps the
    # thread pool out of the latency numbers of every setup run after this one.
    return QueryFusionRetriever(
        [bm25, dense[0].retriever], llm=MockLLM(), mode="reciprocal_rerank", num_queries=1,
        similarity_top_k=depth, use_async=False,
    )


def run_evaluation(ecfg: Any, limit: int | None = None, seed: int | None = None, command: str = "",
                   out_dir: str | None = None, show_progress: bool = True) -> tuple[Any, Any]:
    """Load the QA set, run every setup, write the run directory; returns (results, report files)."""
    from ..qa import read_qa_set
    from . import report

    setups = ecfg.load_setups()
    ds = ecfg.dataset
    path = ecfg.resolve(ds.path) if ds.path else None
    qa_full = read_qa_set(ds.kind, path)
    seed = ecfg.seed if seed is None else seed
    limit = limit or ecfg.limit
    qa = qa_full.sample(limit, seed=seed)
    runner = MatrixRunner(qa, depth=ecfg.depth, show_progress=show_progress)
    groups = report.question_groups(qa.questions)
    t_start = time.perf_counter()
    results: list[Any] = []
    for name, cfg in setups.items():
        t0 = time.perf_counter()
        run = runner.run_setup(name, cfg, ecfg.anchors.get(name))
        config = cfg.model_dump(mode="json", exclude={"base_dir", "data", "index_dir"})
        if run.skipped:
            results.append(report.skipped_setup(name, run.skipped, config))
            continue
        per_query = metrics.evaluate_run(run.rankings, qa.qrels())
        res = report.build_setup_result(name, per_query, config=config, groups=groups, latencies_s=run.latencies,
                                        build=run.build_seconds, n_resamples=ecfg.bootstrap_resamples, seed=seed)
        results.append(res)
        logger.info("setup %s: MRR@10 %.3f hit@10 %.3f (%.1f s)", name, res.metrics["mrr@10"]["mean"], res.metrics["hit@10"]["mean"], time.perf_counter() - t0)
    wall = time.perf_counter() - t_start
    meta = report.RunMeta(
        dataset=ds.name or (path.name if path else ds.kind), fingerprint=qa.fingerprint(), n_documents=len(qa.documents),
        n_questions=len(qa.questions), default_setup=ecfg.default_setup, n_questions_total=len(qa_full.questions),
        seed=seed, limit=limit, command=command, library_versions=report.library_versions(),
        notes=[
            "A hit is any node of the relevant document: node rankings are collapsed to documents (first occurrence) before scoring.",
            f"Each setup retrieves {ecfg.depth} nodes per query before collapsing to documents.",
            f"Matrix wall time {wall:.1f} s (includes embedding of anything not yet in the cache).",
        ],
    )
    out = report.EvaluationResults(meta=meta, setups=results)
    report.add_paired_tests(out, seed=seed)
    run_dir = ecfg.resolve(out_dir or ecfg.output_dir) / f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(meta.dataset)}"
    files = report.write_report(out, run_dir)
    return out, files


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:60] or "run"
