"""Classic-watchdog invocation: one process per call, body on stdin, stdout as the answer.

This reproduces what the OpenFaaS classic watchdog does inside a function container, so that
a function behaves the same on this provider as on a cluster:

* ``fprocess`` is split on single spaces (no shell, no quoting) and started per request, with
  the function's env, ``fprocess`` itself and the CGI variables (``Http_Method``, ...);
* the request body is streamed to stdin, stdout (plus stderr when ``combine_output``, the
  default) becomes the body; a non-zero exit is a 500 ``exit status N`` + output;
* ``exec_timeout`` kills the process group and answers 408 ``Killed process.``;
* ``max_inflight`` bounds concurrent runs; unlike the classic watchdog, excess calls wait in a
  bounded queue (``max_queue``) and only get 429 once it is full, because OSCAR clients expect
  a busy service to serialise calls, not to reject them (``limits.py``).

Settings and the concurrency bound live in ``limits.py``, the CGI variables in ``cgi.py`` and
the child-process plumbing in ``processes.py``.

The status depends on the exit code, which is only known at the end, so stdout is spooled
(memory up to :data:`SPOOL_MEMORY`, then a temporary file) and sent once the process is done:
memory stays bounded whatever the output size.

The gateway's functions (``envProcess`` = the oscar supervisor) do not come here: each has a
long-lived runtime (:mod:`.runtimes`). This is for any other ``fprocess``, as faas-cli deploys.
"""

from __future__ import annotations

import logging
import math
import os
import select
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from tempfile import SpooledTemporaryFile
from typing import IO, Any, BinaryIO, Callable, Iterator, Mapping

from .. import contract as c
from .install_view import EXEC_FAILURE_SCAN, exec_failure
from .isolation import FunctionUser, Isolation
from .limits import WatchdogConfig
from .logs import function_logger
from .processes import CHUNK, StderrLines, kill_tree, pump_body, wait_until, write_all

#: Output kept in memory before the spool moves to a temporary file.
SPOOL_MEMORY = 4 * 1024 * 1024
#: Bodies of at most this many bytes (with a Content-Length) are written to stdin inline:
#: a fresh pipe always holds one page, so the write cannot block and no thread is needed.
INLINE_BODY = 4096

KILLED_BODY = b"Killed process.\n"


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
    if code == c.EXIT_BAD_INPUT:  # the supervisor says the body was the client's mistake
        return Result(400, output=spool, output_length=length)
    if code < 0:
        try:
            reason = signal.strsignal(-code) or f"signal {-code}"
        except ValueError:
            reason = f"signal {-code}"
        prefix = f"signal: {reason[:1].lower()}{reason[1:]}\n"
    else:
        failed = exec_failure(spool.read(EXEC_FAILURE_SCAN)) if code in (126, 127) else None
        if failed is not None:  # through the install view: say it as the exec would
            spool.close()
            return Result(500, prefix=failed.encode())
        spool.seek(0)
        prefix = f"exit status {code}\n"
    return Result(500, prefix=prefix.encode(), output=spool, output_length=length)


class Watchdog:
    """Runs invocations and remembers the live ones, so that shutting the provider down does
    not leave orphaned function processes behind."""

    def __init__(self, log: logging.Logger | None = None,
                 isolation: Isolation | None = None) -> None:
        self.log = log or logging.getLogger("oscar_faas.provider.watchdog")
        #: how a per-call process runs as its function's user (:mod:`.isolation`)
        self.isolation = isolation
        self._active: set[subprocess.Popen[bytes]] = set()
        self._active_lock = threading.Lock()

    def close(self) -> None:
        """Kill every per-call process still running. Other children of this process are left
        alone: the provider may be embedded in a bigger program."""
        with self._active_lock:
            pids = {proc.pid for proc in self._active}
        for pid in pids:
            kill_tree(pid)

    # --- fork per call -------------------------------------------------------------------

    def run_process(self, name: str, argv: list[str], env: Mapping[str, str], body: BinaryIO,
                    content_length: int | None, config: WatchdogConfig,
                    user: FunctionUser | None = None) -> Result:
        """Run ``argv`` for one request. Never raises for the function's own failures.

        :param user: run it as this function user (:mod:`.isolation`): its uid and gid, no
            supplementary groups, umask 077, its private folder as working directory.
        """
        start = time.monotonic()
        deadline = start + config.exec_timeout if config.exec_timeout > 0 else None
        extra: dict[str, Any] = {}
        command = list(argv)
        if user is not None and self.isolation is not None:
            command, extra = self.isolation.popen_args(user, argv)
        elif user is not None:
            extra = {"user": user.uid, "group": user.gid, "extra_groups": [], "umask": 0o077,
                     "cwd": str(user.home)}
        try:
            proc = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if config.combine_output else subprocess.PIPE,
                env=dict(env), bufsize=0, start_new_session=True, **extra)
        except (OSError, subprocess.SubprocessError) as err:
            self.log.warning("%s: cannot start %r: %s", name, argv, err)
            reason = getattr(err, "strerror", None) or err
            return Result(500, prefix=f'exec: "{argv[0]}": {reason}\n'.encode())
        with self._active_lock:
            self._active.add(proc)
        spool: IO[bytes] = SpooledTemporaryFile(SPOOL_MEMORY)
        pump = None
        try:
            assert proc.stdin is not None
            if content_length is not None and content_length <= INLINE_BODY:
                try:
                    write_all(proc.stdin.fileno(), body.read(content_length))
                except BrokenPipeError:
                    pass
                proc.stdin.close()
            else:
                pump = threading.Thread(target=pump_body, args=(body, proc.stdin, self.log),
                                        name=f"stdin-{name}", daemon=True)
                pump.start()
            stderr = None if config.combine_output else StderrLines(function_logger(name), name)
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
                 stderr: StderrLines | None, deadline: float | None) -> bool:
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
        return not wait_until(proc, deadline)
