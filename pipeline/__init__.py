"""ragpipe: a Korean-first hybrid retrieval pipeline (BM25 over morphemes + FAISS) on LlamaIndex.

The import package is ``pipeline``; its subpackages are the layers (docs/architecture.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .core.versions import __version__

__all__ = ["Pipeline", "Config", "load_config", "RagpipeError", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .config import Config, load_config
    from .core.errors import RagpipeError
    from .serving.pipeline import Pipeline


def __getattr__(name: str) -> Any:
    """Import lazily so that ``ragpipe --help`` stays light."""
    if name == "Pipeline":
        from .serving.pipeline import Pipeline

        return Pipeline
    if name in ("Config", "load_config"):
        from . import config

        return getattr(config, name)
    if name == "RagpipeError":
        from .core.errors import RagpipeError

        return RagpipeError
    raise AttributeError(name)
