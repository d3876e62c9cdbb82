"""The writer lock: one writer at a time per index folder, across processes (``filelock``).

Ingest, upsert, delete and compaction take it; readers never do. A second writer waits, saying so once,
and fails with a one-line ``IndexStateError`` after ``timeout`` seconds. The holder first removes the
temp folders of writers that were killed mid-write.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..core.errors import IndexStateError
from ..core.io import remove_dead_temp_folders

logger = logging.getLogger(__name__)

LOCK_FILE = ".writer.lock"


@contextmanager
def writer_lock(folder: Path, timeout: float = 600.0) -> Iterator[None]:
    """Hold ``<folder>/.writer.lock`` for the duration of the block."""
    from filelock import FileLock, Timeout

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / LOCK_FILE), is_singleton=True)  # re-entrant for nested writes in one process
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.warning("%s: another process is writing this index; waiting up to %.0f s for it", folder, timeout)
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise IndexStateError(f"{folder}: another process kept the writer lock for {timeout:.0f} s; try again when it is "
                                  "done (an ingest, upsert or compaction)", path=folder) from None
    try:
        remove_dead_temp_folders(folder)
        yield
    finally:
        lock.release()
