"""One index directory: versioned snapshot folders, a ``CURRENT`` pointer, a write-ahead log per version.

```
<index_dir>/
  CURRENT             the name of the current version, replaced atomically
  .writer.lock        the cross-process writer lock (storage.lock)
  v000007/            one complete snapshot, never changed after it is written:
    manifest.json       written last; a folder without it is incomplete and refused
    config.yaml         resolved config snapshot (no secrets: keys are only env var names)
    docstore.jsonl      node_id, doc_id, text, metadata (UTF-8)
    documents.jsonl     the source documents (upserts and deletes start from them)
    retrievers/<name>/  token ids (lexical) or the FAISS index, each with its params
  v000007.wal         changes acknowledged since v000007 was written (storage.wal)
```
A version is built in a temp folder and renamed into place; then ``CURRENT`` is replaced. A reader
opens whole versions only and never moves or repairs files. ``manifest.json`` records, under
``build``, every setting that decides what was built (``storage.integrity`` compares them on load).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
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

SCHEMA_VERSION = 3  # 2: build settings recorded under "build"; 3: versioned folders + write-ahead log
MANIFEST = "manifest.json"
CURRENT = "CURRENT"
_VERSION = re.compile(r"^v\d{6}$")
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
    api_written: list[str] = field(default_factory=list)  # ids whose last write came through upsert, not the source
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


# --------------------------------------------------------------------------- versions


def read_current(folder: Path) -> str | None:
    """The current version's name, or None when no version was ever written here.

    :raises IndexStateError: the folder holds an index of the older single-folder format, or a bad pointer.
    """
    folder = Path(folder)
    try:
        name = (folder / CURRENT).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        if (folder / MANIFEST).exists():
            raise IndexStateError(f"{folder}: index written by an older ragpipe (single folder, no {CURRENT}); "
                                  "run `ragpipe ingest --rebuild`", path=folder) from None
        return None
    if not _VERSION.match(name):
        raise IndexStateError(f"{folder / CURRENT}: {name!r} is not a version name; run `ragpipe ingest --rebuild`", path=folder)
    return name


def require_current(folder: Path) -> str:
    """The current version's name; a clear ``IndexStateError`` when there is no index."""
    current = read_current(folder)
    if current is None:
        raise IndexStateError(f"{folder}: no index here; run `ragpipe ingest -c CONFIG` first", path=folder)
    return current


def write_current(folder: Path, version: str) -> None:
    write_text_atomic(Path(folder) / CURRENT, version + "\n")


def next_version(folder: Path) -> str:
    """The name after the highest complete version in ``folder`` (``v000001`` for an empty folder)."""
    numbers = [int(p.name[1:]) for p in Path(folder).glob("v*") if _VERSION.match(p.name) and p.is_dir()]
    return f"v{max(numbers, default=0) + 1:06d}"


def prune_versions(folder: Path, keep: set[str]) -> None:
    """Delete version folders and logs not in ``keep`` (a reader that still opens one retries on CURRENT)."""
    for p in Path(folder).iterdir():
        stem = p.name[: -len(".wal")] if p.name.endswith(".wal") else p.name
        if _VERSION.match(stem) and stem not in keep:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
