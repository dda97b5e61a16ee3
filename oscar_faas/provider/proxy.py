"""``/function/<name>`` -> the function's runtime, over HTTP/1.1, streaming both ways.

Proxy hygiene as in faas-provider's ``proxy.go`` and werkzeug's ``ProxyMiddleware``: hop-by-hop
headers are dropped both ways, the request body is sent with the client's framing
(``Content-Length`` or chunked), the answer comes back with the runtime's status and headers,
piece by piece, and connections are kept alive in a small pool per runtime.

Memory stays bounded: a body of at most :data:`INLINE_BODY` bytes is read whole and sent with
the headers in one write (and sent again, whole, on a fresh connection when a pooled one turns
out to be closed before the request left: :func:`forward` says when a call may be retried);
a larger one is pumped by a helper thread while this thread waits for the
answer, so a runtime that answers early (429, 400) is heard at once.
"""

from __future__ import annotations

import http.client
import logging
import select
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Iterator
from urllib.parse import urlsplit

from ..contract import HOP_BY_HOP, POOL_REUSE_IDLE

log = logging.getLogger("oscar_faas.provider.proxy")

#: Request bodies up to this size are read whole and sent with the headers.
INLINE_BODY = 64 * 1024
#: Size of the pieces read from either side.
CHUNK = 64 * 1024
#: Idle connections kept per runtime.
MAX_IDLE = 32
#: A pooled connection idle for longer is not reused (the runtime's uvicorn closes them).
IDLE_LIMIT = POOL_REUSE_IDLE
CONNECT_TIMEOUT = 5.0

#: Headers that are never copied from the runtime's answer (the provider sets its own).
_NOT_BACK = HOP_BY_HOP | {"content-length", "date", "server"}
#: Headers that are never copied from the client's request (framing is ours).
_NOT_FORWARD = HOP_BY_HOP | {"content-length"}


class RuntimeUnreachable(ConnectionError):
    """No connection could be made to the runtime (nothing was sent)."""


class ConnectionPool:
    """Keep-alive connections to one runtime (LIFO, at most :data:`MAX_IDLE` idle)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self._idle: deque[tuple[http.client.HTTPConnection, float]] = deque()
        self._lock = threading.Lock()
        self._closed = False

    def get(self) -> tuple[http.client.HTTPConnection, bool]:
        """A connection and whether it was reused (a fresh one is already connected).

        :raises RuntimeUnreachable: a new connection was refused.
        """
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._idle:
                    break
                conn, since = self._idle.pop()
            if now - since < IDLE_LIMIT and _still_open(conn):
                return conn, True
            conn.close()
        return self.fresh(), False

    def fresh(self) -> http.client.HTTPConnection:
        """A new connection, never a pooled one.

        :raises RuntimeUnreachable: it was refused.
        """
        conn = http.client.HTTPConnection(self.host, self.port, timeout=CONNECT_TIMEOUT)
        try:
            conn.connect()
        except OSError as err:
            conn.close()
            raise RuntimeUnreachable(f"cannot connect to {self.host}:{self.port}: {err}") \
                from None
        assert conn.sock is not None
        conn.sock.settimeout(None)  # a call may run as long as the function allows
        return conn

    def put(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < MAX_IDLE:
                self._idle.append((conn, time.monotonic()))
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = list(self._idle), deque()
        for conn, _ in idle:
            conn.close()


def _still_open(conn: http.client.HTTPConnection) -> bool:
    """An idle keep-alive connection has nothing to read; readable means closed (EOF)."""
    if conn.sock is None:
        return False
    poller = select.poll()
    poller.register(conn.sock, select.POLLIN | select.POLLERR | select.POLLHUP)
    return not poller.poll(0)


@dataclass
class Answer:
    """The runtime's answer: status, headers (to pass back), and the body as chunks."""

    status: int
    headers: list[tuple[str, str]]
    chunks: Iterator[bytes]
    #: None: unknown (send chunked)
    length: int | None
    close: Callable[[], None]
    #: the client's connection must not be reused (its body may be half read)
    close_connection: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def forward(pool: ConnectionPool, method: str, target: str, headers: list[tuple[str, str]],
            body: BinaryIO, content_length: int | None, chunked: bool,
            name: str = "") -> Answer:
    """Send one call to the runtime behind ``pool`` and return its answer, unread.

    A call is delivered at most once and never with part of its body missing. The client's
    body is read only once a connection is at hand. A pooled connection the runtime had
    closed fails while the request is written, or with a reset (the runtime's socket was
    gone: it never read the call): the call is sent again, whole, on a fresh connection
    (what was read of the body is still in memory); if none can be made, that much is put
    back into ``body`` (when it can take it: ``unread``) and :class:`RuntimeUnreachable`
    lets the caller wait for the runtime to come back. A request the runtime may have
    taken (it was written whole and the connection then ended) is never sent again: the
    script may have started, so that is an error.

    :raises RuntimeUnreachable: no connection could be made, and nothing of the call is
        lost (retry at will).
    :raises ConnectionError: the runtime went away before answering, or before the call
        could be delivered whole (the caller answers 502).
    """
    head = [(k, v) for k, v in headers if k.lower() not in _NOT_FORWARD]
    conn, reused = pool.get()
    try:
        # a small body is read whole: sent with the head in one write, and re-sendable
        prefix, ended = _read_up_to(body, INLINE_BODY, content_length)
    except BaseException:
        pool.put(conn)  # nothing was sent on it
        raise
    payload = _frame(prefix, chunked, last=True) if ended else b""
    length = len(prefix) if ended else content_length

    def deliver(conn: http.client.HTTPConnection) -> http.client.HTTPResponse | None:
        """Write the request (all of it, or its head and ``prefix``'s worth for a pump);
        the answer's head when the body went whole. Raises :class:`_NotTaken` when the
        runtime cannot have taken the call."""
        try:
            _send_head(conn, method, target, head, length, chunked, payload)
        except (OSError, http.client.HTTPException) as err:
            raise _NotTaken(err) from None
        if not ended:
            return None
        try:
            return conn.getresponse()
        except http.client.RemoteDisconnected:
            raise  # an orderly close after it read the request: it may have run it
        except (ConnectionResetError, BrokenPipeError) as err:
            raise _NotTaken(err) from None  # its socket was gone: the call was never read

    resp: http.client.HTTPResponse | None = None
    for attempt in (0, 1):
        try:
            resp = deliver(conn)
            break
        except _NotTaken as err:
            conn.close()
            if attempt == 0 and reused:  # a stale pooled connection: again on a new one
                try:
                    conn = pool.fresh()
                    continue
                except RuntimeUnreachable:
                    pass
            _put_back(body, prefix, err)
        except (OSError, http.client.HTTPException) as err:
            conn.close()
            raise ConnectionError(f"the runtime closed the connection: {err}") from None
    if resp is not None:
        return _answer(pool, conn, resp, None)
    pump = _Pump(conn, body, prefix, chunked, name)
    try:
        resp = conn.getresponse()
    except (OSError, http.client.HTTPException) as err:
        pump.abort()
        conn.close()
        raise ConnectionError(f"the runtime closed the connection: {err}") from None
    return _answer(pool, conn, resp, pump)


