"""The live index: incremental changes to a snapshot, write-ahead-log replay, and opening the latest state.

``apply_changes`` makes a new snapshot from an old one plus upserted and deleted documents: only the
changed documents are chunked, embedded (through the vector cache) and tokenised; each retriever leg is
updated copy-on-write through the registry; the old snapshot keeps serving until it is replaced.
``open_latest`` opens the version ``CURRENT`` names and replays its log, so it holds every acknowledged write.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
from llama_index.core import Document
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.schema import TextNode

from ..config import Config
from ..core.errors import IndexStateError, OwnershipError, RetrievalError
from . import index_dir
from .registry import kind_of
from .snapshot import Snapshot, assemble, doc_hash, group_nodes, open_version
from .wal import WalRecord, read_wal, wal_path

logger = logging.getLogger(__name__)

Prepare = Callable[[list[Any]], tuple[list[TextNode], "np.ndarray | None"]]
"""Documents -> (their nodes, the nodes' passage vectors or None): chunking and embedding, supplied by the caller."""


class Changes(NamedTuple):
    """What a change did, in documents."""

    added: int
    changed: int
    removed: int
    unchanged: int


def diff(snapshot: Snapshot, documents: Sequence[Any]) -> tuple[list[Any], list[Any], list[str], Changes]:
    """Split a full document set against ``snapshot``: (added, changed, removed ids, counts)."""
    wanted = {d.doc_id: d for d in documents}
    old = snapshot.documents
    added = [d for k, d in wanted.items() if k not in old]
    changed = [d for k, d in wanted.items() if k in old and doc_hash(old[k]) != doc_hash(d)]
    removed = [k for k in old if k not in wanted]
    return added, changed, removed, Changes(len(added), len(changed), len(removed), len(wanted) - len(added) - len(changed))


def apply_changes(snapshot: Snapshot, cfg: Config, upserts: Sequence[Any], deletes: Sequence[str], prepare: Prepare,
                  reranker: Any = None, by_api: bool = False) -> tuple[Snapshot, Changes]:
    """A new snapshot with ``upserts`` added or replaced (by doc_id) and ``deletes`` removed.

    Unchanged upserts are no-ops. Only new or changed text is chunked, embedded and tokenised.
    ``by_api``: the upserts came through the API, which then owns them; else the source owns them again.

    :raises RetrievalError: an unknown id to delete, or a change that would leave no document.
    """
    missing = [i for i in deletes if i not in snapshot.documents]
    if missing:
        raise RetrievalError(f"unknown document id(s): {', '.join(missing[:10])}", key="doc_id", value=missing)
    fresh = {d.doc_id: d for d in upserts}
    new_docs = [d for k, d in fresh.items() if k not in snapshot.documents or doc_hash(snapshot.documents[k]) != doc_hash(d)]
    documents = {k: d for k, d in snapshot.documents.items() if k not in set(deletes)}
    documents.update({d.doc_id: d for d in new_docs})
    if not documents:
        raise RetrievalError("refusing to delete every document: an index needs at least one", key="doc_id")
    gone_docs = set(deletes) | {d.doc_id for d in new_docs if d.doc_id in snapshot.documents}
    gone_nodes = {nid for doc in gone_docs for nid in snapshot.doc_nodes.get(doc, ())}
    changes = Changes(sum(1 for d in new_docs if d.doc_id not in snapshot.documents),
                      sum(1 for d in new_docs if d.doc_id in snapshot.documents), len(set(deletes)),
                      len(fresh) - len(new_docs))
    written = set(fresh)
    api_ids = frozenset((snapshot.api_ids - set(deletes) - written) | (written if by_api else set()))
    if not new_docs and not gone_nodes:
        return (snapshot if api_ids == snapshot.api_ids else replace(snapshot, api_ids=api_ids)), changes
    new_nodes, vectors = prepare(new_docs) if new_docs else ([], None)
    nodes = {k: n for k, n in snapshot.nodes.items() if k not in gone_nodes}
    nodes.update({n.node_id: n for n in new_nodes})
    rcfgs = {r.name: r for r in cfg.retrieval.retrievers}
    legs = {name: kind_of(rcfgs[name]).update(leg, gone_nodes, new_nodes, vectors if kind_of(rcfgs[name]).needs_vectors else None, nodes)
            for name, leg in snapshot.legs.items()}
    doc_nodes = {k: v for k, v in snapshot.doc_nodes.items() if k not in gone_docs}
    doc_nodes.update(group_nodes({n.node_id: n for n in new_nodes}))
    new = replace(snapshot, search=assemble(cfg, legs, reranker), nodes=nodes, legs=legs, documents=documents,
                  doc_nodes=doc_nodes, api_ids=api_ids)
    return new, changes


def to_record(upserts: Sequence[Any], deletes: Sequence[str]) -> WalRecord:
    """The log record of one change."""
    if deletes:
        return WalRecord("delete", [], list(deletes))
    return WalRecord("upsert", [{"doc_id": d.doc_id, "text": d.text, "metadata": dict(d.metadata)} for d in upserts], [])


def replay(snapshot: Snapshot, cfg: Config, folder: Path, prepare: Prepare, reranker: Any = None) -> Snapshot:
    """``snapshot`` plus the log records written after ``snapshot.wal_end`` (by this or another process)."""
    if snapshot.version is None:
        return snapshot
    read = read_wal(wal_path(folder, snapshot.version), snapshot.wal_end)
    if not read.records:
        return snapshot
    for rec in read.records:
        docs = [Document(text=d["text"], id_=d["doc_id"], metadata=d.get("metadata") or {}) for d in rec.documents]
        snapshot, _ = apply_changes(snapshot, cfg, docs, rec.doc_ids, prepare, reranker, by_api=True)  # the log holds API writes only
    logger.info("replayed %d logged change(s) on %s", len(read.records), snapshot.version)
    return replace(snapshot, wal_end=read.end, wal_records=snapshot.wal_records + len(read.records))


def open_latest(folder: Path, cfg: Config, embed_model: BaseEmbedding | None, prepare: Prepare, reranker: Any = None,
                attempts: int = 5) -> Snapshot:
    """The version ``CURRENT`` names, with its log replayed. A version that a writer removed while it was being
    opened is followed to the newer ``CURRENT``; readers never move or repair files."""
    folder = Path(folder)
    last: Exception | None = None
    for _ in range(attempts):
        version = index_dir.require_current(folder)
        try:
            snapshot = open_version(folder, version, cfg, embed_model, reranker)
        except IndexStateError as exc:
            if index_dir.read_current(folder) == version:
                raise
            last = exc  # compacted and pruned under us: follow CURRENT
            continue
        return replay(snapshot, cfg, folder, prepare, reranker)
    raise IndexStateError(f"{folder}: the index changed {attempts} times while it was being opened ({last})", path=folder)


def documents_on_disk(folder: Path) -> tuple[dict[str, Any], set[str]]:
    """(doc_id -> Document, ids written through the API) of ``CURRENT`` with its log applied, read without models or legs."""
    folder = Path(folder)
    version = index_dir.require_current(folder)
    documents = {d.doc_id: d for d in index_dir.read_documents(folder / version / index_dir.DOCUMENTS)}
    api = set(index_dir.read_manifest(folder / version).api_written)
    for rec in read_wal(wal_path(folder, version)).records:  # every logged record is an API write
        for doc_id in rec.doc_ids:
            documents.pop(doc_id, None)
            api.discard(doc_id)
        for d in rec.documents:
            documents[d["doc_id"]] = Document(text=d["text"], id_=d["doc_id"], metadata=d.get("metadata") or {})
            api.add(d["doc_id"])
    return documents, api


def api_written(folder: Path) -> set[str]:
    """Ids of documents whose last write came through the API (empty when there is no index yet)."""
    if index_dir.read_current(Path(folder)) is None:
        return set()
    return documents_on_disk(folder)[1]


def refuse_dropping_api_writes(folder: Path) -> None:
    """OwnershipError when the index holds documents written through the API (a rebuild from the source drops them)."""
    try:
        owned = sorted(api_written(folder))
    except IndexStateError:  # a damaged index: nothing can be read, nothing to keep
        return
    if owned:
        raise OwnershipError(f"--rebuild would drop {len(owned)} document(s) written through the API (upsert / POST "
                             f"/documents): {', '.join(owned[:10])}{' ...' if len(owned) > 10 else ''}. Re-run with "
                             "--take-over to rebuild from the source alone", key="doc_id", value=owned)


def source_changes(snapshot: Snapshot, documents: Sequence[Any], take_over: bool) -> tuple[list[Any], list[str], Changes]:
    """What an ingest of the full source ``documents`` writes: (upserts, deletes, counts).

    The API owns what it wrote: documents the source lacks are kept, and a source version of an API-written
    document is refused (``OwnershipError``) unless ``take_over``, when the source wins everywhere.
    """
    added, changed, removed, counts = diff(snapshot, documents)
    if take_over:
        return added + changed, removed, counts
    undo = sorted(d.doc_id for d in changed if d.doc_id in snapshot.api_ids)
    if undo:
        raise OwnershipError(
            f"the source would replace {len(undo)} document(s) last written through the API (upsert / POST /documents): "
            f"{', '.join(undo[:10])}{' ...' if len(undo) > 10 else ''}. Delete them through the API first, or re-run "
            "with --take-over to let the source win", key="doc_id", value=undo)
    kept = [k for k in removed if k in snapshot.api_ids]
    if kept:
        logger.info("kept %d document(s) written through the API that the source does not have (--take-over removes them)",
                    len(kept))
    removed = [k for k in removed if k not in snapshot.api_ids]
    return added + changed, removed, counts._replace(removed=len(removed), unchanged=counts.unchanged + len(kept))
