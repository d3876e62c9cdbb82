"""Model names -> local folders.

A model name resolves in this order: an existing local path, the Hugging Face cache, a copy prepared
by ``ragpipe models prepare``, then the Hugging Face hub (when reachable). Nothing falls back to a
hosted default: every model is named in the config.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..config import Precision
from ..core.errors import ModelResolutionError
from ..core.hardware import cpu_supports_bf16

logger = logging.getLogger(__name__)


def resolve_model(name: str) -> str:
    """Return a local directory (or path) holding ``name``'s weights, or raise listing what was tried."""
    tried: list[str] = []
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    tried.append(f"local path {path} (does not exist)")

    on_hub = "/" in name and not name.startswith((".", "/"))
    if on_hub and (cached := _from_hf_cache(name, tried)):
        return cached

    from .prepare import E5_SMALL_ID, is_prepared, prepared_model_path

    prepared = prepared_model_path(name)
    if is_prepared(name):
        logger.info("model %s: using prepared copy %s", name, prepared)
        return str(prepared)
    if on_hub and (downloaded := _from_hf_hub(name, tried)):
        return downloaded
    if name == E5_SMALL_ID:
        tried.append(f"prepared copy {prepared} (missing; run `ragpipe models prepare`)")
        raise ModelResolutionError(f"cannot resolve model {name!r}; tried: " + "; ".join(tried), value=name)
    tried.append(f"prepared copy {prepared} (missing; `ragpipe models prepare` builds only {E5_SMALL_ID})")
    raise ModelResolutionError(f"cannot resolve model {name!r}; tried: " + "; ".join(tried) + ". Point at a local model folder, or "
                               "train one here: `ragpipe finetune embedding|reranker` (docs/finetune.md; "
                               "scripts/train_models.sh builds the evaluation's)", value=name)


def _from_hf_cache(name: str, tried: list[str]) -> str | None:
    """The cached snapshot of ``name``; the cache folder is looked at first, so a miss imports no hub client."""
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:  # pragma: no cover - huggingface_hub ships with sentence-transformers
        tried.append("Hugging Face cache (huggingface_hub not installed)")
        return None
    if (Path(HF_HUB_CACHE) / f"models--{name.replace('/', '--')}" / "snapshots").is_dir():
        from huggingface_hub import snapshot_download

        try:
            return str(snapshot_download(name, local_files_only=True))
        except Exception:  # noqa: BLE001 - a partial or broken cache entry is a miss
            pass
    tried.append("Hugging Face cache (not cached)")
    return None


def _from_hf_hub(name: str, tried: list[str]) -> str | None:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        tried.append("Hugging Face hub (skipped: HF_HUB_OFFLINE=1)")
        return None
    try:
        from huggingface_hub import snapshot_download

        return str(snapshot_download(name))
    except Exception as exc:  # noqa: BLE001 - unreachable hub, unknown model, no huggingface_hub: all a miss, named
        tried.append(f"Hugging Face hub ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
        return None


def weights_stamp(model_dir: Path) -> str:
    """Identity of a local model folder's weights (file names, sizes, modification times): cheap, and it changes
    whenever a model is retrained into the same folder."""
    weights = sorted(Path(model_dir).glob("*.safetensors")) or sorted(Path(model_dir).glob("*.bin"))
    return "|".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in weights)


def effective_precision(precision: Precision, device: str = "cpu") -> Precision:
    """``auto`` -> bf16 on CPUs with bf16 support, else fp32."""
    if precision != Precision.AUTO:
        return precision
    if device == "cpu":
        return Precision.BF16 if cpu_supports_bf16() else Precision.FP32
    return Precision.FP32
