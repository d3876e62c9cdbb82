"""Retrieval evaluation: metrics (pure functions) and reports (results.json, report.md, plots)."""

from .metrics import (
    CUTOFF,
    K_VALUES,
    METRIC_NAMES,
    ConfidenceInterval,
    PairedTestResult,
    bootstrap_ci,
    breakdown,
    dedupe_by_doc,
    evaluate_run,
    mean_metrics,
    paired_test,
    query_metrics,
    summarize,
)
from .report import (
    BUILD_COMPONENTS,
    LATENCY_STAGES,
    EvaluationResults,
    ReportFiles,
    RunMeta,
    SetupResult,
    add_paired_tests,
    build_setup_result,
    latency_summary,
    question_groups,
    render_markdown,
    render_terminal_table,
    skipped_setup,
    write_report,
)

__all__ = [
    "CUTOFF", "K_VALUES", "METRIC_NAMES", "ConfidenceInterval", "PairedTestResult", "bootstrap_ci", "breakdown",
    "dedupe_by_doc", "evaluate_run", "mean_metrics", "paired_test", "query_metrics", "summarize",
    "BUILD_COMPONENTS", "LATENCY_STAGES", "EvaluationResults", "ReportFiles", "RunMeta", "SetupResult",
    "add_paired_tests", "build_setup_result", "latency_summary", "question_groups",
    "render_markdown", "render_terminal_table", "skipped_setup", "write_report",
]
