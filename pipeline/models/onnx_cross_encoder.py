"""A sentence-transformers ``CrossEncoder`` folder run by ONNX Runtime (``rerank`` with the onnx backend).

Exported once like the embedding (``export_onnx(..., head="classifier")``); ``predict`` returns what
``CrossEncoder.predict`` returns for a one-label model: the logit through the model's activation
(sigmoid unless the folder saved another one).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..core.errors import ModelResolutionError
from .onnx_embedding import export_onnx, fast_tokenizer, onnx_session


def _activation(model_dir: Path) -> str:
    """``sigmoid`` or ``identity``, as sentence-transformers would apply it to a one-label model."""
    cfg_file = model_dir / "config.json"
    cfg = json.loads(cfg_file.read_text(encoding="utf-8")) if cfg_file.exists() else {}
    labels = len(cfg.get("id2label") or {}) or cfg.get("num_labels", 1)
    if labels != 1:
        raise ModelResolutionError(f"{model_dir}: a reranker needs a one-label cross-encoder, this one has {labels} labels", path=model_dir)
    saved = str((cfg.get("sentence_transformers") or {}).get("activation_fn") or "Sigmoid")
    return "identity" if saved.endswith("Identity") else "sigmoid"


def _uses_token_types(model_dir: Path) -> bool:
    """Whether the model's transformers tokenizer returns ``token_type_ids`` (else zeros, as transformers passes)."""
    cfg_file = model_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text(encoding="utf-8")) if cfg_file.exists() else {}
    if cfg.get("model_input_names"):
        return "token_type_ids" in cfg["model_input_names"]
    return str(cfg.get("tokenizer_class") or "").startswith(("BertTokenizer", "ElectraTokenizer"))


class OnnxCrossEncoder:
    """``predict(pairs)`` scores (query, passage) pairs like ``sentence_transformers.CrossEncoder``."""

    def __init__(self, model_dir: str | Path, max_length: int = 512, quantize: str = "none") -> None:
        model_dir = Path(model_dir)
        self._activation = _activation(model_dir)
        self._token_types = _uses_token_types(model_dir)
        self._tokenizer = fast_tokenizer(model_dir, max_length)
        self._session = onnx_session(export_onnx(model_dir, quantize, head="classifier"))

    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 16, **_: Any) -> np.ndarray:
        """One float32 score per pair, in order."""
        out = []
        for start in range(0, len(pairs), batch_size):
            enc = self._tokenizer.encode_batch([tuple(p) for p in pairs[start : start + batch_size]])
            feed = {"input_ids": np.asarray([e.ids for e in enc], dtype=np.int64),
                    "attention_mask": np.asarray([e.attention_mask for e in enc], dtype=np.int64),
                    "token_type_ids": np.asarray([e.type_ids if self._token_types else [0] * len(e.ids) for e in enc], dtype=np.int64)}
            logits = self._session.run(None, feed)[0][:, 0]
            out.append(1.0 / (1.0 + np.exp(-logits)) if self._activation == "sigmoid" else logits)
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)
