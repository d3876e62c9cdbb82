"""What every training command shares: checkpoints, resume, Ctrl-C, precision and the validation curve."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from ..core.errors import EvaluationError

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def training_precision(device_type: str) -> str:
    """bf16 on CUDA and on CPUs with native bf16, else fp32."""
    if device_type == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    from ..models.resolve import cpu_supports_bf16

    return "bf16" if cpu_supports_bf16() else "fp32"


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
