#!/usr/bin/env python
"""Bounded load test of a running ``ragpipe serve`` on ``POST /retrieve``.

For each concurrency level, N async workers send queries taken round-robin from a QA file until the
time budget (``--duration`` s) or the request cap (``--max-requests``) is reached, whichever is first,
then it reports requests/s, p50/p95/p99 latency, the server's own p50 (the ``latency_ms`` it reports:
the query without HTTP), the error count and the server's RSS before and after the level. It always stops by itself.

    ragpipe serve -c configs/default.yaml --no-access-log &
    python scripts/loadtest.py --url http://127.0.0.1:8000 --questions data/sample_questions.jsonl \\
        --concurrency 8,32 --duration 30

Exit status: 0 when no request failed, 1 when some did, 2 when the server or the QA file is unusable.
``RAGPIPE_API_KEY`` (if set) is sent as ``X-API-Key``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.evaluation.report import latency_summary


@dataclass
class LevelResult:
    """One concurrency level's outcome."""

    concurrency: int
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    server_p50_ms: float | None = None
    error_kinds: dict[str, int] = field(default_factory=dict)
    rss_before_mb: float | None = None
    rss_after_mb: float | None = None


def load_questions(path: Path) -> list[str]:
    """Questions from JSONL (``question`` or ``query`` per line) or JSON (any nested ``question`` strings)."""
    text = path.read_text(encoding="utf-8")
    found: list[str] = []

    def walk(obj: Any) -> None:
        if isinstance(obj, dict):
            for key in ("question", "query"):
                if isinstance(obj.get(key), str) and obj[key].strip():
                    found.append(obj[key])
                    break
            for value in obj.values():
                if isinstance(value, (dict, list)):
                    walk(value)
        elif isinstance(obj, list):
            for item in obj:
                walk(item)

    if path.suffix == ".jsonl":
        for line in text.splitlines():
            if line.strip():
                walk(json.loads(line))
    else:
        walk(json.loads(text))
    return found


async def run_level(client: Any, url: str, questions: list[str], concurrency: int, duration: float,
                    max_requests: int, top_k: int | None) -> LevelResult:
    latencies: list[float] = []
    server: list[float] = []
    kinds: Counter[str] = Counter()
    issued = 0
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal issued
        while issued < max_requests and time.perf_counter() < deadline:
            query = questions[issued % len(questions)]
            issued += 1
            payload: dict[str, Any] = {"query": query}
            if top_k:
                payload["top_k"] = top_k
            t0 = time.perf_counter()
            try:
                r = await client.post(url, json=payload)
                if r.status_code == 200:
                    latencies.append((time.perf_counter() - t0) * 1000)
                    if isinstance(own := r.json().get("latency_ms"), (int, float)):
                        server.append(own)
                else:
                    kinds[f"HTTP {r.status_code}"] += 1
            except Exception as exc:  # noqa: BLE001 - every failure is counted, by kind
                kinds[type(exc).__name__] += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - t0
    done = len(latencies) + sum(kinds.values())
    summary = latency_summary([ms / 1000 for ms in latencies], percentiles=(50, 95, 99))
    own = latency_summary([ms / 1000 for ms in server], percentiles=(50,))["p50"]
    return LevelResult(concurrency, done, sum(kinds.values()), round(seconds, 3), round(len(latencies) / seconds, 2) if seconds else 0.0,
                       *(None if (p := summary[f"p{q}"]) is None else round(p, 2) for q in (50, 95, 99)),
                       None if own is None else round(own, 2), dict(kinds))


