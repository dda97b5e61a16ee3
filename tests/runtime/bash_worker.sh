#!/bin/bash
# A warm worker without the Python helper: protocol v1 by hand (bash, sed). It copies the
# input into result.bin, as COPY_TO_OUTPUT does. Its stdout is only the function log.
field() { sed -E "s/.*\"$1\": *\"([^\"]*)\".*/\\1/" <<<"$2"; }
echo "bash worker: loading"
printf '{"ready": true}\n' >&"$OSCAR_WORKER_OUT_FD"
while IFS= read -r -u "$OSCAR_WORKER_IN_FD" line; do
    id=$(field id "$line")
    echo "bash worker: call $id"
    cp "$(field INPUT_FILE_PATH "$line")" "$(field TMP_OUTPUT_DIR "$line")/result.bin"
    printf '{"id": "%s", "ok": true}\n' "$id" >&"$OSCAR_WORKER_OUT_FD"
done
