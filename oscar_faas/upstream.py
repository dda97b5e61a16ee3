"""A small HTTP/1.1 client for one upstream (the OpenFaaS gateway), for the ``/run`` hot path.

Why not aiohttp: on this path the client is most of what the gateway does per call, and
aiohttp measured about 1.0 ms of CPU per ``/run`` against a function that takes 5 ms, where
this client, on the same C parser uvicorn uses (``httptools``) and the worker's event loop,
measured 0.3-0.4 ms (bench/README.md has the figures and the commands). It does only what
the gateway needs: keep-alive connections to one host, a request with a known-length,
chunked or streamed body, and a response read as a stream with backpressure both ways.

Errors are the builtin ones so the caller maps them once: ``ConnectionError`` (refused,
reset, closed early, unparsable answer) and ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from ssl import SSLContext
from typing import AsyncIterable, AsyncIterator, Mapping

import httptools

from .contract import POOL_REUSE_IDLE

#: Idle connections kept per upstream.
POOL_SIZE = 64
#: A streamed (not re-sendable) body reuses only a connection idle for less than this.
STREAM_MAX_IDLE = 1.0
#: Response bytes buffered before the socket stops being read (the client is slower than
#: the function); reading resumes below half of it.
HIGH_WATER = 4 * 1024 * 1024


class _NotSent(ConnectionError):
    """The connection was found closed before any byte of the request was written."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; carries one exchange at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[bytes, bytes]] = []
        self._head: asyncio.Future[int] | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._wake: asyncio.Future[None] | None = None
        self._complete = False
        self._keep_alive = False
        self._interim = False
        self.idle_since = 0.0
        self._error: BaseException | None = None
        self._can_write: asyncio.Future[None] | None = None

    # ---------------------------------------------------------------- exchange state

    def reset(self) -> None:
        loop = asyncio.get_running_loop()
        self.parser = httptools.HttpResponseParser(self)
        self._headers = []
        self._head = loop.create_future()
        self._chunks.clear()
        self._buffered = 0
        self._complete = False
        self._keep_alive = False
        self._interim = False
        self._error = None

    @property
    def reusable(self) -> bool:
        return self._complete and self._keep_alive and not self.closed and not self._chunks

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abandon(self) -> None:
        """Close mid-exchange: nobody will wait for this answer's head any more (so its
        future must not keep an exception nobody retrieves)."""
        head = self._head
        if head is not None:
            if not head.done():
                head.cancel()
            elif not head.cancelled():
                head.exception()
        self.close()

    # ---------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # never asked for
            self._fail(ConnectionError("the upstream switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"invalid HTTP answer from the upstream: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self._complete:
            self._fail(ConnectionError("the upstream closed the connection"
                                       + (f": {exc}" if exc else "")))
        self._notify()
        self.resume_writing()  # a writer waiting to drain sees ``closed`` and stops

    def eof_received(self) -> bool:
        try:
            self.parser.feed_data(b"")  # ends a body delimited by the close
        except httptools.HttpParserError:
            pass
        return False

    def pause_writing(self) -> None:
        self._can_write = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)
        self._can_write = None

    # ---------------------------------------------------------------- parser callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue, 103): the real one follows
            self._interim = True
            self._headers = []
            return
        self._keep_alive = self.parser.should_keep_alive()  # the parser forgets it later
        if self._head is not None and not self._head.done():
            self._head.set_result(status)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._notify()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._complete = True
        self._notify()

    # ---------------------------------------------------------------- helpers

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        if self._head is not None and not self._head.done():
            self._head.set_exception(exc)
        self.close()
        self._notify()

    def _notify(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def drain(self) -> None:
        if self._can_write is not None:
            await self._can_write

    async def next_chunk(self, timeout: float | None) -> bytes:
        """The next piece of the body; ``b""`` at its end."""
        while not self._chunks:
            if self._complete:
                return b""
            if self._error is not None:
                raise self._error
            self._wake = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._wake, timeout)
            except asyncio.TimeoutError:
                self.close()
                raise TimeoutError("the upstream stopped sending its answer") from None
            finally:
                self._wake = None
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered < HIGH_WATER // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return chunk


class Response:
    """An answer whose body is still on the wire: iterate :meth:`chunks`, then
    :meth:`release` (read to the end: the connection is reused) or :meth:`close`."""

    def __init__(self, pool: "Upstream", conn: _Connection, status: int,
                 read_timeout: float | None) -> None:
        self.status = status
        self.raw_headers: list[tuple[bytes, bytes]] = conn._headers
        self._pool = pool
        self._conn: _Connection | None = conn
        self._read_timeout = read_timeout

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

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool._put(conn)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


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
        self._idle: list[_Connection] = []

    def _put(self, conn: _Connection) -> None:
        if conn.reusable and len(self._idle) < POOL_SIZE:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()

    def _pooled(self, max_idle: float | None = None) -> _Connection | None:
        """The most recently used idle connection the server has not closed (servers close
        idle keep-alive connections after a few seconds); with ``max_idle``, only one used
        that recently, so that a close racing the request is unlikely."""
        while self._idle:
            conn = self._idle[-1]
            if max_idle is not None and time.monotonic() - conn.idle_since > max_idle:
                if max_idle >= POOL_REUSE_IDLE:  # the rest is older still: never reusable
                    self.close()
                return None
            self._idle.pop()
            if not conn.closed:
                return conn
        return None

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(_Connection, self.host, self.port, ssl=self.ssl),
                self.connect_timeout)
        except asyncio.TimeoutError:
            raise ConnectionError(f"no connection to {self.host}:{self.port} within "
                                  f"{self.connect_timeout:g} s") from None
        except OSError as exc:
            raise ConnectionError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        return conn

    def _head(self, method: str, path: str, headers: Mapping[str, str],
              framing: bytes) -> bytes:
        # A ``Host`` in ``headers`` (a proxy keeping the client's) replaces the upstream's.
        lines = [f"{method} {path} HTTP/1.1\r\n".encode("latin-1")]
        if not any(key.lower() == "host" for key in headers):
            lines.append(self._host_header)
        for key, value in headers.items():
            lines.append(f"{key}: {value}\r\n".encode("latin-1"))
        lines.append(framing)
        lines.append(b"\r\n")
        return b"".join(lines)

    async def request(self, method: str, path: str, headers: Mapping[str, str],
                      body: bytes | AsyncIterable[bytes] = b"",
                      length: int | None = None) -> Response:
        """Send one request and wait for the answer's status and headers.

        ``body`` as bytes is sent with its length (and sent again on a fresh connection when
        a pooled one turns out to be closed before any of the request was written); a stream
        is sent with ``length`` when known, chunked otherwise, and never re-sent. A request
        once written is never sent again: the server may have run it (a call must not run
        twice), so a connection lost after that is an error.

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
            conn.reset()
            head = conn._head
            assert head is not None
            try:
                await self._send(conn, method, path, headers, body, length)
                done, _ = await asyncio.wait((head,), timeout=self.read_timeout)
                if not done:
                    conn.abandon()
                    raise TimeoutError("no answer within the read timeout")
                status = head.result()
            except _NotSent:
                conn.abandon()
                if reused and replayable:
                    continue  # the server had closed it: nothing left, send on a new one
                raise
            except BaseException:
                conn.abandon()
                raise
            return Response(self, conn, status, self.read_timeout)
        raise AssertionError("unreachable")

    async def _send(self, conn: _Connection, method: str, path: str,
                    headers: Mapping[str, str], body: bytes | AsyncIterable[bytes],
                    length: int | None) -> None:
        transport = conn.transport
        if transport is None or conn.closed or transport.is_closing():
            raise _NotSent("the upstream closed the connection")
        if isinstance(body, (bytes, bytearray)):
            framing = b"Content-Length: %d\r\n" % len(body)
            transport.writelines((self._head(method, path, headers, framing), body))
            await conn.drain()
            return
        chunked = length is None
        framing = (b"Transfer-Encoding: chunked\r\n" if chunked
                   else b"Content-Length: %d\r\n" % length)
        transport.write(self._head(method, path, headers, framing))
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
