"""Run a matrix of retriever setups over one QA set: one corpus, one embedding pass, shared indexes.

Every setup (the LlamaIndex anchor aside) is searched by the ``SearchPipeline`` that ``Pipeline.retrieve``
uses, assembled by the same ``storage.snapshot.assemble`` over an in-memory snapshot: same fusion, same
rerank depth, same validation. Nodes are built once per chunking config, passage vectors once per
(embedding, chunking) through the persistent content-hash cache, retriever legs once per identical
build settings, and query vectors once per embedding config (timed per query, then handed to each
dense setup so its latency is still counted).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import QueryBundle, TextNode

from ..config import Config
from ..core.errors import EvaluationError, ModelResolutionError
from ..core.progress import progress
from ..core.versions import library_versions
from ..ingest.chunking import chunk_documents, chunk_token_counter
from ..ingest.qa import QASet
from ..ingest.vectors import embed_nodes
from ..models.batching import query_vector
from ..models.embedding import build_cached_embedding, embedding_key
from ..models.threads import configure_threads
from ..retrieval.rerank import build_reranker
from ..retrieval.search import SearchPipeline
from ..retrieval.tokenizers import sharing_corpus_tokens
from ..storage.registry import BuiltRetriever, build_retriever, kind_of
from ..storage.snapshot import assemble
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
        self._query_vecs: dict[str, tuple[list[Any], list[float]]] = {}
        self._retrievers: dict[str, BuiltRetriever] = {}
        self._rerankers: dict[str, Any] = {}
        self._corpus_tokens: dict[str, list[list[str]]] = {}  # kiwi analyses each corpus once per run
        self._qdrant: dict[str, tuple[Any, float]] = {}  # collections filled once per build settings (storage.backend qdrant)
        self._tmp: list[Any] = []  # local-mode folders, removed with the runner
        self.build_log: dict[str, dict[str, float]] = {}

    # ------------------------------------------------------------------ shared artefacts

    def nodes(self, cfg: Config) -> tuple[list[TextNode], dict[str, Any]]:
        key = _key([cfg.chunking.model_dump(mode="json"), cfg.embedding.model if cfg.uses_dense() else None])
        if key not in self._nodes:
            t0 = time.perf_counter()
            counter = chunk_token_counter(cfg.embedding) if cfg.uses_dense() else None
            self._nodes[key] = chunk_documents(self.qa.documents, cfg.chunking, tokenizer=counter)
            self.build_log[key] = {"seconds": time.perf_counter() - t0, "nodes": len(self._nodes[key])}
        return self._nodes[key], {"chunking": self.build_log[key]}

    def embed_model(self, cfg: Config) -> Any:
        key = embedding_key(cfg.embedding)
        if key not in self._embed:
            configure_threads(cfg.runtime.threads)
            self._embed[key] = build_cached_embedding(cfg.embedding, show_progress=self.show_progress)
        return self._embed[key]

    def vectors(self, cfg: Config, nodes: list[TextNode]) -> tuple[np.ndarray, dict[str, Any]]:
        key = _key([embedding_key(cfg.embedding), cfg.chunking.model_dump(mode="json")])
        if key not in self._vectors:
            model = self.embed_model(cfg)
            if hasattr(model, "reset_counts"):
                model.reset_counts()
            t0 = time.perf_counter()
            self._vectors[key] = embed_nodes(model, nodes, show_progress=self.show_progress)
            secs = time.perf_counter() - t0
            new = getattr(model, "new_embeddings", len(nodes))
            self.build_log[key] = {"seconds": secs, "passages": len(nodes), "new_embeddings": new, "cached": len(nodes) - new,
                                   "passages_per_s": (new / secs) if new and secs else 0.0}
        return self._vectors[key], {"corpus_embedding": self.build_log[key]}

    def query_vectors(self, cfg: Config) -> tuple[list[Any], list[float]]:
        """Every question's vector, each embedded alone and timed (the query-embedding stage)."""
        key = embedding_key(cfg.embedding) + cfg.embedding.query_prompt
        if key not in self._query_vecs:
            model = self.embed_model(cfg)
            if self.cache_queries and hasattr(model, "get_query_embedding_cached"):
                embed = model.get_query_embedding_cached
            else:  # the lean path a served query takes (a float32 vector, no LlamaIndex call)
                embed = partial(query_vector, model)
            vecs, secs = [], []
            for q in progress(self.qa.questions, "query embedding", show_progress=self.show_progress):
                t0 = time.perf_counter()
                vecs.append(embed(q.text))
                secs.append(time.perf_counter() - t0)
            self._query_vecs[key] = (vecs, secs)
        return self._query_vecs[key]

    def retriever(self, rcfg: Any, cfg: Config, nodes: list[TextNode]) -> tuple[BuiltRetriever, dict[str, Any]]:
        """Built once per identical build settings (chunking, embedding, the retriever's build-deciding fields)."""
        dense = kind_of(rcfg).needs_vectors
        key = _key([kind_of(rcfg).describe(rcfg), cfg.chunking.model_dump(mode="json"), embedding_key(cfg.embedding) if dense else None])
        build: dict[str, Any] = {}
        if dense:
            build.update(self.vectors(cfg, nodes)[1])
        if key not in self._retrievers:
            vectors = self.vectors(cfg, nodes)[0] if dense else None
            model = self.embed_model(cfg) if dense else None
            self._retrievers[key] = build_retriever(rcfg, nodes, model, vectors)
        built = self._retrievers[key]
        build.update({stage: {"seconds": secs} for stage, secs in built.build_seconds.items()})
        return built, build

    def reranker(self, cfg: Config) -> Any:
        """One cross-encoder per rerank config, built by the same function ``Pipeline`` uses."""
        key = _key(cfg.rerank.model_dump(mode="json"))
        if key not in self._rerankers:
            self._rerankers[key] = build_reranker(cfg.rerank, cfg.embedding.backend)
        return self._rerankers[key]

    # ------------------------------------------------------------------ one setup

    def build_setup(self, name: str, cfg: Config, anchor: str | None, build: dict[str, Any]) -> BaseRetriever:
        """The searched stack of one setup: the shipped ``SearchPipeline`` (or the LlamaIndex anchor)."""
        nodes, chunk_build = self.nodes(cfg)
        build.update(chunk_build)
        if anchor not in (None, "llamaindex"):
            raise EvaluationError(f"unknown anchor kind {anchor!r}; expected: llamaindex")
        if cfg.storage.backend == "qdrant":
            return self.qdrant_stack(cfg, nodes, build)
        legs: dict[str, Any] = {}
        for rcfg in cfg.retrieval.retrievers:
            if anchor == "llamaindex" and rcfg.type != "dense":
                continue  # the anchor brings LlamaIndex's own BM25Retriever
            b, b_build = self.retriever(rcfg, cfg, nodes)
            build.update(b_build)
            legs[rcfg.name] = b.retriever
        if anchor == "llamaindex":
            t0 = time.perf_counter()
            first = _llamaindex_anchor(cfg, legs, nodes, self.depth)
            build["bm25_index"] = {"seconds": time.perf_counter() - t0}
            return first
        return assemble(cfg, legs, self.reranker(cfg) if cfg.rerank.enabled else None)

    def qdrant_stack(self, cfg: Config, nodes: list[TextNode], build: dict[str, Any]) -> SearchPipeline:
        """The setup's ``SearchPipeline`` over a Qdrant collection filled once per build settings: local mode in a
        temporary folder, or a collection ``ragpipe-eval-<hash>`` on ``storage.url``."""
        from ..storage.integrity import expected_build
        from ..storage.qdrant_index import QdrantIndex
        from ..storage.qdrant_store import connect
        from ..storage.snapshot import doc_hash

        key = _key(["qdrant", expected_build(cfg), cfg.storage.url])
        vectors = None
        if cfg.uses_dense():
            vectors, emb_build = self.vectors(cfg, nodes)
            build.update(emb_build)
        if key not in self._qdrant:
            name = "ragpipe-eval-" + hashlib.sha256(key.encode()).hexdigest()[:10]
            cfg = cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"collection": name, "path": None})})
            if cfg.storage.url:
                client = connect(cfg.storage, Path("."))
            else:
                self._tmp.append(tempfile.TemporaryDirectory(prefix="ragpipe-eval-qdrant-"))
                client = connect(cfg.storage, Path(self._tmp[-1].name))
            index = QdrantIndex(cfg, client=client)
            t0 = time.perf_counter()
            hashes = {d.doc_id: doc_hash(d) for d in self.qa.documents}
            index.build(nodes, vectors, hashes, None, show_progress=self.show_progress)
            self._qdrant[key] = (index, time.perf_counter() - t0)
        index, seconds = self._qdrant[key]
        build["qdrant_build"] = {"seconds": seconds}
        model = self.embed_model(cfg) if cfg.uses_dense() else None
        return index.search_stack(model, self.reranker(cfg) if cfg.rerank.enabled else None)

    def run_setup(self, name: str, cfg: Config, anchor: str | None = None) -> SetupRun:
        run = SetupRun(name)
        try:
            with sharing_corpus_tokens(self._corpus_tokens):
                searcher = self.build_setup(name, cfg, anchor, run.build_seconds)
        except ModelResolutionError as exc:
            run.skipped = f"model unavailable: {exc}"
            logger.warning("setup %s skipped: %s", name, run.skipped)
            return run
        qvecs, qsecs = self.query_vectors(cfg) if cfg.uses_dense() else (None, None)
        for i, q in enumerate(progress(self.qa.questions, f"queries {name}", show_progress=self.show_progress)):
            bundle = QueryBundle(q.text, embedding=qvecs[i] if qvecs else None)
            if isinstance(searcher, SearchPipeline):
                nodes, stages = searcher.run(bundle, top_k=self.depth)
            else:  # the anchor: LlamaIndex's own retriever, timed as a whole
                t0 = time.perf_counter()
                nodes = searcher.retrieve(bundle)
                stages = {"end_to_end": time.perf_counter() - t0}
            if qsecs:
                stages["query_embedding"] = qsecs[i]
                stages["end_to_end"] += qsecs[i]
            for stage, secs in stages.items():
                run.latencies.setdefault(stage, []).append(secs)
            run.rankings[q.qid] = metrics.dedupe_by_doc(n.node.ref_doc_id or n.node.node_id for n in nodes)
        return run


