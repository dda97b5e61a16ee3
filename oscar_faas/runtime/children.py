"""The processes a call starts: feeding their stdin, waiting for them with a deadline, passing
their stderr on line by line, and killing a whole tree (the process, its descendants and the
groups they lead).

Exists so the runtime's two kinds of per-call processes (an OSCAR script, :mod:`.invoke`, and
a classic ``fprocess``, :mod:`.classic`) and the provider that stops runtimes
(:mod:`oscar_faas.launchers.launch`) share one way of doing each, with no import of the
provider from the runtime.
"""

from __future__ import annotations

import math
import os
import select
import signal
import subprocess
import threading
import time
from typing import IO, BinaryIO

#: Read/write size for bodies and pipes.
CHUNK = 64 * 1024
_STDERR_LOCK = threading.Lock()


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_stderr(data: bytes) -> None:
    """Write ``data`` whole to our stderr (the function's log), never interleaved with
    another call's lines; a closed stderr is ignored."""
    with _STDERR_LOCK:
        try:
            write_all(2, data)
        except OSError:
            pass


def pump_body(body: BinaryIO, stdin: IO[bytes]) -> None:
    """Copy the request body to the child's stdin, then close it (the child sees EOF).

    If the child stops reading (exits early), the rest of the body is still read and dropped,
    so the HTTP connection stays usable for the next request. A body that cannot be read to
    its end (the client went away, ``read_timeout``) just ends the child's stdin.
    """
    fd = stdin.fileno()
    try:
        while chunk := body.read(CHUNK):
            try:
                write_all(fd, chunk)
            except BrokenPipeError:
                while body.read(CHUNK):
                    pass
                break
    except (OSError, ValueError, TimeoutError):
        pass
    finally:
        try:
            stdin.close()
        except OSError:
            pass


def wait_until(proc: subprocess.Popen[bytes], deadline: float) -> bool:
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


class StderrLines:
    """Pass a child's stderr on to ours (the function's log) line by line, each line after
    ``stderr: `` (``combine_output=false``)."""

    def __init__(self) -> None:
        self.buf = bytearray()

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

    @staticmethod
    def _emit(line: bytes) -> None:
        write_stderr(b"stderr: " + line.rstrip(b"\r") + b"\n")


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (of all its threads), from ``/proc``; [] when unknown."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as handle:
                found.extend(int(p) for p in handle.read().split())
        except (OSError, ValueError):
            continue
    return found


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
