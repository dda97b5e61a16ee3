"""The in-function runtime: OSCAR's faas-supervisor contract, re-implemented.

``python -m oscar_faas.supervisor`` reads the request body on stdin and writes the response on
stdout, configured by the env OSCAR's faas-supervisor reads (``SCRIPT``, ``FUNCTION_CONFIG``,
``LOG_LEVEL``), so OSCAR scripts and clients work unchanged. The embedded provider calls
:func:`supervise` directly, in threads.

One invocation:

1. The body becomes ``$TMP_INPUT_DIR/event-file-<uuid4>`` (``$INPUT_FILE_PATH``): a body whose
   first non-blank byte is ``{`` or ``[`` is JSON and is stored as sent; anything else is base64
   and is decoded into the file, streaming (see :mod:`.inputs`).
2. The script runs as ``/bin/sh <script>`` with the function's env plus ``INPUT_FILE_PATH``,
   ``TMP_INPUT_DIR`` and ``TMP_OUTPUT_DIR``; stdout and stderr are merged.
3. Files under ``$TMP_OUTPUT_DIR`` matching each ``output`` entry's prefix/suffix filters are
   uploaded to MinIO/S3 (credentials from the storage secret, see :mod:`.upload`).
4. The response: one output file -> its base64 plus ``\\n``; several -> the base64 of a zip of
   them plus ``\\n``; none -> the script's merged output, byte for byte.

Improvements over OSCAR's faas-supervisor (deliberate, keep them):

* Log lines go to the logger (stderr) only, never to the response, whatever ``LOG_LEVEL`` is;
  OSCAR's leaked into the HTTP body unless ``log_level`` was CRITICAL.
* A script that exits non-zero makes the supervisor exit with that status (so the watchdog
  answers 500, not 200); the script's output is still written, so the caller sees it, and
  outputs are not uploaded (they may be partial).
* Invalid input (bad base64, a ``{``/``[`` body that is not JSON) exits 1 with one line naming
  the problem, e.g. ``invalid base64 input: unexpected byte b'%' at offset 12``.
* A JSON body is stored byte for byte (OSCAR re-serialised it with ``json.dumps``).
* The body is decoded and the response encoded in chunks: memory stays bounded whatever the size.
* A failed upload, or an output whose provider has no credentials, exits 1 with one line naming
  the bucket and the cause (checked before the script runs when credentials are missing).
* The text response (no output files) is the script output as is, with no newline added.

Not supported (OSCAR features outside the synchronous path): storage-event bodies (MinIO/S3
notifications that make OSCAR download the object), ``/oscar/config`` files, Lambda mode and
onedata/webdav/rucio outputs (the latter are a clear error).
"""

from __future__ import annotations

from .core import supervise

__all__ = ["supervise"]
