"""Evaluation results: one schema, written as ``results.json``, ``report.md``, PNG plots and a terminal table.

Schema (``EvaluationResults.to_dict()``, also the layout of ``results.json``)::

    {"schema_version": 1,
     "meta": {dataset, fingerprint, n_documents, n_questions, n_questions_total, seed, limit,
              default_setup, command, created_at, library_versions: {pkg: version}, notes: [str]},
     "setups": [{"name", "config": {resolved config}, "skipped": null | "reason",
                 "metrics": {"hit@1": {"mean", "low", "high"}, ...},      # 95% bootstrap CI
                 "paired_vs_default": {"mrr@10": {"mean_diff", "p_value", "n", "method", "vs"}, ...},
                 "breakdowns": {"question_type": {"1": {"n", "hit@1", ...}}},
                 "build": {"tokenisation" | "bm25_index" | "corpus_embedding" | "faiss_build":
                           {"seconds", "passages"?, "passages_per_s"?}},
                 "latency_ms": {"query_embedding" | "faiss" | "bm25" | "fusion" | "rerank" | "end_to_end":
                                {"p50", "p95", "mean", "n"}},
                 "per_query": {qid: {metric: value}}}]}
"""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from ..core.errors import EvaluationError
from ..core.io import write_json_atomic, write_text_atomic
from .metrics import K_VALUES, _group_key, breakdown, paired_test, summarize
from .plots import plot_hit_curves, plot_quality_vs_latency

logger = logging.getLogger(__name__)

__all__ = [
    "SCHEMA_VERSION", "LATENCY_STAGES", "BUILD_COMPONENTS", "RunMeta", "SetupResult", "EvaluationResults",
    "ReportFiles", "latency_summary", "build_setup_result", "skipped_setup", "add_paired_tests",
    "question_groups", "render_markdown", "render_terminal_table", "write_report",
]

SCHEMA_VERSION = 1
LATENCY_STAGES: tuple[str, ...] = ("query_embedding", "faiss", "bm25", "fusion", "rerank", "end_to_end")
BUILD_COMPONENTS: tuple[str, ...] = ("chunking", "tokenisation", "bm25_index", "corpus_embedding", "faiss_build")
PAIRED_METRICS: tuple[str, ...] = ("mrr@10", "hit@1", "hit@10", "ndcg@10")


@dataclass
class RunMeta:
    """What was evaluated, on what, and how."""

    dataset: str
    fingerprint: str
    n_documents: int
    n_questions: int
    default_setup: str
    n_questions_total: int | None = None
    seed: int | None = None
    limit: int | None = None
    command: str = ""
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    library_versions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class SetupResult:
    """Scores, timings and config of one retrieval setup (or why it was skipped)."""

    name: str
    config: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    paired_vs_default: dict[str, dict[str, Any]] = field(default_factory=dict)
    breakdowns: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    build: dict[str, dict[str, float]] = field(default_factory=dict)
    latency_ms: dict[str, dict[str, float | None]] = field(default_factory=dict)
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)
    top10: dict[str, list[str]] = field(default_factory=dict)  # qid -> the first 10 document ids (to compare rankings)


