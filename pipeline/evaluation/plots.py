"""Plots of an evaluation run: hit@k curves and quality against latency (matplotlib, Agg backend)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .metrics import K_VALUES

logger = logging.getLogger(__name__)


def plot_hit_curves(results: Any, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for s in results.setups:
        if s.skipped:
            continue
        ks = [k for k in K_VALUES if f"hit@{k}" in s.metrics]
        ax.plot(ks, [s.metrics[f"hit@{k}"]["mean"] for k in ks], marker="o", label=s.name)
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(list(K_VALUES), [str(k) for k in K_VALUES])
    ax.set(xlabel="k", ylabel="hit@k", ylim=(0, 1.02), title=f"hit@k: {results.meta.dataset}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def plot_quality_vs_latency(results: Any, path: Path) -> Path | None:
    pts = [(s.name, s.latency_ms["end_to_end"]["p50"], s.metrics["mrr@10"]) for s in results.setups
           if not s.skipped and s.latency_ms.get("end_to_end", {}).get("p50") is not None and "mrr@10" in s.metrics]
    if not pts:
        logger.info("no end-to-end latency recorded; quality-vs-latency plot not drawn")
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, x, m in pts:
        ax.errorbar([x], [m["mean"]], yerr=[[m["mean"] - m["low"]], [m["high"] - m["mean"]]], fmt="o", capsize=3)
        ax.annotate(name, (x, m["mean"]), textcoords="offset points", xytext=(5, 5), fontsize="small")
    ax.set(xlabel="end-to-end latency p50 (ms)", ylabel="MRR@10", title="quality vs latency")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
