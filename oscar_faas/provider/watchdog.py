"""Classic-watchdog invocation: one process per call, body on stdin, stdout as the answer.

This reproduces what the OpenFaaS classic watchdog does inside a function container
(openfaas.md 3.2) so that a function behaves the same on this provider as on a cluster:

* ``fprocess`` is split on single spaces (no shell, no quoting) and started per request, with
  the function's env, ``fprocess`` itself and the CGI variables (``Http_Method``, ...);
* the request body is streamed to stdin, stdout (plus stderr when ``combine_output``, the
  default) becomes the body; a non-zero exit is a 500 ``exit status N`` + output;
* ``exec_timeout`` kills the process group and answers 408 ``Killed process.``;
* ``max_inflight`` bounds concurrent runs; unlike the classic watchdog, excess calls wait in a
  bounded queue (``max_queue``) and only get 429 once it is full, because OSCAR clients expect
  a busy service to serialise calls, not to reject them.

The status depends on the exit code, which is only known at the end, so stdout is spooled
(memory up to :data:`SPOOL_MEMORY`, then a temporary file) and sent once the process is done:
memory stays bounded whatever the output size.

The gateway's functions run ``python -m oscar_faas.supervisor``; for those the supervisor is
called in-process (:meth:`Watchdog.run_in_process`), so no interpreter starts per call.
"""

from __future__ import annotations

import logging
import math
import os
import re
import select
import signal
import subprocess
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from tempfile import SpooledTemporaryFile
from typing import IO, Any, BinaryIO, Callable, Iterator, Mapping

from .logs import function_logger

#: ``envProcess`` of the gateway's functions, as docs/internals.md fixes it.
IN_PROCESS_SUPERVISOR = "python -m oscar_faas.supervisor"
#: Every ``envProcess`` that means "the oscar supervisor" and is run in-process: the module
#: form above and the path the function image installs it at (OSCAR's own convention, which
#: ``oscar_faas.translate.SUPERVISOR_PROCESS`` may use). The backend adds translate's value.
SUPERVISOR_COMMANDS = frozenset({IN_PROCESS_SUPERVISOR, "/oscar/bin/supervisor"})

#: Read/write size for bodies and pipes.
CHUNK = 64 * 1024
#: Output kept in memory before the spool moves to a temporary file.
SPOOL_MEMORY = 4 * 1024 * 1024
#: Bodies of at most this many bytes (with a Content-Length) are written to stdin inline:
#: a fresh pipe always holds one page, so the write cannot block and no thread is needed.
INLINE_BODY = 4096
#: Default bound of the wait queue per function (``max_queue`` env of the function).
DEFAULT_MAX_QUEUE = 100
#: How long a timed-out in-process call may take to notice its script was killed.
ABANDON_GRACE = 1.0

KILLED_BODY = b"Killed process.\n"

SuperviseFn = Callable[[BinaryIO, BinaryIO, Mapping[str, str], "logging.Logger | None"], int]

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                   "h": 3600.0}


