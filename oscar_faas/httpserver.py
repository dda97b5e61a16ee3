"""One HTTP/1.1 server stack for the gateway's worker and the embedded provider: uvicorn's
httptools protocol with the bounds an unauthenticated client must not be able to do without.

uvicorn's httptools protocol has no limit on the request head and no timeout before a request
starts, so :class:`BoundedHttpProtocol` adds them, each a field of :class:`HttpLimits` (the
gateway's come from :class:`~oscar_faas.config.Settings`, the provider's from its options):

* a request line plus headers larger than ``max_header_size`` is answered 431 and closed,
  before the parser has buffered more than that (httptools joins header pieces by
  concatenation, so an unbounded header costs quadratic time on the event loop);
* a request whose head is not whole within ``header_timeout`` seconds of its first byte gets
  408 and the connection is closed; a request body that stays silent for ``body_timeout``
  seconds closes the connection, and so does an answer its client stops reading for
  ``write_timeout`` seconds (the provider's; 0 on the gateway); idle keep-alive connections
  close quietly after ``keepalive_timeout`` (uvicorn's own timer, :func:`server_options`), and
  a new connection that sends nothing after ``first_byte_timeout``: time spent idle never
  counts against a request;
* at most ``max_connections`` connections per process, and never more than the descriptors
  it may open minus a reserve (files, upstream connections, function processes): over the
  cap, the connection that has waited longest for a request (one that never sent a byte, or
  a kept-alive one between requests) is closed to make room, so idle sockets cannot lock
  callers out; only when every connection is busy with a request is the new one answered 503;
* with ``strict_transfer_encoding`` (the provider), a Transfer-Encoding other than exactly
  ``chunked`` is answered 400 and closed: httptools takes ``gzip, chunked`` as chunked.

It lives here, not in either server, so a fix to framing, limits or timeouts is made once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .contract import FIRST_BYTE_TIMEOUT, KEEPALIVE_IDLE
from .netutil import descriptor_cap


@dataclass(frozen=True)
class HttpLimits:
    """What one client may cost a server; the defaults are the provider's."""

    #: Request line plus headers, in bytes (431 above).
    max_header_size: int = 64 * 1024
    #: Seconds to send a whole request head, counted from its first byte (408 after).
    header_timeout: float = 30.0
    #: Seconds a keep-alive connection may wait for its next request (then closed quietly).
    keepalive_timeout: float = KEEPALIVE_IDLE
    #: Seconds a new connection may wait before its first byte (then closed quietly).
    first_byte_timeout: float = FIRST_BYTE_TIMEOUT
    #: Seconds a request body may stay silent while it is read (then the connection closes).
    body_timeout: float = 300.0
    #: Connections served at once; past it, one waiting for a request is closed to make
    #: room, else the newest is answered 503.
    max_connections: int = 1000
    #: Seconds an answer may wait for a client that does not read it (then the connection
    #: closes); 0: no limit (the gateway's ``/run`` bounds its own answers).
    write_timeout: float = 0.0
    #: Refuse a Transfer-Encoding other than exactly ``chunked`` (400).
    strict_transfer_encoding: bool = False


def bounded_protocol(limits: HttpLimits, fd_reserve: int) -> type[BoundedHttpProtocol]:
    """A protocol class for one server: its limits, and its own set of waiting connections.

    :param fd_reserve: descriptors kept free for everything that is not a client connection.
    """
    return type("BoundedHttpProtocol", (BoundedHttpProtocol,), {
        "max_header_size": limits.max_header_size,
        "header_timeout": limits.header_timeout,
        "first_byte_timeout": limits.first_byte_timeout,
        "body_timeout": limits.body_timeout,
        "max_connections": descriptor_cap(limits.max_connections, fd_reserve),
        "strict_transfer_encoding": limits.strict_transfer_encoding,
        "write_timeout": limits.write_timeout,
        "waiting": {},
    })


def server_options(limits: HttpLimits, fd_reserve: int, loop: str = "auto") -> dict[str, Any]:
    """``uvicorn.Config`` keywords for a server bounded by ``limits``: the protocol, the
    keep-alive timer, WebSocket settings (:data:`~oscar_faas.wsproxy.SERVER_OPTIONS`).

    :param loop: ``auto`` is uvloop when it can be imported, else asyncio.
    """
    from .wsproxy import SERVER_OPTIONS as WEBSOCKET_OPTIONS

    if loop == "auto":
        try:
            import uvloop  # noqa: F401
            loop = "uvloop"
        except ImportError:
            loop = "asyncio"
    return {"loop": loop, "http": bounded_protocol(limits, fd_reserve),
            "timeout_keep_alive": limits.keepalive_timeout, **WEBSOCKET_OPTIONS}