def _llamaindex_anchor(cfg: Config, legs: dict[str, Any], nodes: list[TextNode], depth: int) -> BaseRetriever:
    """LlamaIndex's own BM25Retriever (defaults) + our dense retriever, fused by QueryFusionRetriever (RRF, 1 query)."""
    from llama_index.core.llms import MockLLM
    from llama_index.core.retrievers import QueryFusionRetriever
    from llama_index.retrievers.bm25 import BM25Retriever as LlamaBM25

    from ..retrieval.dense import DenseRetriever

    dense = [r for r in cfg.retrieval.retrievers if r.type == "dense"]
    if not dense:
        raise EvaluationError("anchor 'llamaindex' needs a dense retriever in its setup config")
    k = dense[0].candidate_k
    bm25 = LlamaBM25.from_defaults(nodes=nodes, similarity_top_k=k)
    shared = legs[dense[0].name]  # shared by setups with other depths: a view with this setup's k, nothing mutated
    dense_leg = DenseRetriever(shared.embed_model, shared.vector_store, shared.nodes_by_id, similarity_top_k=k)
    # MockLLM is never called: num_queries=1 generates no queries. use_async=False keeps the
    # thread pool out of the latency numbers of every setup run after this one.
    return QueryFusionRetriever(
        [bm25, dense_leg], llm=MockLLM(), mode="reciprocal_rerank", num_queries=1,
        similarity_top_k=depth, use_async=False,
    )


