"""A small HTTP/1.1 client for one upstream, on the hot paths: the OpenFaaS gateway behind the
gateway's ``/run``, and each function's runtime behind the provider's ``/function``.

Why not aiohttp: on this path the client is most of what the gateway does per call, and
aiohttp measured about 1.0 ms of CPU per ``/run`` against a function that takes 5 ms, where
this client, on the same C parser uvicorn uses (``httptools``) and the worker's event loop,
measured 0.3-0.4 ms (bench/README.md has the figures and the commands). It does only what
the gateway and the provider's ``/function`` proxy need: keep-alive connections to one host,
a request with a known-length, chunked or streamed body (a stream is sent while the answer is
awaited, so an early answer such as a 429 is heard at once), and a response read as a stream
with backpressure both ways.

Errors are the builtin ones so the caller maps them once: ``ConnectionError`` (refused,
reset, closed early, unparsable answer) and ``TimeoutError``; :class:`NotSent`, a
``ConnectionError``, says the upstream cannot have taken the request and that nothing of a
streamed body was read, so the caller may send it again (to a runtime that restarts).
"""

from __future__ import annotations

import asyncio
import time
from ssl import SSLContext
from typing import AsyncIterable, AsyncIterator, Mapping, Sequence, Union
from urllib.parse import urlsplit

from .contract import POOL_REUSE_IDLE
from .upstream_connection import HIGH_WATER, Connection, NotSent

__all__ = ["HIGH_WATER", "Headers", "NotSent", "Response", "Upstream"]

#: Idle connections kept per upstream.
POOL_SIZE = 64
#: A streamed (not re-sendable) body reuses only a connection idle for less than this.
STREAM_MAX_IDLE = 1.0
#: Request headers: a mapping, or pairs (a name may repeat).
Headers = Union[Mapping[str, str], Sequence[tuple[str, str]]]


class Response:
    """An answer whose body is still on the wire: iterate :meth:`chunks`, then
    :meth:`release` (read to the end: the connection is reused) or :meth:`close`."""

    def __init__(self, pool: "Upstream", conn: Connection, status: int,
                 read_timeout: float | None, sender: asyncio.Future[None] | None = None
                 ) -> None:
        self.status = status
        self.raw_headers: list[tuple[bytes, bytes]] = conn.headers
        self._pool = pool
        self._conn: Connection | None = conn
        self._read_timeout = read_timeout
        #: a streamed body still being sent (the answer came early)
        self._sender = sender
        if sender is not None:
            sender.add_done_callback(lambda done: done.cancelled() or done.exception())

    def header(self, name: bytes) -> bytes | None:
        name = name.lower()
        for key, value in self.raw_headers:
            if key.lower() == name:
                return value
        return None

    async def chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        while True:
            chunk = await conn.next_chunk(self._read_timeout)
            if not chunk:
                return
            yield chunk

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    @property
    def body_sent(self) -> bool:
        """The request's body went whole (not cut short by an early answer)."""
        sender = self._sender
        return sender is None or (sender.done() and not sender.cancelled()
                                  and sender.exception() is None)

    @property
    def body_failed(self) -> bool:
        """Sending the body stopped on an error (its source failed: a client that left)."""
        sender = self._sender
        return sender is not None and sender.done() and (
            sender.cancelled() or sender.exception() is not None)

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            if self.body_sent:
                self._pool._put(conn)
            else:
                self._stop_sending()
                conn.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        self._stop_sending()
        if conn is not None:
            conn.close()

    def _stop_sending(self) -> None:
        if self._sender is not None and not self._sender.done():
            self._sender.cancel()


