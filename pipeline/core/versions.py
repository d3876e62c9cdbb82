"""The ragpipe version and the installed versions of the libraries results depend on."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Sequence

__version__ = "0.1.0"

LIBRARIES = ("ragpipe", "llama-index-core", "bm25s", "faiss-cpu", "kiwipiepy", "sentence-transformers", "transformers",
             "torch", "numpy", "scikit-learn", "scipy", "pandas", "matplotlib")


def library_versions(packages: Sequence[str] = LIBRARIES) -> dict[str, str]:
    """``{"python": ..., package: version}`` for the installed ``packages`` (absent ones are left out)."""
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
