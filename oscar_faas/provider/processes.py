"""Child processes of the watchdog: feeding stdin, waiting with a deadline, logging stderr,
and killing a whole tree (the process, its descendants and the groups they lead)."""

from __future__ import annotations

import logging
import math
import os
import select
import signal
import subprocess
import time
from typing import IO, BinaryIO

#: Read/write size for bodies and pipes.
CHUNK = 64 * 1024


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _drain(body: BinaryIO) -> None:
    while body.read(CHUNK):
        pass


def pump_body(body: BinaryIO, stdin: IO[bytes], log: logging.Logger) -> None:
    """Copy the request body to the child's stdin, then close it (the child sees EOF).

    If the child stops reading (exits early), the rest of the body is still read and dropped,
    so the HTTP connection stays usable for the next request.
    """
    fd = stdin.fileno()
    try:
        while chunk := body.read(CHUNK):
            try:
                write_all(fd, chunk)
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
    """Children forked by one thread of ``pid`` (``/proc/<pid>/task/<tid>/children``)."""
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
