"""Shared fixtures: a tiny Korean corpus, a tiny sentence-transformers model built in the test, temp dirs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

TINY_DOCS = [
    {"doc_id": "seoul", "title": "서울", "category": "여행", "text": "서울은 대한민국의 수도이며 한강이 도시를 가로질러 흐른다."},
    {"doc_id": "kimchi", "title": "김치", "category": "요리", "text": "김치는 배추를 소금에 절인 뒤 고춧가루 양념을 버무려 발효시킨 음식이다."},
    {"doc_id": "sleep", "title": "수면", "category": "건강", "text": "잠이 오지 않을 때는 잠자리에서 일어나 조용한 활동을 하는 것이 좋다."},
    {"doc_id": "train", "title": "기차", "category": "여행", "text": "기차가 역에 들어오면 승객들은 플랫폼에서 차례로 탑승한다."},
    {"doc_id": "photosynthesis", "title": "광합성", "category": "과학", "text": "식물은 햇빛과 물과 이산화탄소로 광합성을 하여 포도당과 산소를 만든다."},
    {"doc_id": "busan", "title": "부산", "category": "여행", "text": "부산은 해운대 해수욕장과 자갈치 시장으로 유명한 항구 도시다."},
]


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No API keys, no hub, caches in a temp dir (the real model dir is kept if already set)."""
    for var in ("OPENAI_API_KEY", "OPENAI_API_BASE", "RAGPIPE_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("RAGPIPE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("RAGPIPE_NO_PROGRESS", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny, random) sentence-transformers model: WordPiece vocab of Korean syllables, 2-layer BERT."""
    from sentence_transformers import SentenceTransformer, models
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import WordPiece
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("tiny-st")
    chars = sorted({c for d in TINY_DOCS for c in d["title"] + d["text"] if not c.isspace()} | set("질문어디무엇인가요?"))
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *("##" + c for c in chars)])}
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    hf_dir = root / "hf"
    fast.save_pretrained(hf_dir)
    import torch

    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)).save_pretrained(hf_dir)
    word = models.Transformer(str(hf_dir), max_seq_length=120)
    pool = models.Pooling(word.get_embedding_dimension(), pooling_mode="mean")
    st_dir = root / "st"
    SentenceTransformer(modules=[word, pool], device="cpu").save(str(st_dir))
    return st_dir


CE_WORDS = "서울 부산 대전 제주 수도 항구 과학 섬 도시 인구 바다 산 한국 의 은 는 이다".split()


@pytest.fixture(scope="session")
def tiny_cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-layer BERT (hidden 16, num_labels 1) with a WordLevel tokenizer, saved as a CrossEncoder folder."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {tok: i for i, tok in enumerate(specials + CE_WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=64,
    )
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64, num_labels=1, initializer_range=0.5,
    )
    path = tmp_path_factory.mktemp("tiny-ce")
    transformers.BertForSequenceClassification(config).save_pretrained(path)
    fast.save_pretrained(path)
    return path


def version_dir(index: Path) -> Path:
    """The folder of the version an index's CURRENT pointer names."""
    return index / (index / "CURRENT").read_text(encoding="utf-8").strip()


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture()
def tiny_corpus(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "corpus.jsonl", TINY_DOCS)


@pytest.fixture()
def tiny_config(tmp_path: Path, tiny_corpus: Path, tiny_model_dir: Path) -> dict[str, Any]:
    """A hybrid config (kiwi BM25 + tiny dense model, RRF) over the tiny corpus."""
    return {
        "name": "tiny",
        "index_dir": str(tmp_path / "index"),
        "data": {"loader": "jsonl", "path": str(tiny_corpus), "id_field": "doc_id", "title_field": "title", "metadata_fields": ["category"]},
        "chunking": {"splitter": "none"},
        "embedding": {"model": str(tiny_model_dir), "precision": "fp32", "batch_size": 4, "max_length": 120},
        "retrieval": {
            "top_k": 3,
            "retrievers": [
                {"type": "bm25", "name": "bm25", "tokenizer": {"name": "kiwi"}, "candidate_k": 5},
                {"type": "dense", "name": "dense", "candidate_k": 5},
            ],
            "fusion": {"mode": "rrf", "rrf_k": 60},
        },
    }


def has_shared_data() -> bool:
    return (SHARED_DATA / "klue-mrc" / "klue_mrc_validation_subset.jsonl").exists()


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
