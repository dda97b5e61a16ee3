#!/bin/sh
# Writes one file to $TMP_OUTPUT_DIR, so the synchronous answer is its base64.
NAME=$(cat "$INPUT_FILE_PATH")
echo "${GREETING:-Hello}, ${NAME}!" > "$TMP_OUTPUT_DIR/greeting.txt"
