"""Bi-encoders from plain transformers: token embeddings -> one sentence vector by cls | max | mean pooling.

A Hugging Face encoder (BERT, RoBERTa, ELECTRA ... without ``modules.json``) becomes a
sentence-transformers model ``[Transformer, Pooling]``. A sentence-transformers model keeps its
own pooling unless ``embedding.pooling`` is set, in which case its ``Pooling`` module is replaced
(other modules such as ``Dense`` or ``Normalize`` stay). Padding tokens are masked out of mean and
max by sentence-transformers' ``Pooling`` (checked in ``tests/unit/test_pooling.py``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from ..config import PoolingMode
from ..core.errors import ConfigError, ModelResolutionError

logger = logging.getLogger(__name__)


def is_sentence_transformer(path: str | Path) -> bool:
    """True when ``path`` is a saved sentence-transformers model (has ``modules.json``)."""
    return (Path(path) / "modules.json").is_file()


def _modes(pooling: Sequence[PoolingMode | str]) -> tuple[str, ...]:
    order = [m.value for m in PoolingMode]
    names = [getattr(m, "value", m) for m in pooling]
    bad = [n for n in names if n not in order]
    if bad or not names:
        raise ConfigError(f"embedding.pooling = {names!r}: use one or more of: {', '.join(order)}", key="embedding.pooling")
    return tuple(sorted(dict.fromkeys(names), key=order.index))


def build_pooled_model(path: str | Path, pooling: Sequence[PoolingMode | str] | None, device: str = "cpu", max_length: int | None = None) -> Any:
    """A ``SentenceTransformer`` for ``path`` with ``pooling`` (None: the model's own, mean for a plain encoder).

    :param path: local folder of a sentence-transformers model or of a plain Hugging Face encoder.
    :param pooling: modes to concatenate, in cls, max, mean order.
    :raises ModelResolutionError: the folder can't be loaded as an encoder.
    """
    try:
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ModelResolutionError("pooling needs sentence-transformers>=5: pip install 'sentence-transformers>=5'") from exc
    try:
        if is_sentence_transformer(path):
            model = SentenceTransformer(str(path), device=device)
            if pooling is None:
                return model
            return replace_pooling(model, pooling)
        word = Transformer(str(path), max_seq_length=max_length)
        modes = _modes(pooling or [PoolingMode.MEAN])
        pool = Pooling(word.get_embedding_dimension(), pooling_mode=modes[0] if len(modes) == 1 else modes)
        logger.info("embedding: plain encoder %s with %s pooling", path, "+".join(modes))
        return SentenceTransformer(modules=[word, pool], device=device)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelResolutionError(f"{path}: cannot load as a text encoder ({type(exc).__name__}: {exc})", path=path) from exc


def replace_pooling(model: Any, pooling: Sequence[PoolingMode | str]) -> Any:
    """Swap the ``Pooling`` module of a sentence-transformers model for one with ``pooling`` (in place)."""
    from sentence_transformers.sentence_transformer.modules import Pooling

    modes = _modes(pooling)
    names = list(model._modules)
    for i, (name, module) in enumerate(model._modules.items()):
        if isinstance(module, Pooling):
            old = module.pooling_mode
            later = [type(model._modules[n]).__name__ for n in names[i + 1 :]]
            if module.pooling_output_dimension != len(modes) * module.embedding_dimension and set(later) - {"Normalize"}:
                raise ConfigError(
                    f"embedding.pooling = {list(modes)} changes the vector size, but the model's pooling feeds "
                    f"{', '.join(later)}; use a single pooling mode or a plain encoder",
                    key="embedding.pooling",
                )
            new = Pooling(module.embedding_dimension, pooling_mode=modes[0] if len(modes) == 1 else modes,
                          include_prompt=module.include_prompt)
            model._modules[name] = new.to(model.device)
            logger.info("embedding: pooling %s replaced by %s", old, "+".join(modes))
            return model
    raise ConfigError(
        "embedding.pooling: this sentence-transformers model has no Pooling module to replace "
        "(it pools inside the network); remove embedding.pooling",
        key="embedding.pooling",
    )
