"""The gunicorn worker ``oscar-faas serve`` runs: uvicorn's, on uvloop and httptools.

gunicorn stays the process manager (master, worker restarts, timeouts, signals); inside a
worker, one event loop serves every connection, which costs a fraction of gthread's
per-request thread hand-off. Naming the loop and the parser makes a missing C extension an
error at start instead of a silent fall-back to the pure-Python ones.

uvicorn's httptools protocol has no limit on the request head and no timeout before a request
starts, so :class:`GatewayHttpProtocol` adds what an unauthenticated client must not be able
to do without (settings in :class:`~oscar_faas.config.Settings`):

* a request line plus headers larger than ``MAX_HEADER_SIZE`` is answered 431 and closed,
  before the parser has buffered more than that (httptools joins header pieces by
  concatenation, so an unbounded header costs quadratic time on the event loop);
* a request whose head is not whole within ``HEADER_TIMEOUT`` seconds of its first byte gets
  408 and the connection is closed; a request body that stays silent for ``BODY_TIMEOUT``
  seconds closes the connection; idle keep-alive connections close quietly after
  ``KEEPALIVE_TIMEOUT`` (uvicorn's own timer), and a new connection that sends nothing after
  ``FIRST_BYTE_TIMEOUT``: time spent idle never counts against a request;
* at most ``MAX_CONNECTIONS`` connections per worker, and never more than the descriptors the
  worker may open minus :data:`FD_RESERVE` (files, upstream and OpenFaaS connections): over
  the cap, the connection that has waited longest for a request (one that never sent a byte,
  or a kept-alive one between requests) is closed to make room, so idle sockets cannot lock
  callers out; only when every connection is busy with a request is the new one answered 503.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

from .config import Settings
from .netutil import descriptor_cap
from .wsproxy import SERVER_OPTIONS as WEBSOCKET_OPTIONS

#: Descriptors kept free for everything that is not a client connection.
FD_RESERVE = 128


def _close_with(transport: asyncio.Transport, status: int, reason: str, message: str) -> None:
    body = f"{message}\n".encode()
    transport.write(b"".join([
        f"HTTP/1.1 {status} {reason}\r\n".encode(),
        b"content-type: text/plain; charset=utf-8\r\n",
        b"content-length: " + str(len(body)).encode() + b"\r\n",
        b"connection: close\r\n\r\n", body]))
    transport.close()


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded request head, head and body timeouts and
    a connection cap. Class attributes are set once per worker by :class:`GatewayWorker`."""

    max_header_size: ClassVar[int] = Settings.max_header_size
    header_timeout: ClassVar[float] = Settings.header_timeout
    body_timeout: ClassVar[float] = Settings.body_timeout
    max_connections: ClassVar[int] = Settings.max_connections
    first_byte_timeout: ClassVar[float] = Settings.first_byte_timeout
    #: this worker's connections waiting for a request (new, or kept alive between two),
    #: oldest first: the ones closed to make room
    waiting: ClassVar[dict[GatewayHttpProtocol, None]] = {}

    _head_seen = 0
    _in_body = False
    _head_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None
    _silent_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections and not self._make_room():
            self.logger.warning("more than %d connections busy on this worker: refusing one "
                                "(MAX_CONNECTIONS)", self.max_connections)
            _close_with(transport, 503, "Service Unavailable",
                        "too many connections: try again later")
            return
        self.waiting[self] = None
        if self.first_byte_timeout > 0:
            self._silent_timer = self.loop.call_later(self.first_byte_timeout,
                                                      self.transport.close)

    def _make_room(self) -> bool:
        """Close the connection that has waited longest for a request (never one with a
        request under way: those leave :attr:`waiting` with their first byte)."""
        for other in list(self.waiting):
            del self.waiting[other]
            if other is not self and not other.transport.is_closing():
                other.transport.close()
                return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.waiting.pop(self, None)
        self._cancel_timers()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None:  # idle until the next request
            self.waiting[self] = None

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        self.waiting.pop(self, None)
        if self._silent_timer is not None:
            self._silent_timer.cancel()
            self._silent_timer = None
        while data:
            if self._in_body:
                self._arm_body_timer()
                super().data_received(data)
                return
            if self._head_timer is None:
                self._arm_head_timer()
            room = self.max_header_size - self._head_seen
            if room <= 0:
                self._cancel_timers()
                self.logger.warning("request head over %d bytes: 431 (MAX_HEADER_SIZE)",
                                    self.max_header_size)
                _close_with(self.transport, 431, "Request Header Fields Too Large",
                            f"request line and headers larger than {self.max_header_size} "
                            f"bytes (MAX_HEADER_SIZE)")
                return
            piece, data = data[:room], data[room:]
            self._head_seen += len(piece)
            super().data_received(piece)
            if self.transport.is_closing() or self.parser is None:
                return

    def on_headers_complete(self) -> None:
        self._in_body = True
        self._head_seen = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._arm_body_timer()  # cancelled when the message completes (at once without body)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    # --- timers --------------------------------------------------------------------------

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer, self._silent_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = self._silent_timer = None

    def _arm_head_timer(self) -> None:
        if self.header_timeout > 0:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timeout)

    def _arm_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
        if self.body_timeout > 0:
            self._body_timer = self.loop.call_later(self.body_timeout, self._body_timeout)

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # a request is running: close after its answer
            return
        if self._head_seen:
            _close_with(self.transport, 408, "Request Timeout",
                        f"request head not received within {self.header_timeout:g} s "
                        f"(HEADER_TIMEOUT)")
        else:
            self.transport.close()  # a connection that never said anything

    def _body_timeout(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or not self._in_body:
            return
        if self.flow.read_paused:  # we stopped reading, not the client: wait more
            self._arm_body_timer()
            return
        self.logger.warning("request body silent for %g s: closing (BODY_TIMEOUT)",
                            self.body_timeout)
        self.transport.close()


class GatewayWorker(UvicornWorker):
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "uvloop", "http": GatewayHttpProtocol, "lifespan": "on",
        "server_header": False, "date_header": True, **WEBSOCKET_OPTIONS,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = Settings.from_env()
        GatewayHttpProtocol.max_header_size = settings.max_header_size
        GatewayHttpProtocol.header_timeout = settings.header_timeout
        GatewayHttpProtocol.first_byte_timeout = settings.first_byte_timeout
        GatewayHttpProtocol.body_timeout = settings.body_timeout
        GatewayHttpProtocol.max_connections = descriptor_cap(settings.max_connections,
                                                             FD_RESERVE)
        super().__init__(*args, **kwargs)
        self.config.timeout_keep_alive = settings.keepalive_timeout
