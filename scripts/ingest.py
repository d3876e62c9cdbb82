#!/usr/bin/env python
"""Thin wrapper: ``python scripts/ingest.py ARGS`` == ``ragpipe ingest ...``."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.serving.cli import run  # noqa: E402

if __name__ == "__main__":
    sys.argv = ["ragpipe", "ingest", *sys.argv[1:]]
    run()
