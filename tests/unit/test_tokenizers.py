"""Tokenizer registry: kiwi morphemes, whitespace/regex baselines, hf subwords, specs and errors."""

from __future__ import annotations

import pytest

from pipeline.config import TokenizerConfig
from pipeline.core.errors import ConfigError, ModelResolutionError
from pipeline.retrieval.tokenizers import (
    KIWI_DEFAULT_TAGS,
    TOKENIZERS,
    build_tokenizer,
    expected_spec,
    tokenizer_from_spec,
)


def tok(name: str = "kiwi", **kw):
    return build_tokenizer(TokenizerConfig(name=name, **kw))


# --------------------------------------------------------------------------- kiwi


def test_kiwi_bare_noun_matches_noun_with_particle():
    kiwi = tok("kiwi")
    assert kiwi("서울") == ["서울"]
    assert "서울" in kiwi("서울은 대한민국의 수도이다.")


@pytest.mark.parametrize("name", ["whitespace", "regex"])
def test_whitespace_and_regex_do_not_split_particles(name):
    # Why kiwi is the default: these keep '서울은' whole, so a query for '서울' never matches it.
    t = tok(name)
    assert "서울" not in t("서울은 대한민국의 수도이다.")
    assert "서울은" in t("서울은 대한민국의 수도이다.")


def test_kiwi_default_tags_keep_content_morphemes_only():
    out = tok("kiwi")("그는 밥을 먹었고 BTS를 좋아한다. 2024년 漢字 것")
    # particles (는 을 를), endings (었고 ㄴ다) and punctuation dropped; pronoun 그 and dependent nouns 년/것 kept
    assert out == ["그", "밥", "먹다", "bts", "좋아하다", "2024", "년", "漢字", "것"]


def test_kiwi_tags_are_configurable_prefixes_and_lowercase_stopwords_apply():
    nouns = tok("kiwi", tags=["NN"])  # prefix: NNG, NNP and NNB
    assert nouns("밥을 먹은 것") == ["밥", "것"]
    t = tok("kiwi", lowercase=False, stopwords=["밥"])
    assert t("밥과 Apple") == ["Apple"]


def test_kiwi_tokenize_many_matches_single_calls():
    t = tok("kiwi")
    texts = ["서울은 크다", "", "부산의 바다"]
    assert t.tokenize_many(texts) == [t(x) for x in texts]
    assert t.tokenize_many([]) == []


def test_kiwi_instance_is_cached():
    assert tok("kiwi")._kiwi is tok("kiwi", tags=["NNG"])._kiwi


def test_spec_is_complete_and_rebuilds_the_same_tokenizer():
    spec = tok("kiwi", tags=["NNP", "NNG"], lowercase=False, stopwords=["수도"]).spec()
    assert spec["name"] == "kiwi" and spec["tags"] == ["NNP", "NNG"] and spec["lowercase"] is False
    assert spec["stopwords"] == ["수도"] and spec["library"] == "kiwipiepy" and spec["library_version"]
    again = tokenizer_from_spec(spec)
    assert again.spec() == spec
    assert tok("kiwi").spec()["tags"] == list(KIWI_DEFAULT_TAGS)  # defaults resolved, never None


# --------------------------------------------------------------------------- regex = LlamaIndex default


SAMPLE = [
    "The cats were running quickly through the gardens of Seoul.",
    "A dog is a man's best friend; dogs love running. I am here",
    "서울은 대한민국의 수도이다. 2024년 Olympics",
]


def test_regex_reproduces_bm25s_defaults_used_by_llamaindex():
    import bm25s
    import Stemmer
    want = bm25s.tokenize(SAMPLE, stopwords="en", stemmer=Stemmer.Stemmer("english"), return_ids=False, show_progress=False)
    got = tok("regex").tokenize_many(SAMPLE)
    assert got == want
    assert got[0][:2] == ["cat", "were"] and "run" in got[0]  # stemmed, "the" dropped (bm25s list lacks "were")
    assert "a" not in got[1] and "i" not in got[1]  # one-character words dropped by \w\w+


def test_regex_vocabulary_equals_llamaindex_bm25retriever():
    import llama_index.retrievers.bm25 as li
    from llama_index.core.schema import TextNode

    nodes = [TextNode(text=t, id_=f"n{i}") for i, t in enumerate(SAMPLE)]
    retriever = li.BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=2)
    ours = {t for doc in tok("regex").tokenize_many(SAMPLE) for t in doc}
    assert ours == set(retriever.bm25.vocab_dict) - {""}


def test_regex_spec_records_pattern_stopwords_and_stemmer():
    spec = tok("regex").spec()
    assert spec["token_pattern"] == r"(?u)\b\w\w+\b"
    assert spec["builtin_stopwords"] == "en" and spec["stemmer"] == "snowball-english"


# --------------------------------------------------------------------------- hf


@pytest.fixture()
def wordpiece_dir(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "서울": 3, "##은": 4, "수도": 5, "##이다": 6, "부산": 7}
    t = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.add_special_tokens(["[CLS]", "[SEP]"])
    t.save(str(tmp_path / "tokenizer.json"))
    return tmp_path


