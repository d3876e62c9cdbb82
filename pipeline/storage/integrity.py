"""Index integrity: the settings that decide what was built, recorded at ingest and compared on load.

Build-time settings (embedding model, prompts, normalize, max_length, pooling; chunking; each
retriever's tokenizer spec, BM25 k1/b/method, sparse weighting, FAISS index type and build
parameters, or on Qdrant the collection's HNSW, on-disk and quantisation settings) must match the
index, or loading raises ``IndexMismatchError`` naming the key, the built value and the asked value. Query-time settings (``retrieval.top_k``, each retriever's ``candidate_k``
and ``weight``, ``faiss.ef_search`` / ``faiss.nprobe``, fusion mode and weights, rerank) apply without
a rebuild.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import Config
from ..core.errors import IndexMismatchError
from .index_dir import Manifest
from .registry import kind_of

EMBEDDING_BUILD_FIELDS = ("provider", "model", "pooling", "text_model", "query_prompt", "passage_prompt", "normalize",
                          "max_length", "dimensions", "quantize")
"""Embedding settings that change the stored passage vectors or the space queries must match. (``backend`` and
``precision`` are not among them: torch fp32/bf16 and ONNX fp32 vectors agree to cosine >= 0.999.)"""

ADDED_LATER = {"embedding.quantize": "none", "tokenizer.multi_dict": True}
"""Build settings recorded only by newer versions, with the value every older index was built with (a retriever's
settings are named without the ``retrieval.retrievers[name].`` prefix)."""

_HINT = "; run `ragpipe ingest --rebuild` (or set the config back)"


def expected_build(cfg: Config) -> dict[str, Any]:
    """Every build-deciding setting of ``cfg`` as ``{dotted key: value}`` (what the manifest records)."""
    out: dict[str, Any] = {}
    if cfg.uses_dense():
        emb = cfg.embedding.model_dump(mode="json")
        out.update({f"embedding.{f}": emb[f] for f in EMBEDDING_BUILD_FIELDS})
    out.update({f"chunking.{k}": v for k, v in cfg.chunking.model_dump(mode="json").items()})
    qdrant = cfg.storage.backend == "qdrant"
    for r in cfg.retrieval.retrievers:
        out.update({f"retrieval.retrievers[{r.name}].{k}": v for k, v in kind_of(r).describe(r).items()
                    if not (qdrant and k.startswith("faiss."))})  # on qdrant the engine's HNSW replaces FAISS
    if qdrant:
        s = cfg.storage
        out.update({"storage.backend": "qdrant", "storage.hnsw.m": s.hnsw.m, "storage.hnsw.ef_construct": s.hnsw.ef_construct,
                    "storage.on_disk": s.on_disk, "storage.quantization": s.quantization})
    return out


def check_build(manifest: Manifest, cfg: Config, folder: Path | str) -> None:
    """Raise ``IndexMismatchError`` at the first build-deciding setting the config asks to be otherwise."""
    for r in cfg.retrieval.retrievers:
        if r.name not in manifest.retrievers:
            raise IndexMismatchError(f"{folder}: retriever {r.name!r} is not in the index (has: {', '.join(manifest.retrievers)}){_HINT}",
                                     path=folder, key="retrieval.retrievers", value=r.name)
    missing = object()
    for key, wanted in expected_build(cfg).items():
        built = manifest.build.get(key, ADDED_LATER.get(key, ADDED_LATER.get(key.partition("].")[2], missing)))
        if built != wanted:
            shown = "(not recorded)" if built is missing else repr(built)
            raise IndexMismatchError(f"{folder}: {key}: the index was built with {shown}, the config asks for {wanted!r}{_HINT}",
                                     path=folder, key=key, value=wanted)
