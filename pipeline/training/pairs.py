"""Training pairs as plain data: what ``training.mining`` makes and the trainers consume.

No LlamaIndex, retriever or config import: a ``PairSet`` saved with ``save`` trains on a machine that has
sentence-transformers and nothing else of the mining stack (mine on one box, train on a GPU box).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import EvaluationError
from ..core.io import read_json, write_json_atomic

FORMAT = "ragpipe-pairs/1"


def text_hash(text: str) -> str:
    """A short, whitespace-insensitive hash of a question or passage (what a model manifest records)."""
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()[:16]


@dataclass
class Example:
    """One training example: a question, its positive passage and hard negatives."""

    qid: str
    query: str
    positive: str
    negatives: list[str] = field(default_factory=list)


@dataclass
class PairSet:
    """Training examples, the validation split and what they were made from."""

    train: list[Example]
    val_queries: dict[str, str]  # qid -> question text: the held-out questions
    val_passages: dict[str, str]  # chunk id -> text: the validation corpus (every chunk of the set)
    val_relevant: dict[str, set[str]]  # qid -> relevant chunk ids
    val_candidates: dict[str, list[str]]  # qid -> the miner's ranked chunk ids (``val_depth`` of them; empty at 0)
    train_question_hashes: list[str]
    train_document_hashes: list[str]  # the documents that gave a positive or a negative
    source: dict[str, Any]

    def save(self, path: Path) -> None:
        """Write the set as one JSON file (atomically)."""
        write_json_atomic(Path(path), {
            "format": FORMAT, "source": self.source, "train": [vars(e) for e in self.train], "val_queries": self.val_queries,
            "val_passages": self.val_passages, "val_relevant": {q: sorted(r) for q, r in self.val_relevant.items()},
            "val_candidates": self.val_candidates, "train_question_hashes": self.train_question_hashes,
            "train_document_hashes": self.train_document_hashes})

    @classmethod
    def load(cls, path: Path) -> "PairSet":
        """Read a set written by ``save``; a clear error for any other file."""
        raw = read_json(Path(path))
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise EvaluationError(f"{path}: not a ragpipe pairs file (format {FORMAT!r})", path=path)
        return cls([Example(**e) for e in raw["train"]], raw["val_queries"], raw["val_passages"],
                   {q: set(r) for q, r in raw["val_relevant"].items()}, raw["val_candidates"], raw["train_question_hashes"],
                   raw["train_document_hashes"], raw["source"])
