"""Helper for Python warm workers of the oscar-faas function runtime (line protocol v1).

A service opts in with the environment variable ``OSCAR_WORKER``, a command that the runtime
starts once per concurrency slot and keeps. A Python worker is a few lines::

    import oscar_worker

    def setup():                      # once, before the worker says it is ready
        return load_model()

    def handler(input_path, output_dir, env, model):   # once per call
        write_outputs(model, input_path, output_dir)

    oscar_worker.serve(handler, setup)

The runtime puts a folder holding a copy of this file first on the worker's ``PYTHONPATH``,
so ``import oscar_worker`` works in any interpreter; it is also
``oscar_faas.runtime.oscar_worker``. The module uses the standard library only.

The protocol (:mod:`oscar_faas.runtime.workers` has the runtime's side): the runtime gives
the worker two pipes, named by ``OSCAR_WORKER_IN_FD`` (requests, read here) and
``OSCAR_WORKER_OUT_FD`` (answers, written here). Lines are UTF-8 JSON objects, ``\\n``-terminated:

* worker -> runtime, once, after ``setup()``: ``{"ready": true}``;
* runtime -> worker, per call: ``{"id": "...", "env": {"INPUT_FILE_PATH": "...",
  "TMP_OUTPUT_DIR": "...", ...}}``, every variable the script would get for that call;
* worker -> runtime, per call: ``{"id": "...", "ok": true}`` or ``{"id": "...", "ok": false,
  "error": "ExcType: message"}``.

The runtime then reads the outputs from ``TMP_OUTPUT_DIR`` exactly as after a script. stdout
and stderr are not the protocol: both go to the function's log. While ``setup()`` and each
call run, ``sys.stdout`` is redirected to ``sys.stderr`` as well, so a library that prints
cannot get near the answer. During a call the request's variables are also set in
``os.environ`` (and restored afterwards), for code that reads them from there.

An exception in the handler answers ``ok: false`` with ``"<type name>: <message>"`` (the
traceback goes to stderr) and the worker goes on with the next call. An exception in
``setup()`` ends the worker before it is ready, with the traceback on stderr, which the runtime
reports. End of input (the runtime closed the request pipe) ends :func:`serve` normally.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
from typing import Any, Callable, Iterator, Mapping, Optional

__all__ = ["serve", "PROTOCOL_VERSION", "IN_FD_VARIABLE", "OUT_FD_VARIABLE"]

PROTOCOL_VERSION = 1
IN_FD_VARIABLE = "OSCAR_WORKER_IN_FD"
OUT_FD_VARIABLE = "OSCAR_WORKER_OUT_FD"

Handler = Callable[[str, str, "dict[str, str]", Any], None]


def _descriptor(name: str) -> int:
    value = os.environ.get(name, "")
    try:
        fd = int(value)
        os.fstat(fd)
    except (ValueError, OSError):
        raise SystemExit(
            f"oscar_worker: {name}={value!r} is not an open file descriptor; this program is a "
            "warm worker, started by the oscar-faas function runtime (service variable "
            "OSCAR_WORKER)"
        ) from None
    # Processes the handler starts must not keep the protocol pipes open: the runtime sees
    # the worker's end of file when the worker itself exits.
    os.set_inheritable(fd, False)
    return fd


def _write_line(fd: int, message: Mapping[str, Any]) -> None:
    data = (json.dumps(message, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    sys.stdout.flush()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()


@contextlib.contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``env`` set on top, restored afterwards."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _parse(line: bytes) -> dict[str, Any]:
    """The request object of a line; ValueError when the line is not one."""
    request = json.loads(line)
    if not isinstance(request, dict) or "id" not in request:
        raise ValueError(f"a request line must be a JSON object with an id, got {line[:200]!r}")
    return request


def _call(handler: Handler, env: Any, state: Any) -> Optional[str]:
    """Run one call; the error text, or None on success."""
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        return "ValueError: the request's env must be an object of strings"
    missing = [k for k in ("INPUT_FILE_PATH", "TMP_OUTPUT_DIR") if not env.get(k)]
    if missing:
        return f"ValueError: the request has no {' or '.join(missing)}"
    try:
        with _stdout_to_stderr(), _environment(env):
            handler(env["INPUT_FILE_PATH"], env["TMP_OUTPUT_DIR"], dict(env), state)
    except SystemExit as exc:  # a handler that reuses a command-line main()
        if exc.code in (None, 0):
            return None
        traceback.print_exc(file=sys.stderr)
        return _describe(exc)
    except Exception as exc:  # noqa: BLE001 - the call fails, the worker goes on
        traceback.print_exc(file=sys.stderr)
        return _describe(exc)
    return None


def serve(handler: Handler, setup: Optional[Callable[[], Any]] = None) -> None:
    """Run ``setup()`` once, say ready, then serve calls until the runtime closes the pipe.

    :param handler: ``handler(input_path, output_dir, env, state)``, called once per request;
        it writes its outputs into ``output_dir``; its return value is ignored.
    :param setup: called once before the worker is ready; its return value is ``state``.
    :raises SystemExit: when the protocol descriptors are missing or a request line is not
        valid protocol (the runtime then replaces the worker).
    """
    in_fd = _descriptor(IN_FD_VARIABLE)
    out_fd = _descriptor(OUT_FD_VARIABLE)
    with _stdout_to_stderr():
        state = setup() if setup is not None else None
    _write_line(out_fd, {"ready": True})
    with open(in_fd, "rb", closefd=True) as requests:
        for line in requests:
            if not line.strip():
                continue
            try:
                request = _parse(line)
            except ValueError as exc:
                raise SystemExit(f"oscar_worker: protocol error: {exc}") from None
            error = _call(handler, request.get("env", {}), state)
            if error is None:
                _write_line(out_fd, {"id": request["id"], "ok": True})
            else:
                _write_line(out_fd, {"id": request["id"], "ok": False, "error": error})
