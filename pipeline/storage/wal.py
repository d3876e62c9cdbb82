"""Write-ahead log: each acknowledged upsert or delete is one fsynced JSON line beside its snapshot version.

``<index>/<version>.wal`` holds the changes made after ``<version>`` was written, in order. A record is
acknowledged only after its line is on disk; a kill during an append leaves at most one torn last line,
which readers skip and the next writer cuts off before appending. Compaction writes a new version that
includes every record and starts an empty log beside it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, NamedTuple

logger = logging.getLogger(__name__)


class WalRecord(NamedTuple):
    """One change: ``op`` is ``upsert`` (``documents``: doc_id, text, metadata) or ``delete`` (``doc_ids``)."""

    op: str
    documents: list[dict[str, Any]]
    doc_ids: list[str]


class WalRead(NamedTuple):
    """Complete records from ``start`` on, and the byte offset just after the last complete line."""

    records: list[WalRecord]
    end: int


def wal_path(folder: Path, version: str) -> Path:
    return Path(folder) / f"{version}.wal"


def read_wal(path: Path, start: int = 0) -> WalRead:
    """Complete records after byte ``start`` (a torn last line, from a kill mid-append, is left out)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            data = fh.read()
    except FileNotFoundError:
        return WalRead([], start)
    records, end = [], start
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break  # torn: never acknowledged
        try:
            raw = json.loads(line)
        except ValueError:
            logger.warning("%s: skipped an unreadable record at byte %d", path, end)
            end += len(line)
            continue
        records.append(WalRecord(raw["op"], raw.get("documents") or [], raw.get("doc_ids") or []))
        end += len(line)
    return WalRead(records, end)


def append_wal(path: Path, record: WalRecord) -> int:
    """Append ``record`` durably (write, flush, fsync) and return the new end offset.

    The caller holds the writer lock. A torn tail left by a killed writer is cut off first.
    """
    path = Path(path)
    end = read_wal(path).end if path.exists() else 0
    line = json.dumps({"op": record.op, "documents": record.documents, "doc_ids": record.doc_ids}, ensure_ascii=False) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, end)
        os.lseek(fd, end, os.SEEK_SET)
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return end + len(line.encode("utf-8"))
