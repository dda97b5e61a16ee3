"""The runtime's low-level ends of a warm worker: its log (:class:`Tail`), its answer lines
(:class:`LineReader`) and process helpers, apart from the pool logic of :mod:`.workers`.
"""

from __future__ import annotations

import os
import select
import threading
import time
from typing import Callable

#: Bytes of a worker's output kept for error answers (a ring, so memory stays bounded).
TAIL_BYTES = 4096
#: Longest protocol line accepted from a worker; a longer one is a protocol error.
MAX_LINE = 1 << 20
#: Longest log line copied from a worker before it is cut.
MAX_LOG_LINE = 64 << 10
#: Without pidfd (Linux < 5.3), how often (ms) a waiting call checks that its worker lives.
NO_PIDFD_POLL = 200
#: Seconds a protocol line may take from its first byte to its newline. Workers write a line
#: in one write; one that stops half-way would otherwise hold its call forever when
#: ``exec_timeout`` is 0.
LINE_DEADLINE = 5.0


class Tail:
    """Copies a worker's merged stdout/stderr to our stderr, line by line with a prefix, and
    keeps the last :data:`TAIL_BYTES` of it."""

    def __init__(self, fd: int, prefix: str) -> None:
        self._fd = fd
        #: prepended to every line (a worker that turns out to be the template is renamed)
        self.prefix = prefix.encode()
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
                    lines.append(self.prefix + bytes(pending[:cut]) + b"\n")
                    del pending[:cut + (1 if end >= 0 else 0)]
                if lines:
                    _write_stderr(b"".join(lines))
            if pending:
                _write_stderr(self.prefix + bytes(pending) + b"\n")
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


class LineError(Exception):
    """The worker broke a protocol line (too long, or unfinished past :data:`LINE_DEADLINE`)."""


class LineReader:
    """Reads ``\\n``-terminated lines from a worker's answer pipe (non-blocking), watching its
    pidfd so an exit ends the wait at once."""

    def __init__(self, fd: int, pidfd: int, alive: Callable[[], bool]) -> None:
        self.fd = fd
        self.pidfd = pidfd
        self._alive = alive
        self.buf = bytearray()
        os.set_blocking(fd, False)

    def pending(self) -> bytes:
        """Whatever the worker wrote that nobody asked for (read without waiting)."""
        try:
            while data := os.read(self.fd, 65536):
                self.buf += data
                if len(self.buf) > MAX_LINE:
                    break
        except (BlockingIOError, OSError):
            pass
        return bytes(self.buf)

    def read(self, deadline: float | None) -> bytes | None:
        """The next line; None on end of file, exit or ``deadline``.

        :raises LineError: a line over :data:`MAX_LINE`, or one whose newline does not follow
            its first byte within :data:`LINE_DEADLINE`.
        """
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        if self.pidfd >= 0:
            poller.register(self.pidfd, select.POLLIN)
        exited = False
        line_started: float | None = time.monotonic() if self.buf else None
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                line = bytes(self.buf[:end])
                del self.buf[:end + 1]
                return line
            if len(self.buf) > MAX_LINE:
                raise LineError(f"a line longer than {MAX_LINE} bytes")
            if exited:
                return None
            now = time.monotonic()
            if self.buf and line_started is None:
                line_started = now
            limit = deadline
            if line_started is not None:
                if now - line_started >= LINE_DEADLINE:
                    raise LineError(f"no end of line {LINE_DEADLINE:g}s after "
                                    f"{bytes(self.buf[:200])!r}")
                line_end = line_started + LINE_DEADLINE
                limit = line_end if limit is None else min(limit, line_end)
            timeout = None
            if limit is not None:
                if limit - now <= 0:
                    return None
                timeout = max(1, int((limit - now) * 1000 + 0.999))
            if self.pidfd < 0:  # no pidfd (Linux < 5.3): look at the process now and then
                timeout = NO_PIDFD_POLL if timeout is None else min(timeout, NO_PIDFD_POLL)
            events = dict(poller.poll(timeout))
            if not events:
                if self.pidfd < 0 and not self._alive():
                    exited = True
                continue
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                data = None
            if data == b"":
                return None
            if data:
                self.buf += data
            elif self.pidfd in events:
                exited = True  # one more look at the buffer, then give up


def pidfd_open(pid: int) -> int:
    """A descriptor that becomes readable when ``pid`` exits; -1 where the kernel has none."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return -1


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
