"""Training pairs from a QA set: (question, relevant passage, mined hard negatives), split by document.

Passages are the QA set's documents chunked as the config chunks them (in the embedding model's tokens),
so the model learns on what it will later search. A question's positive is the chunk of its relevant
document that holds an answer span (else that document's best mined chunk); its hard negatives are the
best chunks a miner ranks (kiwi BM25 for the embedding, the fused first stage for a reranker) among other
documents that hold no answer string and come from another article (same-title paragraphs often answer
the question too: a false negative teaches the model to push the answer away). Train and validation are
split by *document*: no validation question's passage was ever a training positive or negative.
Validation searches every chunk of the set, as the evaluation does.
"""

from __future__ import annotations

import random
import time
from typing import Callable, Sequence

from llama_index.core.schema import TextNode

from ..config import BM25Config, Config
from ..core.errors import EvaluationError
from ..ingest.chunking import chunk_documents, chunk_token_counter
from ..ingest.qa import QAQuestion, QASet
from ..ingest.vectors import embed_nodes
from ..models.embedding import build_cached_embedding
from ..retrieval.bm25 import BM25Retriever
from ..storage.snapshot import assemble, build_legs
from .pairs import Example, PairSet, text_hash

Search = Callable[[str, int], list[TextNode]]
"""``(question, depth) -> ranked chunks``: what mines negatives (and ranks validation candidates)."""
Miner = Callable[[list[TextNode]], Search]
"""Builds a ``Search`` over the set's chunks."""


def bm25_miner(cfg: Config, show_progress: bool = False) -> Miner:
    """The config's first BM25 retriever (else kiwi BM25) over the chunks: the embedding's negatives."""
    bm25_cfg = next((r for r in cfg.retrieval.retrievers if r.type == "bm25"), None) or BM25Config(tokenizer={"name": "kiwi"})

    def build(nodes: list[TextNode]) -> Search:
        bm25 = BM25Retriever.from_nodes(nodes, bm25_cfg, show_progress=show_progress)
        return lambda query, depth: [h.node for h in bm25.search(query, top_k=depth)]

    return build


def first_stage_miner(cfg: Config, show_progress: bool = False) -> Miner:
    """The config's retrievers, fused as configured and without rerank, over the chunks: a reranker's negatives."""
    def build(nodes: list[TextNode]) -> Search:
        model = build_cached_embedding(cfg.embedding, show_progress=show_progress) if cfg.uses_dense() else None
        vectors = embed_nodes(model, nodes, show_progress=show_progress) if model is not None else None
        legs = build_legs(cfg, nodes, model, vectors, show_progress)
        stack = assemble(cfg, {name: b.retriever for name, b in legs.items()}, None)
        return lambda query, depth: [h.node for h in stack.run(query, top_k=depth).nodes]

    return build


def first_stage_name(cfg: Config) -> str:
    """The retrievers and fusion a first-stage miner runs, as the reranker's manifest records them."""
    legs = "+".join(r.name for r in cfg.retrieval.retrievers)
    return f"{legs} ({cfg.retrieval.fusion.mode.value})" if len(cfg.retrieval.retrievers) > 1 else legs


def _doc(node: TextNode) -> str:
    return node.ref_doc_id or node.node_id


def _title(node: TextNode) -> str | None:
    return node.metadata.get("title") or None


def _false_negative(node: TextNode, q: QAQuestion, titles: set[str]) -> bool:
    """A candidate that may answer ``q`` after all: it holds an answer, or it is from the positive's article."""
    return any(a and a in node.text for a in q.answers) or (_title(node) is not None and _title(node) in titles)


def _positive(q: QAQuestion, chunks: Sequence[TextNode], bm25_rank: dict[str, int]) -> TextNode | None:
    with_answer = [c for c in chunks if any(a and a in c.text for a in q.answers)]
    pool = with_answer or list(chunks)
    if not pool:
        return None
    return min(pool, key=lambda c: bm25_rank.get(c.node_id, 10**9))


def make_pairs(qa: QASet, cfg: Config, *, negatives: int = 1, val_fraction: float = 0.1, seed: int = 0,
               mine_depth: int = 30, miner: Miner | None = None, val_depth: int = 0, show_progress: bool = False) -> PairSet:
    """Chunk ``qa``'s documents, mine hard negatives with ``miner`` (default: kiwi BM25), split by document.

    ``val_depth`` > 0 also ranks each validation question's candidates with the miner (a reranker's input).
    """
    if not 0 < val_fraction < 1:
        raise EvaluationError(f"val_fraction = {val_fraction} must be between 0 and 1", key="val_fraction", value=val_fraction)
    t0 = time.perf_counter()
    counter = chunk_token_counter(cfg.embedding)
    nodes = chunk_documents(qa.documents, cfg.chunking, tokenizer=counter, show_progress=show_progress)
    by_doc: dict[str, list[TextNode]] = {}
    for n in nodes:
        by_doc.setdefault(_doc(n), []).append(n)
    doc_ids = sorted(by_doc)
    random.Random(seed).shuffle(doc_ids)
    n_val = max(1, int(round(len(doc_ids) * val_fraction)))
    val_docs = set(doc_ids[:n_val])
    search = (miner or bm25_miner(cfg, show_progress))(nodes)
    train, val_q, used_docs = [], [], set()
    for q in qa.questions:
        rel = set(q.relevant_doc_ids)
        if rel & val_docs:
            if rel <= val_docs:
                val_q.append(q)
            continue  # a question touching both splits is used for neither
        hits = search(q.text, mine_depth)
        rank = {h.node_id: i for i, h in enumerate(hits)}
        pos = _positive(q, [c for d in q.relevant_doc_ids for c in by_doc.get(d, [])], rank)
        if pos is None:
            continue
        titles = {t for d in rel for c in by_doc.get(d, [])[:1] if (t := _title(c))}
        negs = [h for h in hits if _doc(h) not in rel and _doc(h) not in val_docs and h.text != pos.text
                and not _false_negative(h, q, titles)][:negatives]
        if len(negs) < negatives:
            continue  # MNRL with a fixed number of negative columns needs every row complete
        train.append(Example(q.qid, q.text, pos.text, [n.text for n in negs]))
        used_docs.update([_doc(pos), *(_doc(n) for n in negs)])
    if not train or not val_q:
        raise EvaluationError(f"{qa.name}: {len(train)} training and {len(val_q)} validation questions; need some of each")
    val_passages = {n.node_id: n.text for n in nodes}  # every chunk: training documents' chunks are distractors
    val_relevant = {q.qid: {n.node_id for d in q.relevant_doc_ids for n in by_doc[d]} for q in val_q}
    val_candidates = {q.qid: [h.node_id for h in search(q.text, val_depth)] for q in val_q} if val_depth else {}
    return PairSet(train, {q.qid: q.text for q in val_q}, val_passages, val_relevant, val_candidates,
                   sorted({text_hash(e.query) for e in train}), sorted({text_hash(d.text) for d in qa.documents if d.doc_id in used_docs}),
                   {"name": qa.name, "source": qa.source, "fingerprint": qa.fingerprint(), "documents": len(qa.documents),
                    "questions": len(qa.questions), "train_examples": len(train), "val_questions": len(val_q),
                    "val_documents": len(val_docs), "negatives": negatives, "seed": seed, "val_fraction": val_fraction,
                    "mining_seconds": round(time.perf_counter() - t0, 1)})