async def main_async(args: argparse.Namespace, questions: list[str]) -> list[LevelResult]:
    import httpx

    headers = {"X-API-Key": os.environ["RAGPIPE_API_KEY"]} if os.environ.get("RAGPIPE_API_KEY") else {}
    levels = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    limits = httpx.Limits(max_connections=max(levels), max_keepalive_connections=max(levels))
    async with httpx.AsyncClient(base_url=args.url, headers=headers, timeout=args.timeout, limits=limits) as client:
        try:
            health = await client.get("/health")
            health.raise_for_status()
        except Exception as exc:  # noqa: BLE001
            raise SystemExit(f"loadtest: error: {args.url}/health is not answering ({exc}); start `ragpipe serve` first") from exc
        if args.warmup:
            await run_level(client, "/retrieve", questions, 1, args.warmup, 50, args.top_k)
        results = []
        for level in levels:
            before = await server_rss(client, args.server_pid)
            res = await run_level(client, "/retrieve", questions, level, args.duration, args.max_requests, args.top_k)
            res.rss_before_mb, res.rss_after_mb = before, await server_rss(client, args.server_pid)
            results.append(res)
            if not args.json:
                print(_row(res), flush=True)
        return results


async def server_rss(client: Any, pid: int | None) -> float | None:
    """The server's resident memory in MiB: from /proc/PID (same machine) or the server's /info."""
    if pid:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
        return None
    try:
        return (await client.get("/info")).json().get("rss_mb")
    except Exception:  # noqa: BLE001 - an older server without the field
        return None


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _row(r: LevelResult) -> str:
    kinds = f"  ({', '.join(f'{k}: {n}' for k, n in r.error_kinds.items())})" if r.error_kinds else ""
    return (f"{r.concurrency:>11} {r.requests:>8} {r.rps:>9.1f} {_fmt(r.p50_ms):>9} {_fmt(r.p95_ms):>9} "
            f"{_fmt(r.p99_ms):>9} {_fmt(r.server_p50_ms):>10} {r.errors:>6} {_fmt(r.rss_before_mb):>9} {_fmt(r.rss_after_mb):>9}{kinds}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000", help="Server base URL (default: %(default)s)")
    ap.add_argument("--questions", type=Path, default=Path("data/sample_questions.jsonl"), help="QA file, JSONL or JSON (default: %(default)s)")
    ap.add_argument("--concurrency", default="8,32", help="Comma-separated concurrency levels (default: %(default)s)")
    ap.add_argument("--duration", type=float, default=30.0, help="Seconds per level (default: %(default)s)")
    ap.add_argument("--max-requests", type=int, default=20000, help="Request cap per level (default: %(default)s)")
    ap.add_argument("--top-k", type=int, default=None, help="top_k per request (default: the server's)")
    ap.add_argument("--timeout", type=float, default=30.0, help="Per-request timeout in seconds (default: %(default)s)")
    ap.add_argument("--warmup", type=float, default=1.0, help="Seconds of single-worker warm-up, not reported (default: %(default)s)")
    ap.add_argument("--server-pid", type=int, default=None, help="Read the server's RSS from /proc/PID (default: its /info)")
    ap.add_argument("--json", action="store_true", help="Print the results as JSON on stdout")
    args = ap.parse_args(argv)
    if args.duration <= 0 or args.max_requests < 1:
        ap.error("--duration must be > 0 and --max-requests >= 1")
    try:
        questions = load_questions(args.questions)
    except (OSError, json.JSONDecodeError) as exc:
        print(f"loadtest: error: {args.questions}: {exc}", file=sys.stderr)
        return 2
    if not questions:
        print(f"loadtest: error: {args.questions}: no 'question' or 'query' fields found", file=sys.stderr)
        return 2
    if not args.json:
        print(f"{len(questions)} questions from {args.questions}; {args.duration:g} s or {args.max_requests} requests per level against {args.url}/retrieve")
        print(f"{'concurrency':>11} {'requests':>8} {'req/s':>9} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} {'server p50':>10} {'errors':>6} "
              f"{'RSS MiB':>9} {'after':>9}")
    try:
        results = asyncio.run(main_async(args, questions))
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([asdict(r) for r in results], ensure_ascii=False, indent=2))
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
