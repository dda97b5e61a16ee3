"""Bytes between the ASGI server (on the event loop) and a call (in its thread): the request
body in (:class:`BodyReader`), the answer out (:class:`Answer`, with ``X-Duration-Seconds``
and ``Server-Timing``), and the small answers sent straight from the loop (:func:`plain`).

Exists so the normal mode (:mod:`.server`) and expose mode (:mod:`.expose`) send their own
answers the same way, and the thread/loop hand-over with its timeouts and backpressure reads
on its own.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, Mapping

from ..contract import server_timing
from ..supervisor.inputs import CHUNK

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

#: Answer bytes gathered before they are sent as one chunk; answers that fit are sent whole
#: with a Content-Length, straight from the event loop.
FLUSH_BYTES = 256 << 10
#: Request bytes gathered on the event loop before the call thread starts: the size a call
#: reads the body in, so a body that fits is one read, with no loop/thread hand-over.
PREFETCH_BYTES = CHUNK


class BodyReader:
    """The request body as a blocking ``read(n)`` for the call thread.

    :meth:`prefetch` first gathers up to :data:`PREFETCH_BYTES` on the event loop, where the
    messages arrive anyway: a body of that size (a 320 KB image, say) reaches the thread
    whole, without one loop/thread hand-over per message. The rest of a larger body is pulled
    from the loop one ASGI message at a time, so memory stays bounded.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, receive: Receive, first: dict[str, Any],
                 timeout: float) -> None:
        self._loop, self._receive, self._timeout = loop, receive, timeout or None
        self._parts: list[bytes] = []
        self._size = 0
        self._keep(first)

    def _keep(self, message: dict[str, Any]) -> None:
        """Buffer a message's bytes (after checking it is not a disconnect)."""
        if message["type"] == "http.disconnect":
            raise ConnectionError("the client closed the connection before the body ended")
        body = message.get("body", b"")
        if body:
            self._parts.append(body)
            self._size += len(body)
        self._more = message.get("more_body", False)

    async def prefetch(self, limit: int = 0) -> None:
        """On the loop: receive messages until the body ends or ``limit`` (default
        :data:`PREFETCH_BYTES`) bytes are buffered.

        :raises TimeoutError: no message within ``read_timeout``.
        :raises ConnectionError: the client left before the body ended.
        """
        limit = limit or PREFETCH_BYTES
        while self._more and self._size < limit:
            try:
                message = await asyncio.wait_for(self._receive(), self._timeout)
            except asyncio.TimeoutError:  # not the builtin before Python 3.11
                raise self._timed_out() from None
            self._keep(message)

    def read(self, size: int = -1) -> bytes:
        while not self._size and self._more:
            future = asyncio.run_coroutine_threadsafe(self._receive(), self._loop)
            try:
                message = future.result(self._timeout)
            except TimeoutError:
                future.cancel()
                raise self._timed_out() from None
            self._keep(message)
        if size is None or size < 0 or size >= self._size:
            parts, self._parts, self._size = self._parts, [], 0
            return parts[0] if len(parts) == 1 else b"".join(parts)
        out = bytearray()
        while len(out) < size:
            part = self._parts[0]
            take = size - len(out)
            if len(part) <= take:
                out += self._parts.pop(0)
            else:
                out += part[:take]
                self._parts[0] = part[take:]
        self._size -= size
        return bytes(out)

    def _timed_out(self) -> TimeoutError:
        return TimeoutError(f"read_timeout ({self._timeout:g}s) reached while reading the "
                            "request body")


class Answer:
    """The call thread's end of the answer: a status, then bytes.

    Small answers are only gathered, then sent whole with a Content-Length as soon as they
    are complete (:meth:`finish`, before the call's clean-up); from :data:`FLUSH_BYTES` on,
    the headers and each chunk are sent from the thread through the loop, waiting for each
    send (uvicorn's flow control), so memory stays bounded.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, send: Send, headers: list[tuple[bytes, bytes]],
                 started: float, timeout: float) -> None:
        self._loop, self._send, self._timeout = loop, send, timeout or None
        self.headers = headers
        self.started = started
        self.status = 0
        self.streaming = False
        #: seconds per phase (queue, setup, script, upload), sent as ``Server-Timing``
        self.timings: dict[str, float] = {}
        self.buffer = bytearray()
        #: :meth:`finish` began sending a gathered answer (nothing else may be sent)
        self.sent = False
        #: run on the loop just before a gathered answer is sent (frees the call's slot)
        self.sending: Callable[[], None] | None = None

    def start(self, status: int) -> None:
        self.status = status

    def write(self, data: bytes) -> int:
        self.buffer += data
        if len(self.buffer) >= FLUSH_BYTES:
            self._flush(more=True)
        return len(data)

    def flush(self) -> None:
        """Nothing: chunks leave when they are big enough, or at the end."""

    def finish(self) -> None:
        """The answer is complete: send it from the call thread through the loop, waiting
        until it is sent (the thread's clean-up must not compete with the loop for the GIL
        meanwhile). Idempotent."""
        if self.sent:
            return
        self.sent = True
        if self.streaming:
            self._flush(more=False)
        else:
            self._call(self.send_whole())

    async def send_whole(self) -> None:
        """Send a gathered answer, with its Content-Length (on the loop)."""
        if self.sending is not None:
            self.sending()
        await self._send(self.start_message(len(self.buffer)))
        await self._send({"type": "http.response.body", "body": bytes(self.buffer)})

    def start_message(self, length: int | None) -> dict[str, Any]:
        headers = list(self.headers)
        headers.append((b"x-duration-seconds", f"{time.monotonic() - self.started:f}".encode()))
        if self.timings:
            headers.append((b"server-timing", server_timing(self.timings).encode()))
        if length is not None:
            headers.append((b"content-length", str(length).encode()))
        return {"type": "http.response.start", "status": self.status or 500, "headers": headers}

    def _flush(self, more: bool) -> None:
        if not self.streaming:
            self.streaming = True
            self._call(self._send(self.start_message(None)))
        body, self.buffer = bytes(self.buffer), bytearray()
        self._call(self._send({"type": "http.response.body", "body": body, "more_body": more}))

    def _call(self, coro: Awaitable[None]) -> None:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        try:
            future.result(self._timeout)
        except TimeoutError:
            future.cancel()
            raise TimeoutError(f"write_timeout ({self._timeout:g}s) reached while sending "
                               "the answer") from None


async def plain(send: Send, status: int, body: bytes, started: float,
                content_type: bytes = b"text/plain; charset=utf-8") -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", content_type), (b"content-length", str(len(body)).encode()),
        (b"x-duration-seconds", f"{time.monotonic() - started:f}".encode())]})
    await send({"type": "http.response.body", "body": body})
