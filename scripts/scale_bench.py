"""Scale benchmark of the storage backends: ingest rows/s, query p50/p95 and peak RSS at N synthetic chunks.

    python scripts/scale_bench.py --sizes 10000,100000,1000000 --json runs/scale.json

It measures the index and search layers, not the models: embedding a million chunks with e5-small on a
CPU would take days, and kiwi about an hour, and neither changes with the backend. So each chunk gets

* a 384-d unit vector: one of 1,000 random cluster centres plus Gaussian noise (real embeddings cluster;
  uniform noise would make HNSW look better or worse than it is), and
* about 80 "morphemes" drawn from a Zipf law (s = 1.1) over 200,000 term ids, which is the shape of kiwi's
  output on Korean text (a few particles and endings very common, a long tail of nouns).

A query is a noisy copy of a random chunk's vector and 6 terms of that chunk. Each (backend, N) runs in
its own process, so peak RSS is that backend's alone. Backends: ``faiss-flat`` and ``faiss-hnsw`` (the
project's ``FaissVectorStore``) with ``bm25`` (its ``BM25Index``, bm25s's formulas), and ``qdrant-local``
(qdrant-client's local mode with the project's sparse BM25 vectors and ``QdrantStore``), which is run at
10k only by default: it is a pure-Python development mode. "hybrid" is both legs one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DIM, CENTRES, VOCAB, ZIPF_S, MEAN_LEN = 384, 1000, 200_000, 1.1, 80
QUERIES = 200


def corpus(n: int, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """``n`` clustered unit vectors and ``n`` Zipf token-id arrays."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CENTRES, DIM)).astype(np.float32)
    vecs = centres[rng.integers(0, CENTRES, n)] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ranks = np.arange(1, VOCAB + 1, dtype=np.float64)
    p = ranks ** -ZIPF_S
    p /= p.sum()
    lengths = np.clip(rng.normal(MEAN_LEN, 20, n).astype(int), 10, 200)
    flat = rng.choice(VOCAB, size=int(lengths.sum()), p=p).astype(np.int32)
    tokens = np.split(flat, np.cumsum(lengths)[:-1])
    return vecs, tokens


def queries(vecs: np.ndarray, tokens: list[np.ndarray], seed: int = 1) -> list[tuple[np.ndarray, list[int]]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.integers(0, len(vecs), QUERIES):
        q = vecs[i] + 0.3 * rng.standard_normal(DIM).astype(np.float32) / np.sqrt(DIM) * 4
        out.append(((q / np.linalg.norm(q)).astype(np.float32), rng.choice(tokens[i], size=min(6, len(tokens[i])), replace=False).tolist()))
    return out


def _ms(values: list[float]) -> dict[str, float]:
    a = np.asarray(values) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p95_ms": round(float(np.percentile(a, 95)), 2)}


def run_inprocess(kind: str, n: int) -> dict[str, Any]:
    """FAISS (flat or hnsw) + BM25Index over ``n`` chunks."""
    from llama_index.core.schema import TextNode
    from llama_index.core.vector_stores.types import VectorStoreQuery

    from pipeline.config import BM25Config, FaissConfig
    from pipeline.models.threads import configure_threads
    from pipeline.retrieval.bm25 import BM25Index
    from pipeline.storage.faiss_store import FaissVectorStore

    configure_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    vecs, tokens = corpus(n)
    qs = queries(vecs, tokens)
    nodes = [TextNode(id_=f"c{i}", text="") for i in range(n)]
    t0 = time.perf_counter()
    store = FaissVectorStore(FaissConfig(index_type=kind.split("-")[1]), dim=DIM)
    store.add_vectors(nodes, vecs)
    t_dense = time.perf_counter() - t0
    t0 = time.perf_counter()
    bm25 = BM25Index.build(BM25Config(), tokens, VOCAB)
    t_bm25 = time.perf_counter() - t0
    dense_s, bm25_s = [], []
    for q, terms in qs:
        t0 = time.perf_counter()
        store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=40))
        dense_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        s = bm25.scores(terms).scores
        np.argpartition(-s, 40)[:40]
        bm25_s.append(time.perf_counter() - t0)
    return {"ingest_rows_per_s": {"dense": round(n / t_dense), "bm25": round(n / t_bm25), "both": round(n / (t_dense + t_bm25))},
            "dense": _ms(dense_s), "bm25": _ms(bm25_s), "hybrid": _ms([a + b for a, b in zip(dense_s, bm25_s)])}


