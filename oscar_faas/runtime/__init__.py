"""The long-lived function runtime: the watchdog's HTTP contract and OSCAR's I/O contract in
one process, so nothing forks per call but the user's script (or nothing at all, with a warm
worker).

``oscar-faas runtime --host H --port P`` (or ``python -m oscar_faas.runtime``) serves
``POST /`` (any path) -> the OSCAR I/O contract -> the answer, ``GET /_/health`` (200 only when
ready) and ``GET /_/status``. It is configured by the supervisor's environment; see
:mod:`.server` for the HTTP side, :mod:`.invoke` for one call and :mod:`.workers` for warm
workers (``OSCAR_WORKER``, line protocol v1; Python workers use :mod:`.oscar_worker`). With
``OSCAR_RUNTIME_CLASSIC=true`` it is a classic watchdog instead (:mod:`.classic`): ``fprocess``
runs once per call, body on stdin, stdout as the answer (what faas-cli functions get).

Its import graph stays small (stdlib, uvicorn/httptools, PyYAML, pybase64; minio only when
uploading) because it is frozen into function images.
"""

from __future__ import annotations

DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = 8080

DESCRIPTION = """\
Serve one OSCAR function over HTTP, as the function image's process: POST / (any path) runs
the OSCAR I/O contract (the body, base64 or JSON, becomes $INPUT_FILE_PATH; the answer is the
base64 of the one output file, a base64 zip of several, or the script's output), GET /_/health
is 200 once ready. Nothing forks per call but the user's script.

Environment (the supervisor's, plus the watchdog's settings):
  SCRIPT, FUNCTION_CONFIG, LOG_LEVEL   the user script, the service (base64 YAML), log level
  OSCAR_SECRETS_DIR, OSCAR_STORAGE_SECRET
                                       the storage secret (MinIO credentials, secrets)
  max_inflight    concurrent calls (0 or unset: 4 per CPU; with OSCAR_WORKER one worker per
                  CPU the service may use)
  max_queue       calls that may wait for a slot (default 100); one more gets 429
  exec_timeout    a call's time limit (e.g. 30s; unset: none): 408 "Killed process."
  read_timeout, write_timeout
                  limits on waiting for the request body / for the client to take the answer
  OSCAR_WORKER    a warm-worker command: kept running, one per slot (a Python worker runs
                  setup() once and forks the others), it serves calls over line protocol v1
                  (see docs/internals.md) instead of the script
  OSCAR_WORKER_FORK  false: every worker runs its own setup() (no fork)
  OSCAR_RUNTIME_CLASSIC, fprocess
                  true: be a classic watchdog instead: run fprocess (split on single spaces,
                  no shell) once per call, the body on its stdin, its stdout the answer
                  (combine_output=false: stderr to the log), 500 on a non-zero exit
"""
