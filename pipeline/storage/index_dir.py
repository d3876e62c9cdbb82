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
ingest leaves the previous index exactly as it was. ``manifest.json`` records, under ``build``,
every setting that decides what was built (``storage.integrity`` compares them on load).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from llama_index.core.schema import TextNode

from ..core.errors import IndexStateError, LoaderError
from ..core.io import iter_jsonl, read_json, write_json_atomic, write_text_atomic
from ..core.versions import library_versions
from ..config import Config

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: every build-deciding setting recorded under "build"
MANIFEST = "manifest.json"
DOCSTORE = "docstore.jsonl"
DOCUMENTS = "documents.jsonl"


@dataclass
class Manifest:
    """What an index was built from; compared with the config at load time."""

    config_sha256: str
    embedding: dict[str, Any] | None
    build: dict[str, Any]
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


def _rows(path: Path, what: str) -> list[dict[str, Any]]:
    """Rows of an index JSONL file; a missing or damaged file is an ``IndexStateError`` saying how to mend it."""
    if not Path(path).exists():
        raise IndexStateError(f"{path}: {what} missing; re-run `ragpipe ingest`", path=path)
    try:
        return [row for _, row in iter_jsonl(path)]
    except LoaderError as exc:
        raise IndexStateError(f"{exc}; re-run `ragpipe ingest --rebuild`", path=path) from exc


def read_documents(path: Path) -> list[Any]:
    from llama_index.core import Document

    rows = _rows(path, "documents")
    try:
        return [Document(text=r["text"], id_=r["doc_id"], metadata=r.get("metadata") or {}) for r in rows]
    except KeyError as exc:
        raise IndexStateError(f"{path}: a row lacks {exc}; re-run `ragpipe ingest --rebuild`", path=path) from exc


def read_docstore(path: Path) -> dict[str, TextNode]:
    from llama_index.core.schema import NodeRelationship, RelatedNodeInfo

    nodes: dict[str, TextNode] = {}
    for n, row in enumerate(_rows(path, "docstore"), 1):
        try:
            node = TextNode(id_=row["node_id"], text=row["text"], metadata=row.get("metadata") or {})
        except KeyError as exc:
            raise IndexStateError(f"{path}: docstore row {n} lacks {exc}; re-run `ragpipe ingest --rebuild`", path=path) from exc
        if row.get("doc_id"):
            node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=row["doc_id"])
        nodes[node.node_id] = node
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
        version = raw.get("schema_version") if isinstance(raw, dict) else None
        if isinstance(raw, dict) and version != SCHEMA_VERSION:
            raise IndexStateError(f"{path}: index format {version}, this ragpipe reads {SCHEMA_VERSION}; "
                                  "run `ragpipe ingest --rebuild`", path=path)
        return Manifest(**raw)
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
        raise IndexStateError(f"{path}: corrupt manifest ({exc}); re-run `ragpipe ingest --rebuild`", path=path) from exc
