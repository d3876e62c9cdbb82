"""``ragpipe`` command line: ingest | query | serve | demo | evaluate | tune | compact (tools in ``cli_tools``, documents in ``cli_docs``, training in ``cli_train``)."""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Iterator, List, Optional

import typer

from ..core.errors import ConfigError, RagpipeError
from . import cli_tools  # noqa: F401  # registers the models, cache, similarity and query-image commands
from . import cli_docs  # noqa: F401  # registers the docs commands
from . import cli_train  # noqa: F401  # registers the finetune commands
from .cli_base import ConfigOpt, JsonOpt, SetOpt, _hits_json, _pipeline, _print_hits, _run, _state, _valid_text, app


@app.command()
def ingest(
    config: Path = ConfigOpt,
    set_: Optional[List[str]] = SetOpt,
    rebuild: bool = typer.Option(False, "--rebuild", help="Ignore the previous index state"),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when a source file could not be read (it is still left out)"),
    take_over: bool = typer.Option(False, "--take-over", help="Let the source replace or remove documents written "
                                                             "through the API (upsert / POST /documents); by default "
                                                             "ingest keeps them and refuses to overwrite them"),
    as_json: bool = JsonOpt,
) -> None:
    """Load the configured source, embed and index it into the index directory.

    A folder file that cannot be read is named, left out and listed at the end; the rest is indexed.
    Documents written through the API are kept, and never overwritten without --take-over.
    """

    def body() -> None:
        report = _pipeline(config, set_).ingest(rebuild=rebuild, take_over=take_over)
        if as_json:
            typer.echo(json.dumps(asdict(report), ensure_ascii=False, indent=2))
        else:
            rate = report.new_embeddings / report.seconds["embedding"] if report.seconds.get("embedding") else 0.0
            typer.echo(
                f"indexed {report.documents} documents -> {report.nodes} nodes into {report.index_dir}\n"
                f"documents: {report.added} added, {report.changed} changed, {report.removed} removed, {report.unchanged} unchanged\n"
                f"embeddings: {report.new_embeddings} new, {report.cached_embeddings} from cache"
                + (f" ({rate:.1f} passages/s)" if rate else "")
                + f"\ntime: {report.seconds['total']:.1f} s"
            )
        if report.skipped:
            lines = "\n".join(f"  {s.path}: {s.reason}" for s in report.skipped)
            typer.echo(f"skipped {len(report.skipped)} file(s) that could not be read:\n{lines}", err=True)
            if strict:
                raise typer.Exit(1)

    _run(body)


@app.command()
def query(
    question: Optional[str] = typer.Argument(None, help="The question. Without one: --file, else one question per line "
                                                        "from stdin (an interactive prompt on a terminal)"),
    config: Path = ConfigOpt,
    set_: Optional[List[str]] = SetOpt,
    top_k: Optional[int] = typer.Option(None, "--top-k", min=1, help="Passages to return"),
    filter_: Optional[List[str]] = typer.Option(None, "--filter", help="Metadata filter key=value (repeatable; repeated flags are ANDed)"),
    answer: bool = typer.Option(False, "--answer", help="Synthesise an answer with the configured LLM (llm.provider)"),
    file: Optional[Path] = typer.Option(None, "--file", help="Questions, one per line (.jsonl: the 'question' field); "
                                                             "'-' is stdin. The models load once for all of them"),
    as_json: bool = JsonOpt,
) -> None:
    """Retrieve ranked passages for one question, or many (--file, stdin, a prompt), from the persisted index."""

    def body() -> None:
        if question is not None:
            _valid_text(question, "QUESTION")
        if file is not None and str(file) != "-" and not file.is_file():
            raise ConfigError(f"--file {file}: no such file", path=file, key="--file")
        pipe = _pipeline(config, set_)
        filters = _parse_filters(filter_ or [])
        pipe.load()
        synthesise = answer
        if synthesise and pipe.config.llm.provider.value == "none":
            typer.echo("no LLM is configured (llm.provider: none), so there is no answer to synthesise; showing the "
                       "retrieved passages only. Set llm.provider to openai_like or ollama (docs/service.md, "
                       "Answers from an LLM) to get one.", err=True)
            synthesise = False
        if question is not None:
            _answer_one(pipe, question, top_k, filters, synthesise, as_json, indent=2)
            return
        failed = 0
        for text in _questions(file):
            try:
                _answer_one(pipe, _valid_text(text, "QUESTION"), top_k, filters, synthesise, as_json, indent=None)
            except RagpipeError as exc:  # one bad line does not end the batch
                typer.echo(f"ragpipe: error: {exc}", err=True)
                failed += 1
        if failed:
            raise typer.Exit(1)

    _run(body)


