#!/usr/bin/env python
"""Upsert and delete latency against corpus size: how long until a 1-document write is acknowledged.

Builds hybrid indexes (``configs/klue.yaml``) over the KLUE MRC subset at 1x, 3x, ... its size. The
larger corpora repeat every context under new ids (same text, so passage vectors come from the cache
and only the corpus size changes), then times ``Pipeline.upsert`` of one new document (one new
embedding) and ``Pipeline.delete`` of it, several times each, and prints medians::

    python scripts/bench_upsert.py --scales 1,3,10 --repeats 5

Run it alone on the machine, with threads pinned (``OMP_NUM_THREADS``); numbers are wall seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KLUE = REPO.parent / "shared" / "data" / "klue-mrc" / "klue_mrc_validation_subset.jsonl"


def _corpus(scale: int) -> list:
    from llama_index.core import Document

    try:
        from pipeline.ingest.qa import read_qa_set
    except ImportError:  # the flat layout before 0.2, for a before/after run with PYTHONPATH
        from pipeline.qa import read_qa_set  # type: ignore[no-redef]

    base = read_qa_set("klue_mrc", KLUE).documents
    return [Document(text=d.text, id_=f"{d.doc_id}~{k}" if k else d.doc_id, metadata=dict(d.metadata)) for k in range(scale) for d in base]


def bench(scale: int, repeats: int, root: Path) -> dict:
    from llama_index.core import Document

    from pipeline import Pipeline

    docs = _corpus(scale)
    pipe = Pipeline.from_config(REPO / "configs" / "klue.yaml", [f"index_dir={root / f'x{scale}'}"])
    t0 = time.perf_counter()
    pipe.ingest(documents=docs)
    build = time.perf_counter() - t0
    pipe.retrieve("준비", top_k=1)
    up, down = [], []
    for i in range(repeats):
        doc = Document(text=f"{docs[i].text} 이 문서는 벤치마크 {scale}-{i}번으로 고쳐 쓴 판이다.", id_=f"bench-{scale}-{i}")
        t0 = time.perf_counter()
        pipe.upsert([doc])
        up.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        pipe.delete([doc.doc_id])
        down.append(time.perf_counter() - t0)
    return {"scale": scale, "documents": len(docs), "nodes": len(pipe.load().first_stage.entries[0].retriever.nodes),
            "build_s": round(build, 1), "upsert_median_s": round(statistics.median(up), 3), "upsert_max_s": round(max(up), 3),
            "delete_median_s": round(statistics.median(down), 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scales", default="1,3,10", help="Corpus multiples (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=5, help="Timed upserts and deletes per scale (default: %(default)s)")
    ap.add_argument("--json", action="store_true", help="Print JSON rows")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ragpipe-bench-") as tmp:
        for scale in (int(s) for s in args.scales.split(",")):
            row = bench(scale, args.repeats, Path(tmp))
            print(json.dumps(row) if args.json else
                  f"{row['scale']:>3}x  {row['documents']:>6} docs {row['nodes']:>7} nodes  build {row['build_s']:>7.1f} s  "
                  f"upsert median {row['upsert_median_s']:.3f} s (max {row['upsert_max_s']:.3f})  delete median {row['delete_median_s']:.3f} s",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
