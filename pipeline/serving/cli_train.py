"""``ragpipe finetune embedding`` (and, later, ``reranker``): train on your own QA pairs (docs/finetune.md)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .cli_base import ConfigOpt, SetOpt, _run, app

finetune_app = typer.Typer(no_args_is_help=True, help="Fine-tune models on a QA set (question -> relevant passage).")
app.add_typer(finetune_app, name="finetune")

TrainOpt = typer.Option(..., "--train", help="QA set to train on: a KLUE MRC / SQuAD-KorQuAD file or a BEIR folder")
KindOpt = typer.Option(None, "--kind", help="QA set kind (klue_mrc, squad, beir); default: guessed from the path")


def _guess_kind(path: Path | str) -> str:
    """``beir`` for a folder, ``klue_mrc`` for a file named like KLUE, ``squad`` for other JSON with SQuAD's
    ``data`` list, else ``klue_mrc`` (the flattened JSONL/Parquet layouts)."""
    p = Path(path)
    if p.is_dir():
        return "beir"
    if "klue" in p.name.lower():
        return "klue_mrc"
    if p.suffix == ".json" and p.is_file():  # a missing file is left to the reader, which names it
        with p.open(encoding="utf-8") as fh:
            head = fh.read(4096)
        if '"data"' in head and ('"paragraphs"' in head or '"version"' in head):
            return "squad"
    return "klue_mrc"


@finetune_app.command("embedding")
def finetune_embedding(
    config: Path = ConfigOpt,
    train: Path = TrainOpt,
    kind: Optional[str] = KindOpt,
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: models/<base>-ft-<train set>)"),
    epochs: float = typer.Option(1.0, "--epochs", min=0.01),
    batch_size: int = typer.Option(32, "--batch-size", min=2, help="In-batch negatives grow with it"),
    lr: float = typer.Option(2e-5, "--lr", min=0),
    negatives: int = typer.Option(1, "--negatives", min=0, help="BM25-mined hard negatives per question"),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Share of documents held out for validation"),
    max_steps: int = typer.Option(-1, "--max-steps", help="Stop after N steps (-1: the epochs decide)"),
    seed: int = typer.Option(0, "--seed"),
    resume: bool = typer.Option(False, "--resume", help="Go on from the last checkpoint in OUT/checkpoints"),
    device: Optional[str] = typer.Option(None, "--device", help="cuda, cpu, ... (default: cuda when present)"),
    set_: Optional[List[str]] = SetOpt,
) -> None:
    """Fine-tune the configured embedding model; keeps the best checkpoint by validation MRR@10."""

    def body() -> None:
        from ..config import load_config
        from ..ingest.qa import read_qa_set
        from ..training.embedding import finetune_embedding as run

        cfg = load_config(config, set_ or [])
        qa = read_qa_set(kind or _guess_kind(train), train)
        folder = out or Path("models") / f"{Path(cfg.embedding.model).name}-ft-{qa.name.replace(':', '-')}"
        manifest = run(cfg, qa, folder, epochs=epochs, batch_size=batch_size, lr=lr, negatives=negatives, val_fraction=val_fraction,
                       max_steps=max_steps, seed=seed, resume=resume, device=device)
        curve = ", ".join(f"{p['step']}: {p['mrr@10']:.3f}" for p in manifest["validation_curve"])
        typer.echo(f"fine-tuned model at {folder} (validation MRR@10 by step: {curve}; {manifest['train_seconds']:.0f} s on {manifest['device']})")
        if manifest["best"] and not manifest["beats_base"]:
            typer.echo(f"warning: no checkpoint beat the base model on validation (kept step {manifest['best']['step']}); "
                       "the base model is the better choice", err=True)
        typer.echo(f"use it with: --set embedding.model={folder}")

    _run(body)
