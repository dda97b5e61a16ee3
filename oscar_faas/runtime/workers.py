"""Warm workers: long-lived processes that serve calls over the line protocol v1.

A service opts in with ``OSCAR_WORKER`` (a command line, split with shlex). The runtime starts
one worker per concurrency slot and keeps it. Each worker gets two pipe descriptors of its own,
named in its env: ``OSCAR_WORKER_IN_FD`` (request lines in) and ``OSCAR_WORKER_OUT_FD`` (answer
lines out). Its stdout and stderr are not the protocol: both go, line by line, to the runtime's
stderr (the function log), and the last :data:`TAIL_BYTES` are kept for error answers.

Lines are UTF-8 JSON objects ending in ``\\n``:

* worker -> runtime, once when loaded: ``{"ready": true}``;
* runtime -> worker, per call: ``{"id": "<call id>", "env": {"INPUT_FILE_PATH": ..., ...}}``;
* worker -> runtime, per call: ``{"id": "<same id>", "ok": true}`` or
  ``{"id": "<same id>", "ok": false, "error": "<message>"}``.

A worker that exits, or does not answer within ``exec_timeout``, fails that call and is killed
(its whole process group); :class:`WorkerPool` starts a replacement at once. A worker that
exits before it is ready is retried on the next call that needs its slot.
"""

from __future__ import annotations

import json
import os
import queue
import select
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Mapping, Sequence

from ..supervisor.logs import SupervisorLog

#: Bytes of a worker's output kept for error answers (a ring, so memory stays bounded).
TAIL_BYTES = 4096
#: Longest protocol line accepted from a worker; a longer one is a protocol error.
MAX_LINE = 1 << 20
#: Longest log line copied from a worker before it is cut.
MAX_LOG_LINE = 64 << 10
#: Without pidfd (Linux < 5.3), how often (ms) a waiting call checks that its worker lives.
NO_PIDFD_POLL = 200
#: How long to wait for a dead worker's last output before answering.
DRAIN_GRACE = 1.0
#: The helper module workers import as ``oscar_worker``.
HELPER = Path(__file__).resolve().with_name("oscar_worker.py")


def helper_path(workdir: Path) -> str:
    """A folder holding only a copy of ``oscar_worker.py``, for the workers' ``PYTHONPATH``.

    Not this package's folder: its ``settings.py``, ``server.py``... would shadow the worker's
    own top-level modules of the same names.
    """
    folder = workdir / "pythonpath"
    folder.mkdir(exist_ok=True)
    try:  # a frozen build must ship the file as data next to this module
        (folder / HELPER.name).write_bytes(HELPER.read_bytes())
    except OSError as err:
        _write_stderr(f"warning: {HELPER} is missing ({err.strerror}): Python workers cannot "
                      "import oscar_worker\n".encode())
    return str(folder)


