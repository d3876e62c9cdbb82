"""One place for progress bars: tqdm on stderr, off when not a terminal or when asked."""

from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

T = TypeVar("T")

_FORCED_OFF = False


def disable_progress(off: bool = True) -> None:
    """Turn every progress bar off (``--quiet``, the service), the libraries' model-loading bars too."""
    global _FORCED_OFF
    _FORCED_OFF = off
    if off:
        quiet_library_bars()


def quiet_library_bars() -> None:
    """No huggingface_hub / transformers bars (e.g. 'Loading weights') on stderr."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read when transformers is first imported
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def progress_enabled(show_progress: bool = True) -> bool:
    """True when a bar should be drawn."""
    if not show_progress or _FORCED_OFF or os.environ.get("RAGPIPE_NO_PROGRESS") == "1":
        return False
    return sys.stderr.isatty() or os.environ.get("RAGPIPE_FORCE_PROGRESS") == "1"


def progress(iterable: Iterable[T], desc: str, total: int | None = None, show_progress: bool = True, unit: str = "it") -> Iterable[T]:
    """Wrap ``iterable`` in a ``ragpipe:``-prefixed tqdm bar when enabled."""
    if not progress_enabled(show_progress):
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=f"ragpipe: {desc}", total=total, unit=unit, file=sys.stderr, dynamic_ncols=True)
