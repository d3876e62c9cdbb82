"""Small I/O helpers: atomic writes and folder swaps, UTF-8 JSON and JSONL, content hashes."""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import LoaderError

logger = logging.getLogger(__name__)


def sha256_text(text: str) -> str:
    """Hex sha256 of a UTF-8 string."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    """Write text to ``path`` via a temp file + fsync + rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results and indexes are meant to be shared
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dump_json(obj: Any) -> str:
    """JSON with Hangul kept readable."""
    return json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=False, default=str)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as UTF-8 JSON."""
    write_text_atomic(path, dump_json(obj) + "\n")


def read_json(path: Path) -> Any:
    """Read UTF-8 JSON."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)`` for each non-blank line of a UTF-8 JSONL file (a leading BOM is skipped).

    :raises LoaderError: the file is missing or unreadable, a line is not UTF-8 (names line and byte offset)
        or not a JSON object (names file and line).
    """
    path = Path(path)
    try:
        fh = open(path, "rb")  # bytes, decoded line by line: a decoding error names its own line
    except FileNotFoundError as exc:
        raise LoaderError(f"{path}: file not found", path=path) from exc
    except OSError as exc:
        raise LoaderError(f"{path}: cannot read ({exc.strerror})", path=path) from exc
    with fh:
        offset = 0
        for n, raw in enumerate(fh, 1):
            start = len(codecs.BOM_UTF8) if n == 1 and raw.startswith(codecs.BOM_UTF8) else 0
            try:
                line = raw[start:].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise LoaderError(f"{path}: not UTF-8 text ({exc.reason} at line {n}, byte {offset + start + exc.start})",
                                  path=path, value=n) from exc
            offset += len(raw)
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LoaderError(f"{path}: line {n}: invalid JSON ({exc.msg})", path=path, value=n) from exc
            if not isinstance(obj, dict):
                raise LoaderError(f"{path}: line {n}: expected a JSON object, got {type(obj).__name__}", path=path, value=n)
            yield n, obj


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_pid(folder: Path, marker: str) -> int | None:
    """The writer pid in ``.<name>.<marker>-<pid>[-...]``, or None when the name is not ours."""
    rest = folder.name.rsplit(marker, 1)[-1]
    head = rest.split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _stale(target: Path, marker: str) -> list[Path]:
    """Folders beside ``target`` of our ``marker`` naming whose writer process is gone."""
    out = []
    for p in target.parent.glob(f".{glob_escape(target.name)}.{marker}-*"):
        pid = _owner_pid(p, f".{marker}-")
        if p.is_dir() and pid is not None and (pid == os.getpid() or not _pid_alive(pid)):
            out.append(p)
    return out


def glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped."""
    import glob

    return glob.escape(name)


def recover_interrupted_swap(target: Path) -> None:
    """Put back the previous folder when a crash hit between the two renames of a swap.

    ``atomic_directory`` moves the live folder to ``.<name>.old-<pid>`` and then the new one into place;
    a kill in between leaves no folder at ``target``. The unacknowledged new one is dropped.
    """
    target = Path(target)
    if target.exists():
        return
    olds = _stale(target, "old")
    if olds:
        old = max(olds, key=lambda p: p.stat().st_mtime)
        os.replace(old, target)
        logger.warning("restored %s from %s (a swap was interrupted)", target, old.name)


def _remove(stale: list[Path], where: Path) -> None:
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    if stale:
        logger.warning("removed %d folder(s) left beside %s by an interrupted write: %s", len(stale), where,
                       ", ".join(p.name for p in stale))


def remove_stale_folders(target: Path) -> None:
    """Delete temp and old folders beside ``target`` left by writers that died; one log line says so."""
    _remove(_stale(target, "tmp") + (_stale(target, "old") if Path(target).exists() else []), target)


def remove_dead_temp_folders(folder: Path) -> None:
    """Delete every ``.<name>.tmp-<pid>-*`` folder in ``folder`` whose writer process is gone (the caller holds the
    writer lock, so no live writer of this process is mid-write); one log line says so."""
    stale = [p for p in Path(folder).glob(".*.tmp-*")
             if p.is_dir() and (pid := _owner_pid(p, ".tmp-")) is not None and pid != os.getpid() and not _pid_alive(pid)]
    _remove(stale, Path(folder))


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a temp dir beside ``target``; on success it replaces ``target`` in one rename.

    On any exception the temp dir is removed and ``target`` is left exactly as it was. Temp folders are
    named ``.<name>.tmp-<pid>-<random>``, so the next writer can remove those of dead writers.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted_swap(target)
    remove_stale_folders(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
