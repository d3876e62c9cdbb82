"""Sources -> LlamaIndex Documents with stable ids.

A document's id is its source key (``data.id_field``, a file path, a KLUE ``context_id``) or,
when there is none, a hash of its content, so re-ingesting unchanged data yields the same ids.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from llama_index.core import Document

from ..core.progress import progress
from ..config import Config, DataConfig, LoaderType
from ..core.errors import LoaderError
from ..core.io import iter_jsonl

logger = logging.getLogger(__name__)


def content_id(text: str, prefix: str = "doc") -> str:
    """Stable id from content."""
    return f"{prefix}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:16]}"


@dataclass(frozen=True)
class SkippedFile:
    """A folder file that could not be read, and why."""

    path: str
    reason: str


def load_documents(cfg: Config, show_progress: bool = False, skipped: list[SkippedFile] | None = None) -> list[Document]:
    """Read ``cfg.data`` into Documents; raises LoaderError naming the file when it can't.

    With a ``skipped`` list, a folder file that cannot be read is logged, appended there and left out instead.
    """
    data = cfg.data
    if data is None:
        raise LoaderError("data: this config has no data section to ingest", key="data")
    path = cfg.resolve_path(data.path)
    reader = _READERS.get(data.loader)
    if reader is None:  # pragma: no cover - the enum and registry are kept in step by a test
        raise LoaderError(f"data.loader = {data.loader.value!r} has no reader")
    if path is not None and data.loader != LoaderType.HF and not path.exists():
        raise LoaderError(f"data.path: {path} does not exist", path=path, key="data.path")
    if path is None and data.loader not in (LoaderType.HF, LoaderType.KLUE_MRC):
        raise LoaderError(f"data.path: required for loader {data.loader.value!r}", key="data.path")
    docs = _read_folder(data, path, skipped) if reader is _read_folder else reader(data, path)
    if data.limit:
        docs = docs[: data.limit]
    docs = [d for d in docs if d.text.strip()]
    if not docs:
        raise LoaderError(f"{path or data.dataset}: no documents with text (empty corpus)", path=path, key="data.path")
    _check_unique_ids(docs, path)
    logger.info("loaded %d documents from %s (%s)", len(docs), path or data.dataset, data.loader.value)
    return docs


def _check_unique_ids(docs: list[Document], path: Path | None) -> None:
    seen: set[str] = set()
    for d in docs:
        if d.doc_id in seen:
            raise LoaderError(f"{path}: duplicate document id {d.doc_id!r} (check data.id_field)", path=path, value=d.doc_id)
        seen.add(d.doc_id)


# --------------------------------------------------------------------------- tables


def _rows_to_documents(rows: Iterable[tuple[str, Any]], data: DataConfig, source: str) -> list[Document]:
    """``(where, row)`` pairs -> Documents; ``where`` (``line 3``, ``[0]``, ``row 2``) names a bad row in the error."""
    docs = []
    for label, row in rows:
        where = f"{source}: {label}"
        if not isinstance(row, Mapping):
            raise LoaderError(f"{where}: expected an object with a {data.text_field!r} field, got {type(row).__name__}",
                              path=source, value=label)
        if data.text_field not in row:
            raise LoaderError(f"{where}: missing text field {data.text_field!r} (data.text_field)", path=source, key="data.text_field")
        text = row[data.text_field]
        if not isinstance(text, str):
            raise LoaderError(f"{where}: field {data.text_field!r} is {type(text).__name__}, not text", path=source, key="data.text_field")
        text = _unicode(text, where, data.text_field)
        title = _unicode(str(_plain(row.get(data.title_field)) or ""), where, data.title_field) if data.title_field else ""
        metadata = {k: _unicode(_plain(row.get(k)), where, k) for k in data.metadata_fields if row.get(k) is not None}
        if title:
            metadata.setdefault(data.title_field, title)
        if data.id_field:
            raw_id = _plain(row.get(data.id_field))
            if raw_id in (None, ""):
                raise LoaderError(f"{where}: missing id field {data.id_field!r} (data.id_field)", path=source, key="data.id_field")
            doc_id = _unicode(str(raw_id), where, data.id_field)
        else:
            doc_id = content_id(title + "\n" + text)
        body = f"{title}\n{text}" if title else text
        docs.append(Document(text=body, id_=doc_id, metadata={**metadata, "doc_id": doc_id}))
    return docs


def _plain(value: Any) -> Any:
    """Metadata values LlamaIndex can store: str, int, float, None."""
    if isinstance(value, (str, int, float)) or value is None:
        return value
    if hasattr(value, "item") and getattr(value, "size", 1) == 1:  # numpy / pandas scalars, not arrays
        return value.item()
    return str(value)


def _unicode(value: Any, where: str, field: str) -> Any:
    """``value``, unless it is a string that can't be written as UTF-8 (a lone surrogate such as a JSON ``\\ud800``)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = value[exc.start]
            raise LoaderError(f"{where}: field {field!r} has a lone surrogate {bad!r} at character {exc.start}, not valid Unicode text",
                              key=field, value=bad) from None
    return value


