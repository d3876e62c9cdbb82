"""``ragpipe finetune embedding | reranker``: train on your own QA pairs (docs/finetune.md)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .cli_base import ConfigOpt, SetOpt, _run, app

finetune_app = typer.Typer(no_args_is_help=True, help="Fine-tune models on a QA set (question -> relevant passage).")
app.add_typer(finetune_app, name="finetune")

TrainOpt = typer.Option(..., "--train", help="QA set to train on: a KLUE MRC / SQuAD-KorQuAD file or a BEIR folder")
KindOpt = typer.Option(None, "--kind", help="QA set kind (klue_mrc, squad, beir); default: guessed from the path")
ValOpt = typer.Option(0.1, "--val-fraction", help="Share of documents held out for validation")
EvalStepsOpt = typer.Option(None, "--eval-steps", min=1, help="Validate and checkpoint every N steps (default: 4 times an epoch)")
MaxStepsOpt = typer.Option(-1, "--max-steps", help="Stop after N steps (-1: the epochs decide)")
SeedOpt = typer.Option(0, "--seed", help="Shuffles and the validation split (keep it the same for both models)")
ResumeOpt = typer.Option(False, "--resume", help="Go on from the last checkpoint in OUT/checkpoints")
DeviceOpt = typer.Option(None, "--device", help="cuda, cpu, ... (default: cuda when present)")


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
    scale: float = typer.Option(100.0, "--scale", min=1, help="MultipleNegativesRankingLoss scale (1 / temperature; e5: 100)"),
    val_fraction: float = ValOpt,
    eval_steps: Optional[int] = EvalStepsOpt,
    max_steps: int = MaxStepsOpt,
    seed: int = SeedOpt,
    resume: bool = ResumeOpt,
    device: Optional[str] = DeviceOpt,
    set_: Optional[List[str]] = SetOpt,
) -> None:
    """Fine-tune the configured embedding model; keeps the best checkpoint by validation MRR@10."""

    def body() -> None:
        from ..training.finetune import finetune_embedding as run

        cfg, qa = _inputs(config, set_, train, kind)
        folder = out or Path("models") / f"{Path(cfg.embedding.model).name}-ft-{qa.name.replace(':', '-')}"
        manifest = run(cfg, qa, folder, epochs=epochs, batch_size=batch_size, lr=lr, negatives=negatives, scale=scale,
                       val_fraction=val_fraction, eval_steps=eval_steps, max_steps=max_steps, seed=seed, resume=resume, device=device)
        _report(manifest, folder, "the base model", f"--set embedding.model={folder}")

    _run(body)


@finetune_app.command("reranker")
def finetune_reranker(
    config: Path = ConfigOpt,
    train: Path = TrainOpt,
    kind: Optional[str] = KindOpt,
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: models/<base>-reranker-<train set>)"),
    base: Optional[str] = typer.Option(None, "--base", help="Encoder to start from (default: the config's embedding.model)"),
    epochs: float = typer.Option(1.0, "--epochs", min=0.01),
    batch_size: int = typer.Option(16, "--batch-size", min=2, help="(question, passage) pairs per step"),
    lr: float = typer.Option(5e-5, "--lr", min=0),
    negatives: int = typer.Option(4, "--negatives", min=1, help="First-stage (BM25 + dense) hard negatives per question"),
    max_length: int = typer.Option(256, "--max-length", min=16, help="Tokens of question + passage (use the same rerank.max_length)"),
    loss: str = typer.Option("bce", "--loss", help="bce (pointwise; --batch-size pairs a step) | listwise (--batch-size questions a step)"),
    val_fraction: float = ValOpt,
    val_questions: int = typer.Option(200, "--val-questions", min=1, help="Validation questions reranked at each checkpoint"),
    eval_steps: Optional[int] = EvalStepsOpt,
    max_steps: int = MaxStepsOpt,
    seed: int = SeedOpt,
    resume: bool = ResumeOpt,
    device: Optional[str] = DeviceOpt,
    set_: Optional[List[str]] = SetOpt,
) -> None:
    """Train a cross-encoder reranker; keeps the best checkpoint by validation MRR@10 and picks rerank.candidates."""

    def body() -> None:
        from ..training.finetune import finetune_reranker as run

        cfg, qa = _inputs(config, set_, train, kind)
        folder = out or Path("models") / f"{Path(base or cfg.embedding.model).name}-reranker-{qa.name.replace(':', '-')}"
        manifest = run(cfg, qa, folder, base=base, epochs=epochs, batch_size=batch_size, lr=lr, negatives=negatives, max_length=max_length, loss=loss,
                       val_fraction=val_fraction, val_questions=val_questions, eval_steps=eval_steps, max_steps=max_steps, seed=seed,
                       resume=resume, device=device)
        rec = manifest["recommended"]
        _report(manifest, folder, "the first stage alone",
                f"--set rerank.enabled=true --set rerank.model={folder} --set rerank.candidates={rec['rerank.candidates']} "
                f"--set rerank.max_length={rec['rerank.max_length']}")

    _run(body)


def _inputs(config: Path, set_: Optional[List[str]], train: Path, kind: Optional[str]) -> tuple:
    """The loaded config and the QA set to train on (its kind guessed from the path unless given)."""
    from ..config import load_config
    from ..ingest.qa import read_qa_set

    return load_config(config, set_ or []), read_qa_set(kind or _guess_kind(train), train)


def _report(manifest: dict, folder: Path, base: str, use: str) -> None:
    curve = ", ".join(f"{p['step']}: {p['mrr@10']:.3f}" for p in manifest["validation_curve"])
    typer.echo(f"trained model at {folder} (validation MRR@10 by step, 0 = {base}: {curve}; "
               f"{manifest['train_seconds']:.0f} s on {manifest['device']})")
    if manifest["best"] and not manifest["beats_base"]:
        typer.echo(f"warning: no checkpoint beat {base} on validation (kept step {manifest['best']['step']})", err=True)
    typer.echo(f"use it with: {use}")
