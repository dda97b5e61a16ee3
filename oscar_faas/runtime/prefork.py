"""Warm workers forked from one ``setup()``: the runtime's end of a worker *template*.

Why: a worker process per slot that each runs ``setup()`` holds one copy of the model per
slot. Instead, the first worker is started with a control socket (``OSCAR_WORKER_FORK_FD``, an
``AF_UNIX``/``SOCK_SEQPACKET`` socket). A worker that can fork (the Python helper
``oscar_worker`` can) runs ``setup()`` once and answers ``{"ready": true, "fork": true}``; it
then serves no calls itself, it forks the workers that do, which share the loaded model
copy-on-write. A worker that says only ``{"ready": true}`` (any other language) is slot 0's
worker, and the other slots get processes of their own, as before.

Control messages (one JSON object per packet):

* runtime -> template: ``{"fork": <slot>}`` with three descriptors (``SCM_RIGHTS``): the
  child's request pipe (read end), answer pipe (write end) and log pipe (write end);
* template -> runtime: ``{"forked": <slot>, "pid": <pid>}``, or ``{"forked": <slot>,
  "error": "..."}``;
* template -> runtime, whenever a child ends: ``{"exited": <pid>, "status": <code>}`` (the
  template is the children's parent, so only it learns their exit status).

The child starts a session of its own (the runtime kills its process group), takes the log
pipe as stdout and stderr, says ``{"ready": true}`` on its answer pipe and serves calls.
End of file on the control socket ends the template (the runtime stopped).
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import threading
import time
from typing import Any

from .worker_io import pidfd_open

#: Seconds to wait for the template's answer to a fork request.
FORK_TIMEOUT = 30.0
#: Exit status reported when it is unknown (the template died before it could say).
UNKNOWN_STATUS = -1000
#: Longest control packet.
PACKET = 65536


class TemplateGone(Exception):
    """The template cannot fork (it exited, or does not answer)."""


class Template:
    """The runtime's end of a template's control socket. Thread-safe: fork requests and
    exit-status reads take one lock, and each keeps the other's messages."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()
        self._exits: dict[int, int] = {}
        self._gone = False

    @classmethod
    def pair(cls) -> tuple["Template", int]:
        """A new control channel: the runtime's end, and the descriptor for the worker."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        theirs.set_inheritable(True)
        return cls(ours), theirs.detach()

    def fork(self, slot: int, fds: tuple[int, int, int]) -> int:
        """Ask for a worker for ``slot`` with these pipe ends; its pid.

        :raises TemplateGone: the template is gone, refused, or did not answer in time.
        """
        with self._lock:
            try:
                socket.send_fds(self.sock, [json.dumps({"fork": slot}).encode()], list(fds))
            except OSError as err:
                self._gone = True
                raise TemplateGone(f"the template is gone ({err.strerror or err})") from None
            deadline = time.monotonic() + FORK_TIMEOUT
            while True:
                message = self._receive(deadline)
                if message is None:
                    raise TemplateGone("the template exited or did not answer a fork request")
                if message.get("forked") == slot:
                    if isinstance(message.get("pid"), int):
                        return int(message["pid"])
                    raise TemplateGone(f"the template could not fork: {message.get('error')}")

    def exit_status(self, pid: int, timeout: float) -> int:
        """The exit status of child ``pid`` (128+N for signal N), waiting up to ``timeout``
        for the template to report it; :data:`UNKNOWN_STATUS` when it does not."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while pid not in self._exits:
                if self._receive(deadline) is None and (self._gone
                                                        or time.monotonic() >= deadline):
                    return UNKNOWN_STATUS
            return self._exits.pop(pid)

    def _receive(self, deadline: float) -> dict[str, Any] | None:
        """One control message (exit reports are kept aside); None on EOF or deadline."""
        if self._gone:
            return None
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([self.sock], [], [], left)[0]:
            return None
        try:
            data = self.sock.recv(PACKET)
        except OSError:
            data = b""
        if not data:
            self._gone = True
            return None
        try:
            message = json.loads(data)
        except ValueError:
            return {}
        if not isinstance(message, dict):
            return {}
        if isinstance(message.get("exited"), int) and isinstance(message.get("status"), int):
            self._exits[message["exited"]] = message["status"]
            if len(self._exits) > 1024:  # children nobody waits for: keep the newest
                self._exits.pop(next(iter(self._exits)))
        return message

    def close(self) -> None:
        self._gone = True
        self.sock.close()


class Forked:
    """A worker forked by a template: the subset of ``subprocess.Popen`` that
    :class:`~.workers.Worker` uses (``pid``, ``poll``, ``wait``). It is the template's child,
    not ours: its end is seen through a pidfd and its status comes from the template."""

    def __init__(self, pid: int, template: Template) -> None:
        self.pid = pid
        self.template = template
        self.returncode: int | None = None
        self._pidfd = pidfd_open(pid)

    def _ended(self, timeout: float | None) -> bool:
        if self._pidfd < 0:
            return True  # cannot watch it: treated as gone (forking needs pidfd)
        return bool(select.select([self._pidfd], [], [], timeout)[0])

    def poll(self) -> int | None:
        if self.returncode is None and self._ended(0):
            self.returncode = self.template.exit_status(self.pid, 1.0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not self._ended(timeout):
                raise subprocess.TimeoutExpired([str(self.pid)], timeout or 0)
            self.returncode = self.template.exit_status(self.pid, 1.0)
        return self.returncode

    def close(self) -> None:
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1


def can_fork() -> bool:
    """Forked workers are watched through pidfds (Linux >= 5.3)."""
    fd = pidfd_open(os.getpid())
    if fd < 0:
        return False
    os.close(fd)
    return True
