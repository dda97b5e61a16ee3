"""One keep-alive HTTP/1.1 client connection of :mod:`oscar_faas.upstream`: an asyncio protocol
around ``httptools``' response parser that buffers the answer's body with backpressure.

Apart from the pool and the request logic so each reads alone; :class:`NotSent` is here because
the connection is what learns that a request cannot have been taken (a reset before any of
the answer).
"""

from __future__ import annotations

import asyncio
from collections import deque

import httptools

#: Response bytes buffered before the socket stops being read (the client is slower than
#: the function); reading resumes below half of it.
HIGH_WATER = 4 * 1024 * 1024


class NotSent(ConnectionError):
    """The upstream cannot have taken the request: no connection, a connection found closed
    before the request was written, or one reset before it was read (a server that closes
    with the request unread resets; one that read it closes in order). A streamed body was
    not read from."""


class Connection(asyncio.Protocol):
    """One keep-alive connection; carries one exchange at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.head: asyncio.Future[int] | None = None
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
        #: the request head was written (a stream's body may be under way)
        self.wrote = False
        #: the answer has no body whatever its headers say (a ``HEAD``'s)
        self.bodiless = False

    # ---------------------------------------------------------------- exchange state

    def reset(self, bodiless: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self.bodiless = bodiless
        self.parser = httptools.HttpResponseParser(self)
        self.headers = []
        self.head = loop.create_future()
        self._chunks.clear()
        self._buffered = 0
        self._complete = False
        self._keep_alive = False
        self._interim = False
        self._error = None
        self.wrote = False

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
        head = self.head
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
            unread = isinstance(exc, (ConnectionResetError, BrokenPipeError)) \
                and not self.headers and not self._chunks
            self._fail((NotSent if unread else ConnectionError)(
                "the upstream closed the connection" + (f": {exc}" if exc else "")))
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
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue, 103): the real one follows
            self._interim = True
            self.headers = []
            return
        self._keep_alive = self.parser.should_keep_alive()  # the parser forgets it later
        if self.bodiless:  # the parser would wait for the body its headers announce
            self._keep_alive, self._complete = False, True
        if self.head is not None and not self.head.done():
            self.head.set_result(status)

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
        if self.head is not None and not self.head.done():
            self.head.set_exception(exc)
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