class WorkerError(Exception):
    """A call (or a start) failed because of the worker; ``str()`` is the answer body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Tail:
    """Copies a worker's merged stdout/stderr to our stderr, line by line with a prefix, and
    keeps the last :data:`TAIL_BYTES` of it."""

    def __init__(self, fd: int, prefix: str) -> None:
        self._fd = fd
        self._prefix = prefix.encode()
        self._tail = bytearray()
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name=prefix, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        pending = bytearray()
        try:
            while data := os.read(self._fd, 65536):
                with self._lock:
                    self._tail += data
                    if len(self._tail) > TAIL_BYTES:
                        del self._tail[:-TAIL_BYTES]
                pending += data
                lines = []
                while (end := pending.find(b"\n")) >= 0 or len(pending) > MAX_LOG_LINE:
                    cut = end if end >= 0 else MAX_LOG_LINE
                    lines.append(self._prefix + bytes(pending[:cut]) + b"\n")
                    del pending[:cut + (1 if end >= 0 else 0)]
                if lines:
                    _write_stderr(b"".join(lines))
            if pending:
                _write_stderr(self._prefix + bytes(pending) + b"\n")
        except OSError:
            pass
        finally:
            os.close(self._fd)

    def text(self) -> str:
        """The kept tail, from the first whole line when it was cut."""
        with self._lock:
            data = bytes(self._tail)
        if len(data) >= TAIL_BYTES and b"\n" in data:
            data = data[data.index(b"\n") + 1:]
        return data.decode("utf-8", "replace")


def _write_stderr(data: bytes) -> None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(2, view):]
    except OSError:
        pass


class Worker:
    """One worker process and its pipes. Used by one thread at a time (see :class:`WorkerPool`).
    """

    def __init__(self, index: int, argv: Sequence[str], env: Mapping[str, str],
                 log: SupervisorLog, pythonpath: str) -> None:
        self.index = index
        self.argv = list(argv)
        self.env = dict(env)
        self.pythonpath = pythonpath
        self.log = log
        self.ready = False
        #: why the last start failed (the answer to calls until a start succeeds)
        self.error = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._req = self._ans = self._pidfd = -1
        self._buf = bytearray()
        self._tail: _Tail | None = None

    # --- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the process and wait for its ready line.

        :raises WorkerError: (503) it cannot be started, or exits or breaks the protocol first.
        """
        self.kill()
        req_r, req_w = os.pipe()
        ans_r, ans_w = os.pipe()
        log_r, log_w = os.pipe()
        env = dict(self.env)
        env["OSCAR_WORKER_IN_FD"] = str(req_r)
        env["OSCAR_WORKER_OUT_FD"] = str(ans_w)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (self.pythonpath, env.get("PYTHONPATH")) if p)
        try:
            self._proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log_w, stderr=subprocess.STDOUT,
                env=env, pass_fds=(req_r, ans_w), start_new_session=True)
        except OSError as err:
            for fd in (req_r, req_w, ans_r, ans_w, log_r, log_w):
                os.close(fd)
            raise WorkerError(503, f"cannot start worker {self.argv[0]!r}: "
                                   f"{err.strerror or err}") from None
        for fd in (req_r, ans_w, log_w):
            os.close(fd)
        self._req, self._ans = req_w, ans_r
        os.set_blocking(ans_r, False)
        self._buf.clear()
        self._tail = _Tail(log_r, f"worker {self.index}: ")
        self._pidfd = _pidfd_open(self._proc.pid)
        self.log.info("worker %d: started %s (pid %d)", self.index, self.argv, self._proc.pid)
        line = self._read_line(None)
        try:
            ok = line is not None and json.loads(line).get("ready") is True
        except (ValueError, AttributeError):
            ok = False
        if not ok:
            what = "exited before it was ready" if line is None else f"sent {line[:200]!r} instead of the ready line"
            raise self._fail(503, f"worker {self.index} {what}")
        self.ready = True
        self.log.info("worker %d: ready", self.index)

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """Kill the worker's process group and close its pipes (idempotent)."""
        self.ready = False
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
        for name in ("_req", "_ans", "_pidfd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)
        if self._tail is not None:
            self._tail.thread.join(DRAIN_GRACE)

    def _fail(self, status: int, what: str) -> WorkerError:
        """Kill the worker and build the error answer: ``what``, the exit status, the tail."""
        code = None
        if self._proc is not None and status != 504:  # it died (or broke the protocol)
            try:  # its pipe may close just before it can be reaped
                code = self._proc.wait(DRAIN_GRACE)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        if code is not None:
            what += f" (exit status {code if code >= 0 else 128 - code})"
        tail = self._tail.text() if self._tail is not None else ""
        self.log.error("%s", what)
        return WorkerError(status, f"{what}\n{tail}" if tail else f"{what}\n")

    # --- calls -----------------------------------------------------------------------------

    def call(self, call_id: str, env: Mapping[str, str], timeout: float) -> str | None:
        """Send one request and wait for its done line.

        :returns: None when the worker succeeded, else the error it reported.
        :raises WorkerError: the worker died (500) or did not answer within ``timeout`` (504);
            it has been killed.
        """
        line = json.dumps({"id": call_id, "env": dict(env)}, ensure_ascii=False) + "\n"
        try:
            _write_all(self._req, line.encode("utf-8"))
        except OSError:
            raise self._fail(500, f"worker {self.index} exited during the call") from None
        deadline = time.monotonic() + timeout if timeout > 0 else None
        while True:
            raw = self._read_line(deadline)
            if raw is None:
                if deadline is not None and time.monotonic() >= deadline:
                    raise self._fail(504, f"exec_timeout ({timeout:g}s) reached: worker "
                                          f"{self.index} was killed")
                raise self._fail(500, f"worker {self.index} exited during the call")
            try:
                answer = json.loads(raw)
            except ValueError:
                raise self._fail(500, f"worker {self.index} broke the protocol: "
                                      f"{raw[:200]!r}") from None
            if not isinstance(answer, dict) or answer.get("id") != call_id:
                self.log.warning("worker %d: ignoring line %r", self.index, raw[:200])
                continue
            if answer.get("ok") is True:
                return None
            return str(answer.get("error") or "the worker reported a failure")

    def _read_line(self, deadline: float | None) -> bytes | None:
        """The next line from the answer pipe; None on EOF, exit or deadline."""
        poller = select.poll()
        poller.register(self._ans, select.POLLIN)
        if self._pidfd >= 0:
            poller.register(self._pidfd, select.POLLIN)
        exited = False
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[:end + 1]
                return line
            if len(self._buf) > MAX_LINE:
                return None
            if exited:
                return None
            timeout = None
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                timeout = max(1, int(left * 1000 + 0.999))
            if self._pidfd < 0:  # no pidfd (Linux < 5.3): look at the process now and then
                timeout = NO_PIDFD_POLL if timeout is None else min(timeout, NO_PIDFD_POLL)
            events = dict(poller.poll(timeout))
            if not events:
                if self._pidfd < 0 and self._proc is not None and self._proc.poll() is not None:
                    exited = True
                continue
            try:
                data = os.read(self._ans, 65536)
            except BlockingIOError:
                data = None
            if data == b"":
                return None
            if data:
                self._buf += data
            elif self._pidfd in events:
                exited = True  # one more look at the buffer, then give up


def _pidfd_open(pid: int) -> int:
    """A descriptor that becomes readable when ``pid`` exits; -1 where the kernel has none."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return -1


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class WorkerPool:
    """``slots`` workers; a call takes an idle one (waiting while none is) and gives it back.

    A worker that failed a call is replaced in the background before it is idle again, so
    callers wait for the replacement instead of hitting a dead process.
    """

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], slots: int,
                 log: SupervisorLog, workdir: Path) -> None:
        self.log = log
        pythonpath = helper_path(workdir)
        self.workers = [Worker(i, argv, env, log, pythonpath) for i in range(max(1, slots))]
        self._idle: queue.SimpleQueue[Worker] = queue.SimpleQueue()
        self._closed = False

    def start(self) -> None:
        """Start every worker in the background; :attr:`ready` tells when all are up."""
        for worker in self.workers:
            self._bring_up(worker)

    @property
    def ready(self) -> bool:
        return not self._closed and all(w.ready for w in self.workers)

    def acquire(self) -> Worker:
        return self._idle.get()

    def release(self, worker: Worker) -> None:
        if worker.alive and worker.ready:
            self._idle.put(worker)
        else:
            self._bring_up(worker)

    def _bring_up(self, worker: Worker) -> None:
        def run() -> None:
            try:
                worker.start()
                worker.error = ""
            except WorkerError as err:
                worker.error = str(err)
                self.log.error("worker %d could not start: %s", worker.index,
                               str(err).strip().replace("\n", " | "))
            finally:
                self._idle.put(worker)

        if not self._closed:
            threading.Thread(target=run, name=f"start-worker-{worker.index}", daemon=True).start()

    def close(self) -> None:
        self._closed = True
        for worker in self.workers:
            worker.kill()
