"""``ragpipe_finetune.json``: what a fine-tuned model was made from, and the guard against evaluating on it.

The manifest names the base model, the training QA set (name, path, fingerprint), hashes of every training
question and of the documents its passages came from, the hyper-parameters, the validation curve and the wall time. ``check_overlap``
refuses an evaluation whose questions or passages the model was trained on.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..core.errors import EvaluationError
from ..core.io import read_json, write_json_atomic
from ..core.versions import library_versions
from .pairs import PairSet, text_hash

logger = logging.getLogger(__name__)

MANIFEST = "ragpipe_finetune.json"


def write_manifest(out_dir: Path, *, kind: str, base_model: str, base_path: str, pairs: PairSet, curve: Sequence[Mapping[str, float]],
                   hyper: Mapping[str, Any], seconds: float, device: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    trained = [p for p in curve if p["step"] > 0]
    saved = max(trained, key=lambda p: p["mrr@10"]) if trained else None  # the checkpoint written out (step 0 is the base)
    base = next((p for p in curve if p["step"] == 0), None)
    if saved and base and saved["mrr@10"] < base["mrr@10"]:
        logger.warning("no checkpoint beat the base model on validation MRR@10 (%.4f at step %d < %.4f before training): "
                       "the saved model is worse than %s", saved["mrr@10"], saved["step"], base["mrr@10"], base_model)
    manifest = {"kind": kind, "base_model": base_model, "base_path": base_path, "train_set": pairs.source,
                "hyperparameters": dict(hyper), "validation_curve": list(curve), "best": saved,
                "beats_base": bool(saved and base and saved["mrr@10"] > base["mrr@10"]), "train_seconds": round(seconds, 1),
                "device": device, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "libraries": library_versions(),
                "train_question_hashes": pairs.train_question_hashes, "train_document_hashes": pairs.train_document_hashes,
                **dict(extra or {})}
    write_json_atomic(Path(out_dir) / MANIFEST, manifest)
    return manifest


def read_manifest(model_path: str | Path) -> dict[str, Any] | None:
    """The manifest of a fine-tuned model folder, or None for any other model."""
    path = Path(model_path) / MANIFEST
    return read_json(path) if path.exists() else None


def trained_models(cfg: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """(role, model folder, manifest) for each fine-tuned model a config uses (``embedding``, ``rerank``)."""
    wanted = []
    if cfg.uses_dense():
        wanted.append(("embedding", cfg.embedding.model))
    if cfg.rerank.enabled:
        wanted.append(("rerank", cfg.rerank.model))
    out = []
    for role, name in wanted:
        manifest = read_manifest(name) if Path(name).is_dir() else None
        if manifest is not None:
            out.append((role, name, manifest))
    return out


def check_overlap(manifest: Mapping[str, Any], questions: Sequence[str], documents: Sequence[str], where: str,
                  allow: bool = False) -> dict[str, int]:
    """Counts of evaluation questions and documents the model saw in training; raises unless ``allow``."""
    seen_q, seen_d = set(manifest.get("train_question_hashes", [])), set(manifest.get("train_document_hashes", []))
    overlap = {"questions": sum(text_hash(q) in seen_q for q in questions), "documents": sum(text_hash(d) in seen_d for d in documents)}
    if (overlap["questions"] or overlap["documents"]) and not allow:
        train = manifest.get("train_set", {}).get("name", "?")
        raise EvaluationError(f"{where}: the model was trained on {train} and has seen {overlap['questions']} of these questions and "
                              f"{overlap['documents']} of these documents; evaluate on another set, or pass --allow-train-overlap",
                              key="evaluation.dataset")
    return overlap
