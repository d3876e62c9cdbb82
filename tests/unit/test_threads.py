"""runtime.threads: one value reaches torch, faiss, ONNX Runtime and kiwi, and threads started later."""

from __future__ import annotations

import os

import faiss
import pytest
import torch

from pipeline.config import config_from_dict
from pipeline.core.errors import ConfigError
from pipeline.models import threads


@pytest.fixture
def restore_threads(monkeypatch: pytest.MonkeyPatch):
    torch_before, faiss_before = torch.get_num_threads(), faiss.omp_get_max_threads()
    monkeypatch.setattr(threads, "_THREADS", None)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    yield
    torch.set_num_threads(torch_before)
    faiss.omp_set_num_threads(faiss_before)


def test_configured_threads_reach_torch_and_faiss(restore_threads: None) -> None:
    assert threads.configure_threads(1) == 1
    assert torch.get_num_threads() == 1 and faiss.omp_get_max_threads() == 1
    assert threads.compute_threads() == 1

    assert os.environ["OMP_NUM_THREADS"] == "1"  # libraries imported later read it


def test_default_is_omp_num_threads_then_cores(restore_threads: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert threads.configure_threads(None) == 2  # $OMP_NUM_THREADS
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads.compute_threads() == threads.available_cores()


def test_threads_started_later_inherit_the_setting(restore_threads: None) -> None:
    import threading

    threads.configure_threads(1)
    seen: dict[str, int] = {}
    worker = threading.Thread(target=lambda: seen.update(torch=torch.get_num_threads()))
    worker.start()
    worker.join()
    assert seen == {"torch": 1}  # the service's batching thread


def test_onnx_session_uses_the_configured_threads(restore_threads: None, tiny_model_dir, tmp_path, monkeypatch) -> None:
    from pipeline.models.onnx_embedding import OnnxEmbedding

    monkeypatch.setenv("RAGPIPE_MODEL_DIR", str(tmp_path))
    threads.configure_threads(1)
    model = OnnxEmbedding(tiny_model_dir, query_quantize="int8", max_length=64)
    assert model._passages() is not model._queries  # int8 queries, fp32 passages: two sessions, both configured
    for session in (model._queries, model._passages()):
        options = session.get_session_options()
        assert options.intra_op_num_threads == 1
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"  # faiss and kiwi need the cores


def test_threads_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="runtime.threads"):
        config_from_dict({"runtime": {"threads": 0}, "retrieval": {"retrievers": [{"type": "bm25"}]}})
