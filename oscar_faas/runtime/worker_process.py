"""One warm worker process (:class:`Worker`): start (spawned, or forked by a template), one
call over its pipes, kill; the pool that keeps them is :mod:`.workers`, which describes the
protocol.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..supervisor.logs import SupervisorLog
from .guardian import own_group
from .prefork import UNKNOWN_STATUS, Forked, Template
from .worker_io import TAIL_BYTES, LineError, LineReader, Tail, pidfd_open, write_all

#: How long to wait for a dead worker's last output before answering.
DRAIN_GRACE = 1.0
#: A worker that fails a call with its data size above this share of the limit ran out of it.
MEMORY_NEAR = 0.9
#: glibc's heap settings for warm workers (see :func:`warm_heap`): big buffers from the heap
#: (up to glibc's own dynamic ceiling, 32 MiB) and no trimming below 256 MiB of free top.
WARM_HEAP = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}
#: The helper module workers import as ``oscar_worker``.
HELPER = Path(__file__).resolve().with_name("oscar_worker.py")
__all__ = ["TAIL_BYTES", "Worker", "WorkerError", "helper_path"]


def warm_heap(env: Mapping[str, str]) -> dict[str, str]:
    """:data:`WARM_HEAP`, unless the service set glibc's malloc itself (``MALLOC_*`` or
    ``GLIBC_TUNABLES``: the author's choice wins).

    Why: with glibc's defaults a model's per-call buffers (about 14 MB of activations for
    the example classifier) are given back to the system after every call (the heap top is
    trimmed, or they were mmap'ed) and faulted in again, zeroed, by the next one: 3,500 page
    faults and about 5 ms of a 26 ms inference (bench section 5; ``/proc/<pid>/stat``
    minflt). Kept, a warm worker's heap stays as warm as its model: 20-21 faults per call.
    The price is memory the worker already used at its peak staying mapped to it.
    """
    if any(key.startswith("MALLOC_") or key == "GLIBC_TUNABLES" for key in env):
        return {}
    return dict(WARM_HEAP)


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
        os.write(2, f"warning: {HELPER} is missing ({err.strerror}): Python workers cannot "
                    "import oscar_worker\n".encode())
    return str(folder)


class WorkerError(Exception):
    """A call (or a start) failed because of the worker; ``str()`` is the answer body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def mebibytes(size: int) -> str:
    return f"{size / (1 << 20):g} MiB"


def data_size(pid: int) -> int | None:
    """``VmData`` of ``pid`` in bytes (what ``RLIMIT_DATA`` counts); None when unknown."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmData:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class Worker:
    """One worker process and its pipes. Used by one thread at a time (see :class:`WorkerPool`).
    """

    def __init__(self, index: int, argv: Sequence[str], env: Mapping[str, str],
                 log: SupervisorLog, pythonpath: str, memory_limit: int | None = None) -> None:
        self.index = index
        self.name = f"worker {index}"
        self.argv = list(argv)
        self.env = dict(env)
        self.pythonpath = pythonpath
        self.memory_limit = memory_limit
        self.log = log
        self.ready = False
        #: it answered ``"fork": true``: a template, not a serving worker
        self.forks = False
        #: the control channel of a template (started with ``control=True``)
        self.control: Template | None = None
        #: it broke the protocol outside its answer: replace it once its call is over
        self.misbehaved = False
        #: why the last start failed (the answer to calls until a start succeeds)
        self.error = ""
        self._proc: subprocess.Popen[bytes] | Forked | None = None
        self._req = self._pidfd = -1
        self._reader: LineReader | None = None
        self._tail: Tail | None = None

    # --- life cycle ------------------------------------------------------------------------

    def start(self, template: Template | None = None, control: bool = False) -> None:
        """Start the process (forked by ``template`` when given; offered a control socket
        with ``control``) and wait for its ready line.

        :raises WorkerError: (503) it cannot be started, or exits or breaks the protocol first.
        :raises TemplateGone: ``template`` cannot fork.
        """
        self.kill()
        self.misbehaved = self.forks = False
        req_r, req_w = os.pipe()
        ans_r, ans_w = os.pipe()
        log_r, log_w = os.pipe()
        ends = (req_r, ans_w, log_w)
        try:
            if template is not None:
                self._proc = Forked(template.fork(self.index, ends), template)
            else:
                self._proc = self._spawn(ends, control)
        except BaseException:
            for fd in (req_w, ans_r, log_r):
                os.close(fd)
            raise
        finally:
            for fd in ends:
                os.close(fd)
        self._req = req_w
        self._tail = Tail(log_r, f"{self.name}: ")
        self._pidfd = pidfd_open(self._proc.pid)
        self._reader = LineReader(ans_r, self._pidfd, lambda: self.alive)
        self.log.info("%s: started %s (pid %d)", self.name,
                      "by the template" if template else self.argv, self._proc.pid)
        what = ""
        try:
            line = self._reader.read(None)
            ready = json.loads(line) if line is not None else None
        except LineError as err:
            what, ready = f"broke its ready line: {err}", None
        except ValueError:
            ready = None
        except OSError:  # closed under us: the pool is closing
            line = ready = None
        if not isinstance(ready, dict) or ready.get("ready") is not True:
            what = what or ("exited before it was ready" if line is None
                            else f"sent {line[:200]!r} instead of the ready line")
            if self.memory_limit:
                what += f" (it may use {mebibytes(self.memory_limit)}: the service's memory)"
            raise self._fail(503, f"{self.name} {what}")
        self.forks = bool(control and ready.get("fork") is True)
        if not self.forks and self.control is not None:
            self.control.close()
            self.control = None
        self.ready = True
        self.log.info("%s: ready%s", self.name, ", forks the workers" if self.forks else "")

    def _spawn(self, ends: tuple[int, int, int], control: bool) -> subprocess.Popen[bytes]:
        req_r, ans_w, log_w = ends
        env = {**warm_heap(self.env), **self.env}
        env["OSCAR_WORKER_IN_FD"] = str(req_r)
        env["OSCAR_WORKER_OUT_FD"] = str(ans_w)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (self.pythonpath, env.get("PYTHONPATH")) if p)
        fds = [req_r, ans_w]
        theirs = -1
        if control:
            self.control, theirs = Template.pair()
            env["OSCAR_WORKER_FORK_FD"] = str(theirs)
            fds.append(theirs)
        try:
            proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log_w, stderr=subprocess.STDOUT,
                env=env, pass_fds=fds,
                **own_group())  # in the runtime's session: the guardian's reach
        except OSError as err:
            raise WorkerError(503, f"cannot start worker {self.argv[0]!r}: "
                                   f"{err.strerror or err}") from None
        finally:
            if theirs >= 0:
                os.close(theirs)
        if self.memory_limit:  # forked workers inherit it from their template
            _limit_memory(proc.pid, self.memory_limit, self.log)
        return proc

    def rename(self, name: str) -> None:
        self.name = name
        if self._tail is not None:
            self._tail.prefix = f"{name}: ".encode()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """Kill the worker's process group and close its pipes (idempotent)."""
        self.ready = False
        proc, self._proc = self._proc, None
        if proc is not None:
            if isinstance(proc, Forked) and proc.poll() is None:
                _signal(lambda: os.kill(proc.pid, signal.SIGKILL))  # before its setpgid
            if not isinstance(proc, Forked) or proc.returncode is None:
                _signal(lambda: os.killpg(proc.pid, signal.SIGKILL))
            proc.wait()
            if isinstance(proc, Forked):
                proc.close()
        if self._reader is not None:
            os.close(self._reader.fd)
            self._reader = None
        for name in ("_req", "_pidfd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)
        if self._tail is not None:
            self._tail.thread.join(DRAIN_GRACE)

    def close(self) -> None:
        self.kill()
        if self.control is not None:
            self.control.close()
            self.control = None

    def _fail(self, status: int, what: str) -> WorkerError:
        """Kill the worker and build the error answer: ``what``, the exit status, the tail."""
        code = None
        if self._proc is not None and status != 504:  # it died (or broke the protocol)
            try:  # its pipe may close just before it can be reaped
                code = self._proc.wait(DRAIN_GRACE)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        if code is not None and code != UNKNOWN_STATUS:
            what += f" (exit status {code if code >= 0 else 128 - code})"
        tail = self._tail.text() if self._tail is not None else ""
        self.log.error("%s", what)
        return WorkerError(status, f"{what}\n{tail}" if tail else f"{what}\n")

    # --- calls -----------------------------------------------------------------------------

    def stray(self) -> bytes:
        """What an idle worker wrote on its answer pipe since its last answer (should be
        nothing)."""
        return self._reader.pending() if self._reader is not None else b""

    def call(self, call_id: str, env: Mapping[str, str], timeout: float) -> str | None:
        """Send one request and wait for its done line.

        :returns: None when the worker succeeded, else the error it reported.
        :raises WorkerError: the worker died (500), broke its answer line (500), ran out of
            memory (500) or did not answer within ``timeout`` (504); it has been killed.
        """
        assert self._reader is not None
        line = json.dumps({"id": call_id, "env": dict(env)}, ensure_ascii=False) + "\n"
        try:
            write_all(self._req, line.encode("utf-8"))
        except OSError:
            raise self._fail(500, f"{self.name} exited during the call") from None
        deadline = time.monotonic() + timeout if timeout > 0 else None
        while True:
            try:
                raw = self._reader.read(deadline)
            except LineError as err:
                raise self._fail(500, f"{self.name} broke the protocol: {err}") from None
            if raw is None:
                if deadline is not None and time.monotonic() >= deadline:
                    raise self._fail(504, f"exec_timeout ({timeout:g}s) reached: "
                                          f"{self.name} was killed")
                raise self._fail(500, f"{self.name} exited during the call")
            answer, salvaged = _answer_in(raw, call_id)
            if answer is None or salvaged:
                self.misbehaved = True
                self.log.warning("%s: %s %r (it will be replaced)", self.name,
                                 "ignoring line" if answer is None else
                                 "stray output before its answer:", raw[:200])
                if answer is None:
                    continue
            if answer.get("ok") is True:
                return None
            error = str(answer.get("error") or "the worker reported a failure")
            self._check_memory(error, answer.get("out_of_memory") is True)
            return error

    def _check_memory(self, error: str, reported: bool) -> None:
        """A failure at the memory limit fails the call naming the limit and replaces the
        worker (its heap is full: the next call would fail too)."""
        if not self.memory_limit or self._proc is None:
            return
        size = data_size(self._proc.pid) or 0
        if reported or size >= MEMORY_NEAR * self.memory_limit:
            self.kill()
            message = (f"{self.name} ran out of memory: each worker may use "
                       f"{mebibytes(self.memory_limit)} (the service's memory); it was "
                       "replaced by a fresh one")
            self.log.error("%s", message)
            raise WorkerError(500, f"{message}\n{error}\n")


def _answer_in(raw: bytes, call_id: str) -> tuple[dict | None, bool]:
    """The answer to ``call_id`` in a line, and whether it had to be salvaged: an answer
    object at the end of the line, after output the worker wrote without a newline."""
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    else:
        return (answer if isinstance(answer, dict) and answer.get("id") == call_id
                else None), False
    if call_id.encode() not in raw:
        return None, False
    end = len(raw)
    for _ in range(8):  # the last few "{" of the line, from the right
        start = raw.rfind(b"{", 0, end)
        if start < 0:
            break
        try:
            answer = json.loads(raw[start:])
        except ValueError:
            end = start
            continue
        if isinstance(answer, dict) and answer.get("id") == call_id:
            return answer, True
        break
    return None, False


def _signal(send: Callable[[], None]) -> None:
    try:
        send()
    except (ProcessLookupError, PermissionError):
        pass


_limit_warned = False


def _limit_memory(pid: int, limit: int, log: SupervisorLog) -> None:
    """``RLIMIT_DATA`` of ``pid`` (its heap and private mappings) lowered to ``limit``."""
    global _limit_warned
    try:
        import resource
        soft, hard = resource.prlimit(pid, resource.RLIMIT_DATA)
        cap = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
        resource.prlimit(pid, resource.RLIMIT_DATA, (cap, cap))
    except (ImportError, OSError, ValueError) as err:
        if not _limit_warned:
            _limit_warned = True
            log.warning("cannot limit the workers' memory to %s: %s", mebibytes(limit), err)
