"""Korean tokenizer registry: ``TokenizerConfig`` -> ``Tokenizer`` (text -> list of tokens).

Names (``tokenizer.name``):

- ``kiwi`` (default): kiwipiepy morphemes. Korean glues particles and endings onto words
  (``서울은`` = ``서울`` + ``은``), so only a morphological analyser lets the query ``서울`` match.
  Default tags, kept by prefix: ``NNG NNP NNB NR NP SL SN SH XR VV VA MAG W_`` -- nouns (incl.
  dependent nouns and pronouns), numerals, foreign/number/hanja runs, roots, verb and adjective
  stems, general adverbs, URLs/e-mails. Particles, endings, the copula and affixes are dropped:
  they occur in nearly every passage and only add noise to term matching. (The narrower
  nouns-and-stems set scored slightly lower on KLUE MRC and KorQuAD; docs/tuning.md.)
  Verb/adjective stems get a ``다`` suffix (``먹었다`` -> ``먹다``) so they never collide with a
  noun of the same spelling (``가``).
- ``whitespace``: ``str.split``; for tests and comparisons only (``서울`` never matches ``서울은``).
- ``regex``: LlamaIndex BM25Retriever's default (bm25s.tokenize: lowercase, ``(?u)\\b\\w\\w+\\b``,
  English stopwords, Snowball English stemmer); kept to show why it fails on Korean.
- ``hf:<tokenizer id or path>``: subword pieces of a Hugging Face tokenizer (``▁`` stripped,
  special tokens skipped).

Every tokenizer reports ``spec()``: the full settings to persist and rebuild it from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from contextlib import contextmanager
from contextvars import ContextVar
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from ..core.progress import progress
from ..config import TokenizerConfig
from ..core.errors import ConfigError, ModelResolutionError
from ..models.threads import compute_threads

logger = logging.getLogger(__name__)

TokenizerSpec = dict[str, Any]

# Tuned on KLUE MRC and KorQuAD (docs/tuning.md): adding NNB, NP and MAG to the content tags
# gained +0.008 / +0.001 MRR@10 over the nouns-and-stems set.
KIWI_DEFAULT_TAGS: tuple[str, ...] = ("NNG", "NNP", "NNB", "NR", "NP", "SL", "SN", "SH", "XR", "VV", "VA", "MAG", "W_")
KIWI_STEM_SUFFIX = "다"
REGEX_TOKEN_PATTERN = r"(?u)\b\w\w+\b"
_PIECE_MARKER = "▁"


def _pkg_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


_CORPUS_MEMO: ContextVar[dict[str, list[list[str]]] | None] = ContextVar("ragpipe_corpus_tokens", default=None)
MEMO_MIN_TEXTS = 64  # a corpus, not a query


@contextmanager
def sharing_corpus_tokens(memo: dict[str, list[list[str]]]) -> Iterator[None]:
    """Inside the block, a corpus tokenised again with the same tokenizer spec reuses ``memo``'s tokens.

    The evaluation matrix builds several lexical setups (BM25, TF-IDF, BoW) over one corpus: with this,
    kiwi analyses it once. Other threads (a service's) never see the memo: context variables do not
    cross threads.
    """
    token = _CORPUS_MEMO.set(memo)
    try:
        yield
    finally:
        _CORPUS_MEMO.reset(token)


class Tokenizer:
    """Text -> tokens. Subclasses implement ``_split_many``; lowercasing and stopwords are shared."""

    library: str | None = None

    def __init__(self, name: str, *, lowercase: bool = True, stopwords: Iterable[str] = (), tags: Sequence[str] | None = None) -> None:
        self.name = name
        self.lowercase = lowercase
        self.stopwords = list(stopwords)
        self.tags = list(tags) if tags is not None else None
        self._stop = {w.lower() if lowercase else w for w in self.stopwords}

    def _split_many(self, texts: Sequence[str]) -> Iterable[list[str]]:
        raise NotImplementedError

    def _extra_spec(self) -> dict[str, Any]:
        return {}

    def _finish(self, tokens: list[str]) -> list[str]:
        if self.lowercase:
            tokens = [t.lower() for t in tokens]
        return [t for t in tokens if t and t not in self._stop]

    def __call__(self, text: str) -> list[str]:
        return self.tokenize_many([text])[0]

    def tokenize_many(self, texts: Sequence[str], show_progress: bool = False) -> list[list[str]]:
        """Tokenise many texts (batched where the library supports it; shared inside ``sharing_corpus_tokens``)."""
        texts = list(texts)
        memo = _CORPUS_MEMO.get()
        key = self._corpus_key(texts) if memo is not None and len(texts) >= MEMO_MIN_TEXTS else None
        if key is not None and key in memo:
            return [list(t) for t in memo[key]]
        out = progress(self._split_many(texts), desc=f"tokenize ({self.name})", total=len(texts), show_progress=show_progress, unit="doc")
        lists = [self._finish(list(toks)) for toks in out]
        if key is not None:
            memo[key] = lists
            return [list(t) for t in lists]
        return lists

    def _corpus_key(self, texts: list[str]) -> str:
        digest = hashlib.sha256(json.dumps(self.spec(), sort_keys=True).encode())
        for text in texts:
            digest.update(text.encode("utf-8") + b"\0")
        return digest.hexdigest()

    def spec(self) -> TokenizerSpec:
        """Everything needed to rebuild this tokenizer exactly (persisted with the index)."""
        return {
            "name": self.name,
            "tags": self.tags,
            "lowercase": self.lowercase,
            "stopwords": list(self.stopwords),
            "library": self.library,
            "library_version": _pkg_version(self.library) if self.library else None,
            **self._extra_spec(),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, tags={self.tags!r}, lowercase={self.lowercase})"


# --------------------------------------------------------------------------- kiwi

_KIWI: dict[bool, Any] = {}
_KIWI_LOCK = threading.Lock()


def _kiwi(multi_dict: bool = True) -> Any:
    """The process-wide Kiwi instance with or without the multi-word dictionary (loading takes 1 to 2.5 s)."""
    with _KIWI_LOCK:
        if multi_dict not in _KIWI:
            try:
                from kiwipiepy import Kiwi
            except ImportError as exc:
                raise ConfigError(
                    "tokenizer.name = 'kiwi' needs kiwipiepy: pip install kiwipiepy",
                    key="tokenizer.name", value="kiwi",
                ) from exc
            _KIWI[multi_dict] = Kiwi(num_workers=compute_threads(), load_multi_dict=multi_dict)
            logger.info("loaded Kiwi morphological analyser (kiwipiepy %s, multi-word dictionary %s)", _pkg_version("kiwipiepy"),
                        "on" if multi_dict else "off")
        return _KIWI[multi_dict]


class KiwiTokenizer(Tokenizer):
    """Kiwi morphemes whose POS tag starts with one of ``tags``."""

    library = "kiwipiepy"

    def __init__(self, *, tags: Sequence[str] | None = None, lowercase: bool = True, stopwords: Iterable[str] = (),
                 multi_dict: bool = True) -> None:
        super().__init__("kiwi", lowercase=lowercase, stopwords=stopwords, tags=list(tags) if tags else list(KIWI_DEFAULT_TAGS))
        self._prefixes = tuple(self.tags or ())
        self.multi_dict = multi_dict
        self._kiwi = _kiwi(multi_dict)

    def _keep(self, tokens: Iterable[Any]) -> list[str]:
        out: list[str] = []
        for t in tokens:
            tag = str(t.tag)
            if tag.startswith(self._prefixes):
                out.append(t.form + KIWI_STEM_SUFFIX if tag.startswith(("VV", "VA")) else t.form)
        return out

    def _split_many(self, texts: Sequence[str]) -> Iterable[list[str]]:
        # Kiwi.tokenize over an iterable analyses the texts on its worker threads. (One query analysed on the calling
        # thread instead made the encoder that runs next slower: 11.4 ms, not 10.0-10.5, in one process, A/B.)
        return (self._keep(toks) for toks in self._kiwi.tokenize(texts))

    def _extra_spec(self) -> dict[str, Any]:
        return {"stem_suffix": KIWI_STEM_SUFFIX, "multi_dict": self.multi_dict, "model_version": _pkg_version("kiwipiepy_model")}


# --------------------------------------------------------------------------- whitespace / regex


class WhitespaceTokenizer(Tokenizer):
    """``str.split``; for tests only."""

    def _split_many(self, texts: Sequence[str]) -> Iterable[list[str]]:
        return (t.split() for t in texts)


class RegexTokenizer(Tokenizer):
    """LlamaIndex BM25Retriever's default tokenisation, via ``bm25s.tokenize`` itself."""

    library = "bm25s"

    def __init__(self, *, lowercase: bool = True, stopwords: Iterable[str] = ()) -> None:
        super().__init__("regex", lowercase=lowercase, stopwords=stopwords)
        try:
            import bm25s
            import Stemmer
        except ImportError as exc:
            raise ConfigError(
                "tokenizer.name = 'regex' needs bm25s and PyStemmer: pip install bm25s PyStemmer",
                key="tokenizer.name", value="regex",
            ) from exc
        self._tokenize = bm25s.tokenize
        self._stemmer = Stemmer.Stemmer("english")

    def _split_many(self, texts: Sequence[str]) -> Iterable[list[str]]:
        if not texts:
            return []
        return self._tokenize(
            list(texts), lower=self.lowercase, token_pattern=REGEX_TOKEN_PATTERN, stopwords="en",
            stemmer=self._stemmer, return_ids=False, show_progress=False,
        )

    def _extra_spec(self) -> dict[str, Any]:
        return {"token_pattern": REGEX_TOKEN_PATTERN, "builtin_stopwords": "en", "stemmer": "snowball-english",
                "stemmer_version": _pkg_version("PyStemmer")}


# --------------------------------------------------------------------------- hugging face


class HFTokenizer(Tokenizer):
    """Subword pieces of a Hugging Face tokenizer (a tokenizer.json file/folder, or a hub id)."""

    library = "tokenizers"

    def __init__(self, source: str, *, lowercase: bool = True, stopwords: Iterable[str] = ()) -> None:
        super().__init__(f"hf:{source}", lowercase=lowercase, stopwords=stopwords)
        self.source = source
        self._encode_many, self._special, self.vocab_size = self._load(source)

    def _load(self, source: str) -> tuple[Callable[[list[str]], list[list[str]]], set[str], int]:
        path = Path(source).expanduser()
        if not path.exists():  # a model id: the same resolution as embedding models (prepared copies work offline)
            from ..models.resolve import resolve_model
            from ..core.errors import ModelResolutionError as _Unresolved

            try:
                path = Path(resolve_model(source))
            except _Unresolved:
                pass
        file = path / "tokenizer.json" if path.is_dir() else path
        if file.is_file():
            try:
                from tokenizers import Tokenizer as RawTokenizer
            except ImportError as exc:
                raise ConfigError(f"tokenizer.name = 'hf:{source}' needs tokenizers: pip install tokenizers", key="tokenizer.name") from exc

            try:
                tok = RawTokenizer.from_file(str(file))
            except Exception as exc:  # the Rust library raises plain Exception
                raise ModelResolutionError(f"tokenizer.name = 'hf:{source}': cannot read {file}: {exc}", path=file) from exc
            special = {t.content for t in tok.get_added_tokens_decoder().values() if t.special}
            return (lambda ts: [e.tokens for e in tok.encode_batch(ts, add_special_tokens=False)]), special, tok.get_vocab_size()
        try:
            from transformers import AutoTokenizer
        except ImportError as exc:
            raise ConfigError(f"tokenizer.name = 'hf:{source}' needs transformers: pip install transformers", key="tokenizer.name") from exc
        self.library = "transformers"
        try:
            hf = AutoTokenizer.from_pretrained(source)
        except Exception as exc:  # OSError, ValueError, hub errors
            raise ModelResolutionError(
                f"tokenizer.name = 'hf:{source}': no tokenizer.json at {file} and the Hugging Face hub "
                f"could not resolve it ({type(exc).__name__}: {exc})", value=source,
            ) from exc
        return (lambda ts: [hf.tokenize(t) for t in ts]), set(hf.all_special_tokens), len(hf)

    def _split_many(self, texts: Sequence[str]) -> Iterable[list[str]]:
        if not texts:
            return []
        return ([p.lstrip(_PIECE_MARKER) for p in pieces if p not in self._special] for pieces in self._encode_many(list(texts)))

    def _extra_spec(self) -> dict[str, Any]:
        return {"source": self.source, "vocab_size": self.vocab_size}


# --------------------------------------------------------------------------- registry


def _no_arg(name: str, arg: str | None) -> None:
    if arg is not None:
        raise ConfigError(f"tokenizer.name = '{name}:{arg}': '{name}' takes no ':' argument", key="tokenizer.name", value=f"{name}:{arg}")


def _only_kiwi_options(cfg: TokenizerConfig) -> None:
    """``tags`` and ``multi_dict: false`` are kiwi's: set on another tokenizer, they are a config error."""
    for key, value, unset in (("tags", cfg.tags, None), ("multi_dict", cfg.multi_dict, True)):
        if value != unset:
            raise ConfigError(f"tokenizer.{key} applies only to tokenizer.name = 'kiwi', not {cfg.name!r}; remove it", key=f"tokenizer.{key}", value=value)


def _make_kiwi(cfg: TokenizerConfig, arg: str | None) -> Tokenizer:
    _no_arg("kiwi", arg)
    if cfg.tags is not None and not cfg.tags:
        raise ConfigError("tokenizer.tags = []: keeps no morpheme; leave it unset for the default content tags", key="tokenizer.tags", value=[])
    return KiwiTokenizer(tags=cfg.tags, lowercase=cfg.lowercase, stopwords=cfg.stopwords, multi_dict=cfg.multi_dict)


def _make_whitespace(cfg: TokenizerConfig, arg: str | None) -> Tokenizer:
    _no_arg("whitespace", arg)
    _only_kiwi_options(cfg)
    return WhitespaceTokenizer("whitespace", lowercase=cfg.lowercase, stopwords=cfg.stopwords)


def _make_regex(cfg: TokenizerConfig, arg: str | None) -> Tokenizer:
    _no_arg("regex", arg)
    _only_kiwi_options(cfg)
    return RegexTokenizer(lowercase=cfg.lowercase, stopwords=cfg.stopwords)


def _make_hf(cfg: TokenizerConfig, arg: str | None) -> Tokenizer:
    if not arg:
        raise ConfigError("tokenizer.name = 'hf': name the tokenizer, e.g. 'hf:klue/bert-base' or 'hf:/path/to/tokenizer.json'", key="tokenizer.name", value=cfg.name)
    _only_kiwi_options(cfg)
    return HFTokenizer(arg, lowercase=cfg.lowercase, stopwords=cfg.stopwords)


TOKENIZERS: dict[str, Callable[[TokenizerConfig, str | None], Tokenizer]] = {
    "kiwi": _make_kiwi,
    "whitespace": _make_whitespace,
    "regex": _make_regex,
    "hf": _make_hf,
}


def _split_name(name: str) -> tuple[str, str | None]:
    key, sep, arg = name.strip().partition(":")
    return key.strip().lower(), (arg.strip() if sep else None)


def tokenizer_names() -> list[str]:
    """Registry keys as written in a config (``hf`` shown with its argument)."""
    return [k + (":<tokenizer id or path>" if k == "hf" else "") for k in TOKENIZERS]


def _checked_name(name: str) -> tuple[str, str | None]:
    """(registry key, argument) of a tokenizer name; an unknown name raises ``ConfigError`` listing the registry."""
    key, arg = _split_name(name)
    if key not in TOKENIZERS:
        raise ConfigError(f"tokenizer.name = {name!r} is not a tokenizer; use one of: {', '.join(tokenizer_names())}",
                          key="tokenizer.name", value=name)
    return key, arg


def build_tokenizer(cfg: TokenizerConfig) -> Tokenizer:
    """Build the tokenizer named by ``cfg.name``; unknown names raise ``ConfigError`` listing the registry."""
    key, arg = _checked_name(cfg.name)
    return TOKENIZERS[key](cfg, arg)


def tokenizer_from_spec(spec: TokenizerSpec) -> Tokenizer:
    """Rebuild a tokenizer from a persisted ``spec()`` (never from defaults)."""
    try:
        kiwi = {"multi_dict": spec.get("multi_dict", True)} if spec["name"] == "kiwi" else {}  # indexes before the option: on
        cfg = TokenizerConfig(name=spec["name"], tags=spec.get("tags"), lowercase=spec["lowercase"], stopwords=spec.get("stopwords") or [], **kiwi)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"persisted tokenizer spec is incomplete or invalid: {spec!r}", value=spec) from exc
    tok = build_tokenizer(cfg)
    for lib_key in ("library_version", "model_version"):
        then, now = spec.get(lib_key), tok.spec().get(lib_key)
        if then and now and then != now:
            logger.warning("tokenizer %s: index built with %s %s, now %s; tokens may differ (ragpipe ingest --rebuild)", tok.name, lib_key, then, now)
    return tok


def expected_spec(cfg: TokenizerConfig) -> TokenizerSpec:
    """The config-determined part of a spec (name, tags, lowercase, stopwords), without loading anything.

    The name is checked against the registry first, so a misspelt name is never reported as an index mismatch.
    """
    key, arg = _checked_name(cfg.name)
    name = f"hf:{arg}" if key == "hf" else key
    tags = sorted(cfg.tags) if cfg.tags else (sorted(KIWI_DEFAULT_TAGS) if key == "kiwi" else None)
    kiwi = {"multi_dict": cfg.multi_dict} if key == "kiwi" else {}
    return {"name": name, "tags": tags, "lowercase": cfg.lowercase, "stopwords": sorted(cfg.stopwords), **kiwi}
