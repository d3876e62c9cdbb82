"""``ragpipe finetune embedding`` on a tiny BERT built in the test: it trains, saves, resumes, and the guard fires."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import Document

from pipeline.config import config_from_dict
from pipeline.core.errors import EvaluationError
from pipeline.ingest.qa import QAQuestion, QASet
from tests.conftest import TINY_DOCS

EXTRA = [
    ("jeju", "제주도는 한라산과 귤로 유명한 섬이며 바다가 아름답다."),
    ("bibim", "비빔밥은 밥 위에 나물과 고추장을 올려 비벼 먹는 음식이다."),
    ("river", "한강은 서울을 가로질러 흐르는 큰 강이다."),
    ("port", "항구에는 배가 들어오고 시장에는 생선이 많다."),
]


def _qa() -> QASet:
    docs = [Document(text=d["text"], id_=d["doc_id"]) for d in TINY_DOCS] + [Document(text=t, id_=i) for i, t in EXTRA]
    questions = []
    for d in docs:
        words = d.text.split()
        for j, span in enumerate((words[:3], words[2:5], words[-3:])):
            questions.append(QAQuestion(f"{d.doc_id}-{j}", " ".join(span) + "?", [d.doc_id], answers=[span[0]]))
    return QASet("tiny-qa", docs, questions, source="<test>")


@pytest.fixture()
def ft_config(tiny_config: dict[str, Any]) -> Any:
    cfg = copy.deepcopy(tiny_config)
    cfg["embedding"].update(query_prompt="query: ", passage_prompt="passage: ")
    return config_from_dict(cfg, source="<test>", base_dir=Path.cwd())


def _mrr_on_training_pairs(model_dir: str, pairs: Any) -> float:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    corpus = {f"p{i}": d.text for i, d in enumerate(_qa().documents)}
    ids = {t: i for i, t in corpus.items()}
    ev = InformationRetrievalEvaluator({e.qid: e.query for e in pairs.train}, corpus, {e.qid: {ids[e.positive]} for e in pairs.train},
                                       name="t", mrr_at_k=[10], query_prompt="query: ", corpus_prompt="passage: ", write_csv=False)
    return ev(SentenceTransformer(model_dir, device="cpu"))["t_cosine_mrr@10"]


def test_finetune_improves_saves_and_resumes(ft_config: Any, tiny_model_dir: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from pipeline.training.embedding import finetune_embedding
    from pipeline.training.pairs import make_pairs

    qa, out = _qa(), tmp_path / "ft"
    pairs = make_pairs(qa, ft_config, negatives=0, val_fraction=0.2, seed=0)
    assert pairs.train and pairs.val_questions
    val_docs = {d for q in pairs.val_questions for d in q.relevant_doc_ids}
    assert not val_docs & {e.qid.rsplit("-", 1)[0] for e in pairs.train}  # split by document
    before = _mrr_on_training_pairs(str(tiny_model_dir), pairs)
    kw = dict(batch_size=4, lr=2e-3, negatives=0, val_fraction=0.2, eval_steps=4, device="cpu", show_progress=False)
    finetune_embedding(ft_config, qa, out, max_steps=4, **kw)
    first = json.loads((out / "ragpipe_finetune.json").read_text(encoding="utf-8"))
    assert first["validation_curve"][0]["step"] == 0 and first["validation_curve"][-1]["step"] == 4
    manifest = finetune_embedding(ft_config, qa, out, max_steps=40, resume=True, **kw)  # goes on from checkpoint-4
    steps = [p["step"] for p in manifest["validation_curve"]]
    assert steps[0] == 0 and steps[-1] == 40 and 8 in steps
    assert manifest["train_set"]["name"] == "tiny-qa" and manifest["train_set"]["fingerprint"] == qa.fingerprint()
    assert manifest["hyperparameters"]["loss"] == "MultipleNegativesRankingLoss" and manifest["best"]["step"] > 0
    assert manifest["beats_base"] == (manifest["best"]["mrr@10"] > manifest["validation_curve"][0]["mrr@10"])
    model = SentenceTransformer(str(out), device="cpu")
    assert model.encode(["서울은 수도"]).shape == (1, 32)
    after = _mrr_on_training_pairs(str(out), pairs)
    assert after > before + 0.02, (before, after)  # the best checkpoint by held-out MRR fits the training pairs better


def test_resume_without_checkpoint_says_so(ft_config: Any, tmp_path: Path) -> None:
    from pipeline.training.runs import checkpoint_to_resume

    with pytest.raises(EvaluationError, match="no checkpoint to resume from"):
        checkpoint_to_resume(tmp_path / "checkpoints")


def test_overlap_guard(tmp_path: Path) -> None:
    from pipeline.training.manifest import check_overlap
    from pipeline.training.pairs import text_hash

    qa = _qa()
    manifest = {"train_set": {"name": "tiny-qa"}, "train_question_hashes": [text_hash(qa.questions[0].text)],
                "train_document_hashes": [text_hash(qa.documents[0].text), text_hash(qa.documents[1].text)]}
    questions, docs = [q.text for q in qa.questions], [d.text for d in qa.documents]
    with pytest.raises(EvaluationError, match="trained on tiny-qa and has seen 1 of these questions and 2 of these documents"):
        check_overlap(manifest, questions, docs, "setup dense-ft")
    assert check_overlap(manifest, questions, docs, "setup dense-ft", allow=True) == {"questions": 1, "documents": 2}
    assert check_overlap(manifest, ["다른 질문"], ["다른 문서"], "setup dense-ft") == {"questions": 0, "documents": 0}