def parse_duration(value: str | None) -> float | None:
    """Seconds from a watchdog timeout: a bare integer means seconds, else a Go duration
    (``10s``, ``1m30s``, ``500ms``). ``None`` when unset or unparsable, as the watchdog then
    falls back to its default."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(text)
    pos, total = 0, 0.0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None:
            return None
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    return total


def _parse_count(value: str | None) -> int | None:
    try:
        number = int((value or "").strip())
    except ValueError:
        return None
    return number if number >= 0 else None


def default_max_inflight() -> int:
    """Concurrency when a function sets no ``max_inflight`` (or 0): 4 per CPU.

    The classic watchdog treats 0 as unlimited, but there it is one container with its own
    limits; here every function shares the host, so an unbounded fork storm is not an option.
    """
    return 4 * (os.cpu_count() or 1)


@dataclass(frozen=True)
class WatchdogConfig:
    """The watchdog settings of one function, read from its ``envVars``."""

    exec_timeout: float = 0.0
    combine_output: bool = True
    content_type: str | None = None
    max_inflight: int = 1
    max_queue: int = DEFAULT_MAX_QUEUE

    @classmethod
    def from_env(cls, env: Mapping[str, str], fallback_inflight: int | None = None
                 ) -> WatchdogConfig:
        """Parse leniently, as the classic watchdog does: a bad value means the default."""
        combine = env.get("combine_output")
        inflight = _parse_count(env.get("max_inflight")) or 0
        queue = _parse_count(env.get("max_queue"))
        return cls(
            exec_timeout=parse_duration(env.get("exec_timeout")) or 0.0,
            combine_output=True if combine is None
            else combine.strip().lower() in ("true", "1", "yes", "on"),
            content_type=env.get("content_type") or None,
            max_inflight=inflight or fallback_inflight or default_max_inflight(),
            max_queue=DEFAULT_MAX_QUEUE if queue is None else queue,
        )


class QueueFull(Exception):
    """Every slot is busy and the wait queue is full: the caller answers 429."""


class Limiter:
    """At most ``max_inflight`` holders; up to ``max_queue`` callers wait, first come first
    served (a freed slot is handed to the oldest waiter directly, so late arrivals cannot
    overtake it)."""

    def __init__(self, max_inflight: int, max_queue: int) -> None:
        self.max_inflight = max(1, max_inflight)
        self.max_queue = max(0, max_queue)
        self._lock = threading.Lock()
        self._running = 0
        self._waiters: deque[threading.Lock] = deque()

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def acquire(self) -> None:
        """Take a slot, waiting in the queue if needed.

        :raises QueueFull: no slot and no room left in the queue.
        """
        with self._lock:
            if self._running < self.max_inflight and not self._waiters:
                self._running += 1
                return
            if len(self._waiters) >= self.max_queue:
                raise QueueFull()
            waiter = threading.Lock()
            waiter.acquire()
            self._waiters.append(waiter)
        waiter.acquire()  # released by release(), which hands us its slot

    def release(self) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._running -= 1


_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                         "proxy-connection", "te", "trailer", "trailers", "transfer-encoding",
                         "upgrade", "host", "content-length"})


def canonical_header(name: str) -> str:
    """Go's canonical form (``x-call-id`` -> ``X-Call-Id``), which decides the CGI names."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def cgi_env(method: str, path: str, query: str, headers: list[tuple[str, str]], host: str,
            content_length: int | None, chunked: bool) -> dict[str, str]:
    """The classic watchdog's ``cgi_headers`` variables for one request.

    Every header becomes ``Http_<Canonical_Name>`` (first value wins), plus ``Http_Method``,
    ``Http_ContentLength``/``Http_Content_Length`` (-1 when unknown), ``Http_Query`` (when
    non-empty), ``Http_Path``, ``Http_Host`` and ``Http_Transfer_Encoding`` (when chunked).
    """
    env: dict[str, str] = {}
    for name, value in headers:
        if name.lower() in _HOP_BY_HOP:
            continue
        env.setdefault("Http_" + canonical_header(name).replace("-", "_"), value)
    length = str(content_length if content_length is not None else -1)
    env["Http_Method"] = method
    env["Http_ContentLength"] = length
    env["Http_Content_Length"] = length
    if query:
        env["Http_Query"] = query
    env["Http_Path"] = path or "/"
    if host:
        env["Http_Host"] = host
    if chunked:
        env["Http_Transfer_Encoding"] = "chunked"
    return env


@dataclass
class Result:
    """What the watchdog answers: a status, a short prefix and the spooled output."""

    status: int
    prefix: bytes = b""
    output: IO[bytes] | None = None
    output_length: int = 0
    #: A worker may still be reading the request body: the connection must not be reused.
    abandoned: bool = False
    #: Seconds per phase of the call (``queue``, ``setup``, ``script``, ``upload``) for the
    #: ``Server-Timing`` header; a forked process is one ``script`` phase.
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return len(self.prefix) + self.output_length

    def chunks(self) -> Iterator[bytes]:
        if self.prefix:
            yield self.prefix
        if self.output is not None:
            yield from iter(lambda: self.output.read(CHUNK), b"")

    def close(self) -> None:
        if self.output is not None:
            self.output.close()
            self.output = None


