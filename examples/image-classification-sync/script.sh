#!/bin/sh
# OSCAR user script for the image-classification-sync service.
#
# Input : $INPUT_FILE_PATH  the decoded request body (an image; any or no extension)
# Output: $TMP_OUTPUT_DIR/<input name without extension>.json, the only file written
#         there, so a synchronous /run call answers with its base64.
#
# The classifier is the Python package oscar_classifier (pip install
# examples/image-classification-sync): installed in the service's image, or, on the
# embedded provider, in the Python first on the gateway's PATH (its venv). With the FDL's
# OSCAR_WORKER, the oscar-faas runtime answers from a warm worker instead, through the same
# code; without a runtime that reads it, this script runs once per call.
#
# Optional environment:
#   CLASSIFIER_PYTHON       interpreter that has oscar_classifier   (default: python3)
#   CLASSIFIER_NUM_THREADS  torch intra-op threads                  (default: torch's choice)
set -eu

: "${INPUT_FILE_PATH:?INPUT_FILE_PATH is not set}"
: "${TMP_OUTPUT_DIR:?TMP_OUTPUT_DIR is not set}"

# Logs go to stderr: stdout may be returned to the caller when no output file exists.
exec "${CLASSIFIER_PYTHON:-python3}" -m oscar_classifier "$INPUT_FILE_PATH" \
    --output-dir "$TMP_OUTPUT_DIR"
