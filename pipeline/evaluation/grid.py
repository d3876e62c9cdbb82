"""Parameter sweeps: variants of one setup (``--set``-style overrides) scored over one shared runner.

Used to tune the defaults on evidence (docs/tuning.md): every variant reuses the runner's nodes,
cached passage vectors, query vectors and indexes, so a sweep over fusion settings costs seconds.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import yaml

from ..config import apply_overrides, config_from_dict, read_yaml
from ..core.errors import ConfigError
from . import metrics
from .report import latency_summary
from .runner import MatrixRunner

logger = logging.getLogger(__name__)

SHOWN = ("hit@1", "hit@5", "hit@10", "hit@20", "mrr@10", "ndcg@10")


def expand_grid(axes: list[str]) -> list[list[str]]:
    """``["a=[1,2]", "b=x"]`` -> ``[["a=1","b=x"], ["a=2","b=x"]]`` (values parsed as YAML)."""
    choices = []
    for axis in axes:
        if "=" not in axis:
            raise ConfigError(f"--grid {axis!r}: expected KEY=[v1,v2,...]")
        key, raw = axis.split("=", 1)
        values = yaml.safe_load(raw)
        values = values if isinstance(values, list) else [values]
        choices.append([f"{key}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}" for v in values])
    return [list(combo) for combo in itertools.product(*choices)] if choices else [[]]


def run_grid(ecfg: Any, base: str, axes: list[str], limit: int | None = None, seed: int | None = None,
             show_progress: bool = True) -> list[dict[str, Any]]:
    """Score every variant of setup ``base``; returns one row per variant (overrides + mean metrics).

    Query vectors come from the embedding cache here, so ``p50_ms`` excludes query embedding.
    """
    from ..ingest.qa import read_qa_set

    path = ecfg.setup_path(base)
    raw = read_yaml(path)
    qa = read_qa_set(ecfg.dataset.kind, ecfg.resolve(ecfg.dataset.path) if ecfg.dataset.path else None)
    qa = qa.sample(limit or ecfg.limit, seed=ecfg.seed if seed is None else seed)
    runner = MatrixRunner(qa, depth=ecfg.depth, show_progress=show_progress, cache_queries=True)
    rows = []
    for overrides in expand_grid(axes):
        cfg = config_from_dict(apply_overrides(raw, overrides), source=f"{path} {' '.join(overrides)}", base_dir=ecfg.base_dir)
        run = runner.run_setup(base, cfg, ecfg.anchors.get(base))
        if run.skipped:
            rows.append({"overrides": overrides, "skipped": run.skipped})
            continue
        means = metrics.mean_metrics(metrics.evaluate_run(run.rankings, qa.qrels()))
        p50 = latency_summary(run.latencies["end_to_end"])["p50"]
        rows.append({"overrides": overrides, **{m: means[m] for m in SHOWN}, "p50_ms": p50})
        logger.info("%s -> MRR@10 %.4f hit@10 %.4f", " ".join(overrides) or "(base)", means["mrr@10"], means["hit@10"])
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of grid rows."""
    head = "| overrides | " + " | ".join(SHOWN) + " | p50 ms |"
    lines = [head, "|" + "---|" * (len(SHOWN) + 2)]
    for r in rows:
        label = " ".join(r["overrides"]) or "(base)"
        if "skipped" in r:
            lines.append(f"| {label} | skipped: {r['skipped'][:60]} |")
            continue
        lines.append(f"| {label} | " + " | ".join(f"{r[m]:.4f}" for m in SHOWN) + f" | {r['p50_ms']:.1f} |")
    return "\n".join(lines)
