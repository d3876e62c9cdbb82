"""One index directory: manifest, config snapshot, docstore, one sub-folder per retriever.

```
<index_dir>/
  manifest.json     written last; a folder without it is incomplete and refused
  config.yaml       resolved config snapshot (no secrets: keys are only env var names)
  docstore.jsonl    node_id, doc_id, text, metadata (UTF-8)
  documents.jsonl   the source documents as ingested (upserts and deletes rebuild from them)
  retrievers/<name>/ bm25s arrays, sparse matrices or FAISS index, each with its params
```
The whole folder is built beside the target and swapped in with one rename, so a killed
ingest leaves the previous index exactly as it was.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import yaml
from llama_index.core.schema import TextNode

from ._io import read_json, write_json_atomic, write_text_atomic
from .config import Config
from .errors import IndexMismatchError, IndexStateError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
DOCSTORE = "docstore.jsonl"
DOCUMENTS = "documents.jsonl"
_LIBRARIES = ("ragpipe", "llama-index-core", "bm25s", "faiss-cpu", "kiwipiepy", "sentence-transformers", "transformers", "torch", "numpy")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries an index depends on."""
    out = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return out


@dataclass
class Manifest:
    """What an index was built from; compared with the config at load time."""

    config_sha256: str
    embedding: dict[str, Any] | None
    chunking: dict[str, Any]
    retrievers: dict[str, dict[str, Any]]
    doc_hashes: dict[str, str]
    counts: dict[str, int]
    created_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    libraries: dict[str, str] = field(default_factory=library_versions)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def write_docstore(path: Path, nodes: list[TextNode]) -> None:
    lines = [
        json.dumps({"node_id": n.node_id, "doc_id": n.ref_doc_id, "text": n.text, "metadata": n.metadata}, ensure_ascii=False)
        for n in nodes
    ]
    write_text_atomic(path, "\n".join(lines) + ("\n" if lines else ""))


def write_documents(path: Path, docs: list[Any]) -> None:
    """Source documents as ingested (so upserts and deletes can rebuild without the source)."""
    lines = [json.dumps({"doc_id": d.doc_id, "text": d.text, "metadata": d.metadata}, ensure_ascii=False) for d in docs]
    write_text_atomic(path, "\n".join(lines) + ("\n" if lines else ""))


def read_documents(path: Path) -> list[Any]:
    from llama_index.core import Document

    try:
        with open(path, encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
    except FileNotFoundError as exc:
        raise IndexStateError(f"{path}: documents missing; re-run `ragpipe ingest`", path=path) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexStateError(f"{path}: corrupt ({exc}); re-run `ragpipe ingest --rebuild`", path=path) from exc
    return [Document(text=r["text"], id_=r["doc_id"], metadata=r.get("metadata") or {}) for r in rows]


def read_docstore(path: Path) -> dict[str, TextNode]:
    from llama_index.core.schema import NodeRelationship, RelatedNodeInfo

    nodes: dict[str, TextNode] = {}
    try:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                node = TextNode(id_=row["node_id"], text=row["text"], metadata=row.get("metadata") or {})
                if row.get("doc_id"):
                    node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=row["doc_id"])
                nodes[node.node_id] = node
    except FileNotFoundError as exc:
        raise IndexStateError(f"{path}: docstore missing; re-run `ragpipe ingest`", path=path) from exc
    except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as exc:
        raise IndexStateError(f"{path}: docstore corrupt near line {n} ({exc}); re-run `ragpipe ingest --rebuild`", path=path) from exc
    return nodes


def write_manifest(folder: Path, manifest: Manifest, cfg: Config) -> None:
    """Config snapshot first, manifest last (its presence marks the folder complete)."""
    snapshot = cfg.model_dump(mode="json", exclude={"base_dir"})
    write_text_atomic(folder / "config.yaml", yaml.safe_dump(snapshot, allow_unicode=True, sort_keys=False))
    write_json_atomic(folder / MANIFEST, manifest.to_dict())


def read_manifest(folder: Path) -> Manifest:
    """Load and check ``manifest.json``; refuse a missing, incomplete or corrupt index."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.exists():
        raise IndexStateError(f"{folder}: no index here; run `ragpipe ingest -c CONFIG` first", path=folder)
    if not path.exists():
        raise IndexStateError(f"{folder}: incomplete index (no {MANIFEST}); re-run `ragpipe ingest --rebuild`", path=folder)
    try:
        raw = read_json(path)
        manifest = Manifest(**raw)
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
        raise IndexStateError(f"{path}: corrupt manifest ({exc}); re-run `ragpipe ingest --rebuild`", path=path) from exc
    if manifest.schema_version != SCHEMA_VERSION:
        raise IndexStateError(f"{path}: schema_version {manifest.schema_version}, this ragpipe reads {SCHEMA_VERSION}; re-ingest", path=path)
    return manifest


def check_compatible(manifest: Manifest, expected_embedding: dict[str, Any] | None, cfg: Config, folder: Path) -> None:
    """Raise IndexMismatchError when the config asks for another embedding, chunking or retriever set."""
    hint = "; re-run `ragpipe ingest --rebuild` or use the config the index was built with"
    if expected_embedding is not None and manifest.embedding is not None:
        for key in ("model", "dim", "pooling", "text_model"):  # pooling / text_model: checked only when set
            built, wanted = manifest.embedding.get(key), expected_embedding.get(key)
            if wanted is not None and built != wanted:
                raise IndexMismatchError(
                    f"{folder}: index built with embedding {key} {built!r}, config asks for {wanted!r}{hint}",
                    path=folder, key=f"embedding.{key}", value=wanted,
                )
    chunking = cfg.chunking.model_dump(mode="json")
    if manifest.chunking != chunking:
        raise IndexMismatchError(f"{folder}: index built with chunking {manifest.chunking}, config asks for {chunking}{hint}", path=folder, key="chunking")
    for r in cfg.retrieval.retrievers:
        if r.name not in manifest.retrievers:
            raise IndexMismatchError(
                f"{folder}: retriever {r.name!r} is not in the index (has: {', '.join(manifest.retrievers)}){hint}", path=folder, key="retrieval.retrievers"
            )
        built_type = manifest.retrievers[r.name].get("type")
        if built_type != r.type:
            raise IndexMismatchError(f"{folder}: retriever {r.name!r} was built as {built_type!r}, config says {r.type!r}{hint}", path=folder)
