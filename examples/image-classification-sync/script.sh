#!/bin/sh
# OSCAR user script for the image-classification-sync service.
#
# Input : $INPUT_FILE_PATH  the decoded request body (an image; any or no extension)
# Output: $TMP_OUTPUT_DIR/<input name without extension>.json, the only file written
#         there, so a synchronous /run call answers with its base64.
#
# Optional environment (none is needed inside the service's container image):
#   CLASSIFIER_PYTHON       interpreter that has torch & co.      (default: python3)
#   CLASSIFIER_HOME         folder holding classify.py            (default: next to this
#                           script if classify.py is there, else /opt/classifier)
#   CLASSIFIER_NUM_THREADS  torch intra-op threads                (default: torch's choice)
set -eu

: "${INPUT_FILE_PATH:?INPUT_FILE_PATH is not set}"
: "${TMP_OUTPUT_DIR:?TMP_OUTPUT_DIR is not set}"

PYTHON="${CLASSIFIER_PYTHON:-python3}"
if [ -n "${CLASSIFIER_HOME:-}" ]; then
    CLASSIFY="$CLASSIFIER_HOME/classify.py"
elif [ -f "$(dirname "$0")/classify.py" ]; then
    CLASSIFY="$(dirname "$0")/classify.py"
else
    CLASSIFY="/opt/classifier/classify.py"
fi

IMAGE_NAME=$(basename "$INPUT_FILE_PATH")
STEM="${IMAGE_NAME%.*}"
[ -n "$STEM" ] || STEM="$IMAGE_NAME"
OUTPUT_FILE="$TMP_OUTPUT_DIR/$STEM.json"

# Logs go to stderr: stdout may be returned to the caller when no output file exists.
echo "SCRIPT: classifying $INPUT_FILE_PATH into $OUTPUT_FILE" >&2
exec "$PYTHON" "$CLASSIFY" "$INPUT_FILE_PATH" --output "$OUTPUT_FILE"