def _plain_chunked(headers: list[tuple[bytes, bytes]]) -> bool:
    """No Transfer-Encoding, or exactly ``chunked`` (RFC 9112 section 6.1)."""
    codings = [coding.strip().lower() for name, value in headers
               if name.lower() == b"transfer-encoding" for coding in value.split(b",")]
    return not codings or codings == [b"chunked"]


#: Seconds a refused connection keeps reading (and dropping) what its client still sends
#: after the answer, so that a reset does not destroy the answer (RFC 9112 section 9.6).
LINGER = 2.0


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded request head, head and body timeouts and
    a connection cap. Its class attributes are one server's :class:`HttpLimits`: each server
    runs a subclass of its own (:func:`bounded_protocol`)."""

    max_header_size: ClassVar[int] = HttpLimits.max_header_size
    header_timeout: ClassVar[float] = HttpLimits.header_timeout
    body_timeout: ClassVar[float] = HttpLimits.body_timeout
    max_connections: ClassVar[int] = HttpLimits.max_connections
    first_byte_timeout: ClassVar[float] = HttpLimits.first_byte_timeout
    strict_transfer_encoding: ClassVar[bool] = HttpLimits.strict_transfer_encoding
    write_timeout: ClassVar[float] = HttpLimits.write_timeout
    #: this worker's connections waiting for a request (new, or kept alive between two),
    #: oldest first: the ones closed to make room
    waiting: ClassVar[dict[BoundedHttpProtocol, None]] = {}

    _head_seen = 0
    _in_body = False
    _refused = False
    _head_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None
    _silent_timer: asyncio.TimerHandle | None = None
    _write_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections and not self._make_room():
            self.logger.warning("more than %d connections busy on this worker: refusing one "
                                "(MAX_CONNECTIONS)", self.max_connections)
            self._refuse(503, "Service Unavailable", "too many connections: try again later")
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
        if self._refused or self.transport.is_closing():
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
                self._refuse(431, "Request Header Fields Too Large",
                             f"request line and headers larger than {self.max_header_size} "
                             f"bytes (MAX_HEADER_SIZE)")
                return
            piece, data = data[:room], data[room:]
            self._head_seen += len(piece)
            super().data_received(piece)
            if self.transport.is_closing() or self.parser is None:
                return

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request httptools cannot parse, with the same head as every
        refusal here."""
        if not self._refused:  # else refused already (a bad Transfer-Encoding)
            self._refuse(400, "Bad Request", msg)

    def on_headers_complete(self) -> None:
        if self.strict_transfer_encoding and not _plain_chunked(self.headers):
            self.logger.info("request with a Transfer-Encoding other than 'chunked': 400")
            self.send_400_response("unsupported Transfer-Encoding (only 'chunked')")
            raise ValueError("Transfer-Encoding")  # stops the parser: nothing after is read
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

    def _refuse(self, status: int, reason: str, message: str) -> None:
        """Answer and close without reading another request: the answer, then a half-close,
        then what the client still sends is dropped for :data:`LINGER` seconds. The connection
        no longer counts against the cap."""
        self._cancel_timers()
        self._refused = True
        self.waiting.pop(self, None)
        self.connections.discard(self)
        transport = self.transport
        if transport.is_closing():
            return
        body = f"{message}\n".encode()
        transport.write(b"".join([
            f"HTTP/1.1 {status} {reason}\r\n".encode(),
            b"Content-Type: text/plain; charset=utf-8\r\n",
            b"Content-Length: " + str(len(body)).encode() + b"\r\n",
            b"Connection: close\r\n\r\n", body]))
        if transport.can_write_eof():
            transport.write_eof()
            self.loop.call_later(LINGER, transport.close)
        else:
            transport.close()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.write_timeout > 0 and self._write_timer is None:
            self._write_timer = self.loop.call_later(self.write_timeout, self._write_stalled)

    def resume_writing(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        super().resume_writing()

    def _write_stalled(self) -> None:
        self._write_timer = None
        self.logger.info("client read nothing of its answer for %g s: closing",
                         self.write_timeout)
        self.transport.abort()  # close() would wait for the unread answer to leave first

    # --- timers --------------------------------------------------------------------------

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer, self._silent_timer,
                      self._write_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = self._silent_timer = self._write_timer = None

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
            self._refuse(408, "Request Timeout",
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