def run_qdrant(n: int) -> dict[str, Any]:
    """qdrant-client local mode with the project's collection schema, sparse BM25 vectors and batched writes."""
    from qdrant_client import QdrantClient, models

    from pipeline.config import BM25Config, StorageConfig
    from pipeline.retrieval.bm25 import saturated_tf
    from pipeline.storage.qdrant_store import QdrantStore

    vecs, tokens = corpus(n)
    qs = queries(vecs, tokens)
    cfg, avgdl = BM25Config(), float(np.mean([len(t) for t in tokens]))
    storage = StorageConfig(backend="qdrant")
    with tempfile.TemporaryDirectory() as tmp:
        store = QdrantStore(QdrantClient(path=tmp), "bench", storage)
        t0 = time.perf_counter()
        name = store.create(DIM, ["bm25"], {}, "dense")

        def points() -> Any:
            for i in range(n):
                ids, tf = np.unique(tokens[i], return_counts=True)
                sparse = models.SparseVector(indices=ids.tolist(), values=saturated_tf(tf, len(tokens[i]), avgdl, cfg).tolist())
                yield models.PointStruct(id=i, vector={"dense": vecs[i].tolist(), "bm25": sparse}, payload={"doc_id": f"c{i}"})

        store.upsert(name, points())
        store.point_alias(name)
        t_ingest = time.perf_counter() - t0
        dense_s, bm25_s = [], []
        for q, terms in qs[:50]:
            t0 = time.perf_counter()
            store.client.query_points("bench", query=q.tolist(), using="dense", limit=40)
            dense_s.append(time.perf_counter() - t0)
            ids, counts = np.unique(terms, return_counts=True)
            t0 = time.perf_counter()
            store.client.query_points("bench", query=models.SparseVector(indices=ids.tolist(), values=counts.astype(float).tolist()),
                                      using="bm25", limit=40)
            bm25_s.append(time.perf_counter() - t0)
        store.client.close()
    return {"ingest_rows_per_s": {"both": round(n / t_ingest)}, "dense": _ms(dense_s), "bm25": _ms(bm25_s),
            "hybrid": _ms([a + b for a, b in zip(dense_s, bm25_s)])}


def child(kind: str, n: int) -> None:
    t0 = time.perf_counter()
    out = run_qdrant(n) if kind == "qdrant-local" else run_inprocess(kind, n)
    out.update(backend=kind, n=n, wall_s=round(time.perf_counter() - t0, 1),
               peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--backends", default="faiss-flat,faiss-hnsw,qdrant-local")
    ap.add_argument("--qdrant-max", type=int, default=10_000, help="largest N for qdrant-local (a development mode)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per (backend, N) before it is reported as stopped")
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child[0], int(args.child[1]))
    rows = []
    print("| backend | N | ingest rows/s | dense p50 / p95 ms | bm25 p50 / p95 ms | hybrid p50 / p95 ms | peak RSS MiB |\n|---|---|---|---|---|---|---|",
          flush=True)
    for n in (int(s) for s in args.sizes.split(",")):
        for kind in args.backends.split(","):
            if kind == "qdrant-local" and n > args.qdrant_max:
                continue
            try:
                out = subprocess.run([sys.executable, __file__, "--child", kind, str(n)], capture_output=True, text=True,
                                     timeout=args.timeout, env={**os.environ, "PYTHONWARNINGS": "ignore"})
                row = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else \
                    {"backend": kind, "n": n, "error": out.stderr.strip().splitlines()[-1][:200]}
            except subprocess.TimeoutExpired:
                row = {"backend": kind, "n": n, "error": f"stopped after {args.timeout:.0f} s"}
            rows.append(row)
            print(_line(row), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2), encoding="utf-8")


def _line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"| {r['backend']} | {r['n']:,} | {r['error']} |"
    ing = r["ingest_rows_per_s"]
    return (f"| {r['backend']} | {r['n']:,} | {ing['both']:,} | {r['dense']['p50_ms']} / {r['dense']['p95_ms']} | "
            f"{r['bm25']['p50_ms']} / {r['bm25']['p95_ms']} | {r['hybrid']['p50_ms']} / {r['hybrid']['p95_ms']} | {r['peak_rss_mib']:,} |")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
