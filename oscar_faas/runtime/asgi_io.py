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

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

#: Answer bytes gathered before they are sent as one chunk; answers that fit are sent whole
#: with a Content-Length, straight from the event loop.
FLUSH_BYTES = 256 << 10


class BodyReader:
    """The request body as a blocking ``read(n)`` for the call thread, pulled from the event
    loop one ASGI message at a time (so at most one chunk is in memory)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, receive: Receive, first: dict[str, Any],
                 timeout: float) -> None:
        self._loop, self._receive, self._timeout = loop, receive, timeout or None
        self._data = memoryview(first.get("body", b""))
        self._more = first.get("more_body", False)

    def read(self, size: int = -1) -> bytes:
        while not self._data and self._more:
            future = asyncio.run_coroutine_threadsafe(self._receive(), self._loop)
            try:
                message = future.result(self._timeout)
            except TimeoutError:
                future.cancel()
                raise TimeoutError(f"read_timeout ({self._timeout:g}s) reached while "
                                   "reading the request body") from None
            if message["type"] == "http.disconnect":
                raise ConnectionError("the client closed the connection before the body ended")
            self._data = memoryview(message.get("body", b""))
            self._more = message.get("more_body", False)
        if size is None or size < 0 or size >= len(self._data):
            chunk, self._data = self._data, memoryview(b"")
        else:
            chunk, self._data = self._data[:size], self._data[size:]
        return bytes(chunk)


class Answer:
    """The call thread's end of the answer: a status, then bytes.

    Small answers are only gathered (the event loop sends them whole, with a Content-Length);
    from :data:`FLUSH_BYTES` on, the headers and each chunk are sent from the thread through
    the loop, waiting for each send (uvicorn's flow control), so memory stays bounded.
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
        """End a streamed answer (a gathered one is sent by the loop)."""
        if self.streaming:
            self._flush(more=False)

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