def _answer_one(pipe: Any, question: str, top_k: int | None, filters: dict[str, str] | None, synthesise: bool,
                as_json: bool, indent: int | None) -> None:
    """Retrieve (or answer) one question and print it: text, or one JSON object (``indent=None``: one line)."""
    t0 = time.perf_counter()
    if synthesise:
        response = pipe.as_query_engine(top_k=top_k, filters=filters).query(question)
        hits, text = response.source_nodes, str(response)
    else:
        hits, text = pipe.retrieve(question, top_k=top_k, filters=filters), None
    seconds = time.perf_counter() - t0
    if as_json:
        out = {"query": question, "latency_ms": seconds * 1000, "answer": text, "results": _hits_json(hits)}
        typer.echo(json.dumps(out, ensure_ascii=False, indent=indent))
    else:
        if text:
            typer.echo(text)
        _print_hits(question, hits, seconds)


def _questions(file: Path | None) -> Iterator[str]:
    """Non-blank questions from ``file`` ('-' or none: stdin; a terminal gets a prompt); ``.jsonl``: the 'question' field."""
    if file is None and sys.stdin.isatty():
        typer.echo("type a question and press Enter; an empty line or Ctrl-D ends", err=True)
        while True:
            try:
                line = input("질문> ")
            except EOFError:
                return
            if not line.strip():
                return
            yield line.strip()
    if file is not None and str(file) != "-" and file.suffix == ".jsonl":
        from ..core.io import iter_jsonl

        for where, row in iter_jsonl(file):
            if not isinstance(row, dict) or not isinstance(row.get("question"), str):
                raise ConfigError(f"{file}: line {where}: expected an object with a 'question' string", path=file)
            yield row["question"]
        return
    if file is None or str(file) == "-":
        lines: Iterable[str] = sys.stdin
    else:
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--file {file}: cannot read ({exc})", path=file, key="--file") from exc
    for line in lines:
        if line.strip():
            yield line.strip()


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
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config file (default: configs/default.yaml "
                                                                      "here, else the one in ragpipe's source tree)"),
    questions: Optional[Path] = typer.Option(None, "--questions", help="JSONL of sample questions (default: data/sample_questions.jsonl)"),
    top_k: int = typer.Option(3, "--top-k", min=1),
    set_: Optional[List[str]] = SetOpt,
) -> None:
    """Ingest the embedded sample corpus and answer its sample questions (retrieval only)."""

    def body() -> None:
        pipe = _pipeline(config or _demo_config(), set_ or [])
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


def _demo_config() -> Path:
    """``configs/default.yaml`` in the working folder, else in the source tree this package runs from."""
    here = Path("configs/default.yaml")
    if here.is_file():
        return here
    tree = Path(__file__).resolve().parents[2] / "configs" / "default.yaml"
    if tree.is_file():
        return tree
    raise ConfigError("no configs/default.yaml here or in ragpipe's source tree: pass -c CONFIG", key="--config")


@app.command()
def evaluate(
    config: Path = ConfigOpt,
    set_: Optional[List[str]] = SetOpt,
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Evaluate N sampled questions (corpus kept whole)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="Sampling and bootstrap seed"),
    setups: Optional[str] = typer.Option(None, "--setups", help="Comma-separated subset of the config's setups"),
    out_dir: Optional[str] = typer.Option(None, "--out-dir", help="Parent folder of the run directory"),
    allow_train_overlap: bool = typer.Option(False, "--allow-train-overlap",
                                             help="Evaluate fine-tuned models on questions or documents they were trained on"),
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
        results, files = run_evaluation(ecfg, limit=limit, seed=seed, command=command, out_dir=out_dir,
                                        allow_train_overlap=allow_train_overlap)
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


@app.command()
def compact(config: Path = ConfigOpt, set_: Optional[List[str]] = SetOpt) -> None:
    """Fold the index's write-ahead log into a new version (the service also does it every serving.compact_after writes)."""

    def body() -> None:
        pipe = _pipeline(config, set_)
        typer.echo(f"{pipe.index_path}: now at {pipe.compact()}")

    _run(body)


def run() -> None:  # console entry point
    app()


GLOBAL_FLAGS = ("--quiet", "-q", "--debug")


def run_as(command: str) -> None:
    """``ragpipe [global flags] COMMAND ARGS`` for the ``scripts/*.py`` wrappers: global flags may come anywhere."""
    args = sys.argv[1:]
    sys.argv = ["ragpipe", *[a for a in args if a in GLOBAL_FLAGS], command, *[a for a in args if a not in GLOBAL_FLAGS]]
    app()


if __name__ == "__main__":  # pragma: no cover
    run()
