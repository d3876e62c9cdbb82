#!/usr/bin/env bash
# Set up a fresh checkout: virtualenv, pinned dependencies (torch==2.13.0 CPU), the package,
# and the offline multilingual-e5-small copy. Safe to re-run: each step is skipped when done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "ragpipe needs Python 3.11 (set PYTHON=...)")'

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.ragpipe-lock-$(sha256sum requirements.lock | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements.lock
  rm -f .venv/.ragpipe-lock-*
  touch "$stamp"
fi
.venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
.venv/bin/ragpipe --quiet models prepare
