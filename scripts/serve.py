#!/usr/bin/env python
"""Thin wrapper: ``python scripts/serve.py -c CONFIG [--host H --port P]`` == ``ragpipe serve ...``."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.serving.cli import run  # noqa: E402

if __name__ == "__main__":
    sys.argv = ["ragpipe", "serve", *sys.argv[1:]]
    run()
