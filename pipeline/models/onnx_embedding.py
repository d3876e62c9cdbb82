"""ONNX Runtime backend for sentence-transformers encoders (``embedding.backend: onnx``).

The encoder is exported once with ``torch.onnx.export`` (only ``input_ids`` and ``attention_mask`` in,
the last hidden state out, opset 17), optionally quantised to dynamic int8 with
``onnxruntime.quantization``, and cached under ``$RAGPIPE_MODEL_DIR/onnx/`` with a manifest (source
folder, sizes, checksums). Pooling (mean or CLS, read from the model's ``1_Pooling``), normalisation and
the e5 prompts are applied here exactly as sentence-transformers applies them. A direct export plus this
thin ``BaseEmbedding``, rather than ``optimum``: optimum pins transformers < 4.58 and this project uses 5.x.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, List, Sequence

import numpy as np
from llama_index.core.embeddings import BaseEmbedding
from pydantic import Field, PrivateAttr

from ..core.errors import ConfigError, ModelResolutionError
from ..core.io import atomic_directory, sha256_file, write_json_atomic
from .threads import compute_threads

logger = logging.getLogger(__name__)

OPSET = 17
MANIFEST = "ragpipe_onnx.json"
# one name per export recipe: it names the export folder and enters the passage-vector cache key
RECIPES = {"none": "none", "int8": "int8-per-channel"}


def _pooling(model_dir: Path) -> str:
    """``mean`` or ``cls`` from a sentence-transformers folder's pooling config (mean for a plain encoder)."""
    cfg_file = model_dir / "1_Pooling" / "config.json"
    if not cfg_file.exists():
        return "mean"
    cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    mode = cfg.get("pooling_mode")  # sentence-transformers >= 6; older folders set one flag per mode
    if mode in ("mean", "cls"):
        return str(mode)
    if mode is None and cfg.get("pooling_mode_mean_tokens"):
        return "mean"
    if mode is None and cfg.get("pooling_mode_cls_token"):
        return "cls"
    raise ConfigError(f"{cfg_file}: embedding.backend onnx supports mean or CLS pooling only; use backend: torch", key="embedding.backend")


def _export_dir(model_dir: Path, quantize: str) -> Path:
    weights = sorted(p for p in model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
    stamp = "|".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in weights)
    key = hashlib.sha256(f"{model_dir.resolve()}|{stamp}".encode()).hexdigest()[:16]
    root = Path(os.environ.get("RAGPIPE_MODEL_DIR") or Path.home() / ".cache" / "ragpipe" / "models").expanduser()
    return root / "onnx" / f"{model_dir.name}-{key}" / RECIPES[quantize]


def export_onnx(model_dir: str | Path, quantize: str = "none") -> Path:
    """The ONNX file for the encoder in ``model_dir`` (exported on first use, atomically; then reused)."""
    model_dir = Path(model_dir)
    target = _export_dir(model_dir, quantize)
    model_file = target / "model.onnx"
    if (target / MANIFEST).exists() and model_file.exists():
        return model_file
    import torch
    from transformers import AutoModel

    class _Encoder(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    try:
        encoder = _Encoder(AutoModel.from_pretrained(str(model_dir))).eval()
    except Exception as exc:  # noqa: BLE001 - any loader failure: the folder is not an exportable encoder
        raise ModelResolutionError(f"{model_dir}: cannot load the encoder for ONNX export ({type(exc).__name__}: {exc})", path=model_dir) from exc
    ids = torch.ones((2, 8), dtype=torch.long)
    with atomic_directory(target) as tmp:
        plain = tmp / ("fp32.onnx" if quantize == "int8" else "model.onnx")
        with torch.inference_mode():
            torch.onnx.export(encoder, (ids, torch.ones_like(ids)), str(plain), input_names=["input_ids", "attention_mask"],
                              output_names=["last_hidden_state"], opset_version=OPSET, dynamo=False,
                              dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                                            "last_hidden_state": {0: "batch", 1: "seq"}})
        if quantize == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            # per-channel weight scales: min cosine to torch 0.994 on KLUE questions and passages (per-tensor: 0.976)
            quantize_dynamic(str(plain), str(tmp / "model.onnx"), weight_type=QuantType.QInt8, per_channel=True)
            plain.unlink()
        write_json_atomic(tmp / MANIFEST, {"source": str(model_dir.resolve()), "quantize": quantize, "recipe": RECIPES[quantize], "opset": OPSET,
                                           "torch": torch.__version__, "sha256": sha256_file(tmp / "model.onnx")})
    logger.info("exported %s to ONNX (%s) at %s", model_dir, quantize, model_file)
    return model_file


class OnnxEmbedding(BaseEmbedding):
    """A sentence-transformers encoder run by ONNX Runtime: same tokenizer, pooling, normalisation and prompts."""

    max_length: int = Field(512, description="Max tokens per text")
    normalize: bool = Field(True, description="L2-normalise vectors")
    query_instruction: str = Field("", description="Prefix for queries")
    text_instruction: str = Field("", description="Prefix for passages")
    _session: Any = PrivateAttr()
    _tokenizer: Any = PrivateAttr()
    _pooling: str = PrivateAttr()

    def __init__(self, model_dir: str | Path, quantize: str = "none", threads: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        import onnxruntime as ort
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        tok_file = model_dir / "tokenizer.json"
        if not tok_file.exists():
            raise ModelResolutionError(f"{model_dir}: no tokenizer.json; embedding.backend onnx needs a fast tokenizer", path=model_dir)
        self._pooling = _pooling(model_dir)
        self._tokenizer = Tokenizer.from_file(str(tok_file))
        self._tokenizer.enable_truncation(self.max_length)
        pad_id = self._tokenizer.token_to_id("<pad>") if self._tokenizer.token_to_id("<pad>") is not None else 0
        self._tokenizer.enable_padding(pad_id=pad_id)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or compute_threads()
        options.inter_op_num_threads = 1
        # idle worker threads sleep instead of spinning: a spinning pool takes the cores that a busy
        # service's request threads need (measured: 94 -> 102 req/s at concurrency 32)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(export_onnx(model_dir, quantize)), options, providers=["CPUExecutionProvider"])

    @classmethod
    def class_name(cls) -> str:
        return "OnnxEmbedding"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [n, dim] vectors of ``texts`` as given (no prompt added), in batches of ``embed_batch_size``."""
        out = []
        for start in range(0, len(texts), self.embed_batch_size):
            enc = self._tokenizer.encode_batch(list(texts[start : start + self.embed_batch_size]))
            ids = np.asarray([e.ids for e in enc], dtype=np.int64)
            mask = np.asarray([e.attention_mask for e in enc], dtype=np.int64)
            hidden = self._session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            if self._pooling == "cls":
                vecs = hidden[:, 0]
            else:
                m = mask[:, :, None].astype(np.float32)
                vecs = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
            if self.normalize:
                vecs = vecs / np.clip(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12, None)
            out.append(vecs.astype(np.float32))
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def embed_queries(self, queries: List[str]) -> np.ndarray:
        """float32 query vectors for many queries in one pass (the query prompt added)."""
        return self.encode([self.query_instruction + q for q in queries])

    def embed_bare(self, texts: List[str]) -> List[List[float]]:
        """Text vectors with no prompt prefix."""
        return self.encode(texts).tolist()

    def _get_query_embedding(self, query: str) -> List[float]:
        return self.embed_queries([query])[0].tolist()

    async def _aget_query_embedding(self, query: str) -> List[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> List[float]:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: List[str]) -> List[List[float]]:
        return self.encode([self.text_instruction + t for t in texts]).tolist()