def run_evaluation(ecfg: Any, limit: int | None = None, seed: int | None = None, command: str = "",
                   out_dir: str | None = None, show_progress: bool = True, allow_train_overlap: bool = False) -> tuple[Any, Any]:
    """Load the QA set, run every setup, write the run directory; returns (results, report files).

    :raises EvaluationError: a setup uses a fine-tuned model that saw these questions or documents in training
        (unless ``allow_train_overlap``).
    """
    from ..training.manifest import check_overlap, trained_models

    from ..ingest.qa import read_qa_set
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
    trained: list[str] = []
    for name, cfg in setups.items():  # before anything runs: the guard fails fast
        for role, model_dir, manifest in trained_models(cfg):
            overlap = check_overlap(manifest, [q.text for q in qa.questions], [d.text for d in qa.documents],
                                    f"setup {name}: {role} model {model_dir}", allow=allow_train_overlap)
            trained.append(f"{name}: {role} model {model_dir} was fine-tuned on {manifest['train_set'].get('name')} "
                           f"(overlap with this set: {overlap['questions']} questions, {overlap['documents']} documents).")
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
                                        build=run.build_seconds, rankings=run.rankings, n_resamples=ecfg.bootstrap_resamples, seed=seed)
        results.append(res)
        logger.info("setup %s: MRR@10 %.3f hit@10 %.3f (%.1f s)", name, res.metrics["mrr@10"]["mean"], res.metrics["hit@10"]["mean"], time.perf_counter() - t0)
    wall = time.perf_counter() - t_start
    meta = report.RunMeta(
        dataset=ds.name or (path.name if path else ds.kind), fingerprint=qa.fingerprint(), n_documents=len(qa.documents),
        n_questions=len(qa.questions), default_setup=ecfg.default_setup, n_questions_total=len(qa_full.questions),
        seed=seed, limit=limit, command=command, library_versions=library_versions(),
        notes=[
            "A hit is any node of the relevant document: node rankings are collapsed to documents (first occurrence) before scoring.",
            f"Each setup retrieves {ecfg.depth} nodes per query before collapsing to documents.",
            f"Matrix wall time {wall:.1f} s (includes embedding of anything not yet in the cache).",
            *trained,
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