def _read_jsonl(data: DataConfig, path: Path) -> list[Document]:
    return _rows_to_documents(((f"line {n}", row) for n, row in iter_jsonl(path)), data, str(path))


def _read_json(data: DataConfig, path: Path) -> list[Document]:
    with _open_text(path) as lines:
        text = "".join(lines)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LoaderError(f"{path}: invalid JSON at line {exc.lineno} ({exc.msg})", path=path) from exc
    prefix = "data" if isinstance(obj, dict) and "data" in obj else ""
    rows = obj.get("data", obj) if isinstance(obj, dict) else obj
    if not isinstance(rows, list):
        raise LoaderError(f"{path}: expected a list of objects (or {{'data': [...]}})", path=path)
    return _rows_to_documents(((f"{prefix}[{i}]", row) for i, row in enumerate(rows)), data, str(path))


def _read_table(data: DataConfig, path: Path) -> list[Document]:
    import pandas as pd

    try:
        if data.loader == LoaderType.CSV:
            frame = pd.read_csv(path, encoding="utf-8", dtype=str, keep_default_na=False)
        else:
            frame = pd.read_parquet(path)
    except UnicodeDecodeError as exc:
        raise LoaderError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})", path=path) from exc
    except Exception as exc:
        raise LoaderError(f"{path}: cannot read {data.loader.value} ({exc})", path=path) from exc
    return _rows_to_documents(_numbered(frame.to_dict("records")), data, str(path))


def _numbered(rows: Iterable[Any]) -> Iterator[tuple[str, Any]]:
    """``("row 1", first), ("row 2", second), ...``."""
    return ((f"row {i}", row) for i, row in enumerate(rows, 1))


