#!/usr/bin/env python
"""Kill test: SIGKILL a writer at random moments during a stream of acknowledged upserts and deletes.

Each round starts a writer process on one index (``configs/default.yaml``, hybrid, with a small
``serving.compact_after`` so kills also land in compactions), lets it upsert and delete documents and
print each acknowledged write, kills it after a random delay, then opens the index fresh and checks
that every acknowledged write is there (an upserted text present, a deleted id gone) and that every
retriever holds exactly the snapshot's nodes (nothing half-applied)::

    python scripts/killtest.py --kills 20 --seed 0
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WRITER = r"""
import json, random, sys
from llama_index.core import Document
from pipeline import Pipeline
pipe = Pipeline.from_config(sys.argv[1], [f"index_dir={sys.argv[2]}", "serving.compact_after=3"])
rng, mine = random.Random(int(sys.argv[3])), []
pipe.load()
print(json.dumps({"ready": True}), flush=True)
for i in range(10_000):
    if mine and rng.random() < 0.35:
        doc_id = mine.pop(rng.randrange(len(mine)))
        print(json.dumps({"begin": "delete", "id": doc_id}), flush=True)
        pipe.delete([doc_id])
        print(json.dumps({"op": "delete", "id": doc_id}), flush=True)
    else:
        doc_id = f"kill-{sys.argv[3]}-{i}"
        text = f"{rng.choice(['서울', '부산', '제주', '김치', '기차'])} 관련 문서 {sys.argv[3]}-{i}: " + "가나다라마바사 " * rng.randint(1, 30)
        print(json.dumps({"begin": "upsert", "id": doc_id}), flush=True)
        pipe.upsert([Document(text=text, id_=doc_id)])
        mine.append(doc_id)
        print(json.dumps({"op": "upsert", "id": doc_id, "text": text}), flush=True)
"""


def one_round(index: Path, seed: int, rng: random.Random) -> dict:
    from pipeline import Pipeline

    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(REPO / "configs" / "default.yaml"), str(index), str(seed)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    assert proc.stdout is not None
    if "ready" not in proc.stdout.readline():
        raise SystemExit("killtest: the writer did not start")
    time.sleep(rng.uniform(0.2, 4.0))
    proc.kill()
    out, _ = proc.communicate()
    lines = [json.loads(line) for line in out.splitlines() if line.endswith("}")]
    acked = [x for x in lines if "op" in x]
    in_flight = lines[-1]["id"] if lines and "begin" in lines[-1] else None  # killed during this write: either state is right
    pipe = Pipeline.from_config(REPO / "configs" / "default.yaml", [f"index_dir={index}"])
    snapshot = pipe._served()  # opens: the current version plus its log
    docs = snapshot.documents
    expected: dict[str, str | None] = {}  # id -> text after the last acknowledged write (None: deleted)
    for a in acked:
        expected[a["id"]] = a.get("text") if a["op"] == "upsert" else None
    lost = []
    for doc_id, text in expected.items():
        if doc_id == in_flight:
            continue
        present = doc_id in docs and (text is None or docs[doc_id].text == text)
        if (text is None and doc_id in docs) or (text is not None and not present):
            lost.append(doc_id)
    legs_ok = all(set(n.node_id for n in leg.nodes) == set(snapshot.nodes) if hasattr(leg, "nodes") else
                  len(leg.vector_store._rows) == len(snapshot.nodes) for leg in snapshot.legs.values())
    return {"acked": len(acked), "lost": len(lost), "opens": True, "consistent": legs_ok, "version": snapshot.version,
            "logged": snapshot.wal_records}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    from pipeline import Pipeline

    with tempfile.TemporaryDirectory(prefix="ragpipe-kill-") as tmp:
        index = Path(tmp) / "index"
        Pipeline.from_config(REPO / "configs" / "default.yaml", [f"index_dir={index}"]).ingest()
        total_acked = total_lost = bad = 0
        for k in range(args.kills):
            try:
                row = one_round(index, k, rng)
            except Exception as exc:  # noqa: BLE001 - an index that does not open is a failure to count
                row = {"acked": 0, "lost": 0, "opens": False, "consistent": False, "error": str(exc)}
            total_acked += row["acked"]
            total_lost += row["lost"]
            bad += not (row["opens"] and row["consistent"])
            print(f"kill {k + 1:>2}: {json.dumps(row, ensure_ascii=False)}", flush=True)
        print(f"{args.kills} kills: {total_acked} acknowledged writes, {total_lost} lost, "
              f"{args.kills - bad}/{args.kills} indexes open and consistent")
    return 1 if total_lost or bad else 0


if __name__ == "__main__":
    sys.exit(main())