class Upstream:
    """Keep-alive connections to ``host:port`` (over TLS with ``ssl``); use from one event
    loop."""

    def __init__(self, host: str, port: int, connect_timeout: float | None,
                 read_timeout: float | None, ssl: SSLContext | None = None) -> None:
        self.host = host
        self.port = port
        self.ssl = ssl
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        authority = f"[{host}]" if ":" in host else host  # an IPv6 literal
        self._host_header = f"Host: {authority}:{port}\r\n".encode("latin-1")
        self._idle: list[Connection] = []
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def for_url(cls, url: str, connect_timeout: float | None,
                read_timeout: float | None = None) -> "Upstream":
        """The pool for ``http://host:port`` (a function's runtime: by default no read
        timeout, as a call runs as long as its function allows)."""
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 80, connect_timeout,
                   read_timeout)

    def _put(self, conn: Connection) -> None:
        if conn.reusable and len(self._idle) < POOL_SIZE and not self._closed:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()

    def _pooled(self, max_idle: float | None = None) -> Connection | None:
        """The most recently used idle connection the server has not closed (servers close
        idle keep-alive connections after a few seconds); with ``max_idle``, only one used
        that recently, so that a close racing the request is unlikely."""
        while self._idle:
            conn = self._idle[-1]
            if max_idle is not None and time.monotonic() - conn.idle_since > max_idle:
                if max_idle >= POOL_REUSE_IDLE:  # the rest is older still: never reusable
                    self._drop_idle()
                return None
            self._idle.pop()
            if not conn.closed:
                return conn
        return None

    def close(self) -> None:
        """Close the idle connections, and each one in use once its answer ends. Callable
        from any thread (a runtime replaced while calls use its pool)."""
        self._closed = True
        loop = self._loop
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if loop is None or loop is here or loop.is_closed():
            self._drop_idle()
        else:
            try:
                loop.call_soon_threadsafe(self._drop_idle)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def _drop_idle(self) -> None:
        while self._idle:
            self._idle.pop().close()

    async def _connect(self) -> Connection:
        loop = self._loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(Connection, self.host, self.port, ssl=self.ssl),
                self.connect_timeout)
        except asyncio.TimeoutError:
            raise NotSent(f"no connection to {self.host}:{self.port} within "
                          f"{self.connect_timeout:g} s") from None
        except OSError as exc:
            raise NotSent(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        return conn

    def _head(self, method: str, path: str, headers: Headers, framing: bytes) -> bytes:
        # A ``Host`` in ``headers`` (a proxy keeping the client's) replaces the upstream's.
        lines = [f"{method} {path} HTTP/1.1\r\n".encode("latin-1")]
        pairs = headers.items() if isinstance(headers, (dict, Mapping)) else headers
        if not any(key.lower() == "host" for key, _ in pairs):
            lines.append(self._host_header)
        for key, value in pairs:
            lines.append(f"{key}: {value}\r\n".encode("latin-1"))
        lines.append(framing)
        lines.append(b"\r\n")
        return b"".join(lines)

    async def request(self, method: str, path: str, headers: Headers,
                      body: bytes | AsyncIterable[bytes] = b"",
                      length: int | None = None, chunked: bool = False) -> Response:
        """Send one request and wait for the answer's status and headers.

        ``body`` as bytes is sent with its length (as one chunk with ``chunked``) and sent
        again on a fresh connection when a pooled one turns out to be closed before the
        request was written, or reset before it was read; a stream is sent with ``length``
        when known, chunked otherwise, never re-sent, and while the answer is awaited (an
        answer that comes before the body went whole returns at once: :attr:`Response.
        body_sent`). A request the server may have read is never sent again: it may have run
        it (a call must not run twice), so a connection lost after that is an error.

        :raises NotSent: the server cannot have taken the request (nothing of a stream read).
        :raises ConnectionError: no connection, or it broke before the answer's headers.
        :raises TimeoutError: no answer within ``read_timeout`` after the request was sent.
        """
        replayable = isinstance(body, (bytes, bytearray))
        for attempt in (0, 1):
            # Only a connection the server cannot be closing yet (it closes idle ones after
            # a few seconds); a stream, which cannot be re-sent, only one used just now.
            conn = (self._pooled(POOL_REUSE_IDLE if replayable else STREAM_MAX_IDLE)
                    if attempt == 0 else None)
            reused = conn is not None
            if conn is None:
                conn = await self._connect()
            conn.reset(method == "HEAD")
            head = conn.head
            assert head is not None
            sender = None
            try:
                if replayable:
                    await self._send_whole(conn, method, path, headers, body, chunked)
                else:
                    sender = asyncio.ensure_future(
                        self._send_stream(conn, method, path, headers, body, length))
                    await asyncio.wait((head, sender), return_when=asyncio.FIRST_COMPLETED)
                    if not head.done() or sender.done():
                        sender.result()  # sent whole (or why not)
                done, _ = await asyncio.wait((head,), timeout=self.read_timeout)
                if not done:
                    conn.abandon()
                    raise TimeoutError("no answer within the read timeout")
                status = head.result()
            except NotSent as err:
                _stop(sender)
                conn.abandon()
                if not replayable and conn.wrote:  # part of the stream may be gone
                    raise ConnectionError(str(err)) from None
                if reused and replayable:
                    continue  # the server had closed it: nothing lost, send on a new one
                raise
            except BaseException:
                _stop(sender)
                conn.abandon()
                raise
            return Response(self, conn, status, self.read_timeout, sender)
        raise AssertionError("unreachable")

    def _writable(self, conn: Connection) -> asyncio.Transport:
        transport = conn.transport
        if transport is None or conn.closed or transport.is_closing():
            raise NotSent("the upstream closed the connection")
        return transport

    async def _send_whole(self, conn: Connection, method: str, path: str, headers: Headers,
                          body: bytes, chunked: bool) -> None:
        transport = self._writable(conn)
        if chunked:
            frame = (b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)) if body else b"0\r\n\r\n"
            transport.writelines((self._head(method, path, headers,
                                             b"Transfer-Encoding: chunked\r\n"), frame))
        else:
            framing = b"Content-Length: %d\r\n" % len(body)
            transport.writelines((self._head(method, path, headers, framing), body))
        conn.wrote = True
        await conn.drain()

    async def _send_stream(self, conn: Connection, method: str, path: str, headers: Headers,
                           body: AsyncIterable[bytes], length: int | None) -> None:
        transport = self._writable(conn)
        chunked = length is None
        framing = (b"Transfer-Encoding: chunked\r\n" if chunked
                   else b"Content-Length: %d\r\n" % length)
        transport.write(self._head(method, path, headers, framing))
        conn.wrote = True
        async for chunk in body:
            if not chunk:
                continue
            if conn.closed:
                break  # it answered (or failed) early; the caller reads why
            if chunked:
                transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
            else:
                transport.write(chunk)
            await conn.drain()
        if chunked and not conn.closed:
            transport.write(b"0\r\n\r\n")
        await conn.drain()


def _stop(sender: asyncio.Future[None] | None) -> None:
    """Cancel a body still being sent; its outcome is no longer anyone's news."""
    if sender is None:
        return
    if not sender.done():
        sender.cancel()
    elif not sender.cancelled():
        sender.exception()
