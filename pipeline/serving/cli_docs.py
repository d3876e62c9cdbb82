"""``ragpipe docs list | show | export``: the documents an index holds, read from disk without loading any model."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

from ..core.errors import RetrievalError
from .cli_base import ConfigOpt, JsonOpt, SetOpt, _run, app

docs_app = typer.Typer(no_args_is_help=True, help="The documents of an index: list, show one, export them as JSONL.")
app.add_typer(docs_app, name="docs")


def _documents(config: Path, set_: Optional[List[str]]) -> tuple[dict[str, Any], set[str] | None]:
    """(doc_id -> Document, ids the API wrote; None where that is not recorded) of the config's index."""
    from ..config import load_config

    cfg = load_config(config, set_ or [])
    if cfg.storage.backend == "qdrant":
        from .pipeline import Pipeline

        return {d.doc_id: d for d in Pipeline(cfg).documents()}, None
    from ..storage.live import documents_on_disk

    return documents_on_disk(cfg.resolve_path(cfg.index_dir))


def _owner(doc_id: str, api: set[str] | None) -> str:
    return "-" if api is None else ("api" if doc_id in api else "source")


@docs_app.command("list")
def docs_list(config: Path = ConfigOpt, set_: Optional[List[str]] = SetOpt, as_json: bool = JsonOpt) -> None:
    """Every document: id, owner (source: ingest; api: upsert / POST /documents), characters, title."""

    def body() -> None:
        from ..storage.snapshot import doc_hash

        docs, api = _documents(config, set_)
        rows = [{"doc_id": k, "owner": _owner(k, api), "chars": len(d.text), "title": d.metadata.get("title"),
                 "sha256": doc_hash(d)} for k, d in sorted(docs.items())]
        if as_json:
            typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
            return
        for r in rows:
            typer.echo(f"{r['doc_id']}\t{r['owner']}\t{r['chars']}\t{r['title'] or ''}")
        typer.echo(f"{len(rows)} documents" + (f" ({sum(r['owner'] == 'api' for r in rows)} written through the API)"
                                               if api is not None else ""), err=True)

    _run(body)


@docs_app.command("show")
def docs_show(doc_id: str = typer.Argument(..., help="Document id, e.g. hr/welfare.md"), config: Path = ConfigOpt,
              set_: Optional[List[str]] = SetOpt, as_json: bool = JsonOpt) -> None:
    """One document's text and metadata."""

    def body() -> None:
        docs, api = _documents(config, set_)
        doc = docs.get(doc_id)
        if doc is None:
            near = [k for k in sorted(docs) if doc_id.lower() in k.lower()][:5]
            raise RetrievalError(f"no document {doc_id!r}" + (f"; similar ids: {', '.join(near)}" if near else
                                                                "; `ragpipe docs list` shows the ids"), key="doc_id", value=doc_id)
        if as_json:
            typer.echo(json.dumps({"doc_id": doc_id, "owner": _owner(doc_id, api), "metadata": doc.metadata, "text": doc.text},
                                  ensure_ascii=False, indent=2))
            return
        typer.echo(f"# {doc_id}  (owner: {_owner(doc_id, api)})")
        for key, value in doc.metadata.items():
            typer.echo(f"{key}: {value}")
        typer.echo("\n" + doc.text)

    _run(body)


@docs_app.command("export")
def docs_export(config: Path = ConfigOpt, set_: Optional[List[str]] = SetOpt,
                out: Optional[Path] = typer.Option(None, "--out", help="JSONL file to write (default: stdout)")) -> None:
    """Every document as JSONL {doc_id, text, metadata}: a backup, or a source for `data: {loader: jsonl, id_field: doc_id}`."""

    def body() -> None:
        docs, _ = _documents(config, set_)
        lines = [json.dumps({"doc_id": k, "text": d.text, "metadata": d.metadata}, ensure_ascii=False) + "\n"
                 for k, d in sorted(docs.items())]
        if out is None:
            sys.stdout.writelines(lines)
            return
        from ..core.io import write_text_atomic

        write_text_atomic(out, "".join(lines))
        typer.echo(f"wrote {len(lines)} documents to {out}", err=True)

    _run(body)