def _finish(code: int, spool: IO[bytes]) -> Result:
    """Turn an exit code and the captured output into the watchdog's answer."""
    length = spool.tell()
    spool.seek(0)
    if code == 0:
        return Result(200, output=spool, output_length=length)
    if code < 0:
        try:
            reason = signal.strsignal(-code) or f"signal {-code}"
        except ValueError:
            reason = f"signal {-code}"
        prefix = f"signal: {reason[:1].lower()}{reason[1:]}\n"
    else:
        prefix = f"exit status {code}\n"
    return Result(500, prefix=prefix.encode(), output=spool, output_length=length)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _drain(body: BinaryIO) -> None:
    while body.read(CHUNK):
        pass


def _pump(body: BinaryIO, stdin: IO[bytes], log: logging.Logger) -> None:
    """Copy the request body to the child's stdin, then close it (the child sees EOF).

    If the child stops reading (exits early), the rest of the body is still read and dropped,
    so the HTTP connection stays usable for the next request.
    """
    fd = stdin.fileno()
    try:
        while chunk := body.read(CHUNK):
            try:
                _write_all(fd, chunk)
            except BrokenPipeError:
                _drain(body)
                break
    except (OSError, ValueError) as err:
        log.debug("request body interrupted: %s", err)
    finally:
        try:
            stdin.close()
        except OSError:
            pass


def _wait_until(proc: subprocess.Popen[bytes], deadline: float) -> bool:
    """Wait for the exit until ``deadline``; True if it exited.

    A pidfd wakes us the moment the child exits; ``Popen.wait(timeout)`` would poll with
    sleeps and add up to milliseconds to every call.
    """
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if not poller.poll(max(0, math.ceil((deadline - time.monotonic()) * 1000))):
            return False
    finally:
        os.close(pidfd)
    proc.wait()
    return True


