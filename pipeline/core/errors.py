"""Exception hierarchy: one base class, a few families, each naming what went wrong."""

from __future__ import annotations

from typing import Any


class RagpipeError(Exception):
    """Base class for every error ragpipe raises on purpose."""

    def __init__(self, message: str, *, path: Any = None, key: str | None = None, value: Any = None) -> None:
        super().__init__(message)
        self.path = path
        self.key = key
        self.value = value


class ConfigError(RagpipeError):
    """Bad YAML, unknown key, invalid value or unknown component name."""


class LoaderError(RagpipeError):
    """A source file or dataset can't be read, decoded or is empty."""


class ModelResolutionError(RagpipeError):
    """A model name can't be resolved to weights (lists what was tried)."""


class IndexStateError(RagpipeError):
    """The index directory is missing, incomplete or corrupt."""


class IndexMismatchError(IndexStateError):
    """The persisted index was built with other settings than the config asks for."""


class OwnershipError(RagpipeError):
    """An ingest from the source would undo documents written through the API (``upsert`` / ``POST /documents``)."""


class RetrievalError(RagpipeError):
    """A query can't be answered (empty query, bad filter, ...)."""


class EvaluationError(RagpipeError):
    """An evaluation dataset or run is invalid."""
