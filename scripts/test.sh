#!/usr/bin/env bash
# Run the whole test suite in a virtual environment of its own (created on first use).
# Usage: ./scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# torch is pinned to the CPU build first, so nothing pulls a multi-GB CUDA wheel.
"$VENV/bin/python" -m pip install --quiet -e ".[test,ml]"
exec "$VENV/bin/python" -m pytest "$@"
