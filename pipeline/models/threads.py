"""One knob for compute threads (``runtime.threads``): torch, ONNX Runtime, faiss and kiwi.

On a small shared machine, libraries that each start one thread per core oversubscribe it: a dense query
that takes 0.15 s with one thread took 1.2 s under load with torch's default. ``configure_threads`` is
called once per process (CLI, service, evaluation) before models load; the libraries read the value from
here or from ``OMP_NUM_THREADS``, which it sets for the ones imported later.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

logger = logging.getLogger(__name__)

_THREADS: int | None = None

# Model inference (query-embedding batches, reranking) in a serving process runs one call at a time, each
# on ``compute_threads()`` threads, so concurrent requests never run more compute threads than cores.
INFERENCE_LOCK = threading.Lock()


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def compute_threads() -> int:
    """Threads per inference call: the configured value, else ``$OMP_NUM_THREADS``, else the available cores."""
    if _THREADS:
        return _THREADS
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else available_cores()


def configure_threads(threads: int | None = None) -> int:
    """Set torch and faiss (and, through ``compute_threads``, ONNX Runtime and kiwi) to ``threads``; return it.

    torch and faiss get one value (they may share one OpenMP runtime). torch's setting reaches threads
    started later (the service's batching thread); faiss's reaches the calling thread and, through
    ``OMP_NUM_THREADS``, a faiss imported later. A later call with ``threads=None`` keeps an earlier
    explicit value (one process, one setting).
    """
    global _THREADS
    if threads:
        _THREADS = threads
    n = compute_threads()
    os.environ["OMP_NUM_THREADS"] = str(n)  # read by torch and faiss when imported after this
    if "torch" in sys.modules:
        import torch

        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
    if "faiss" in sys.modules:
        import faiss

        faiss.omp_set_num_threads(n)
    logger.debug("compute threads: %d per inference call", n)
    return n