class _NotTaken(Exception):
    """The runtime cannot have taken the call (it was not written whole, or was reset)."""


def _put_back(body: BinaryIO, prefix: bytes, err: _NotTaken) -> None:
    """The call never reached the runtime: give its body back for another try.

    :raises RuntimeUnreachable: the body is whole again (or nothing was read of it).
    :raises ConnectionError: what was read cannot be put back: the call is lost.
    """
    if prefix:
        unread = getattr(body, "unread", None)
        if unread is None:
            raise ConnectionError(f"the call could not be delivered to the runtime: {err}")
        unread(prefix)
    raise RuntimeUnreachable(f"the runtime did not take the call: {err}")


def _read_up_to(body: BinaryIO, limit: int, content_length: int | None) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of the body, and whether that was all of it."""
    if content_length is not None:
        if content_length > limit:
            return b"", False
        parts, left = [], content_length
        while left > 0:
            data = body.read(left)
            if not data:
                break
            parts.append(data)
            left -= len(data)
        return b"".join(parts), True
    parts, size = [], 0
    while size <= limit:
        data = body.read(CHUNK)
        if not data:
            return b"".join(parts), True
        parts.append(data)
        size += len(data)
    return b"".join(parts), False


def _frame(data: bytes, chunked: bool, last: bool) -> bytes:
    if not chunked:
        return data
    piece = b"%x\r\n%s\r\n" % (len(data), data) if data else b""
    return piece + (b"0\r\n\r\n" if last else b"")


def _send_head(conn: http.client.HTTPConnection, method: str, target: str,
               headers: list[tuple[str, str]], length: int | None, chunked: bool,
               payload: bytes) -> None:
    conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
    for key, value in headers:
        conn.putheader(key, value)
    if chunked:
        conn.putheader("Transfer-Encoding", "chunked")
    else:
        conn.putheader("Content-Length", str(length or 0))
    conn.endheaders(payload or None)


class _Pump:
    """Sends the rest of a large body from a thread (``prefix`` first)."""

    def __init__(self, conn: http.client.HTTPConnection, body: BinaryIO, prefix: bytes,
                 chunked: bool, name: str) -> None:
        self.sock = conn.sock
        self.body, self.prefix, self.chunked = body, prefix, chunked
        self.complete = False
        self.thread = threading.Thread(target=self._run, name=f"body-{name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        assert self.sock is not None
        try:
            if self.prefix:
                self.sock.sendall(_frame(self.prefix, self.chunked, last=False))
            while data := self.body.read(CHUNK):
                self.sock.sendall(_frame(data, self.chunked, last=False))
            if self.chunked:
                self.sock.sendall(b"0\r\n\r\n")
            self.complete = True
        except (OSError, ValueError) as err:  # the runtime or the client went away
            log.debug("request body not sent whole: %s", err)
            self.abort()

    def abort(self) -> None:
        """Make both sides of the upstream connection fail (wakes a blocked send)."""
        try:
            if self.sock is not None:
                self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def finish(self) -> bool:
        """After the answer: stop sending if still at it; True if the body went whole."""
        if self.thread.is_alive():
            self.abort()
        self.thread.join()
        return self.complete


def _answer(pool: ConnectionPool, conn: http.client.HTTPConnection,
            resp: http.client.HTTPResponse, pump: _Pump | None) -> Answer:
    headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in _NOT_BACK]
    state = {"done": False, "closed": False}

    def chunks() -> Iterator[bytes]:
        read = resp.read1 if resp.chunked else resp.read
        while data := read(CHUNK):
            yield data
        state["done"] = True

    def close() -> None:
        if state["closed"]:
            return
        state["closed"] = True
        sent = pump.finish() if pump is not None else True
        if state["done"] and sent and not resp.will_close:
            resp.close()  # the body was read whole: the connection is clean
            pool.put(conn)
        else:
            resp.close()
            conn.close()

    answer = Answer(resp.status, headers, chunks(), resp.length if not resp.chunked else None,
                    close)
    # the client's body was not read whole: its connection cannot be reused safely
    answer.close_connection = pump is not None and pump.thread.is_alive()
    return answer
