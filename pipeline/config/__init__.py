"""Configuration: the pydantic schema, YAML loading with ``--set`` overrides, and the evaluation config."""

from .loading import apply_overrides, config_from_dict, describe_error, load_config, project_root_for, read_yaml
from .schema import (
    RETRIEVER_TYPES,
    BM25Config,
    BM25Method,
    ChunkingConfig,
    Config,
    DataConfig,
    DenseConfig,
    EmbeddingConfig,
    EmbeddingProvider,
    FaissConfig,
    FaissIndexType,
    FusionConfig,
    FusionMode,
    LLMConfig,
    LLMProvider,
    LoaderType,
    PoolingMode,
    Precision,
    RerankConfig,
    RetrievalConfig,
    RuntimeConfig,
    ServingConfig,
    SparseVectorConfig,
    SplitterType,
    StorageConfig,
    TokenizerConfig,
)

__all__ = [
    "apply_overrides", "config_from_dict", "describe_error", "load_config", "project_root_for", "read_yaml",
    "RETRIEVER_TYPES", "BM25Config", "BM25Method", "ChunkingConfig", "Config", "DataConfig", "DenseConfig",
    "EmbeddingConfig", "EmbeddingProvider", "FaissConfig", "FaissIndexType", "FusionConfig", "FusionMode", "LLMConfig",
    "LLMProvider", "LoaderType", "PoolingMode", "Precision", "RerankConfig", "RetrievalConfig", "RuntimeConfig", "ServingConfig", "SparseVectorConfig",
    "SplitterType", "StorageConfig", "TokenizerConfig",
]