class _StderrLines:
    """Log a child's stderr line by line (``combine_output=false``)."""

    def __init__(self, log: logging.Logger, name: str) -> None:
        self.log, self.name, self.buf = log, name, bytearray()

    def feed(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\n")) >= 0 or len(self.buf) > CHUNK:
            end = end if end >= 0 else len(self.buf)
            self._emit(bytes(self.buf[:end]))
            del self.buf[:end + 1]

    def flush(self) -> None:
        if self.buf:
            self._emit(bytes(self.buf))
            self.buf.clear()

    def _emit(self, line: bytes) -> None:
        self.log.info("stderr: %s", line.decode("utf-8", "replace").rstrip("\r"))


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (of all its threads), from ``/proc``; [] when unknown."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        found.extend(thread_child_pids(pid, int(tid)))
    return found


def thread_child_pids(pid: int, tid: int) -> list[int]:
    """Children forked by one thread: how a timed-out in-process call finds its scripts."""
    try:
        with open(f"/proc/{pid}/task/{tid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except (OSError, ValueError):
        return []


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid``, its descendants and the process groups they lead.

    Descendants are collected first: once the parent dies they are re-parented and can no
    longer be found.
    """
    victims, stack = [], [pid]
    while stack:
        current = stack.pop()
        victims.append(current)
        stack.extend(child_pids(current))
    for victim in victims:
        try:
            if os.getpgid(victim) == victim:
                os.killpg(victim, signal.SIGKILL)
            os.kill(victim, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class _SpoolLogHandler(logging.Handler):
    """Sends supervisor log lines into the response, which is what ``combine_output=true``
    does with a child's stderr."""

    def __init__(self, out: IO[bytes], lock: threading.Lock) -> None:
        super().__init__()
        self.out, self.out_lock = out, lock
        self.setFormatter(logging.Formatter("%(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = (self.format(record) + "\n").encode("utf-8", "replace")
            with self.out_lock:
                self.out.write(line)
        except Exception:  # noqa: BLE001 - a log line must never break the call
            self.handleError(record)


def _level(env: Mapping[str, str]) -> int:
    level = logging.getLevelName((env.get("LOG_LEVEL") or "INFO").strip().upper())
    return level if isinstance(level, int) else logging.INFO


class Watchdog:
    """Runs invocations and remembers the live ones, so that shutting the provider down does
    not leave orphaned function processes behind."""

    def __init__(self, log: logging.Logger | None = None) -> None:
        self.log = log or logging.getLogger("oscar_faas.provider.watchdog")
        self._active: set[subprocess.Popen[bytes]] = set()
        #: native ids of the threads inside a ``supervise`` call right now
        self._supervising: set[int] = set()
        self._active_lock = threading.Lock()

    def close(self) -> None:
        """Kill every function process still running: the forked ones, and the scripts of
        in-process supervisor calls (children of the threads running them). Other children
        of this process are left alone: the provider may be embedded in a bigger program."""
        with self._active_lock:
            pids = {proc.pid for proc in self._active}
            threads = set(self._supervising)
        me = os.getpid()
        for tid in threads:
            pids.update(thread_child_pids(me, tid))
        for pid in pids:
            kill_tree(pid)

    # --- fork per call -------------------------------------------------------------------

    def run_process(self, name: str, argv: list[str], env: Mapping[str, str], body: BinaryIO,
                    content_length: int | None, config: WatchdogConfig) -> Result:
        """Run ``argv`` for one request. Never raises for the function's own failures."""
        start = time.monotonic()
        deadline = start + config.exec_timeout if config.exec_timeout > 0 else None
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if config.combine_output else subprocess.PIPE,
                env=dict(env), bufsize=0, start_new_session=True)
        except OSError as err:
            self.log.warning("%s: cannot start %r: %s", name, argv, err)
            return Result(500, prefix=f'exec: "{argv[0]}": {err.strerror or err}\n'.encode())
        with self._active_lock:
            self._active.add(proc)
        spool: IO[bytes] = SpooledTemporaryFile(SPOOL_MEMORY)
        pump = None
        try:
            assert proc.stdin is not None
            if content_length is not None and content_length <= INLINE_BODY:
                try:
                    _write_all(proc.stdin.fileno(), body.read(content_length))
                except BrokenPipeError:
                    pass
                proc.stdin.close()
            else:
                pump = threading.Thread(target=_pump, args=(body, proc.stdin, self.log),
                                        name=f"stdin-{name}", daemon=True)
                pump.start()
            stderr = None if config.combine_output else _StderrLines(function_logger(name),
                                                                     name)
            timed_out = self._collect(proc, spool, stderr, deadline)
            if stderr is not None:
                stderr.flush()
            if timed_out:
                self.log.warning("%s: exec_timeout (%gs) reached, killing process group %d",
                                 name, config.exec_timeout, proc.pid)
                kill_tree(proc.pid)
                proc.wait()
                spool.close()
                return Result(408, prefix=KILLED_BODY)
            result = _finish(proc.returncode, spool)
            result.timings["script"] = time.monotonic() - start
            return result
        except BaseException:
            kill_tree(proc.pid)
            proc.wait()
            spool.close()
            raise
        finally:
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
            if pump is not None:
                pump.join()
            with self._active_lock:
                self._active.discard(proc)

    @staticmethod
    def _collect(proc: subprocess.Popen[bytes], spool: IO[bytes],
                 stderr: _StderrLines | None, deadline: float | None) -> bool:
        """Copy stdout (and stderr) until both close and the process exits.

        ``poll`` rather than ``select``: it has no 1024-descriptor limit, which many
        concurrent invocations would reach. Returns True when the deadline passed first.
        """
        assert proc.stdout is not None
        sinks: dict[int, Callable[[bytes], Any]] = {proc.stdout.fileno(): spool.write}
        if stderr is not None and proc.stderr is not None:
            sinks[proc.stderr.fileno()] = stderr.feed
        poller = select.poll()
        for fd in sinks:
            poller.register(fd, select.POLLIN)
        while sinks:
            timeout = None
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return True
                timeout = math.ceil(remaining * 1000)
            for fd, _event in poller.poll(timeout):
                data = os.read(fd, CHUNK)
                if data:
                    sinks[fd](data)
                else:
                    poller.unregister(fd)
                    del sinks[fd]
        if deadline is None:
            proc.wait()
            return False
        return not _wait_until(proc, deadline)

    # --- in-process supervisor ---------------------------------------------------------------

    def run_in_process(self, name: str, supervise: SuperviseFn, env: Mapping[str, str],
                       body: BinaryIO, config: WatchdogConfig,
                       timings: dict[str, float] | None = None) -> Result:
        """Call ``supervise(body, out, env, log)`` with the same semantics as a child process.

        Without ``exec_timeout`` it runs in the request thread (no overhead at all). With one,
        it runs in a helper thread; on expiry the processes that thread started (found through
        ``/proc/self/task/<tid>/children``) are killed and 408 is answered. Python code cannot
        be killed, but the supervisor's work is its script, so it returns soon after.
        """
        spool: IO[bytes] = SpooledTemporaryFile(SPOOL_MEMORY)
        out_lock = threading.Lock()
        logger = self._function_logger(name, env, spool if config.combine_output else None,
                                       out_lock)
        if config.exec_timeout <= 0:
            return _finish(self._supervise(supervise, body, spool, env, logger, timings),
                           spool)

        state: dict[str, Any] = {"abandoned": False}

        def work() -> None:
            code = self._supervise(supervise, body, spool, env, logger, timings)
            with out_lock:
                state["code"] = code
                if state["abandoned"]:
                    spool.close()

        worker = threading.Thread(target=work, name=f"supervise-{name}", daemon=True)
        worker.start()
        worker.join(config.exec_timeout)
        with out_lock:
            finished = "code" in state
            if not finished:
                state["abandoned"] = True
        if finished:
            return _finish(state["code"], spool)
        self.log.warning("%s: exec_timeout (%gs) reached, killing the supervisor's processes",
                         name, config.exec_timeout)
        assert worker.native_id is not None
        for child in thread_child_pids(os.getpid(), worker.native_id):
            kill_tree(child)
        worker.join(ABANDON_GRACE)
        return Result(408, prefix=KILLED_BODY, abandoned=worker.is_alive())

    def _supervise(self, supervise: SuperviseFn, body: BinaryIO, out: IO[bytes],
                   env: Mapping[str, str], log: logging.Logger,
                   timings: dict[str, float] | None = None) -> int:
        """:func:`_call_supervise`, with this thread registered so :meth:`close` finds the
        processes it starts."""
        tid = threading.get_native_id()
        with self._active_lock:
            self._supervising.add(tid)
        try:
            return _call_supervise(supervise, body, out, env, log, timings)
        finally:
            with self._active_lock:
                self._supervising.discard(tid)

    def _function_logger(self, name: str, env: Mapping[str, str], out: IO[bytes] | None,
                         lock: threading.Lock) -> logging.Logger:
        """The supervisor's ``log``: the provider log, or the response when combining."""
        if out is None:
            logger = function_logger(name)
        else:
            logger = logging.Logger(f"function.{name}")
            logger.addHandler(_SpoolLogHandler(out, lock))
        level = _level(env)
        if logger.level != level:
            logger.setLevel(level)
        return logger


def _call_supervise(supervise: SuperviseFn, body: BinaryIO, out: IO[bytes],
                    env: Mapping[str, str], log: logging.Logger,
                    timings: dict[str, float] | None = None) -> int:
    """Exit-code semantics of ``python -m oscar_faas.supervisor``: ``sys.exit(n)`` is n, an
    uncaught exception is 1 with its traceback on stderr (here: the function's log).
    ``timings`` (phase -> seconds) is passed on only when asked for."""
    try:
        if timings is None:
            code = supervise(body, out, env, log)  # type: ignore[arg-type]
        else:
            code = supervise(body, out, env, log, timings=timings)  # type: ignore[call-arg]
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception:  # noqa: BLE001 - mirrors the interpreter's top-level handler
        log.error("supervisor failed:\n%s", traceback.format_exc().rstrip())
        code = 1
    return int(code or 0)
