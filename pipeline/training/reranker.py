"""The reranker trainer behind ``ragpipe finetune reranker``: a sentence-transformers ``CrossEncoder`` on a ``PairSet``.

The cross-encoder starts from an encoder available offline (the configured embedding model by default:
the prepared e5-small or a fine-tuned one) with a fresh one-logit head. Its hard negatives are mined by
the config's own first stage (BM25 and dense fused, ``training.mining``), so it learns on the candidates it
will later rerank. Loss (``--loss``): ``bce``, ``BinaryCrossEntropyLoss`` with ``pos_weight`` = negatives per
question, the pointwise loss sentence-transformers' reranker recipes found strongest; or ``listwise``,
``LambdaLoss`` (NDCG-weighted pairwise swaps within each question's list: its positive and mined negatives),
which optimises the ranking the reranker is used for. The torch and ONNX rerank backends return the
sigmoid of the score, which ranks alike. Validation reranks the first stage's candidates of
held-out questions (``CrossEncoderRerankingEvaluator``, MRR@10, positives not forced in); step 0 of the
curve is the first stage itself, so "beats base" means "reranking helps". ``rerank.candidates`` is then
chosen on validation among 10, 20 and 40.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

from ..core.errors import EvaluationError
from .manifest import write_manifest
from .pairs import PairSet
from .runs import TrainingRun, checkpoint_to_resume, freeze_word_embeddings, trainer_arguments

logger = logging.getLogger(__name__)

VAL_NAME = "val"
BEST_METRIC = f"eval_{VAL_NAME}_mrr@10"
CANDIDATE_CHOICES = (10, 20, 40)
LOSSES = ("bce", "listwise")


def _samples(pairs: PairSet, candidates: int, limit: int, seed: int) -> list[dict[str, Any]]:
    """Reranking samples of (up to ``limit``) validation questions: their first ``candidates`` first-stage chunks."""
    qids = list(pairs.val_queries)
    random.Random(seed).shuffle(qids)
    out = []
    for qid in qids[:limit]:
        ranked = pairs.val_candidates.get(qid, [])[:candidates]
        out.append({"query": pairs.val_queries[qid], "positive": [pairs.val_passages[i] for i in sorted(pairs.val_relevant[qid])],
                    "documents": [pairs.val_passages[i] for i in ranked]})
    return out


def _first_stage_mrr(samples: list[dict[str, Any]], k: int = 10) -> float:
    """MRR@k of the samples' documents in first-stage order (the evaluator's ``base_mrr@10``, without a model pass)."""
    ranks = [next((i for i, d in enumerate(s["documents"][:k]) if d in s["positive"]), None) for s in samples]
    return sum(1.0 / (r + 1) for r in ranks if r is not None) / max(1, len(samples))


def _objective(loss: str, model: Any, pairs: PairSet, negatives: int) -> tuple[Any, Any, dict[str, Any]]:
    """(training rows, loss object, extra trainer arguments) for ``bce`` or ``listwise``."""
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss, LambdaLoss

    if loss == "listwise":  # the positive first: LambdaLoss ranks by score, so the order given does not matter
        cols = {"query": [e.query for e in pairs.train], "docs": [[e.positive, *e.negatives] for e in pairs.train],
                "labels": [[1] + [0] * len(e.negatives) for e in pairs.train]}
        return Dataset.from_dict(cols), LambdaLoss(model), {}
    rows: dict[str, list[Any]] = {"query": [], "passage": [], "label": []}
    for e in pairs.train:
        for text, label in [(e.positive, 1.0), *((n, 0.0) for n in e.negatives)]:
            rows["query"].append(e.query)
            rows["passage"].append(text)
            rows["label"].append(label)
    return Dataset.from_dict(rows), BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(negatives))), {}


def _evaluator(samples: list[dict[str, Any]], batch_size: int) -> Any:
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator

    return CrossEncoderRerankingEvaluator(samples, at_k=10, always_rerank_positives=False, name=VAL_NAME, batch_size=batch_size,
                                          write_csv=False)


def train_reranker(pairs: PairSet, out_dir: Path, *, base_model: str, base_path: str, first_stage: str, epochs: float = 1.0,
                   batch_size: int = 16, lr: float = 5e-5, max_length: int = 256, val_questions: int = 200, eval_steps: int | None = None,
                   max_steps: int = -1, seed: int = 0, resume: bool = False, device: str | None = None, freeze_embeddings: bool = True,
                   loss: str = "bce", show_progress: bool = True) -> dict[str, Any]:
    """Train on ``pairs`` (their validation candidates ranked by ``first_stage``), keep the best checkpoint by validation
    MRR@10, choose ``rerank.candidates``; returns the manifest. ``loss``: ``bce`` (pointwise, ``batch_size`` pairs a
    step) or ``listwise`` (each question's positive and negatives as one list; ``batch_size`` questions a step)."""
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments

    if loss not in LOSSES:
        raise EvaluationError(f"--loss {loss}: choose one of {', '.join(LOSSES)}", key="loss", value=loss)
    negatives = int(pairs.source["negatives"])
    if negatives < 1:
        raise EvaluationError(f"--negatives {negatives}: a reranker needs at least one negative per question", key="negatives")
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    model = CrossEncoder(base_path, num_labels=1, max_length=max_length, device=device)
    frozen = freeze_word_embeddings(model) if freeze_embeddings else 0
    train, objective, extra = _objective(loss, model, pairs, negatives)
    run = TrainingRun(out_dir)
    args, precision = trainer_arguments(CrossEncoderTrainingArguments, run, model.device.type, rows=len(train), epochs=epochs,
                                        max_steps=max_steps, batch_size=batch_size, lr=lr, seed=seed, eval_steps=eval_steps,
                                        metric=BEST_METRIC, show_progress=show_progress, **extra)
    samples = _samples(pairs, 20, val_questions, seed)
    evaluator = _evaluator(samples, batch_size * 2)
    base_mrr = _first_stage_mrr(samples)
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=train, loss=objective, evaluator=evaluator)
    run.train(trainer, checkpoint_to_resume(run.checkpoints) if resume else None)
    trainer.model.save_pretrained(str(out_dir))
    choice = {c: _evaluator(_samples(pairs, c, val_questions, seed), batch_size * 2)(trainer.model)[f"{VAL_NAME}_mrr@10"]
              for c in CANDIDATE_CHOICES}
    best_c = max(CANDIDATE_CHOICES, key=lambda c: (round(choice[c], 3), -c))  # within 0.001, fewer candidates (faster)
    curve = [{"step": 0, "mrr@10": base_mrr}] + run.curve(trainer, BEST_METRIC)
    return write_manifest(out_dir, kind="reranker", base_model=base_model, base_path=base_path, pairs=pairs, curve=curve,
                          hyper={"epochs": epochs, "max_steps": max_steps, "batch_size": batch_size, "lr": lr, "negatives": negatives,
                                 "max_length": max_length, "loss": type(objective).__name__, "pos_weight": negatives if loss == "bce" else None,
                                 "frozen_parameters": frozen, "precision": precision, "seed": seed, "val_questions": val_questions,
                                 "first_stage": first_stage},
                          seconds=time.perf_counter() - t0, device=str(model.device),
                          extra={"candidates_mrr@10": {str(c): v for c, v in choice.items()},
                                 "recommended": {"rerank.candidates": best_c, "rerank.max_length": max_length}})