class _open_text:
    """Open UTF-8 text; decoding errors become LoaderError naming the file and byte offset."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> list[str]:
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raise LoaderError(f"{self.path}: cannot read ({exc.strerror})", path=self.path) from exc
        try:
            return raw.decode("utf-8-sig").splitlines(keepends=True)
        except UnicodeDecodeError as exc:
            raise LoaderError(f"{self.path}: not UTF-8 text ({exc.reason} at byte {exc.start})", path=self.path) from exc

    def __exit__(self, *exc: Any) -> None:
        return None


# --------------------------------------------------------------------------- folders, hub, QA sets


def _read_folder(data: DataConfig, path: Path, skipped: list[SkippedFile] | None = None) -> list[Document]:
    """One Document per file, id = the path relative to the folder; see ``load_documents`` for ``skipped``."""
    if path.is_file():
        files = [path]
    else:
        pattern = "**/*" if data.recursive else "*"
        exts = {e.lower() for e in data.extensions}
        files = sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in exts)
    docs: list[Document] = []
    for file in progress(files, "loading files", total=len(files), unit="file"):
        rel = file.relative_to(path).as_posix() if path.is_dir() else file.name
        try:
            doc = _read_file(file, rel)
        except LoaderError as exc:
            if skipped is None:
                raise
            logger.info("skipped %s", exc)  # the caller reports every skipped file at the end
            skipped.append(SkippedFile(str(file), str(exc).removeprefix(f"{file}: ")))
            continue
        docs.append(doc)
    return docs


def _read_file(file: Path, rel: str) -> Document:
    """One folder file as a Document with id ``rel``; LoaderError naming it when unreadable or empty."""
    from llama_index.core import SimpleDirectoryReader

    from .file_readers import file_extractors

    if file.suffix.lower() in (".txt", ".md"):
        with _open_text(file) as lines:  # strict UTF-8, unlike the reader's errors="ignore"
            "".join(lines)
    try:
        reader = SimpleDirectoryReader(input_files=[str(file)], file_extractor=file_extractors(), errors="strict",
                                       raise_on_error=True)
        parts = reader.load_data()
    except Exception as exc:
        cause = exc.__cause__ or exc
        raise LoaderError(f"{file}: cannot read ({type(cause).__name__}: {cause})", path=file) from exc
    text = "\n\n".join(p.text for p in parts)
    if not text.strip():
        raise LoaderError(f"{file}: no text found (a scanned PDF or an empty file?)", path=file)
    title = next((p.metadata["title"] for p in parts if p.metadata.get("title")), None) or _markdown_title(file, text)
    meta = {"file_path": rel, "file_name": file.name, **({"title": title} if title else {}), "doc_id": rel}
    return Document(text=text, id_=rel, metadata=meta)


def _markdown_title(file: Path, text: str) -> str | None:
    """A Markdown file's first ``# heading``, if it opens with one."""
    if file.suffix.lower() != ".md":
        return None
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first.lstrip("#").strip() or None if first.startswith("#") else None


def _read_hf(data: DataConfig, path: Path | None) -> list[Document]:
    if not data.dataset:
        raise LoaderError("data.dataset: required for loader 'hf'", key="data.dataset")
    try:
        from datasets import load_dataset
    except ImportError as exc:  # pragma: no cover
        raise LoaderError("loader 'hf' needs the datasets package: pip install datasets") from exc
    try:
        ds = load_dataset(data.dataset, data.subset, split=data.split)
    except Exception as exc:
        raise LoaderError(
            f"data.dataset = {data.dataset!r}: load_dataset failed ({type(exc).__name__}); "
            "is the Hugging Face hub reachable? Use a local jsonl/parquet file instead",
            key="data.dataset",
            value=data.dataset,
        ) from exc
    if data.limit:
        ds = ds.select(range(min(data.limit, len(ds))))
    return _rows_to_documents(_numbered(ds), data, f"hf:{data.dataset}")


def _read_klue(data: DataConfig, path: Path | None) -> list[Document]:
    from .qa import load_hf_klue_mrc, read_klue_mrc

    if path is None:
        return load_hf_klue_mrc(split=data.split, dataset=data.dataset or "klue", subset=data.subset or "mrc").documents
    return read_klue_mrc(path).documents


def _read_squad(data: DataConfig, path: Path) -> list[Document]:
    from .qa import read_squad

    return read_squad(path).documents


def _read_images(data: DataConfig, path: Path) -> list[Document]:
    from .images import read_images

    return read_images(path, recursive=data.recursive)


_READERS: dict[LoaderType, Callable[[DataConfig, Any], list[Document]]] = {
    LoaderType.FOLDER: _read_folder,
    LoaderType.JSONL: _read_jsonl,
    LoaderType.JSON: _read_json,
    LoaderType.CSV: _read_table,
    LoaderType.PARQUET: _read_table,
    LoaderType.HF: _read_hf,
    LoaderType.KLUE_MRC: _read_klue,
    LoaderType.SQUAD: _read_squad,
    LoaderType.IMAGES: _read_images,
}
