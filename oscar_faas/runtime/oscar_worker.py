"""Warm-worker helper for Python (line protocol v1 of the oscar-faas runtime).

A single dependency-free file: the runtime puts its folder first on the worker's PYTHONPATH,
so a worker just does ``import oscar_worker`` (or ``from oscar_faas.runtime import
oscar_worker``)::

    import oscar_worker

    def setup():                       # once, before the worker says it is ready
        return load_model()

    def handler(input_path, output_dir, env, model):
        result = model.predict(open(input_path, "rb").read())
        with open(f"{output_dir}/result.json", "w") as out:
            out.write(result)

    oscar_worker.serve(handler, setup)

``env`` holds the call's variables (``INPUT_FILE_PATH``, ``TMP_INPUT_DIR``, ``TMP_OUTPUT_DIR``,
``Http_*``); they are also set in ``os.environ`` while the handler runs. An exception in the
handler fails that call (``"<ExcType>: <message>"``) and the worker goes on. ``print`` is
harmless: while setup and handlers run, ``sys.stdout`` is redirected to stderr, and the
protocol travels on descriptors of its own. The worker exits when the runtime closes the
request descriptor (the runtime stopped or died).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any, Callable, Optional

__all__ = ["serve"]


def _send(out: Any, message: dict) -> None:
    out.write((json.dumps(message) + "\n").encode("utf-8"))
    out.flush()


@contextlib.contextmanager
def _call_environ(env: dict):
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


def serve(handler: Callable[[str, str, dict, Any], None],
          setup: Optional[Callable[[], Any]] = None) -> None:
    """Run ``setup`` once, say ready, then answer calls with ``handler`` until EOF.

    :param handler: ``handler(input_path, output_dir, env, state)``; write outputs into
        ``output_dir`` (one file -> its base64 is the answer, several -> a zip).
    :param setup: called once before ready; its return value is ``state``.
    :raises RuntimeError: not started by the runtime (no ``OSCAR_WORKER_IN_FD``).
    """
    try:
        in_fd = int(os.environ["OSCAR_WORKER_IN_FD"])
        out_fd = int(os.environ["OSCAR_WORKER_OUT_FD"])
    except (KeyError, ValueError):
        raise RuntimeError("oscar_worker.serve() must run under the oscar-faas runtime "
                           "(OSCAR_WORKER_IN_FD/OSCAR_WORKER_OUT_FD are not set)") from None
    for fd in (in_fd, out_fd):  # programs the handler starts must not hold the protocol
        os.set_inheritable(fd, False)
    requests = os.fdopen(in_fd, "rb")
    answers = os.fdopen(out_fd, "wb")
    with contextlib.redirect_stdout(sys.stderr):
        state = setup() if setup is not None else None
    _send(answers, {"ready": True})
    for line in requests:
        try:
            request = json.loads(line)
            call_id = request["id"]
            env = {str(k): str(v) for k, v in (request.get("env") or {}).items()}
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            print(f"oscar_worker: ignoring a malformed request line: {err}", file=sys.stderr)
            continue
        answer: dict = {"id": call_id, "ok": True}
        try:
            with contextlib.redirect_stdout(sys.stderr), _call_environ(env):
                handler(env.get("INPUT_FILE_PATH", ""), env.get("TMP_OUTPUT_DIR", ""), env, state)
        except Exception as err:  # noqa: BLE001 - the call fails, the worker goes on
            answer = {"id": call_id, "ok": False, "error": f"{type(err).__name__}: {err}"}
            import traceback
            traceback.print_exc(file=sys.stderr)
        finally:
            sys.stderr.flush()
        _send(answers, answer)