def test_hf_wordpiece_from_folder_skips_special_tokens(wordpiece_dir):
    t = tok(f"hf:{wordpiece_dir}")
    assert t("[CLS] 서울은 수도이다 [SEP]") == ["서울", "##은", "수도", "##이다"]
    spec = t.spec()
    assert spec["name"] == f"hf:{wordpiece_dir}" and spec["vocab_size"] == 8 and spec["library"] == "tokenizers"
    assert tokenizer_from_spec(spec)("부산") == ["부산"]


def test_hf_unigram_file_strips_metaspace_marker(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = [("<unk>", 0.0), ("▁", -3.0), ("▁서울", -1.0), ("은", -1.5), ("▁수도", -1.0), ("서", -5.0), ("울", -5.0), ("수", -5.0), ("도", -5.0)]
    t = Tokenizer(models.Unigram(vocab, unk_id=0))
    t.pre_tokenizer = pre_tokenizers.Metaspace()
    path = tmp_path / "uni.json"
    t.save(str(path))
    assert tok(f"hf:{path}")("서울은 수도") == ["서울", "은", "수도"]


def test_hf_unresolvable_name_raises(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelResolutionError, match="hf:"):
        tok(f"hf:{tmp_path}/no-such-tokenizer")
    with pytest.raises(ConfigError, match="name the tokenizer"):
        tok("hf:")


# --------------------------------------------------------------------------- registry errors / mismatch


def test_unknown_name_lists_registry_keys():
    with pytest.raises(ConfigError, match="tokenizer.name") as exc:
        tok("mecab")
    for key in TOKENIZERS:
        assert key in str(exc.value)
    assert exc.value.key == "tokenizer.name"


def test_tags_rejected_for_non_kiwi_and_name_is_case_insensitive():
    with pytest.raises(ConfigError, match="tokenizer.tags"):
        tok("whitespace", tags=["NNG"])
    assert tok("KIWI").name == "kiwi"


def test_expected_spec_is_order_free_and_checks_the_name_first():
    assert expected_spec(TokenizerConfig(tags=list(reversed(KIWI_DEFAULT_TAGS)))) == expected_spec(TokenizerConfig())
    with pytest.raises(ConfigError, match="'mecab' is not a tokenizer; use one of: kiwi, whitespace, regex, hf:"):
        expected_spec(TokenizerConfig(name="mecab"))
    assert expected_spec(TokenizerConfig(name="regex"))["tags"] is None


def test_a_corpus_is_tokenised_once_inside_sharing_corpus_tokens(monkeypatch) -> None:
    from pipeline.retrieval.tokenizers import MEMO_MIN_TEXTS, WhitespaceTokenizer, sharing_corpus_tokens

    calls = []
    original = WhitespaceTokenizer._split_many
    monkeypatch.setattr(WhitespaceTokenizer, "_split_many", lambda self, texts: calls.append(len(texts)) or original(self, texts))
    corpus = [f"문서 {i} 내용" for i in range(MEMO_MIN_TEXTS)]
    plain, other = WhitespaceTokenizer("whitespace"), WhitespaceTokenizer("whitespace", stopwords=["내용"])
    memo: dict = {}
    with sharing_corpus_tokens(memo):
        first = plain.tokenize_many(corpus)
        first[0].append("changed by the caller")  # callers get copies: the memo stays intact
        again = WhitespaceTokenizer("whitespace").tokenize_many(corpus)
        filtered = other.tokenize_many(corpus)  # another spec: tokenised again
        plain.tokenize_many(corpus[:3])  # queries and small batches are not memoised
    assert again == plain.tokenize_many(corpus) and again[0] == ["문서", "0", "내용"]
    assert filtered[0] == ["문서", "0"]
    assert calls == [MEMO_MIN_TEXTS, MEMO_MIN_TEXTS, 3, MEMO_MIN_TEXTS] and len(memo) == 2


def test_kiwi_multi_dict_option_is_persisted_and_kiwi_only() -> None:
    from pipeline.retrieval.tokenizers import tokenizer_from_spec

    lite = build_tokenizer(TokenizerConfig(name="kiwi", multi_dict=False))
    full = build_tokenizer(TokenizerConfig(name="kiwi"))
    assert lite.spec()["multi_dict"] is False and full.spec()["multi_dict"] is True
    assert lite._kiwi is not full._kiwi  # two analysers: the dictionary is fixed when kiwi loads
    assert tokenizer_from_spec(lite.spec()).spec() == lite.spec()
    old = {k: v for k, v in full.spec().items() if k != "multi_dict"}  # an index from before the option
    assert tokenizer_from_spec(old).spec()["multi_dict"] is True
    assert lite("서울은 한국의 수도이다") == full("서울은 한국의 수도이다")
    name = "광고 담당자였던 데이비드 오길비는 생각했다"  # a multi-word proper noun: one token only with the dictionary
    assert "데이비드 오길비" in full(name) and {"데이비드", "오길비"} <= set(lite(name))
    with pytest.raises(ConfigError, match="tokenizer.multi_dict applies only to tokenizer.name = 'kiwi'"):
        build_tokenizer(TokenizerConfig(name="whitespace", multi_dict=False))
