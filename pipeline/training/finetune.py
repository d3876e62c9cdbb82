"""``ragpipe finetune embedding | reranker``: mine pairs from a QA set with the config's retrievers, then train.

Mining (``training.mining``) needs the whole retrieval stack; the trainers (``training.embedding``,
``training.reranker``) need only sentence-transformers and a ``PairSet``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import Config
from ..core.errors import EvaluationError
from ..ingest.qa import QASet
from ..models.resolve import resolve_model
from .embedding import train_embedding
from .mining import first_stage_miner, first_stage_name, make_pairs
from .reranker import CANDIDATE_CHOICES, train_reranker


def finetune_embedding(cfg: Config, qa: QASet, out_dir: Path, *, negatives: int = 1, val_fraction: float = 0.1, seed: int = 0,
                       show_progress: bool = True, **train: Any) -> dict[str, Any]:
    """Mine ``negatives`` BM25 hard negatives per question, then ``train_embedding`` (``train``: its options)."""
    if cfg.embedding.provider.value != "huggingface":
        raise EvaluationError(f"finetune embedding needs a sentence-transformers model (embedding.provider: huggingface), "
                              f"not {cfg.embedding.provider.value}", key="embedding.provider")
    pairs = make_pairs(qa, cfg, negatives=negatives, val_fraction=val_fraction, seed=seed, show_progress=show_progress)
    e = cfg.embedding
    return train_embedding(pairs, out_dir, base_model=e.model, base_path=resolve_model(e.model), query_prompt=e.query_prompt,
                           passage_prompt=e.passage_prompt, max_length=e.max_length, seed=seed, show_progress=show_progress, **train)


def finetune_reranker(cfg: Config, qa: QASet, out_dir: Path, *, base: str | None = None, negatives: int = 4, val_fraction: float = 0.1,
                      seed: int = 0, show_progress: bool = True, **train: Any) -> dict[str, Any]:
    """Mine ``negatives`` first-stage hard negatives per question (and rank the validation candidates), then
    ``train_reranker`` from ``base`` (default: the config's embedding model; ``train``: its options)."""
    if negatives < 1:
        raise EvaluationError(f"--negatives {negatives}: a reranker needs at least one negative per question", key="negatives")
    pairs = make_pairs(qa, cfg, negatives=negatives, val_fraction=val_fraction, seed=seed, miner=first_stage_miner(cfg, show_progress),
                       val_depth=max(CANDIDATE_CHOICES), show_progress=show_progress)
    base = base or cfg.embedding.model
    return train_reranker(pairs, out_dir, base_model=base, base_path=resolve_model(base), first_stage=first_stage_name(cfg), seed=seed,
                          show_progress=show_progress, **train)
