"""The ``ragpipe`` command's app, global flags and the helpers every command shares.

stdout carries results (text, or JSON with --json); logs and progress bars go to stderr.
Errors print one line and exit 2 (config) or 1 (anything else); --debug shows the traceback.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from ..core.errors import ConfigError, RagpipeError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Korean-first hybrid retrieval pipeline on LlamaIndex.")
models_app = typer.Typer(no_args_is_help=True, help="Prepare and resolve models.")
app.add_typer(models_app, name="models")
cache_app = typer.Typer(no_args_is_help=True, help="The embedding cache ($RAGPIPE_CACHE_DIR/embeddings.sqlite).")
app.add_typer(cache_app, name="cache")

_state: dict[str, Any] = {"debug": False}

ConfigOpt = typer.Option(..., "--config", "-c", help="YAML config file")
SetOpt = typer.Option(None, "--set", help="Override a config key, e.g. --set retrieval.fusion.mode=rrf (repeatable)")
JsonOpt = typer.Option(False, "--json", help="Print JSON on stdout")


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"ragpipe {version('ragpipe')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            typer.echo("ragpipe (not installed; version unknown)")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit"),
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
    """The config's Pipeline; the config is read first, so its errors come before the ML stack is imported."""
    from ..config import load_config

    cfg = load_config(config, overrides or [])
    from .pipeline import Pipeline

    return Pipeline(cfg, show_progress=True)


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
