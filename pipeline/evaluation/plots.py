"""Plots of an evaluation run: hit@k curves and quality against latency (matplotlib, Agg backend).

Every setup gets its own colour (tab20) and marker, so a dozen lines stay apart; legends sit outside the axes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .metrics import K_VALUES

logger = logging.getLogger(__name__)

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h", "p")


def _styles(names: list[str]) -> dict[str, dict[str, Any]]:
    """name -> distinct colour and marker (tab20 colours, 12 markers: 20 setups before a colour repeats)."""
    from matplotlib import colormaps

    colours = colormaps["tab20"].colors
    return {n: {"color": colours[i % len(colours)], "marker": MARKERS[i % len(MARKERS)]} for i, n in enumerate(names)}


def _figure(width: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_hit_curves(results: Any, path: Path) -> Path:
    hit_curves_figure(results).savefig(path, dpi=120)
    return path


def hit_curves_figure(results: Any) -> Any:
    """hit@k against k (log axis), one line per setup."""
    setups = [s for s in results.setups if not s.skipped]
    styles = _styles([s.name for s in setups])
    fig = _figure(8.6)
    ax = fig.add_subplot()
    for s in setups:
        ks = [k for k in K_VALUES if f"hit@{k}" in s.metrics]
        ax.plot(ks, [s.metrics[f"hit@{k}"]["mean"] for k in ks], label=s.name, markersize=5, linewidth=1.4, **styles[s.name])
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(list(K_VALUES), [str(k) for k in K_VALUES])
    ax.set(xlabel="k", ylabel="hit@k", ylim=(0, 1.02), title=f"hit@k: {results.meta.dataset}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def plot_quality_vs_latency(results: Any, path: Path) -> Path | None:
    fig = quality_latency_figure(results)
    if fig is None:
        logger.info("no end-to-end latency recorded; quality-vs-latency plot not drawn")
        return None
    fig.savefig(path, dpi=120)
    return path


def quality_latency_figure(results: Any) -> Any:
    """MRR@10 with its CI against p50 latency (log axis), one marker per setup; None without latencies."""
    pts = [(s.name, s.latency_ms["end_to_end"]["p50"], s.metrics["mrr@10"]) for s in results.setups
           if not s.skipped and s.latency_ms.get("end_to_end", {}).get("p50") is not None and "mrr@10" in s.metrics]
    if not pts:
        return None
    styles = _styles([name for name, _, _ in pts])
    fig = _figure(8.6)
    ax = fig.add_subplot()
    for name, x, m in pts:  # a legend, not labels on the points: sparse setups at ~1 ms would overlap
        ax.errorbar([max(x, 1e-3)], [m["mean"]], yerr=[[m["mean"] - m["low"]], [m["high"] - m["mean"]]], capsize=3,
                    linestyle="none", label=name, **styles[name])
    ax.set_xscale("log")  # sparse setups answer in ~1 ms, dense and reranked ones in tens to hundreds
    ax.set(xlabel="end-to-end latency p50 (ms, log scale)", ylabel="MRR@10 (95% CI)", title=f"quality vs latency: {results.meta.dataset}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig
