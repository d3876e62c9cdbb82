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

    from pipeline.training.finetune import finetune_embedding
    from pipeline.training.mining import make_pairs

    qa, out = _qa(), tmp_path / "ft"
    pairs = make_pairs(qa, ft_config, negatives=0, val_fraction=0.2, seed=0)
    assert pairs.train and pairs.val_queries
    val_docs = {d for q in qa.questions if q.qid in pairs.val_queries for d in q.relevant_doc_ids}
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


@pytest.fixture(scope="module")
def tiny_pair_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT (sentence-transformers folder) whose tokenizer marks pairs as BERT does:
    [CLS] question [SEP] passage [SEP], with segment ids; what a cross-encoder needs to tell the two apart."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    chars = sorted({c for d in _qa().documents for c in d.text if not c.isspace()} | set("?"))
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *("##" + c for c in chars)])}
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    root = tmp_path_factory.mktemp("tiny-pair")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                                   mask_token="[MASK]")
    fast.save_pretrained(root / "hf")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=128)).save_pretrained(root / "hf")
    word = models.Transformer(str(root / "hf"), max_seq_length=120)
    pool = models.Pooling(word.get_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[word, pool], device="cpu").save(str(root / "st"))
    return root / "st"


def _reranked_mrr(model_dir: str, pairs: Any) -> float:
    """MRR@10 of the cross-encoder ranking each training question's positive among its mined negatives."""
    from sentence_transformers.cross_encoder import CrossEncoder
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator

    samples = [{"query": e.query, "positive": [e.positive], "negative": e.negatives} for e in pairs.train]
    ev = CrossEncoderRerankingEvaluator(samples, at_k=10, name="t", write_csv=False)
    return ev(CrossEncoder(model_dir, device="cpu"))["t_mrr@10"]


STEPS = 300  # a random tiny BERT needs ~100 steps before pair scores separate (a few seconds)


