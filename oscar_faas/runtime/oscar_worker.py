"""Helper for Python warm workers of the oscar-faas function runtime (line protocol v1).

A service opts in with the environment variable ``OSCAR_WORKER``, a command that the runtime
keeps running, one worker per concurrency slot. A Python worker is a few lines::

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
traceback goes to stderr; ``"out_of_memory": true`` is added when an allocation was refused)
and the worker goes on with the next call. An exception in ``setup()`` ends the worker before
it is ready, with the traceback on stderr, which the runtime reports. End of input (the
runtime closed the request pipe) ends :func:`serve` normally.

One ``setup()`` for every worker: when the runtime wants more than one worker it also passes
``OSCAR_WORKER_FORK_FD`` (a control socket, see :mod:`oscar_faas.runtime.prefork`). This
process then runs ``setup()``, freezes the objects it made (``gc.freeze``), answers
``{"ready": true, "fork": true}`` and becomes the *template*: it serves no calls, it forks one
worker per request of the runtime, and each child serves calls with the state ``setup()``
returned, its memory shared copy-on-write. In each child torch (when imported) is set to one
intra-op thread (an OpenMP pool that ran before ``fork`` hangs the child's next parallel
region), then ``after_fork(state)`` runs. Threads started by ``setup()`` do not exist in the
children, and files or sockets it opened are shared by all of them.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import os
import signal
import socket
import sys
import traceback
from typing import Any, Callable, Iterator, Mapping, Optional, Tuple

__all__ = ["serve", "PROTOCOL_VERSION", "IN_FD_VARIABLE", "OUT_FD_VARIABLE",
           "FORK_FD_VARIABLE"]

PROTOCOL_VERSION = 1
IN_FD_VARIABLE = "OSCAR_WORKER_IN_FD"
OUT_FD_VARIABLE = "OSCAR_WORKER_OUT_FD"
#: Set when the runtime lets this process fork the serving workers (a control socket).
FORK_FD_VARIABLE = "OSCAR_WORKER_FORK_FD"

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


def _out_of_memory(exc: BaseException) -> bool:
    """The failure was an allocation refused (the runtime limits each worker's memory):
    Python's MemoryError, ENOMEM, or a C++ allocator's message (torch's)."""
    return (isinstance(exc, MemoryError) or getattr(exc, "errno", None) == errno.ENOMEM
            or "Cannot allocate memory" in str(exc) or "can't allocate memory" in str(exc))


def _call(handler: Handler, env: Any, state: Any) -> Tuple[Optional[str], bool]:
    """Run one call; the error text (None on success) and whether it ran out of memory."""
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        return "ValueError: the request's env must be an object of strings", False
    missing = [k for k in ("INPUT_FILE_PATH", "TMP_OUTPUT_DIR") if not env.get(k)]
    if missing:
        return f"ValueError: the request has no {' or '.join(missing)}", False
    try:
        with _stdout_to_stderr(), _environment(env):
            handler(env["INPUT_FILE_PATH"], env["TMP_OUTPUT_DIR"], dict(env), state)
    except SystemExit as exc:  # a handler that reuses a command-line main()
        if exc.code in (None, 0):
            return None, False
        traceback.print_exc(file=sys.stderr)
        return _describe(exc), False
    except Exception as exc:  # noqa: BLE001 - the call fails, the worker goes on
        traceback.print_exc(file=sys.stderr)
        return _describe(exc), _out_of_memory(exc)
    return None, False


def _serve_calls(in_fd: int, out_fd: int, handler: Handler, state: Any) -> None:
    """Answer request lines until end of input."""
    with open(in_fd, "rb", closefd=True) as requests:
        for line in requests:
            if not line.strip():
                continue
            try:
                request = _parse(line)
            except ValueError as exc:
                raise SystemExit(f"oscar_worker: protocol error: {exc}") from None
            error, out_of_memory = _call(handler, request.get("env", {}), state)
            if error is None:
                _write_line(out_fd, {"id": request["id"], "ok": True})
            elif out_of_memory:
                _write_line(out_fd, {"id": request["id"], "ok": False, "error": error,
                                     "out_of_memory": True})
            else:
                _write_line(out_fd, {"id": request["id"], "ok": False, "error": error})


def _fork_socket() -> Optional[socket.socket]:
    """The runtime's control socket, when it offers one."""
    value = os.environ.pop(FORK_FD_VARIABLE, "")
    if not value.isdigit():
        return None
    try:
        sock = socket.socket(fileno=int(value))
    except OSError:
        return None
    sock.set_inheritable(False)
    if not hasattr(socket, "recv_fds") or not hasattr(os, "waitstatus_to_exitcode"):
        sock.close()  # Python < 3.9: one process per worker, as in other languages
        return None
    return sock


def _send(sock: socket.socket, message: Mapping[str, Any]) -> None:
    try:
        sock.send(json.dumps(message).encode(), socket.MSG_DONTWAIT)
    except OSError:
        pass  # the runtime is gone or not reading: it will not miss the news


def _template(sock: socket.socket, handler: Handler, state: Any,
              after_fork: Optional[Callable[[Any], None]]) -> None:
    """Fork a serving worker per request of the runtime; report the children's exits."""

    def reap(_signum: int, _frame: Any) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            _send(sock, {"exited": pid, "status": os.waitstatus_to_exitcode(status)})

    signal.signal(signal.SIGCHLD, reap)
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, 65536, 3)
        except OSError:
            return
        if not data:
            return  # the runtime closed the socket: it stopped
        try:
            slot = json.loads(data).get("fork")
        except (ValueError, AttributeError):
            slot = None
        if len(fds) != 3:
            for fd in fds:
                os.close(fd)
            _send(sock, {"forked": slot, "error": "a fork request needs three descriptors"})
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _child(sock, fds, handler, state, after_fork)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
                if not isinstance(exc.code, int) and exc.code is not None:
                    print(exc.code, file=sys.stderr)
            except BaseException:  # noqa: BLE001 - a child must never return into the loop
                traceback.print_exc(file=sys.stderr)
                code = 1
            finally:
                sys.stderr.flush()
                os._exit(code)
        for fd in fds:
            os.close(fd)
        _send(sock, {"forked": slot, "pid": pid})


def _child(sock: socket.socket, fds: "list[int]", handler: Handler, state: Any,
           after_fork: Optional[Callable[[Any], None]]) -> None:
    """A forked serving worker: its own process group (in the runtime's session, so it dies
    with the runtime) and log, then calls until end of input."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    sock.close()
    os.setpgid(0, 0)
    in_fd, out_fd, log_fd = fds
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    for fd in (in_fd, out_fd):
        os.set_inheritable(fd, False)
    torch = sys.modules.get("torch")
    if torch is not None:  # an OpenMP pool started before fork hangs the child's next one
        torch.set_num_threads(1)
    if after_fork is not None:
        with _stdout_to_stderr():
            after_fork(state)
    _write_line(out_fd, {"ready": True})
    _serve_calls(in_fd, out_fd, handler, state)


def _release_free_heap() -> None:
    """Give the heap's free memory back to the system before forking (glibc's
    ``malloc_trim``; about 10 MB with a torch model): the template keeps less."""
    try:
        import ctypes
        ctypes.CDLL(None).malloc_trim(0)
    except (ImportError, OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        pass


def serve(handler: Handler, setup: Optional[Callable[[], Any]] = None, *, fork: bool = True,
          after_fork: Optional[Callable[[Any], None]] = None) -> None:
    """Run ``setup()`` once, say ready, then serve calls until the runtime closes the pipe.

    When the runtime offers it (``OSCAR_WORKER_FORK_FD``, more than one worker), this process
    runs ``setup()`` and then only forks the serving workers, which share what ``setup()``
    loaded (copy-on-write); each of them is a process of its own, one call at a time.

    :param handler: ``handler(input_path, output_dir, env, state)``, called once per request;
        it writes its outputs into ``output_dir``; its return value is ignored.
    :param setup: called once before the worker is ready; its return value is ``state``.
    :param fork: False: never fork (each worker runs ``setup()`` itself), e.g. when
        ``setup()`` starts threads or opens connections that cannot be shared.
    :param after_fork: ``after_fork(state)``, run in each forked worker before it is ready
        (reopen a connection, reseed a generator, set a library's threads).
    :raises SystemExit: when the protocol descriptors are missing or a request line is not
        valid protocol (the runtime then replaces the worker).
    """
    in_fd = _descriptor(IN_FD_VARIABLE)
    out_fd = _descriptor(OUT_FD_VARIABLE)
    control = _fork_socket()
    if control is not None and not fork:
        control.close()
        control = None
    with _stdout_to_stderr():
        state = setup() if setup is not None else None
    if control is None:
        _write_line(out_fd, {"ready": True})
        _serve_calls(in_fd, out_fd, handler, state)
        return
    # Objects made so far stay out of the collector's reach: collections in the children
    # would otherwise write to (and so copy) every page that holds one.
    gc.collect()
    gc.freeze()
    _release_free_heap()
    os.close(in_fd)
    _write_line(out_fd, {"ready": True, "fork": True})
    os.close(out_fd)
    _template(control, handler, state, after_fork)
