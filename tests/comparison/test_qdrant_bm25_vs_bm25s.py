"""Korean BM25 computed by Qdrant (local mode: kiwi term frequencies, ``modifier: idf``) against bm25s over the same tokens.

Identical top-10 on the sample corpus's questions and on 200 KLUE MRC questions (scores to 1e-4, ties
ordered by node id on both sides).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import pytest
from bm25s.tokenization import Tokenized
from llama_index.core import Document

from pipeline import Pipeline
from pipeline.core.io import iter_jsonl
from pipeline.retrieval.lexical import index_text
from pipeline.storage.qdrant_index import local_path
from pipeline.storage.qdrant_store import close_local
from tests.conftest import REPO, SHARED_DATA, has_shared_data

pytestmark = pytest.mark.comparison


def _bm25_only(tmp_path: Path) -> dict[str, Any]:
    return {"name": "parity", "index_dir": str(tmp_path / "index"), "chunking": {"splitter": "none"},
            "retrieval": {"top_k": 10, "retrievers": [{"type": "bm25", "name": "bm25", "tokenizer": {"name": "kiwi"}, "candidate_k": 15}]},
            "storage": {"backend": "qdrant"}}


def _top(pairs: list[tuple[str, float]], k: int = 10) -> list[str]:
    return [i for i, _ in sorted(((i, round(s, 4)) for i, s in pairs), key=lambda p: (-p[1], p[0]))][:k]


def _assert_same_top10(docs: list[Document], questions: list[str], tmp_path: Path) -> None:
    pipe = Pipeline.from_config(_bm25_only(tmp_path))
    try:
        pipe.ingest(documents=docs)
        leg = pipe.load().first_stage
        tok = leg.encoder.tokenizer
        texts = [index_text(Document(text=d.text, id_=d.doc_id)) for d in docs]
        token_lists = tok.tokenize_many(texts)
        vocab: dict[str, int] = {}
        ids = [[vocab.setdefault(t, len(vocab)) for t in toks] for toks in token_lists]
        ref = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
        ref.index(Tokenized(ids=ids, vocab=vocab), show_progress=False)
        for q in questions:
            qids = [vocab[t] for t in tok(q) if t in vocab]
            scores = ref.get_scores_from_ids(qids) if qids else np.zeros(len(docs))
            expected = _top([(docs[i].doc_id, float(scores[i])) for i in np.flatnonzero(scores > 0)])
            got = _top([(h.node.ref_doc_id, h.score) for h in leg.search(q, top_k=15)])
            assert got == expected, q
    finally:
        close_local(local_path(pipe.config))


def test_sample_corpus(tmp_path: Path) -> None:
    rows = [r for _, r in iter_jsonl(REPO / "data" / "sample_corpus.jsonl")]
    docs = [Document(text=f"{r['title']}\n{r['text']}", id_=r["doc_id"]) for r in rows]
    questions = [r["question"] for _, r in iter_jsonl(REPO / "data" / "sample_questions.jsonl")]
    _assert_same_top10(docs, questions, tmp_path)


@pytest.mark.skipif(not has_shared_data(), reason="needs ../shared/data (KLUE MRC subset)")
def test_klue_200_questions(tmp_path: Path) -> None:
    from pipeline.ingest.qa import read_qa_set

    qa = read_qa_set("klue_mrc", SHARED_DATA / "klue-mrc" / "klue_mrc_validation_subset.jsonl")
    questions = [q.text for q in random.Random(0).sample(qa.questions, 200)]
    docs = [Document(text=d.text, id_=d.doc_id) for d in qa.documents]
    _assert_same_top10(docs, questions, tmp_path)
