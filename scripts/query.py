#!/usr/bin/env python
"""Thin wrapper: ``python scripts/query.py ARGS`` == ``ragpipe query ...`` (global flags such as ``-q`` may come anywhere)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.serving.cli import run_as  # noqa: E402

if __name__ == "__main__":
    run_as("query")
