"""What every training command shares: checkpoints, resume, Ctrl-C, precision and the validation curve."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from ..core.errors import EvaluationError
from ..core.hardware import cpu_supports_bf16

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def training_precision(device_type: str) -> str:
    """bf16 on CUDA and on CPUs with native bf16, else fp32."""
    if device_type == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_supports_bf16() else "fp32"


def trainer_arguments(args_class: Any, run: "TrainingRun", device_type: str, *, rows: int, epochs: float, max_steps: int, batch_size: int,
                      lr: float, seed: int, eval_steps: int | None, metric: str, show_progress: bool, **extra: Any) -> tuple[Any, str]:
    """The training arguments both commands share (sentence-transformers' or CrossEncoder's ``args_class``):
    warm-up 10%, bf16 where ``training_precision`` says so, validate and checkpoint every ``eval_steps``
    (default: four times an epoch of ``rows``), keep the best by ``metric``. Returns (arguments, precision)."""
    precision = training_precision(device_type)
    every = eval_steps or max(1, max(1, rows // batch_size) // 4)
    args = args_class(
        output_dir=str(run.checkpoints), num_train_epochs=epochs, max_steps=max_steps, per_device_train_batch_size=batch_size,
        learning_rate=lr, warmup_steps=0.1, seed=seed, bf16=precision == "bf16", fp16=False, use_cpu=device_type == "cpu",
        eval_strategy="steps", eval_steps=every, save_strategy="steps", save_steps=every, save_total_limit=2,
        load_best_model_at_end=True, metric_for_best_model=metric, greater_is_better=True,
        logging_steps=max(1, every // 2), report_to="none", disable_tqdm=not show_progress, dataloader_drop_last=True, **extra)
    return args, precision


def freeze_word_embeddings(model: Any) -> int:
    """Freeze the token-embedding table of a sentence-transformers model or CrossEncoder (96M of e5-small's
    118M weights; a QA set touches few of its rows): the optimiser skips it, which saves time and memory and
    keeps unseen tokens where pre-training put them. Returns the number of frozen weights."""
    table = model[0].auto_model.get_input_embeddings()
    table.weight.requires_grad_(False)
    return int(table.weight.numel())


def checkpoint_to_resume(folder: Path) -> str:
    """The newest ``checkpoint-N`` in ``folder``; a clear error when there is none."""
    found = sorted((int(m.group(1)), p) for p in Path(folder).glob("checkpoint-*") if (m := _CHECKPOINT.match(p.name)))
    if not found:
        raise EvaluationError(f"{folder}: no checkpoint to resume from; run without --resume", path=folder)
    return str(found[-1][1])


class TrainingRun:
    """The output folder of one training run: ``<out>/checkpoints/checkpoint-N`` while it runs."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.checkpoints = self.out_dir / "checkpoints"

    def train(self, trainer: Any, resume_from: str | None) -> None:
        """``trainer.train``; Ctrl-C keeps the last checkpoint and says how to resume."""
        try:
            trainer.train(resume_from_checkpoint=resume_from)
        except KeyboardInterrupt:
            last = checkpoint_to_resume(self.checkpoints) if any(self.checkpoints.glob("checkpoint-*")) else None
            msg = f"interrupted; the last checkpoint is {last}: add --resume to go on" if last else "interrupted before the first checkpoint"
            raise EvaluationError(msg, path=self.checkpoints) from None

    @staticmethod
    def curve(trainer: Any, metric: str) -> list[dict[str, float]]:
        """(step, validation metric) at each evaluation, from the trainer's log."""
        return [{"step": int(row["step"]), "mrr@10": float(row[metric])} for row in trainer.state.log_history if metric in row]
