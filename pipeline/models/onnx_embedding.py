"""ONNX Runtime backend for sentence-transformers encoders (``embedding.backend: onnx``).

The encoder is exported once with ``torch.onnx.export`` (only ``input_ids`` and ``attention_mask`` in,
the last hidden state out, opset 17, eager attention), fused by ONNX Runtime's transformer optimizer
(Attention, BiasGelu, EmbedLayerNormalization; kept only if its outputs match the plain export), optionally
quantised from that to dynamic int8 after activation smoothing (:mod:`.onnx_quantize`), and cached under ``$RAGPIPE_MODEL_DIR/onnx/`` with a manifest (source
folder, sizes, checksums). Pooling (mean or CLS, read from the model's ``1_Pooling``), normalisation and
the e5 prompts are applied here exactly as sentence-transformers applies them. A direct export plus this
thin ``BaseEmbedding``, rather than ``optimum``: optimum pins transformers < 4.58 and this project uses 5.x.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, List, Sequence

import numpy as np
from llama_index.core.embeddings import BaseEmbedding
from pydantic import Field, PrivateAttr

from ..core.errors import ConfigError, ModelResolutionError
from ..core.io import atomic_directory, sha256_file, write_json_atomic
from .resolve import weights_stamp
from .threads import compute_threads

logger = logging.getLogger(__name__)

OPSET = 17
MANIFEST = "ragpipe_onnx.json"
# one name per export recipe: it names the export folder and enters the passage-vector cache key
RECIPES = {"none": "fused", "int8": "fused-ln-smooth-int8"}
# the folder also changes when the graph changes but its vectors do not (fp32 without SkipLayerNormalization:
# cosine 1.000000 to the earlier export), so old caches stay valid and old graphs are not reused
FOLDERS = {"none": "fused-ln", "int8": RECIPES["int8"]}
# ONNX Runtime's SkipLayerNormalization CPU kernel (1.32) took 3-6x the time of Add + LayerNormalization from
# 20 to 512 tokens: 0.75 ms of an e5-small query. It is neither fused at export nor at session start.
UNFUSED = ("SkipLayerNormFusion",)


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


def _export_dir(model_dir: Path, quantize: str, head: str = "encoder", prompts: Sequence[str] = ()) -> Path:
    key = hashlib.sha256(f"{model_dir.resolve()}|{weights_stamp(model_dir)}".encode()).hexdigest()[:16]
    root = Path(os.environ.get("RAGPIPE_MODEL_DIR") or Path.home() / ".cache" / "ragpipe" / "models").expanduser()
    name = FOLDERS[quantize] + ("" if head == "encoder" else f"-{head}")
    if quantize != "none" and any(prompts):  # int8 is calibrated with the prompts, so they name the export
        name += "-" + hashlib.sha256("\x00".join(prompts).encode()).hexdigest()[:8]
    return root / "onnx" / f"{model_dir.name}-{key}" / name


def export_onnx(model_dir: str | Path, quantize: str = "none", head: str = "encoder", prompts: Sequence[str] = ()) -> Path:
    """The ONNX file for the model in ``model_dir`` (exported on first use, atomically; then reused).

    ``head``: ``encoder`` (input ids and mask in, last hidden state out) or ``classifier`` (a
    cross-encoder: ids, mask and token type ids in, logits out). ``prompts``: the prefixes the model's
    texts carry (e5's ``query: ``, ``passage: ``), which int8 calibration puts in front of its texts.
    int8 is made from the fp32 export, which is kept (a config may run fp32 passages and int8 queries).
    """
    model_dir = Path(model_dir)
    target = _export_dir(model_dir, quantize, head, prompts)
    if not _complete(target):
        if quantize == "int8":
            _quantized(model_dir, export_onnx(model_dir, "none", head), target, tuple(p for p in prompts if p))
        else:
            _exported(model_dir, head, target)
        logger.info("exported %s (%s) to ONNX (%s) at %s", model_dir, head, quantize, target)
    return target / "model.onnx"


def _exported(model_dir: Path, head: str, target: Path) -> None:
    """torch.onnx.export of the encoder or classifier, fused, with its manifest, into ``target``."""
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification

    class _Wrapped(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            if head == "encoder":
                return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    loader = AutoModel if head == "encoder" else AutoModelForSequenceClassification
    try:  # eager attention: the graph pattern ONNX Runtime's optimizer fuses (sdpa's is not fused)
        wrapped = _Wrapped(loader.from_pretrained(str(model_dir), attn_implementation="eager")).eval()
    except Exception as exc:  # noqa: BLE001 - any loader failure: the folder is not an exportable model
        raise ModelResolutionError(f"{model_dir}: cannot load the {head} for ONNX export ({type(exc).__name__}: {exc})", path=model_dir) from exc
    ids = torch.ones((2, 8), dtype=torch.long)
    names = _input_names(head)
    output = "last_hidden_state" if head == "encoder" else "logits"
    axes = {n: {0: "batch", 1: "seq"} for n in names} | {output: {0: "batch", 1: "seq"} if head == "encoder" else {0: "batch"}}
    with atomic_directory(target) as tmp:
        plain = tmp / "plain.onnx"
        with torch.inference_mode():
            torch.onnx.export(wrapped, tuple(torch.ones_like(ids) if n == "attention_mask" else (ids if n == "input_ids" else torch.zeros_like(ids))
                                             for n in names), str(plain), input_names=names, output_names=[output],
                              opset_version=OPSET, dynamo=False, dynamic_axes=axes)
        config = wrapped.inner.config
        del wrapped  # free the torch weights before the fusion, which holds its own copies (peak 3.8 GB, was 5-6)
        fused = _fuse(plain, tmp / "fused.onnx", config, names)
        _save_with_external_weights(tmp / "fused.onnx", tmp / "model.onnx")
        for leftover in (plain, tmp / "fused.onnx"):
            leftover.unlink(missing_ok=True)
        _write_manifest(tmp, model_dir, head, "none", fused, 0, (), torch.__version__)


def _quantized(model_dir: Path, fp32: Path, target: Path, prompts: tuple[str, ...]) -> None:
    """Smoothed dynamic int8 (:mod:`.onnx_quantize`) of the fp32 export ``fp32``, with its manifest, into ``target``."""
    from .onnx_quantize import quantize_int8

    base = json.loads((fp32.parent / MANIFEST).read_text(encoding="utf-8"))
    names = _input_names(base["head"])
    with atomic_directory(target) as tmp:
        smoothed = quantize_int8(fp32, tmp / "int8.onnx", _calibration_feeds(model_dir, names), prompts)
        _save_with_external_weights(tmp / "int8.onnx", tmp / "model.onnx")
        (tmp / "int8.onnx").unlink()
        _write_manifest(tmp, model_dir, base["head"], "int8", base["fused"], smoothed, prompts, base["torch"])


def _input_names(head: str) -> list[str]:
    return ["input_ids", "attention_mask"] + ([] if head == "encoder" else ["token_type_ids"])


def _write_manifest(folder: Path, model_dir: Path, head: str, quantize: str, fused: dict[str, int], smoothed: int,
                    prompts: Sequence[str], torch_version: str) -> None:
    write_json_atomic(folder / MANIFEST, {"source": str(model_dir.resolve()), "head": head, "quantize": quantize, "recipe": RECIPES[quantize],
                                          "opset": OPSET, "fused": fused, "smoothed": smoothed, "prompts": list(prompts), "torch": torch_version,
                                          "sha256": {f.name: sha256_file(f) for f in sorted(folder.glob("model.onnx*"))}})


def _complete(target: Path) -> bool:
    """Whether ``target`` holds a finished export: a manifest naming its files (graph and weights), all present."""
    try:
        files = json.loads((target / MANIFEST).read_text(encoding="utf-8")).get("sha256")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(files, dict) and "model.onnx" in files and all((target / name).is_file() for name in files)


def _calibration_feeds(model_dir: Path, names: Sequence[str]) -> Any:
    """A function from one calibration text to the exported graph's inputs (cut to the model's positions)."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    tokenizer = fast_tokenizer(model_dir, min(512, int(config.get("max_position_embeddings", 514)) - 2))

    def feeds(text: str) -> dict[str, np.ndarray]:
        enc = tokenizer.encode(text)
        return _inputs(names, np.asarray([enc.ids], np.int64), np.asarray([enc.attention_mask], np.int64))

    return feeds


