"""ragpipe: a Korean-first hybrid retrieval pipeline (BM25 over morphemes + FAISS) on LlamaIndex."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Pipeline", "Config", "load_config", "RagpipeError", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .api import Pipeline
    from .config import Config, load_config
    from .errors import RagpipeError


def __getattr__(name: str) -> Any:
    """Import lazily so that ``ragpipe --help`` stays light."""
    if name == "Pipeline":
        from .api import Pipeline

        return Pipeline
    if name in ("Config", "load_config"):
        from . import config

        return getattr(config, name)
    if name == "RagpipeError":
        from .errors import RagpipeError

        return RagpipeError
    raise AttributeError(name)
