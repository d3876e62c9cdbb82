#!/usr/bin/env python
"""Inference benchmark: embedding backends against the plain LlamaIndex stack, in one process.

On the same texts (KLUE MRC questions, and passages chunked as ``configs/klue.yaml`` chunks them), one
after another, it measures for each backend (torch fp32, torch bf16 where the CPU has it, onnx fp32,
onnx int8, onnx int8 queries against fp32 passages) and for the anchor a user would build from LlamaIndex parts (``HuggingFaceEmbedding``,
``VectorStoreIndex`` + ``FaissVectorStore``, ``BM25Retriever``, ``QueryFusionRetriever``):

- single-query embedding latency p50/p95 (ours: the lean query path, no query cache);
- corpus embedding passages/s and tokens/s (ours: the ingest path, an empty vector cache);
- end-to-end hybrid query p50 (ours: ``Pipeline.retrieve`` over an index of those passages).

It prints ratios to the anchor, because absolute times do not carry from machine to machine::

    OMP_NUM_THREADS=2 python scripts/bench.py --questions 200 --documents 80 --json bench.json

Run it alone on the machine. ``--model`` and ``--data`` (a KLUE-format JSONL) make it run on other data.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
KLUE = REPO.parent / "shared" / "data" / "klue-mrc" / "klue_mrc_validation_subset.jsonl"
BACKENDS = {
    "torch-fp32": {"backend": "torch", "precision": "fp32"},
    "torch-bf16": {"backend": "torch", "precision": "bf16"},
    "onnx-fp32": {"backend": "onnx"},
    "onnx-int8": {"backend": "onnx", "quantize": "int8"},
    "onnx-int8-queries": {"backend": "onnx", "query_quantize": "int8"},  # int8 queries, fp32 passages
}


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))] * 1000


def _timed(fn: Callable[[str], Any], queries: list[str], warmup: int = 3) -> dict[str, float]:
    for q in queries[:warmup]:
        fn(q)
    times = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q)
        times.append(time.perf_counter() - t0)
    return {"p50_ms": round(_pct(times, 50), 2), "p95_ms": round(_pct(times, 95), 2)}


def cpu_info() -> dict[str, Any]:
    """CPU model and the flags that decide bf16 and int8 speed."""
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"]
    return {"model": model, "flags": [f for f in wanted if f in flags], "cores": os.cpu_count(),
            "threads": int(os.environ.get("OMP_NUM_THREADS") or 0) or None}


def load_texts(data: Path, model: str, documents: int, questions: int) -> tuple[list[Any], list[str], list[str], int]:
    """(documents, passage texts, questions, passage token count) from a KLUE-format QA file."""
    from pipeline.config import ChunkingConfig, EmbeddingConfig
    from pipeline.ingest.chunking import chunk_documents, chunk_token_counter
    from pipeline.ingest.qa import read_qa_set

    qa = read_qa_set("klue_mrc", data)
    docs = qa.documents[:documents]
    counter = chunk_token_counter(EmbeddingConfig(model=model))
    nodes = chunk_documents(docs, ChunkingConfig(splitter="sentence", chunk_size=256, chunk_overlap=32), tokenizer=counter)
    passages = [n.get_content() for n in nodes]
    tokens = sum(len(counter("passage: " + p)) for p in passages) if counter else 0
    return docs, passages, [q.text for q in qa.questions[:questions]], tokens


def bench_anchor(model_path: str, passages: list[str], queries: list[str], tokens: int) -> dict[str, Any]:
    """The LlamaIndex stack a user would assemble, with e5 prompts and the same max length."""
    import faiss
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.llms import MockLLM
    from llama_index.core.retrievers import QueryFusionRetriever
    from llama_index.core.schema import TextNode
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.retrievers.bm25 import BM25Retriever
    from llama_index.vector_stores.faiss import FaissVectorStore

    emb = HuggingFaceEmbedding(model_name=model_path, max_length=512, query_instruction="query: ",
                               text_instruction="passage: ", normalize=True, device="cpu")
    single = _timed(emb.get_query_embedding, queries)
    t0 = time.perf_counter()
    vectors = emb.get_text_embedding_batch(passages)
    secs = time.perf_counter() - t0
    nodes = [TextNode(text=p, id_=f"p{i}", embedding=v) for i, (p, v) in enumerate(zip(passages, vectors))]
    store = FaissVectorStore(faiss_index=faiss.IndexFlatIP(len(vectors[0])))
    index = VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=emb)
    fusion = QueryFusionRetriever([index.as_retriever(similarity_top_k=40), BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=40)],
                                  llm=MockLLM(), mode="reciprocal_rerank", num_queries=1, similarity_top_k=10, use_async=False)
    e2e = _timed(fusion.retrieve, queries)
    return {"single_query": single, "passages_per_s": round(len(passages) / secs, 2), "tokens_per_s": round(tokens / secs, 1),
            "hybrid_p50_ms": e2e["p50_ms"]}


def bench_backend(name: str, model: str, docs: list[Any], passages: list[str], queries: list[str], tokens: int) -> dict[str, Any]:
    """Our path for one backend: lean query embedding, the ingest path's corpus embedding, Pipeline.retrieve."""
    from llama_index.core.schema import TextNode

    from pipeline import Pipeline
    from pipeline.config import EmbeddingConfig
    from pipeline.ingest.vectors import embed_nodes
    from pipeline.models.batching import query_vector
    from pipeline.models.embedding import build_cached_embedding

    settings = {"model": model, "max_length": 512, **BACKENDS[name]}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["RAGPIPE_CACHE_DIR"] = tmp  # empty vector cache: every passage is embedded
        model_obj = build_cached_embedding(EmbeddingConfig(**settings))
        single = _timed(lambda q: query_vector(model_obj, q), queries)
        before = _timed(model_obj.get_query_embedding, queries)  # the LlamaIndex call path of earlier releases
        nodes = [TextNode(text=p, id_=f"p{i}") for i, p in enumerate(passages)]
        t0 = time.perf_counter()
        embed_nodes(model_obj, nodes)
        secs = time.perf_counter() - t0
        cfg = {"name": "bench", "index_dir": str(Path(tmp) / "index"), "embedding": {**settings, "query_cache": 0},
               "chunking": {"splitter": "sentence", "chunk_size": 256, "chunk_overlap": 32},
               "retrieval": {"top_k": 10, "retrievers": [
                   {"type": "bm25", "name": "bm25", "tokenizer": {"name": "kiwi"}, "candidate_k": 40},
                   {"type": "dense", "name": "dense", "candidate_k": 40, "weight": 0.7}],
                   "fusion": {"mode": "dist_based_score"}}}
        pipe = Pipeline.from_config(cfg)
        pipe.ingest(documents=docs)  # passage vectors come from the cache filled above
        e2e = _timed(pipe.retrieve, queries)
    return {"single_query": single, "single_query_llamaindex_call": before, "passages_per_s": round(len(passages) / secs, 2),
            "tokens_per_s": round(tokens / secs, 1), "hybrid_p50_ms": e2e["p50_ms"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="intfloat/multilingual-e5-small", help="Model id or folder (prepared offline)")
    ap.add_argument("--data", type=Path, default=KLUE, help="KLUE-format QA JSONL (questions and contexts)")
    ap.add_argument("--questions", type=int, default=200, help="Queries timed per measurement")
    ap.add_argument("--documents", type=int, default=80, help="Contexts chunked into the passage corpus")
    ap.add_argument("--backends", default=",".join(BACKENDS), help="Comma-separated: " + ", ".join(BACKENDS))
    ap.add_argument("--no-anchor", action="store_true", help="Skip the LlamaIndex anchor (ratios are then omitted)")
    ap.add_argument("--json", type=Path, help="Also write the results here")
    args = ap.parse_args(argv)
    os.environ.setdefault("RAGPIPE_NO_PROGRESS", "1")
    from pipeline.config import Precision
    from pipeline.models.resolve import effective_precision, resolve_model
    from pipeline.models.threads import configure_threads

    threads = configure_threads()
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in names if b not in BACKENDS]
    if unknown:
        raise SystemExit(f"bench: error: --backends: unknown {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    if "torch-bf16" in names and effective_precision(Precision.AUTO, "cpu").value != "bf16":
        names.remove("torch-bf16")
        print("torch-bf16 skipped: this CPU has no native bf16 (autocast would be several times slower)", file=sys.stderr)
    model_path = str(resolve_model(args.model))
    docs, passages, queries, tokens = load_texts(args.data, args.model, args.documents, args.questions)
    out: dict[str, Any] = {"cpu": cpu_info(), "threads": threads, "model": args.model, "passages": len(passages),
                           "passage_tokens": tokens, "queries": len(queries), "rows": {}}
    print(f"{out['cpu']['model']} ({', '.join(out['cpu']['flags'])}); {threads} threads; "
          f"{len(passages)} passages ({tokens} tokens), {len(queries)} queries", flush=True)
    if not args.no_anchor:
        out["rows"]["llamaindex-anchor"] = bench_anchor(model_path, passages, queries, tokens)
        print("llamaindex-anchor", json.dumps(out["rows"]["llamaindex-anchor"]), flush=True)
    for name in names:
        out["rows"][name] = bench_backend(name, args.model, docs, passages, queries, tokens)
        print(name, json.dumps(out["rows"][name]), flush=True)
    print_table(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2), encoding="utf-8")
    return 0