def _save_with_external_weights(src: Path, dst: Path) -> None:
    """``dst`` (the graph) plus ``dst.data`` (every weight): ONNX Runtime memory-maps that file, so
    a session opens in 0.1 s instead of 0.8 s for e5-small's 470 MB, at the same speed per query."""
    import onnx

    onnx.save_model(onnx.load(str(src)), str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=dst.name + ".data", size_threshold=1024)


def _inputs(names: Sequence[str], ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """The exported graph's inputs: ids, mask and (for a cross-encoder) zero token type ids."""
    return {n: ids if n == "input_ids" else (mask if n == "attention_mask" else np.zeros_like(ids)) for n in names}


def _probe(names: Sequence[str]) -> dict[str, np.ndarray]:
    """Two padded rows of ids (the second one shorter) to compare two exports on."""
    ids = np.asarray([[0, 5, 17, 29, 41, 53, 65, 2], [0, 7, 19, 2, 1, 1, 1, 1]], dtype=np.int64)
    return _inputs(names, ids, np.asarray([[1] * 8, [1] * 4 + [0] * 4], dtype=np.int64))


def _fuse(plain: Path, out: Path, config: Any, names: Sequence[str]) -> dict[str, int]:
    """Write ONNX Runtime's transformer-fused graph of ``plain`` to ``out``, or a copy of ``plain`` when the
    fusion fails or changes the outputs (by more than 1e-3, on padded rows). Returns the fused-operator counts.

    Fused kernels do the same arithmetic in fewer steps: e5-small's query took 0.82x the time, and its
    passages 0.76x, with a minimum cosine of 0.9999999 to the plain export.
    """
    import shutil

    import onnxruntime as ort

    stats: dict[str, int] = {}
    heads, hidden = getattr(config, "num_attention_heads", None), getattr(config, "hidden_size", None)
    if heads and hidden:
        try:
            from onnxruntime.transformers.fusion_options import FusionOptions
            from onnxruntime.transformers.optimizer import optimize_model

            options = FusionOptions("bert")
            options.enable_skip_layer_norm = False  # see UNFUSED
            optimized = optimize_model(str(plain), model_type="bert", num_heads=int(heads), hidden_size=int(hidden), opt_level=1,
                                       optimization_options=options)
            stats = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
            optimized.save_model_to_file(str(out))
            feed = _probe(names)
            want, got = (ort.InferenceSession(str(f), providers=["CPUExecutionProvider"]).run(None, feed)[0] for f in (plain, out))
            mask = feed["attention_mask"].astype(bool)
            if want.ndim == 3:  # hidden states: compare real tokens only (padded positions are never pooled)
                want, got = want[mask], got[mask]
            if want.shape != got.shape or not np.allclose(want, got, atol=1e-3):
                logger.warning("%s: the fused ONNX graph changed the outputs; using the plain export", plain)
                stats = {}
        except Exception as exc:  # noqa: BLE001 - fusion is an optimisation: any failure keeps the plain export
            logger.warning("%s: ONNX Runtime's fusion failed (%s: %s); using the plain export", plain, type(exc).__name__, exc)
            stats = {}
    if not stats:
        shutil.copyfile(plain, out)
    for leftover in out.parent.glob("*_o1_cpu.onnx"):  # the optimizer's intermediate file
        leftover.unlink()
    return stats


def fast_tokenizer(model_dir: Path, max_length: int) -> Any:
    """The model's ``tokenizer.json`` (Rust tokenizers, no transformers import), truncating and padding."""
    from tokenizers import Tokenizer

    tok_file = model_dir / "tokenizer.json"
    if not tok_file.exists():
        raise ModelResolutionError(f"{model_dir}: no tokenizer.json; the onnx backend needs a fast tokenizer", path=model_dir)
    tokenizer = Tokenizer.from_file(str(tok_file))
    tokenizer.enable_truncation(max_length)
    pad_id = next((i for t in ("<pad>", "[PAD]") if (i := tokenizer.token_to_id(t)) is not None), 0)
    tokenizer.enable_padding(pad_id=pad_id)
    return tokenizer


def onnx_session(path: Path) -> Any:
    """An ONNX Runtime CPU session on ``compute_threads()`` threads whose idle threads sleep."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = compute_threads()
    options.inter_op_num_threads = 1
    # spinning pool threads take the cores that faiss, kiwi and a service's request threads need: with
    # spinning a hybrid query's faiss search took 2.2 ms instead of 0.4, and a service served 94 req/s, not 102
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=list(UNFUSED))


class OnnxEmbedding(BaseEmbedding):
    """A sentence-transformers encoder run by ONNX Runtime: same tokenizer, pooling, normalisation and prompts."""

    max_length: int = Field(512, description="Max tokens per text")
    normalize: bool = Field(True, description="L2-normalise vectors")
    query_instruction: str = Field("", description="Prefix for queries")
    text_instruction: str = Field("", description="Prefix for passages")
    batch_tokens: int = Field(1024, ge=1, description="Most padded tokens per encoder batch")
    _passages: Any = PrivateAttr()
    _queries: Any = PrivateAttr()
    _tokenizer: Any = PrivateAttr()
    _pooling: str = PrivateAttr()

    def __init__(self, model_dir: str | Path, quantize: str = "none", query_quantize: str | None = None, **kwargs: Any) -> None:
        """``quantize`` for passages; ``query_quantize`` (default: the same) for queries, e.g. int8 queries
        against fp32 passages. A separate passage session opens on the first passage, so a query-only
        process holds one."""
        super().__init__(**kwargs)
        model_dir = Path(model_dir)
        self._pooling = _pooling(model_dir)
        self._tokenizer = fast_tokenizer(model_dir, self.max_length)
        prompts = (self.query_instruction, self.text_instruction)
        self._queries = onnx_session(export_onnx(model_dir, query_quantize or quantize, prompts=prompts))
        if (query_quantize or quantize) == quantize:
            self._passages = lambda: self._queries
        else:
            lock = threading.Lock()  # one passage session even when two threads embed their first passages at once

            @functools.cache
            def opened() -> Any:
                return onnx_session(export_onnx(model_dir, quantize, prompts=prompts))

            def passages() -> Any:
                with lock:
                    return opened()

            self._passages = passages

    @classmethod
    def class_name(cls) -> str:
        return "OnnxEmbedding"

    def encode(self, texts: Sequence[str], queries: bool = False) -> np.ndarray:
        """float32 [n, dim] vectors of ``texts`` as given (no prompt added), in the given order, by the
        query session if ``queries`` else the passage session.

        All texts are tokenised at once (Rust, parallel), sorted by token length and cut into batches of at
        most ``batch_tokens`` padded tokens and ``embed_batch_size`` texts: long passages go in small
        batches, short queries in large ones (1.25x the passages/s of fixed batches of 32 here).
        """
        if not texts:
            return np.zeros((0, 0), np.float32)
        session = self._queries if queries else self._passages()
        enc = self._tokenizer.encode_batch(list(texts))
        lengths = [sum(e.attention_mask) for e in enc]
        order = sorted(range(len(enc)), key=lambda i: -lengths[i])
        out: np.ndarray | None = None
        start = 0
        while start < len(order):
            longest = lengths[order[start]]
            size = max(1, min(self.embed_batch_size, self.batch_tokens // max(longest, 1)))
            rows = order[start : start + size]
            start += size
            ids = np.asarray([enc[i].ids[:longest] for i in rows], dtype=np.int64)
            mask = np.asarray([enc[i].attention_mask[:longest] for i in rows], dtype=np.int64)
            vecs = self._pool(session.run(None, {"input_ids": ids, "attention_mask": mask})[0], mask)
            if out is None:
                out = np.empty((len(enc), vecs.shape[1]), np.float32)
            out[rows] = vecs
        return out

    def _pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self._pooling == "cls":
            vecs = hidden[:, 0]
        else:
            m = mask[:, :, None].astype(np.float32)
            vecs = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        if self.normalize:
            vecs = vecs / np.clip(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12, None)
        return vecs.astype(np.float32)

    def embed_queries(self, queries: List[str]) -> np.ndarray:
        """float32 query vectors for many queries in one pass (the query prompt added)."""
        return self.encode([self.query_instruction + q for q in queries], queries=True)

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