@dataclass
class EvaluationResults:
    """A whole evaluation run: metadata plus one entry per setup."""

    meta: RunMeta
    setups: list[SetupResult]
    schema_version: int = SCHEMA_VERSION

    def setup(self, name: str) -> SetupResult:
        """The setup called ``name``."""
        for s in self.setups:
            if s.name == name:
                return s
        raise EvaluationError(f"no setup {name!r}; setups: {', '.join(s.name for s in self.setups)}", value=name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EvaluationResults":
        """Inverse of :meth:`to_dict` (e.g. a loaded ``results.json``)."""
        try:
            return cls(meta=RunMeta(**data["meta"]), setups=[SetupResult(**s) for s in data["setups"]],
                       schema_version=int(data.get("schema_version", SCHEMA_VERSION)))
        except (KeyError, TypeError) as exc:
            raise EvaluationError(f"not an evaluation results object: {exc}") from exc


class ReportFiles(NamedTuple):
    """Paths written by :func:`write_report`."""

    results_json: Path
    report_md: Path
    plots: list[Path]


# ---------------------------------------------------------------- building results


def latency_summary(seconds: Sequence[float], percentiles: Sequence[int] = (50, 95)) -> dict[str, float | None]:
    """``{"p50", "p95", "mean"}`` in milliseconds plus ``"n"``; ``None`` values when empty.

    The one percentile function of the project (numpy's linear interpolation); the load test uses it too.
    """
    x = np.asarray(list(seconds), dtype=float) * 1000.0
    names = [f"p{q}" for q in percentiles]
    if x.size == 0:
        return {**dict.fromkeys(names), "mean": None, "n": 0}
    values = np.percentile(x, list(percentiles))
    return {**{n: float(v) for n, v in zip(names, values)}, "mean": float(x.mean()), "n": int(x.size)}


def _normalise_build(build: Mapping[str, Any] | None) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for comp, val in (build or {}).items():
        entry = {"seconds": float(val)} if isinstance(val, (int, float)) else dict(val)
        secs, n = entry.get("seconds"), entry.get("passages")
        if n is not None and secs and "passages_per_s" not in entry:
            entry["passages_per_s"] = float(n) / float(secs)
        out[comp] = entry
    return out


def build_setup_result(name: str, per_query: Mapping[str, Mapping[str, float]], *,
                       config: Mapping[str, Any] | None = None,
                       groups: Mapping[str, Mapping[str, Any]] | None = None,
                       latencies_s: Mapping[str, Sequence[float]] | None = None,
                       build: Mapping[str, Any] | None = None, rankings: Mapping[str, Sequence[str]] | None = None,
                       n_resamples: int = 1000, seed: int = 0) -> SetupResult:
    """Summarise one setup: metric means with bootstrap CIs, breakdowns, latency (s -> ms), build times.

    ``groups`` is ``field -> {qid: value}`` (see :func:`question_groups`); ``build`` values are seconds
    or dicts with ``seconds`` (and ``passages`` for the embedding step, giving ``passages_per_s``).
    """
    breakdowns = {f: b for f, g in (groups or {}).items() if (b := breakdown(per_query, g))}
    return SetupResult(
        name=name, config=dict(config or {}),
        metrics=summarize(per_query, n_resamples=n_resamples, seed=seed),
        breakdowns=breakdowns, build=_normalise_build(build),
        latency_ms={stage: latency_summary(v) for stage, v in (latencies_s or {}).items()},
        per_query={q: dict(s) for q, s in per_query.items()},
        top10={q: list(r[:10]) for q, r in (rankings or {}).items()},
    )


def skipped_setup(name: str, reason: str, config: Mapping[str, Any] | None = None) -> SetupResult:
    """A setup that did not run, with the reason shown in every output."""
    return SetupResult(name=name, config=dict(config or {}), skipped=reason)


def add_paired_tests(results: EvaluationResults, metrics: Sequence[str] = PAIRED_METRICS, seed: int = 0,
                     n_resamples: int = 10_000) -> EvaluationResults:
    """Fill ``paired_vs_default`` of every non-default, non-skipped setup (queries both setups scored)."""
    default = results.setup(results.meta.default_setup)
    if default.skipped:
        logger.warning("default setup %s was skipped; no paired tests", default.name)
        return results
    for s in results.setups:
        if s is default or s.skipped:
            continue
        qids = [q for q in s.per_query if q in default.per_query]
        if not qids:
            continue
        for m in metrics:
            if m not in default.per_query[qids[0]]:
                continue
            r = paired_test([s.per_query[q][m] for q in qids], [default.per_query[q][m] for q in qids],
                            seed=seed, n_resamples=n_resamples)
            s.paired_vs_default[m] = {**r.to_dict(), "vs": default.name}
    return results


def question_groups(questions: Iterable[Any], fields: Sequence[str] = ("question_type", "news_category")
                    ) -> dict[str, dict[str, Any]]:
    """``field -> {qid: value}`` from ``QAQuestion.metadata``, for the fields some question has."""
    qs = list(questions)
    out = {f: {q.qid: q.metadata[f] for q in qs if q.metadata.get(f) not in (None, "")} for f in fields}
    return {f: g for f, g in out.items() if g}


# ---------------------------------------------------------------- rendering


def _f(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _p(v: Any) -> str:
    return "–" if v is None else ("<0.001" if v < 0.001 else f"{v:.3f}")


def _m(s: SetupResult, name: str) -> float | None:
    return s.metrics.get(name, {}).get("mean")


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines + [""]


def _quality_rows(results: EvaluationResults) -> list[list[str]]:
    rows = []
    for s in results.setups:
        if s.skipped:
            continue
        mrr = s.metrics.get("mrr@10", {})
        p = "(default)" if s.name == results.meta.default_setup else _p(s.paired_vs_default.get("mrr@10", {}).get("p_value"))
        rows.append([s.name, *(_f(_m(s, f"hit@{k}")) for k in K_VALUES),
                     f"{_f(mrr.get('mean'))} [{_f(mrr.get('low'))}, {_f(mrr.get('high'))}]",
                     _f(_m(s, "ndcg@10")), _f(_m(s, "map@10")), _f(_m(s, "recall@10")), p])
    return rows


def render_markdown(results: EvaluationResults) -> str:
    """The whole ``report.md`` as a string."""
    m = results.meta
    ran = [s for s in results.setups if not s.skipped]
    out = [f"# Retrieval evaluation: {m.dataset}", ""]
    total = f" of {m.n_questions_total}" if m.n_questions_total and m.n_questions_total != m.n_questions else ""
    info = [("dataset", m.dataset), ("fingerprint", f"`{m.fingerprint}`"), ("documents", str(m.n_documents)),
            ("questions", f"{m.n_questions}{total}" + (f" (limit {m.limit}, seed {m.seed})" if m.limit else "")),
            ("default setup", m.default_setup), ("command", f"`{m.command}`" if m.command else "–"),
            ("created", m.created_at),
            ("libraries", ", ".join(f"{k} {v}" for k, v in m.library_versions.items()) or "–")]
    out += _table(["", ""], [[k, v] for k, v in info])
    out += ["A hit is any retrieved node (chunk) of a relevant document: rankings are deduplicated by document "
            "before scoring, at the rank of the document's best node. Relevance is binary. Brackets: 95% percentile "
            "bootstrap CI over questions. p: two-sided paired randomization test of MRR@10 against the default setup.",
            *(f"- {n}" for n in m.notes), ""]
    out += ["## Quality", ""]
    out += _table(["setup", *(f"hit@{k}" for k in K_VALUES), "MRR@10 [95% CI]", "nDCG@10", "MAP@10", "recall@10",
                   "p vs default"], _quality_rows(results))
    stages = [st for st in (*LATENCY_STAGES, *sorted({k for s in ran for k in s.latency_ms} - set(LATENCY_STAGES)))
              if any(st in s.latency_ms for s in ran)]
    if stages:
        out += ["## Speed (ms per query, p50 / p95 / mean)", ""]
        out += _table(["setup", *stages], [[s.name, *(
            "/".join(_f(s.latency_ms[st].get(k), 1) for k in ("p50", "p95", "mean")) if st in s.latency_ms else "–"
            for st in stages)] for s in ran])
    comps = [c for c in (*BUILD_COMPONENTS, *sorted({k for s in ran for k in s.build} - set(BUILD_COMPONENTS)))
             if any(c in s.build for s in ran)]
    if comps:
        out += ["## Build (seconds)", ""]

        def cell(s: SetupResult, c: str) -> str:
            e = s.build.get(c)
            if e is None:
                return "–"
            if e.get("passages_per_s"):
                rate = f" ({e['passages_per_s']:.1f} passages/s)"
            elif e.get("cached"):
                rate = f" ({int(e['cached'])} passages from cache)"
            else:
                rate = ""
            return _f(e.get("seconds"), 2) + rate

        out += _table(["setup", *comps], [[s.name, *(cell(s, c) for c in comps)] for s in ran])
    fields = sorted({f for s in ran for f in s.breakdowns})
    for f in fields:
        out += [f"## Breakdown by {f}", ""]
        out += _table([f, "setup", "n", "hit@1", "hit@10", "MRR@10", "nDCG@10"], [
            [g, s.name, str(int(v.get("n", 0))), _f(v.get("hit@1")), _f(v.get("hit@10")), _f(v.get("mrr@10")),
             _f(v.get("ndcg@10"))]
            for g in sorted({g for s in ran for g in s.breakdowns.get(f, {})}, key=_group_key)
            for s in ran if (v := s.breakdowns.get(f, {}).get(g))])
    skipped = [s for s in results.setups if s.skipped]
    if skipped:
        out += ["## Skipped setups", ""] + _table(["setup", "reason"], [[s.name, s.skipped or ""] for s in skipped])
    return "\n".join(out)


def render_terminal_table(results: EvaluationResults) -> str:
    """A compact quality + latency table for the CLI (rich when installed, plain text otherwise)."""
    header = ["setup", "hit@1", "hit@10", "MRR@10 [95% CI]", "nDCG@10", "p50 ms", "p vs default"]
    rows = []
    for s in results.setups:
        if s.skipped:
            reason = s.skipped if len(s.skipped) <= 60 else s.skipped[:59] + "…"  # full reason in report.md
            rows.append([s.name, f"skipped: {reason}", "", "", "", "", ""])
            continue
        mrr = s.metrics.get("mrr@10", {})
        p = "default" if s.name == results.meta.default_setup else _p(s.paired_vs_default.get("mrr@10", {}).get("p_value"))
        rows.append([s.name, _f(_m(s, "hit@1")), _f(_m(s, "hit@10")),
                     f"{_f(mrr.get('mean'))} [{_f(mrr.get('low'))}, {_f(mrr.get('high'))}]", _f(_m(s, "ndcg@10")),
                     _f(s.latency_ms.get("end_to_end", {}).get("p50"), 1), p])
    title = f"{results.meta.dataset}: {results.meta.n_questions} questions, {results.meta.n_documents} documents"
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        lines = [title] + ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
        return "\n".join(lines)
    table = Table(title=title)
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*r)
    buf = io.StringIO()
    Console(file=buf, width=140, force_terminal=False, color_system=None).print(table)
    return buf.getvalue().rstrip("\n")


# ---------------------------------------------------------------- files


def write_report(results: EvaluationResults, out_dir: Path | str, plots: bool = True,
                 include_per_query: bool = True) -> ReportFiles:
    """Write ``results.json``, ``report.md`` and (with ``plots``) ``hit_at_k.png``, ``quality_vs_latency.png``.

    ``include_per_query=False`` leaves the per-query scores out of ``results.json`` (they dominate its size:
    ~2 MB per setup for 5,774 questions).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if plots:
        written.append(plot_hit_curves(results, out / "hit_at_k.png"))
        if (p := plot_quality_vs_latency(results, out / "quality_vs_latency.png")) is not None:
            written.append(p)
    md = render_markdown(results)
    if written:
        md += "\n## Plots\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in written) + "\n"
    data = results.to_dict()
    if not include_per_query:
        for s in data["setups"]:
            s["per_query"] = {}
    write_json_atomic(out / "results.json", data)
    write_text_atomic(out / "report.md", md)
    logger.info("report written to %s", out)
    return ReportFiles(results_json=out / "results.json", report_md=out / "report.md", plots=written)