def print_table(out: dict[str, Any]) -> None:
    """A markdown table; ratios are to the anchor (lower is better for times, higher for passages/s)."""
    anchor = out["rows"].get("llamaindex-anchor")
    print("\n| stack | query embed p50 ms | p95 ms | x anchor | passages/s | tokens/s | x anchor | hybrid query p50 ms | x anchor |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in out["rows"].items():
        def ratio(key: str, sub: str | None = None) -> str:
            if anchor is None:
                return "-"
            a, b = (anchor[key][sub], r[key][sub]) if sub else (anchor[key], r[key])
            return f"{b / a:.2f}" if a else "-"

        q = r["single_query"]
        print(f"| {name} | {q['p50_ms']} | {q['p95_ms']} | {ratio('single_query', 'p50_ms')} | {r['passages_per_s']} | "
              f"{r['tokens_per_s']} | {ratio('passages_per_s')} | {r['hybrid_p50_ms']} | {ratio('hybrid_p50_ms')} |")
    if "torch-fp32" in out["rows"]:
        before = out["rows"]["torch-fp32"]["single_query_llamaindex_call"]["p50_ms"]
        print(f"\nsingle-query p50 through the LlamaIndex call (earlier releases' torch path, fp32): {before} ms; ours as a ratio to it:")
        print(", ".join(f"{name} {r['single_query']['p50_ms'] / before:.3f}x" for name, r in out["rows"].items() if name != "llamaindex-anchor"))


if __name__ == "__main__":
    sys.exit(main())
