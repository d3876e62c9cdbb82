"""One place for progress: tqdm bars on a terminal; on a log (stderr not a terminal), a line per long stage.

``RAGPIPE_FORCE_PROGRESS=1`` draws bars anyway; ``RAGPIPE_NO_PROGRESS=1`` or ``--quiet`` turns both off.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Iterator, TypeVar

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


LINE_EVERY_S = 30.0  # a log gets a line this often during a stage
LINE_MIN_S = 2.0  # and one at the end of a stage that took at least this long


def progress(iterable: Iterable[T], desc: str, total: int | None = None, show_progress: bool = True, unit: str = "it") -> Iterable[T]:
    """Wrap ``iterable`` in a ``ragpipe:``-prefixed tqdm bar on a terminal, or in progress lines on a log."""
    if progress_enabled(show_progress):
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=f"ragpipe: {desc}", total=total, unit=unit, file=sys.stderr, dynamic_ncols=True)
    if not show_progress or _FORCED_OFF or os.environ.get("RAGPIPE_NO_PROGRESS") == "1":
        return iterable
    return _lines(iterable, desc, total if total is not None else getattr(iterable, "__len__", lambda: None)(), unit)


def _lines(iterable: Iterable[T], desc: str, total: int | None, unit: str) -> Iterator[T]:
    """``iterable``, writing ``ragpipe: DESC: n/total UNIT (rate/s)`` to stderr every LINE_EVERY_S and at the end."""
    start = last = time.monotonic()
    done = 0

    def line(final: bool) -> None:
        seconds = max(time.monotonic() - start, 1e-9)
        count = f"{done}/{total}" if total and not final else str(done)
        took = f" in {seconds:.1f} s" if final else ""
        rate = done / seconds  # slow units (a 256-text chunk) read as seconds each, not "0.0 chunk/s"
        speed = f"{rate:.1f} {unit}/s" if rate >= 0.1 or not done else f"{seconds / done:.1f} s/{unit}"
        print(f"ragpipe: {desc}: {count} {unit}{took} ({speed})", file=sys.stderr, flush=True)

    for item in iterable:
        yield item
        done += 1
        if time.monotonic() - last >= LINE_EVERY_S:
            line(final=False)
            last = time.monotonic()
    if time.monotonic() - start >= LINE_MIN_S:
        line(final=True)
