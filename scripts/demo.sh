#!/usr/bin/env bash
# The main job, on the embedded default: start the gateway (no cluster needed), deploy the
# example image classifier (EfficientNet-Lite0, ImageNet) and invoke it synchronously with a
# real photograph, printing the top 5 predictions; then stop everything.
# Usage: ./scripts/demo.sh [IMAGE]      (default: a cat photo shipped inside scikit-image)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-.venv}
EXAMPLE=examples/image-classification-sync
SERVICE=image-classification-sync

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "Installing oscar-faas and the classifier's packages into $VENV (first run only takes a while)"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
pip_install() {  # pip warns about every configured package folder that is absent
  "$VENV/bin/python" -m pip install --quiet "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }
}
pip_install --upgrade pip
# The classifier is the package oscar_classifier: the FDL runs `python3 -m oscar_classifier`
# (and, for a warm worker, `python3 -m oscar_classifier.worker`), with no paths.
pip_install -e ".[ml]" -e "$EXAMPLE"
export PATH="$ROOT/$VENV/bin:$PATH"   # the embedded provider runs scripts with this PATH

WORK=$(mktemp -d)
IMAGE=${1:-}
if [ -z "$IMAGE" ]; then
  IMAGE=$(python "$EXAMPLE/fetch_samples.py" "$WORK" chelsea)
fi

PORT=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export OSCAR_ENDPOINT="http://127.0.0.1:$PORT" OSCAR_USERNAME=oscar
export OSCAR_PASSWORD=$(python -c 'import secrets; print(secrets.token_urlsafe(12))')

step "Starting the gateway on $OSCAR_ENDPOINT with the embedded local provider"
oscar-faas serve --port "$PORT" --data-dir "$WORK/data" > "$WORK/serve.log" 2>&1 &
SERVER=$!
cleanup() {
  kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
for _ in $(seq 100); do
  curl -fsS "$OSCAR_ENDPOINT/health" >/dev/null 2>&1 && break
  kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/serve.log"; exit 1; }
  sleep 0.2
done
cat "$WORK/serve.log"

step "oscar-faas apply $EXAMPLE/$SERVICE.yaml"
# The FDL as a real client sends it: on this machine the script runs on the host, whose
# python3 (the venv's, first on PATH) has the classifier installed.
oscar-faas apply "$EXAMPLE/$SERVICE.yaml"

step "oscar-faas run $SERVICE --input $(basename "$IMAGE")   (POST /run/$SERVICE, synchronous)"
START=$(date +%s.%N)
oscar-faas run "$SERVICE" --input "$IMAGE" --output "$WORK/prediction.json"
END=$(date +%s.%N)
python - "$WORK/prediction.json" <<'PY'
import json, sys
result = json.load(open(sys.argv[1]))
print("top 5:")
for p in result["predictions"]:
    print(f"  {p['probability']:6.1%}  {p['label']}")
PY
printf 'answered in %.2f s (first call: includes loading PyTorch and the model)\n' \
  "$(python -c "print($END - $START)")"

step "The same call with curl and base64, as in OSCAR's documentation"
TOKEN=$(oscar-faas get "$SERVICE" --json | python -c 'import json,sys; print(json.load(sys.stdin)["token"])')
echo "base64 $(basename "$IMAGE") | curl -X POST $OSCAR_ENDPOINT/run/$SERVICE -H 'Authorization: Bearer <token>' --data-binary @- | base64 -d"
base64 -w0 "$IMAGE" | curl -fsS -X POST "$OSCAR_ENDPOINT/run/$SERVICE" \
  -H "Authorization: Bearer $TOKEN" --data-binary @- -w '\n%{time_total}\n' > "$WORK/curl.out"
head -n -1 "$WORK/curl.out" | base64 -d
echo
# The model stayed loaded in the service's warm worker (OSCAR_WORKER in its FDL).
printf 'answered in %.0f ms (warm: the model stayed loaded between calls)\n' \
  "$(python -c "print($(tail -n 1 "$WORK/curl.out") * 1000)")"

step "Done: stopping the gateway"
