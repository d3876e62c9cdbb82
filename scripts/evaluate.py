#!/usr/bin/env python
"""Thin wrapper: ``python scripts/evaluate.py ARGS`` == ``ragpipe evaluate ...``."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.serving.cli import run  # noqa: E402

if __name__ == "__main__":
    sys.argv = ["ragpipe", "evaluate", *sys.argv[1:]]
    run()
