"""Classic-watchdog calls: one ``fprocess`` per call, body on stdin, stdout as the answer.

This is what the OpenFaaS classic watchdog does inside a function container, so that a
function faas-cli deploys (``cat``, ``sha512sum``, ``python3 handler.py``...) behaves the same
on the embedded provider as on a cluster. The provider runs such a function in a runtime of
its own, like an OSCAR service (``OSCAR_RUNTIME_CLASSIC``, :mod:`.settings`), so it keeps no
executor of its own:

* ``fprocess`` is split on single spaces (no shell, no quoting) and started per call, with the
  runtime's env (the function's), ``fprocess`` itself and the CGI variables (:mod:`.cgi`),
  in a process group of its own inside the runtime's session (:mod:`.guardian`);
* the request body is streamed to stdin, stdout (plus stderr when ``combine_output``, the
  default; else stderr goes to the log) becomes the body; a non-zero exit is a 500
  ``exit status N`` + output, a signal ``signal: <name>``, a command that cannot start
  ``exec: "<cmd>": <reason>``, the supervisor's bad-input exit a 400;
* ``exec_timeout`` kills the process tree and answers 408 ``Killed process.``.

The status depends on the exit code, which is only known at the end, so stdout is spooled
(memory up to :data:`SPOOL_MEMORY`, then a temporary file) and sent once the process is done,
with its length: memory stays bounded whatever the output size. Admission (``max_inflight``,
``max_queue``, 429) is the runtime's one limiter (:mod:`.classic_app`).
"""

from __future__ import annotations

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

from ..contract import ENV_RUNTIME_CLASSIC, EXIT_BAD_INPUT
from ..supervisor.logs import SupervisorLog
from .children import CHUNK, StderrLines, kill_tree, pump_body, wait_until, write_all
from .guardian import own_group
from .settings import RuntimeSettings

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
    #: seconds per phase for the ``Server-Timing`` header: a forked process is one ``script``
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return len(self.prefix) + self.output_length

    def chunks(self) -> Iterator[bytes]:
        if self.prefix:
            yield self.prefix
        if self.output is not None:
            yield from iter(lambda: self.output.read(CHUNK), b"")  # type: ignore[union-attr]

    def close(self) -> None:
        if self.output is not None:
            self.output.close()
            self.output = None


def finish(code: int, spool: IO[bytes]) -> Result:
    """Turn an exit code and the captured output into the watchdog's answer."""
    length = spool.tell()
    spool.seek(0)
    if code == 0:
        return Result(200, output=spool, output_length=length)
    if code == EXIT_BAD_INPUT:  # the supervisor says the body was the client's mistake
        return Result(400, output=spool, output_length=length)
    if code < 0:
        try:
            reason = signal.strsignal(-code) or f"signal {-code}"
        except ValueError:
            reason = f"signal {-code}"
        prefix = f"signal: {reason[:1].lower()}{reason[1:]}\n"
    else:
        prefix = f"exit status {code}\n"
    return Result(500, prefix=prefix.encode(), output=spool, output_length=length)


def _read_exactly(body: BinaryIO, size: int) -> bytes:
    """``size`` bytes of the body (fewer only if it ends first): a read gives one piece."""
    parts, got = [], 0
    while got < size and (chunk := body.read(size - got)):
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


class ClassicRunner:
    """Runs ``fprocess`` once per call and remembers the live ones, so that stopping the
    runtime does not leave them behind. Thread-safe: calls run in the server's threads."""

    def __init__(self, env: Mapping[str, str], settings: RuntimeSettings,
                 log: SupervisorLog) -> None:
        assert settings.classic is not None
        self.argv = list(settings.classic)
        #: the function's env for every call; the switch is the runtime's, not the function's
        self.env = {k: v for k, v in env.items() if k != ENV_RUNTIME_CLASSIC}
        self.settings = settings
        self.log = log
        self._active: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()

    def close(self) -> None:
        """Kill every call's process tree still running."""
        with self._lock:
            pids = {proc.pid for proc in self._active}
        for pid in pids:
            kill_tree(pid)

    def run(self, body: BinaryIO, content_length: int | None,
            cgi: Mapping[str, str]) -> Result:
        """Run ``fprocess`` for one call. Never raises for the function's own failures."""
        start = time.monotonic()
        timeout = self.settings.exec_timeout
        deadline = start + timeout if timeout > 0 else None
        combine = self.settings.combine_output
        try:
            proc = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if combine else subprocess.PIPE,
                env={**self.env, **cgi}, bufsize=0,
                **own_group())  # its tree: kill_tree, and the guardian
        except (OSError, subprocess.SubprocessError) as err:
            self.log.warning("cannot start %r: %s", self.argv, err)
            reason = getattr(err, "strerror", None) or err
            return Result(500, prefix=f'exec: "{self.argv[0]}": {reason}\n'.encode())
        with self._lock:
            self._active.add(proc)
        spool: IO[bytes] = SpooledTemporaryFile(SPOOL_MEMORY)
        pump = None
        try:
            assert proc.stdin is not None
            if content_length is not None and content_length <= INLINE_BODY:
                try:
                    write_all(proc.stdin.fileno(), _read_exactly(body, content_length))
                except BrokenPipeError:
                    pass
                proc.stdin.close()
            else:
                pump = threading.Thread(target=pump_body, args=(body, proc.stdin),
                                        name="classic-stdin", daemon=True)
                pump.start()
            stderr = None if combine else StderrLines()
            timed_out = self._collect(proc, spool, stderr, deadline)
            if stderr is not None:
                stderr.flush()
            if timed_out:
                self.log.warning("exec_timeout (%gs) reached, killing process group %d",
                                 timeout, proc.pid)
                kill_tree(proc.pid)
                proc.wait()
                spool.close()
                return Result(408, prefix=KILLED_BODY)
            result = finish(proc.returncode, spool)
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
            with self._lock:
                self._active.discard(proc)

    @staticmethod
    def _collect(proc: subprocess.Popen[bytes], spool: IO[bytes],
                 stderr: StderrLines | None, deadline: float | None) -> bool:
        """Copy stdout (and stderr) until both close and the process exits.

        ``poll`` rather than ``select``: it has no 1024-descriptor limit, which many
        concurrent calls would reach. Returns True when the deadline passed first.
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
