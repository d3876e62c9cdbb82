#!/usr/bin/env bash
# One command on a fresh machine: set up, then run every test (unit + e2e with the real model and ../shared data).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest "$@"
