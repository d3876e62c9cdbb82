"""The pipeline config schema: frozen pydantic sections that forbid unknown keys."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from .section import _Section
from .storage import StorageConfig


# --------------------------------------------------------------------------- data


class LoaderType(str, Enum):
    FOLDER = "folder"
    JSONL = "jsonl"
    JSON = "json"
    CSV = "csv"
    PARQUET = "parquet"
    HF = "hf"
    KLUE_MRC = "klue_mrc"
    SQUAD = "squad"
    IMAGES = "images"


class DataConfig(_Section):
    loader: LoaderType = Field(description="How to read the source: " + ", ".join(t.value for t in LoaderType))
    path: str | None = Field(None, description="File or folder; relative paths resolve against the config file's folder")
    text_field: str = Field("text", description="Field holding the document text (table/JSON loaders)")
    id_field: str | None = Field(None, description="Field holding a stable document id; content hash when unset")
    title_field: str | None = Field(None, description="Optional field prepended to the text as a title line")
    metadata_fields: list[str] = Field(default_factory=list, description="Fields copied into node metadata")
    extensions: list[str] = Field(
        default_factory=lambda: [".txt", ".md", ".html", ".htm", ".pdf", ".docx", ".hwpx", ".hwp"],
        description="Folder loader: file types to read (HTML as main text, .hwpx/.hwp Hangul, .docx Word)"
    )
    recursive: bool = Field(True, description="Folder loader: descend into sub-folders")
    dataset: str | None = Field(None, description="Hugging Face dataset name (loader hf / klue_mrc without path)")
    subset: str | None = Field(None, description="Hugging Face dataset config name, e.g. 'mrc'")
    split: str = Field("validation", description="Hugging Face split")
    limit: int | None = Field(None, ge=1, description="Read at most this many documents")


# --------------------------------------------------------------------------- chunking


class SplitterType(str, Enum):
    NONE = "none"
    SENTENCE = "sentence"
    TOKEN = "token"


class ChunkingConfig(_Section):
    splitter: SplitterType = Field(SplitterType.SENTENCE, description="none | sentence | token")
    chunk_size: int = Field(512, ge=16, description="Chunk size in tokens of the splitter's tokenizer")
    chunk_overlap: int = Field(64, ge=0, description="Overlap between consecutive chunks")

    @field_validator("chunk_overlap")
    @classmethod
    def _overlap_below_size(cls, v: int, info: Any) -> int:
        size = info.data.get("chunk_size")
        if size is not None and v >= size:
            raise ValueError(f"must be smaller than chunk_size ({size})")
        return v


# --------------------------------------------------------------------------- embedding


class Precision(str, Enum):
    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"


class EmbeddingProvider(str, Enum):
    HUGGINGFACE = "huggingface"
    OPENAI = "openai"
    CLIP = "clip"


class PoolingMode(str, Enum):
    """Token -> sentence pooling; combinations concatenate in this (sentence-transformers) order."""

    CLS = "cls"
    MAX = "max"
    MEAN = "mean"


class EmbeddingConfig(_Section):
    provider: EmbeddingProvider = Field(
        EmbeddingProvider.HUGGINGFACE,
        description="huggingface (sentence-transformers or plain encoder) | openai (OpenAI-compatible /v1/embeddings) | "
        "clip (text and images in one space)",
    )
    model: str = Field("intfloat/multilingual-e5-small", description="Hugging Face id or local path of the model")
    pooling: list[PoolingMode] | None = Field(
        None,
        description="huggingface: cls | mean | max or a list of them (concatenated cls, max, mean). Unset: the "
        "sentence-transformers model's own pooling (mean for a plain encoder); set: replaces it",
    )
    text_model: str | None = Field(
        None, description="clip: separate text encoder trained into the image model's space (e.g. a multilingual CLIP)"
    )
    backend: Literal["torch", "onnx", "auto"] = Field(
        "torch", description="huggingface: torch (sentence-transformers) | onnx (ONNX Runtime, exported once and cached; "
        "same tokenizer, pooling, normalisation and prompts) | auto (onnx where onnxruntime is installed and no pooling "
        "override is set, else torch; resolved when the config loads)")
    quantize: Literal["none", "int8"] = Field(
        "none", description="onnx: passage (and, unless query_quantize says otherwise, query) vectors by dynamic int8 after "
        "activation smoothing: about 2x onnx fp32's passages/s, but it moves every stored vector (hybrid MRR@10 -0.003 on "
        "KLUE against fp32: docs/performance.md). A build setting")
    query_quantize: Literal["none", "int8"] | None = Field(
        None, description="onnx: the query encoder's quantisation (unset: as quantize). int8 queries against fp32 passages "
        "keep int8's query speed with less of its error; not a build setting")
    precision: Precision = Field(Precision.AUTO, description="torch: auto (bf16 where the CPU has AMX/avx512_bf16) | fp32 | bf16")
    batch_size: int = Field(32, ge=1, description="Texts per encoding batch (onnx: at most)")
    batch_tokens: int = Field(1024, ge=16, description="onnx: most padded tokens per encoder batch (long passages go in small batches)")
    max_length: int = Field(512, ge=8, description="Max tokens per text (longer text is truncated)")
    query_prompt: str = Field("query: ", description="Prefix for queries (e5 convention)")
    passage_prompt: str = Field("passage: ", description="Prefix for passages (e5 convention)")
    normalize: bool = Field(True, description="L2-normalise vectors (inner product = cosine)")
    cache: bool = Field(True, description="Cache vectors by (model, text hash) so unchanged text is never re-embedded")
    query_cache: int = Field(1024, ge=0, description="Distinct recent query vectors kept in memory (LRU; 0: off)")
    device: str = Field("cpu", description="torch device")
    # openai-compatible provider
    base_url: str | None = Field(None, description="openai provider: API base URL")
    api_key_env: str = Field("OPENAI_API_KEY", description="openai provider: env var holding the API key")
    dimensions: int | None = Field(None, ge=1, description="openai provider: requested vector size")
    timeout: float = Field(60.0, gt=0, description="openai provider: request timeout in seconds")
    max_retries: int = Field(3, ge=0, description="openai provider: retries with backoff")

    @model_validator(mode="before")
    @classmethod
    def _provider_defaults(cls, data: Any) -> Any:
        """clip: no e5 prompts unless asked for (CLIP was trained on bare captions)."""
        if isinstance(data, dict) and data.get("provider") in (EmbeddingProvider.CLIP, EmbeddingProvider.CLIP.value):
            data = {"query_prompt": "", "passage_prompt": "", **data}
        return data

    @field_validator("pooling", mode="before")
    @classmethod
    def _pooling_list(cls, v: Any) -> Any:
        """A single mode or a list; duplicates rejected; stored in sentence-transformers order."""
        if v is None:
            return None
        items = [v] if isinstance(v, (str, PoolingMode)) else list(v)
        if not items:
            raise ValueError("give at least one of: " + ", ".join(m.value for m in PoolingMode))
        names = [getattr(i, "value", i) for i in items]
        bad = [n for n in names if n not in {m.value for m in PoolingMode}]
        if bad:
            raise ValueError(f"{bad[0]!r} is not one of: " + ", ".join(m.value for m in PoolingMode))
        if len(set(names)) != len(names):
            raise ValueError(f"repeated pooling mode in {names}")
        order = [m.value for m in PoolingMode]
        return sorted(names, key=order.index)

    @model_validator(mode="before")
    @classmethod
    def _resolve_auto_backend(cls, data: Any) -> Any:
        """``backend: auto`` -> onnx where it can run this model, else torch (downstream sees only the two)."""
        if isinstance(data, dict) and data.get("backend") == "auto":
            provider = getattr(data.get("provider"), "value", data.get("provider") or "huggingface")
            runs = provider == "huggingface" and not data.get("pooling") and importlib.util.find_spec("onnxruntime") is not None
            data = {**data, "backend": "onnx" if runs else "torch"}
        return data

    @model_validator(mode="after")
    def _onnx_for_huggingface_only(self) -> "EmbeddingConfig":
        if self.backend == "onnx" and self.provider != EmbeddingProvider.HUGGINGFACE:
            raise ValueError(f"backend onnx runs huggingface encoders only, not provider {self.provider.value!r}")
        if self.backend != "onnx" and "int8" in (self.quantize, self.query_quantize):
            raise ValueError(f"{'quantize' if self.quantize == 'int8' else 'query_quantize'} needs backend: onnx")
        return self

    @field_validator("text_model")
    @classmethod
    def _text_model_clip_only(cls, v: str | None, info: Any) -> str | None:
        if v is not None and info.data.get("provider") != EmbeddingProvider.CLIP:
            raise ValueError("only used with embedding.provider: clip")
        return v


# --------------------------------------------------------------------------- retrievers


class TokenizerConfig(_Section):
    name: str = Field("kiwi", description="kiwi | whitespace | regex | hf:<tokenizer id or path>")
    tags: list[str] | None = Field(None, description="kiwi: POS tag prefixes kept (default: content morphemes)")
    lowercase: bool = Field(True, description="Lowercase tokens")
    stopwords: list[str] = Field(default_factory=list, description="Tokens dropped after tokenising")
    multi_dict: bool = Field(True, description="kiwi: load kiwi's multi-word dictionary (proper nouns of several words); "
                                               "false halves kiwi's start-up")


class BM25Method(str, Enum):
    ROBERTSON = "robertson"
    LUCENE = "lucene"
    ATIRE = "atire"
    BM25L = "bm25l"
    BM25PLUS = "bm25+"


class BM25Config(_Section):
    type: Literal["bm25"] = "bm25"
    name: str = Field("bm25", description="Name of this retriever in fusion and reports")
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    k1: float = Field(1.2, gt=0, description="BM25 term-frequency saturation")
    b: float = Field(0.75, ge=0, le=1, description="BM25 length normalisation")
    method: BM25Method = Field(BM25Method.LUCENE, description="bm25s scoring variant")
    include_metadata: list[str] = Field(default_factory=list, description="Metadata keys indexed with the text")
    candidate_k: int = Field(40, ge=1, description="Candidates this retriever passes to fusion (tuned: docs/tuning.md)")
    weight: float = Field(1.0, ge=0, description="Weight in fusion")


class SparseVectorConfig(_Section):
    """Bag-of-words / TF-IDF baselines (scikit-learn vectorizers over a Korean tokenizer)."""

    type: Literal["tfidf", "bow"]
    name: str = Field("sparse", description="Name of this retriever in fusion and reports")
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    binary: bool = Field(False, description="bow: one-hot presence instead of counts")
    sublinear_tf: bool = Field(True, description="tfidf: 1 + log(tf)")
    candidate_k: int = Field(20, ge=1)
    weight: float = Field(1.0, ge=0)


class FaissIndexType(str, Enum):
    FLAT = "flat"
    HNSW = "hnsw"
    IVFPQ = "ivfpq"


class FaissConfig(_Section):
    index_type: FaissIndexType = Field(FaissIndexType.FLAT, description="flat | hnsw | ivfpq")
    hnsw_m: int = Field(32, ge=2, description="hnsw: neighbours per node (M)")
    ef_construction: int = Field(200, ge=1, description="hnsw: efConstruction")
    ef_search: int = Field(128, ge=1, description="hnsw: efSearch")
    nlist: int = Field(64, ge=1, description="ivfpq: inverted lists (capped to the corpus size)")
    pq_m: int = Field(16, ge=1, description="ivfpq: sub-quantisers (must divide the dimension)")
    nbits: int = Field(8, ge=1, le=16, description="ivfpq: bits per sub-quantiser code")
    nprobe: int = Field(8, ge=1, description="ivfpq: lists probed per query")


class DenseConfig(_Section):
    type: Literal["dense"] = "dense"
    name: str = Field("dense", description="Name of this retriever in fusion and reports")
    faiss: FaissConfig = Field(default_factory=FaissConfig)
    candidate_k: int = Field(40, ge=1, description="Candidates this retriever passes to fusion (tuned: docs/tuning.md)")
    weight: float = Field(0.7, ge=0, description="Weight in fusion (0.7 against BM25's 1.0 was best on KLUE/KorQuAD)")


RetrieverConfig = Annotated[Union[BM25Config, SparseVectorConfig, DenseConfig], Field(discriminator="type")]
RETRIEVER_TYPES = ("bm25", "tfidf", "bow", "dense")
QDRANT_RETRIEVER_TYPES = ("bm25", "dense")


class FusionMode(str, Enum):
    RRF = "rrf"
    RELATIVE_SCORE = "relative_score"
    DIST_BASED_SCORE = "dist_based_score"
    SIMPLE = "simple"


class FusionConfig(_Section):
    mode: FusionMode = Field(FusionMode.DIST_BASED_SCORE, description="rrf | relative_score | dist_based_score | simple (default tuned: docs/tuning.md)")
    rrf_k: float = Field(60.0, gt=0, description="rrf: rank constant k in 1/(k + rank)")


class RetrievalConfig(_Section):
    top_k: int = Field(5, ge=1, description="Passages returned per query")
    retrievers: list[RetrieverConfig] = Field(min_length=1, description="One or more retrievers; several are fused")
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    aggregate: Literal["chunk", "document"] = Field(
        "chunk", description="Fuse per chunk, or per document (each leg's best chunk score per document, then fusion; docs/tuning.md)")
    aggregate_rest: float = Field(
        0.0, ge=0, le=1, description="aggregate document: share of a document's other chunk scores added to its best (0 = max)")

    @field_validator("retrievers")
    @classmethod
    def _unique_names(cls, v: list[Any]) -> list[Any]:
        names = [r.name for r in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"retriever names must be unique; repeated: {', '.join(dupes)}")
        return v


# --------------------------------------------------------------------------- rerank / llm


class RerankConfig(_Section):
    enabled: bool = Field(False, description="Apply a cross-encoder to the fused top candidates")
    model: str = Field("BAAI/bge-reranker-v2-m3", description="CrossEncoder id or path (e.g. BAAI/bge-reranker-v2-m3, Dongjin-kr/ko-reranker)")
    candidates: int = Field(20, ge=1, description="Fused candidates scored by the cross-encoder; retrieval.top_k of them are returned")
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(512, ge=8)
    backend: Literal["torch", "onnx"] | None = Field(None, description="torch | onnx; unset: the same as embedding.backend")


class LLMProvider(str, Enum):
    NONE = "none"
    OPENAI_LIKE = "openai_like"
    OLLAMA = "ollama"


class LLMConfig(_Section):
    provider: LLMProvider = Field(LLMProvider.NONE, description="none (retrieval only) | openai_like | ollama")
    model: str | None = Field(None, description="Model name at the endpoint")
    base_url: str | None = Field(None, description="Endpoint base URL, e.g. http://localhost:8000/v1")
    api_key_env: str = Field("OPENAI_API_KEY", description="Env var holding the API key (never stored)")
    timeout: float = Field(60.0, gt=0)
    max_retries: int = Field(2, ge=0)
    temperature: float = Field(0.0, ge=0)
    max_tokens: int | None = Field(None, ge=1)


# --------------------------------------------------------------------------- serving


class ServingConfig(_Section):
    """How a running index serves and takes writes (``ragpipe serve``, ``Pipeline``)."""

    batch_wait_ms: float = Field(2.0, ge=0, le=100, description="Longest wait to gather concurrent query embeddings into one batch")
    max_batch: int = Field(16, ge=1, le=256, description="Most query embeddings computed in one batch")
    poll_seconds: float = Field(2.0, gt=0, description="How often the service looks for writes by other processes")
    compact_after: int = Field(200, ge=1, description="Logged changes after which a write also writes a new full version")
    write_lock_timeout: float = Field(600.0, gt=0, description="Seconds a writer waits for another process's writer lock")


class RuntimeConfig(_Section):
    """Compute threads (torch, ONNX Runtime, faiss, kiwi), set in one place; docs/performance.md says why."""

    threads: int | None = Field(
        None, ge=1, le=512,
        description="Threads per inference call; default: $OMP_NUM_THREADS if set, else the cores this process may use",
    )


# --------------------------------------------------------------------------- root


class Config(_Section):
    name: str = Field("default", description="Name of this pipeline")
    index_dir: str = Field("indexes/default", description="Index directory; relative to the config file's folder's parent project")
    data: DataConfig | None = Field(None, description="Source to ingest (evaluation setups take theirs from the QA set)")
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    retrieval: RetrievalConfig
    rerank: RerankConfig = Field(default_factory=RerankConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    base_dir: str = Field(".", description="Folder relative paths resolve against (set by the loader)")

    def resolve_path(self, value: str | None) -> Path | None:
        """Resolve a config path against ``base_dir`` (absolute paths are kept)."""
        if value is None:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else (Path(self.base_dir) / p)

    def uses_dense(self) -> bool:
        return any(r.type == "dense" for r in self.retrieval.retrievers)

    @model_validator(mode="after")
    def _storage_supports_retrievers(self) -> "Config":
        if self.storage.backend != "qdrant":
            return self
        for r in self.retrieval.retrievers:
            if r.type not in QDRANT_RETRIEVER_TYPES:
                raise ValueError(f"retrieval.retrievers[{r.name}].type: {r.type!r} cannot run on storage.backend qdrant "
                                 f"(allowed: {', '.join(QDRANT_RETRIEVER_TYPES)})")
            if r.type == "bm25" and r.method != BM25Method.LUCENE:
                raise ValueError(f"retrieval.retrievers[{r.name}].method: {r.method.value!r} cannot run on storage.backend qdrant, "
                                 "whose IDF is Lucene's (allowed: lucene)")
        if self.storage.fusion == "server_rrf" and len(self.retrieval.retrievers) > 1 and self.retrieval.fusion.mode != FusionMode.RRF:
            raise ValueError(f"storage.fusion: server_rrf fuses by RRF, but retrieval.fusion.mode is {self.retrieval.fusion.mode.value!r} "
                             "(set it to rrf, or storage.fusion: client)")
        return self

    def fingerprint(self) -> str:
        """sha256 of the resolved config (base_dir excluded)."""
        data = self.model_dump(mode="json", exclude={"base_dir"})
        return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
