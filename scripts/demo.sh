#!/usr/bin/env bash
# One command on a fresh machine: set up, then ingest the embedded sample corpus and answer its sample questions.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ragpipe demo -c configs/default.yaml "$@"
