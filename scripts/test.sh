#!/usr/bin/env bash
# Run the whole test suite in a virtual environment of its own (created on first use).
# Usage: ./scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
# pip warns about every configured package folder that is absent; keep its errors only.
pip_install() {
  "$VENV/bin/python" -m pip install --quiet "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }
}
pip_install --upgrade pip
# The 'ml' extra pins torch to the CPU build, so nothing pulls a multi-GB CUDA wheel.
# The example classifier is a package of its own (python3 -m oscar_classifier), as its FDL
# expects it on the host's python3 on the embedded default.
pip_install -e ".[test,ml]" -e examples/image-classification-sync
exec "$VENV/bin/python" -m pytest "$@"
