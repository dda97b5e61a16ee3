#!/usr/bin/env bash
# The oscar-faas benchmark in one command, from a fresh clone:
#
#   ./bench/run.sh [--quick] [--sections 1,2,3] [...]     (options go to bench/bench.py)
#
# 1. creates (or reuses) the project venv .venv with oscar-faas and its test and ml extras
#    (the ml extra pins the CPU build of torch 2.13.0, for the classifier section);
# 2. creates (or reuses) bench/.venv-faas-supervisor with OSCAR's own faas-supervisor 1.5.8,
#    the baseline of section 1;
# 3. installs wrk from Debian's packages if it is missing and we are root (else the
#    benchmark falls back to its Python load generator);
# 4. runs bench/bench.py, which prints one table per section and writes every figure as
#    JSON to bench/results/ (the printed text goes to bench/results/last-run.txt too).
#
# All load goes to 127.0.0.1 only. The default run takes about 5 minutes on 2 cores
# (first run: plus about 3 minutes of installs); --quick about 2.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
FSV=bench/.venv-faas-supervisor

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
pip_install() {  # quiet; pip warns about every configured package folder that is absent
  local python=$1
  shift
  "$python" -m pip install --quiet "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }
}

say "installing oscar-faas with its test and ml extras into $VENV (slow on the first run only)"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# quick when already satisfied; the example classifier is a package of its own
pip_install "$VENV/bin/python" -e '.[test,ml]' -e examples/image-classification-sync

if ! "$FSV/bin/python" -c 'import faassupervisor.supervisor' >/dev/null 2>&1; then
  say "installing OSCAR's faas-supervisor 1.5.8 into $FSV (the baseline of section 1)"
  [ -x "$FSV/bin/python" ] || python3 -m venv "$FSV"
  printf '*\n' > "$FSV/.gitignore"   # keep the venv out of git, as newer venvs do
  # Its metadata pins a malformed requirement ("webdavclient3==3.14.6requests"): install it
  # without dependencies, then what it really needs.
  if ! { pip_install "$FSV/bin/python" --no-deps faas-supervisor==1.5.8 &&
         pip_install "$FSV/bin/python" webdavclient3==3.14.6 boto3 requests pyyaml setuptools; }
  then
    say "warning: faas-supervisor could not be installed; section 1 runs without its baseline"
  fi
else
  say "reusing $FSV"
fi

if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing wrk (apt-get)"
    { apt-get install -y -qq wrk >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq wrk >/dev/null 2>&1; }; } ||
      say "warning: wrk could not be installed; using the Python load generator"
  else
    say "wrk not found (and not root): using the Python load generator"
  fi
fi

mkdir -p bench/results
say "running bench/bench.py $*"
"$VENV/bin/python" bench/bench.py "$@" 2>&1 | tee bench/results/last-run.txt
