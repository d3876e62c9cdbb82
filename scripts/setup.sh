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
# pip notes about this machine's package-index settings are not ragpipe's business: keep set-up output to what matters
quiet_pip() { "$@" 2> >(grep -v -e "is ignored: it is neither a file nor a directory" -e "does not provide the extra" >&2); }
if [ ! -f "$stamp" ]; then
  quiet_pip .venv/bin/python -m pip install --quiet --upgrade pip
  quiet_pip .venv/bin/python -m pip install --quiet -r requirements.lock
  rm -f .venv/.ragpipe-lock-*
  touch "$stamp"
fi
pkg_stamp=.venv/.ragpipe-pkg-$(cat pyproject.toml requirements.lock | sha256sum | cut -c1-16)
if [ ! -f "$pkg_stamp" ] || ! .venv/bin/python -c 'import pipeline' 2>/dev/null; then
  # the build's own notes (an editable install, folder names) are warnings for package authors, not for users
  PYTHONWARNINGS=ignore quiet_pip .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
  rm -f .venv/.ragpipe-pkg-*
  touch "$pkg_stamp"
fi
.venv/bin/ragpipe --quiet models prepare