def test_finetune_reranker_trains_a_cross_encoder(ft_config: Any, tiny_pair_model_dir: Path, tmp_path: Path) -> None:
    from sentence_transformers.cross_encoder import CrossEncoder

    from pipeline.retrieval.rerank import CrossEncoderReranker
    from pipeline.training.mining import make_pairs
    from pipeline.training.finetune import finetune_reranker
    from pipeline.training.mining import first_stage_miner
    from pipeline.training.reranker import CANDIDATE_CHOICES

    qa, out = _qa(), tmp_path / "rr"
    pairs = make_pairs(qa, ft_config, negatives=2, val_fraction=0.2, seed=0, miner=first_stage_miner(ft_config), val_depth=5)
    assert all(len(e.negatives) == 2 and e.positive not in e.negatives for e in pairs.train)
    assert set(pairs.val_candidates) == set(pairs.val_queries)  # the first stage ranked each held-out question
    manifest = finetune_reranker(ft_config, qa, out, base=str(tiny_pair_model_dir), batch_size=8, lr=3e-3, negatives=2, max_length=64,
                                 val_fraction=0.2, eval_steps=STEPS // 2, max_steps=STEPS, device="cpu", freeze_embeddings=False,
                                 show_progress=False)
    assert manifest["kind"] == "reranker" and manifest["hyperparameters"]["loss"] == "BinaryCrossEntropyLoss"
    assert [p["step"] for p in manifest["validation_curve"]] == [0, STEPS // 2, STEPS]  # step 0: the first stage, no rerank
    assert manifest["recommended"]["rerank.candidates"] in CANDIDATE_CHOICES
    assert set(manifest["candidates_mrr@10"]) == {str(c) for c in CANDIDATE_CHOICES}
    model = CrossEncoder(str(out), device="cpu")
    assert model.predict([("서울은?", "서울은 수도")]).shape == (1,)
    before = _reranked_mrr(str(tiny_pair_model_dir), pairs)  # a fresh head on the same encoder
    after = _reranked_mrr(str(out), pairs)
    assert after > before + 0.1, (before, after)  # it learned to put the positive above its hard negatives
    reranker = CrossEncoderReranker(model=str(out), model_path=str(out), top_n=2, max_length=64)  # what rerank.model uses
    from llama_index.core.schema import NodeWithScore, TextNode

    ranked = reranker.rerank([NodeWithScore(node=TextNode(text=d.text), score=0.0) for d in qa.documents], pairs.train[0].query)
    assert len(ranked) == 2


def test_finetune_reranker_resumes_from_saved_pairs(ft_config: Any, tiny_pair_model_dir: Path, tmp_path: Path) -> None:
    """A reranker run stopped at a checkpoint goes on from it: the curve keeps its steps and the run ends later. The
    second run trains from the pairs file alone (mine on one machine, train on another)."""
    from pipeline.training.finetune import finetune_reranker
    from pipeline.training.mining import first_stage_miner, make_pairs
    from pipeline.training.pairs import PairSet
    from pipeline.training.reranker import train_reranker

    qa, out = _qa(), tmp_path / "rr"
    kw = dict(batch_size=8, lr=3e-3, max_length=64, eval_steps=4, device="cpu", freeze_embeddings=False, show_progress=False)
    first = finetune_reranker(ft_config, qa, out, base=str(tiny_pair_model_dir), negatives=2, val_fraction=0.2, max_steps=4, **kw)
    assert [p["step"] for p in first["validation_curve"]] == [0, 4]
    assert (out / "checkpoints" / "checkpoint-4").is_dir()
    make_pairs(qa, ft_config, negatives=2, val_fraction=0.2, seed=0, miner=first_stage_miner(ft_config), val_depth=40).save(tmp_path / "p.json")
    pairs = PairSet.load(tmp_path / "p.json")
    resumed = train_reranker(pairs, out, base_model="tiny", base_path=str(tiny_pair_model_dir), first_stage="bm25+dense", max_steps=8,
                             resume=True, **kw)
    assert [p["step"] for p in resumed["validation_curve"]] == [0, 4, 8]
    assert resumed["validation_curve"][1] == first["validation_curve"][1]  # step 4 kept from the first run, not redone
    assert resumed["validation_curve"][0] == first["validation_curve"][0]  # the same first-stage candidates, from the file


def test_pairs_file_round_trip_and_bad_file(ft_config: Any, tmp_path: Path) -> None:
    from pipeline.training.mining import make_pairs
    from pipeline.training.pairs import PairSet

    pairs = make_pairs(_qa(), ft_config, negatives=1, val_fraction=0.2, seed=0)
    pairs.save(tmp_path / "p.json")
    assert PairSet.load(tmp_path / "p.json") == pairs
    (tmp_path / "bad.json").write_text('{"train": []}', encoding="utf-8")
    with pytest.raises(EvaluationError, match="bad.json: not a ragpipe pairs file"):
        PairSet.load(tmp_path / "bad.json")


def test_listwise_reranker_learns_and_bad_loss_is_named(ft_config: Any, tiny_pair_model_dir: Path, tmp_path: Path) -> None:
    """``loss="listwise"`` (LambdaLoss over each question's positive and negatives) learns as the pointwise loss does."""
    from pipeline.training.mining import first_stage_miner, make_pairs
    from pipeline.training.reranker import train_reranker

    pairs = make_pairs(_qa(), ft_config, negatives=2, val_fraction=0.2, seed=0, miner=first_stage_miner(ft_config), val_depth=40)
    kw = dict(base_model="tiny", base_path=str(tiny_pair_model_dir), first_stage="bm25+dense", lr=3e-3, max_length=64, device="cpu",
              freeze_embeddings=False, show_progress=False)
    with pytest.raises(EvaluationError, match="--loss pairwise: choose one of bce, listwise"):
        train_reranker(pairs, tmp_path / "bad", loss="pairwise", **kw)
    manifest = train_reranker(pairs, tmp_path / "lw", loss="listwise", batch_size=8, eval_steps=STEPS // 2, max_steps=STEPS, **kw)
    assert manifest["hyperparameters"]["loss"] == "LambdaLoss"
    assert manifest["hyperparameters"]["first_stage"] == "bm25+dense"
    before, after = _reranked_mrr(str(tiny_pair_model_dir), pairs), _reranked_mrr(str(tmp_path / "lw"), pairs)
    assert after > before + 0.1, (before, after)
