"""Where the provider's new connections wait for their first byte, without a thread.

A connection that sends nothing must not cost what a caller needs: a thread, a slot under
``--max-connections``. Idle sockets opened by the thousand used to take every slot until
the head timeout closed them (30 s), and every real caller got 503 meanwhile. Here they
cost a descriptor each: they are watched by one thread, handed to the server the moment
their first byte arrives, closed quietly after ``timeout`` seconds of silence, and, when
more wait than ``capacity``, the oldest are closed first (a real client's request follows
its connection within milliseconds, so it is never the oldest).
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from typing import Any, Callable

log = logging.getLogger("oscar_faas.provider")


class WaitingRoom:
    """Hands each connection to ``admit(sock, address)`` once it has something to read."""

    def __init__(self, admit: Callable[[socket.socket, Any], None], timeout: float,
                 capacity: int) -> None:
        self._admit = admit
        self.timeout = timeout
        self.capacity = max(1, capacity)
        self._pending: list[tuple[socket.socket, Any]] = []
        self._lock = threading.Lock()
        #: fd -> (socket, address, deadline), oldest first (one timeout for all: also the
        #: order of the deadlines)
        self._waiting: dict[int, tuple[socket.socket, Any, float]] = {}
        self._selector = selectors.DefaultSelector()
        self._wake_in, self._wake_out = socket.socketpair()
        self._wake_in.setblocking(False)
        self._selector.register(self._wake_out, selectors.EVENT_READ)
        self._closed = False
        self._evicted = 0
        self._thread = threading.Thread(target=self._run, name="first-byte", daemon=True)
        self._thread.start()

    def add(self, sock: socket.socket, address: Any) -> None:
        with self._lock:
            if self._closed:
                sock.close()
                return
            self._pending.append((sock, address))
        try:
            self._wake_in.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already woken

    def close(self) -> None:
        with self._lock:
            self._closed = True
        try:
            self._wake_in.send(b"\0")
        except OSError:
            pass
        self._thread.join(5)

    def __len__(self) -> int:
        return len(self._waiting)

    def _run(self) -> None:
        try:
            while not self._closed:
                self._step()
        finally:
            for sock, _, _ in self._waiting.values():
                sock.close()
            for sock, _ in self._pending:
                sock.close()
            self._selector.close()
            self._wake_in.close()
            self._wake_out.close()

    def _step(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        deadline = time.monotonic() + self.timeout
        for sock, address in pending:
            self._selector.register(sock, selectors.EVENT_READ)
            self._waiting[sock.fileno()] = (sock, address, deadline)
        wait = None
        if self._waiting:
            first = next(iter(self._waiting.values()))
            wait = max(0.0, first[2] - time.monotonic())
        for key, _ in self._selector.select(0 if pending else wait):
            if key.fileobj is self._wake_out:
                try:
                    while self._wake_out.recv(4096, socket.MSG_DONTWAIT):
                        pass
                except BlockingIOError:
                    pass
                continue
            sock, address, _ = self._waiting.pop(key.fd)
            self._selector.unregister(sock)
            try:
                self._admit(sock, address)
            except Exception:  # noqa: BLE001 - this thread must go on whatever one costs
                log.exception("cannot serve a connection from %s", address[0])
                sock.close()
        self._expire()

    def _expire(self) -> None:
        """Close the silent ones past their deadline, and the oldest while too many wait."""
        now = time.monotonic()
        while self._waiting:
            fd, (sock, address, due) = next(iter(self._waiting.items()))
            full = len(self._waiting) > self.capacity
            if not full and due > now:
                break
            del self._waiting[fd]
            self._selector.unregister(sock)
            sock.close()
            if full:
                self._evicted += 1
                if self._evicted in (1, 10, 100) or self._evicted % 1000 == 0:
                    log.warning("%d connections waiting for a first byte: closed the oldest "
                                "(%d so far)", self.capacity, self._evicted)
