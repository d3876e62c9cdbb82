"""Bi-encoders from a plain transformer: cls / mean / max pooling checked against a hand computation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config import EmbeddingConfig, config_from_dict
from pipeline.core.errors import ConfigError

TEXTS = ["서울은 수도", "김치", "기차가 역에 들어오면 승객들은 탑승한다", "부산 항구"]  # different lengths: padding


@pytest.fixture(scope="module")
def plain_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT saved with transformers only (no modules.json: not a sentence-transformers model)."""
    import torch
    from tokenizers import Tokenizer, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("plain-bert")
    chars = sorted({c for t in TEXTS for c in t if not c.isspace()})
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *("##" + c for c in chars)])}
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]").save_pretrained(root)
    torch.manual_seed(1)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(root)
    assert not (root / "modules.json").exists()
    return root


def _token_embeddings(model_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Run BertModel directly: last hidden states [n, t, h] and the attention mask [n, t]."""
    import torch
    from transformers import AutoTokenizer, BertModel

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = BertModel.from_pretrained(str(model_dir)).eval()
    enc = tok(TEXTS, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    return hidden.numpy(), enc["attention_mask"].numpy()


def _hand_pool(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    m = mask[:, :, None].astype(bool)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "mean":
        return (hidden * m).sum(axis=1) / m.sum(axis=1)
    return np.where(m, hidden, -np.inf).max(axis=1)


def _embed(model_dir: Path, pooling: list[str] | str | None) -> np.ndarray:
    from pipeline.models.embedding import build_embedding

    cfg = EmbeddingConfig(model=str(model_dir), pooling=pooling, normalize=False, precision="fp32", max_length=64,
                          batch_size=8, query_prompt="", passage_prompt="", cache=False)
    model = build_embedding(cfg)
    return np.asarray(model.get_text_embedding_batch(TEXTS), dtype=np.float32)


@pytest.mark.parametrize("pooling", [["cls"], ["mean"], ["max"], ["cls", "mean"], ["max", "mean", "cls"]])
def test_pooling_matches_hand_computation(plain_bert_dir: Path, pooling: list[str]) -> None:
    hidden, mask = _token_embeddings(plain_bert_dir)
    assert (mask == 0).any(), "the batch must contain padding"
    order = [m for m in ("cls", "max", "mean") if m in pooling]  # sentence-transformers order, whatever the YAML order
    expected = np.concatenate([_hand_pool(hidden, mask, m) for m in order], axis=1)
    got = _embed(plain_bert_dir, pooling)
    assert got.shape == (len(TEXTS), 16 * len(pooling))
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_padding_is_masked(plain_bert_dir: Path) -> None:
    """A text alone (no padding) and in a padded batch gives the same vector for mean and max."""
    from pipeline.models.embedding import build_embedding

    for mode in ("mean", "max"):
        cfg = EmbeddingConfig(model=str(plain_bert_dir), pooling=mode, normalize=False, precision="fp32", max_length=64,
                              query_prompt="", passage_prompt="", cache=False)
        model = build_embedding(cfg)
        batch = np.asarray(model.get_text_embedding_batch(TEXTS))
        alone = np.asarray(model.get_text_embedding(TEXTS[1]))
        np.testing.assert_allclose(batch[1], alone, atol=1e-5)
        hidden, mask = _token_embeddings(plain_bert_dir)
        unmasked = hidden[1].mean(axis=0) if mode == "mean" else hidden[1].max(axis=0)
        assert not np.allclose(batch[1], unmasked, atol=1e-4), "padding positions leaked into the pooled vector"


def test_plain_encoder_defaults_to_mean(plain_bert_dir: Path) -> None:
    np.testing.assert_allclose(_embed(plain_bert_dir, None), _embed(plain_bert_dir, "mean"), atol=1e-6)


def test_explicit_pooling_overrides_a_sentence_transformers_model(tiny_model_dir: Path) -> None:
    """tiny_model_dir pools by mean; pooling: cls replaces it, pooling unset keeps it."""
    from sentence_transformers import SentenceTransformer

    from pipeline.models.embedding import build_embedding

    texts = ["서울은 수도", "김치"]
    st = SentenceTransformer(str(tiny_model_dir), device="cpu")
    tokens = st.encode(texts, output_value="token_embeddings", convert_to_numpy=False)
    kwargs = dict(model=str(tiny_model_dir), normalize=False, precision="fp32", max_length=120, query_prompt="",
                  passage_prompt="", cache=False)
    own = np.asarray(build_embedding(EmbeddingConfig(**kwargs)).get_text_embedding_batch(texts))
    cls = np.asarray(build_embedding(EmbeddingConfig(pooling="cls", **kwargs)).get_text_embedding_batch(texts))
    for i, tok in enumerate(tokens):
        np.testing.assert_allclose(own[i], tok.numpy().mean(axis=0), atol=1e-5)
        np.testing.assert_allclose(cls[i], tok.numpy()[0], atol=1e-5)


def test_pooling_config_errors_name_the_key() -> None:
    base = {"retrieval": {"retrievers": [{"type": "dense"}]}}
    with pytest.raises(ConfigError, match=r"embedding\.pooling.*'avg' is not one of: cls, max, mean"):
        config_from_dict({**base, "embedding": {"pooling": "avg"}})
    with pytest.raises(ConfigError, match=r"embedding\.pooling.*repeated"):
        config_from_dict({**base, "embedding": {"pooling": ["cls", "cls"]}})
    cfg = config_from_dict({**base, "embedding": {"pooling": ["mean", "cls"]}})
    assert [p.value for p in cfg.embedding.pooling] == ["cls", "mean"]


def test_pooling_is_part_of_the_cache_key() -> None:
    from pipeline.models.embedding import embedding_key

    assert embedding_key(EmbeddingConfig(precision="fp32")) != embedding_key(EmbeddingConfig(precision="fp32", pooling="cls"))
    assert "pooling" not in embedding_key(EmbeddingConfig(precision="fp32"))  # old caches stay valid


def test_index_built_with_other_pooling_is_refused(tmp_path: Path, tiny_config: dict, tiny_model_dir: Path) -> None:
    from pipeline.serving.pipeline import Pipeline
    from pipeline.core.errors import IndexMismatchError

    tiny_config["retrieval"]["retrievers"] = [{"type": "dense", "name": "dense", "candidate_k": 5}]
    tiny_config["embedding"]["pooling"] = "mean"
    Pipeline.from_config(tiny_config).ingest()
    assert Pipeline.from_config(tiny_config).retrieve("서울", top_k=1)
    tiny_config["embedding"]["pooling"] = "cls"  # same size, different vectors: must not load silently
    with pytest.raises(IndexMismatchError, match=r"embedding.pooling: the index was built with \['mean'\].*\['cls'\].*--rebuild"):
        Pipeline.from_config(tiny_config).retrieve("서울")
