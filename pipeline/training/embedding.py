"""The embedding trainer behind ``ragpipe finetune embedding``: a sentence-transformers model on a ``PairSet``.

sentence-transformers' own ``SentenceTransformerTrainer`` with ``MultipleNegativesRankingLoss`` (scale 100 by
default: e5 was trained at temperature 0.01, and the loss's usual 20 reshapes its similarity range): each
question against its positive passage, the other questions' passages in the batch, and its BM25-mined
hard negatives (``training.pairs``), with the e5 ``query: `` / ``passage: `` prompts on the columns. The
validation split is scored with ``InformationRetrievalEvaluator`` (MRR@10) before training and at every
checkpoint; the best checkpoint is kept. The output folder is a standard sentence-transformers model plus
``ragpipe_finetune.json`` (``training.manifest``), so ``embedding.model: <out>`` uses it unchanged.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from .manifest import write_manifest
from .pairs import PairSet
from .runs import TrainingRun, checkpoint_to_resume, freeze_word_embeddings, trainer_arguments

logger = logging.getLogger(__name__)

VAL_NAME = "val"
BEST_METRIC = f"eval_{VAL_NAME}_cosine_mrr@10"


def _evaluator(pairs: PairSet, query_prompt: str, passage_prompt: str, batch_size: int) -> Any:
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    return InformationRetrievalEvaluator(
        pairs.val_queries, pairs.val_passages, pairs.val_relevant, name=VAL_NAME,
        mrr_at_k=[10], ndcg_at_k=[10], accuracy_at_k=[1, 10], precision_recall_at_k=[10], map_at_k=[10],
        query_prompt=query_prompt, corpus_prompt=passage_prompt, batch_size=batch_size, write_csv=False)


def train_embedding(pairs: PairSet, out_dir: Path, *, base_model: str, base_path: str, query_prompt: str, passage_prompt: str,
                    max_length: int, epochs: float = 1.0, batch_size: int = 32, lr: float = 2e-5, scale: float = 100.0,
                    freeze_embeddings: bool = True, eval_steps: int | None = None, max_steps: int = -1, seed: int = 0,
                    resume: bool = False, device: str | None = None, show_progress: bool = True) -> dict[str, Any]:
    """Train on ``pairs`` (every mined negative a column), keep the best checkpoint by validation MRR@10, write the
    model and its manifest; returns the manifest. ``base_model`` is the name recorded, ``base_path`` the folder loaded."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    negatives = int(pairs.source["negatives"])
    model = SentenceTransformer(base_path, device=device)
    model.max_seq_length = max_length
    frozen = freeze_word_embeddings(model) if freeze_embeddings else 0
    columns = {"anchor": [e.query for e in pairs.train], "positive": [e.positive for e in pairs.train]}
    for i in range(negatives):
        columns[f"negative_{i + 1}"] = [e.negatives[i] for e in pairs.train]
    train = Dataset.from_dict(columns)
    prompts = {"anchor": query_prompt, **{c: passage_prompt for c in columns if c != "anchor"}}
    run = TrainingRun(out_dir)
    args, precision = trainer_arguments(SentenceTransformerTrainingArguments, run, model.device.type, rows=len(train), epochs=epochs,
                                        max_steps=max_steps, batch_size=batch_size, lr=lr, seed=seed, eval_steps=eval_steps,
                                        metric=BEST_METRIC, show_progress=show_progress, batch_sampler=BatchSamplers.NO_DUPLICATES,
                                        prompts=prompts)
    evaluator = _evaluator(pairs, query_prompt, passage_prompt, batch_size)
    before = evaluator(model)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=MultipleNegativesRankingLoss(model, scale=scale),
                                         evaluator=evaluator)
    run.train(trainer, checkpoint_to_resume(run.checkpoints) if resume else None)
    trainer.model.save(str(out_dir))
    curve = [{"step": 0, "mrr@10": before[f"{VAL_NAME}_cosine_mrr@10"]}] + run.curve(trainer, BEST_METRIC)
    return write_manifest(out_dir, kind="embedding", base_model=base_model, base_path=base_path, pairs=pairs, curve=curve,
                          hyper={"epochs": epochs, "max_steps": max_steps, "batch_size": batch_size, "lr": lr, "negatives": negatives,
                                 "scale": scale, "frozen_parameters": frozen, "max_length": max_length,
                                 "loss": "MultipleNegativesRankingLoss", "precision": precision,
                                 "prompts": prompts, "seed": seed},
                          seconds=time.perf_counter() - t0, device=str(model.device))
