"""The request and answer values the provider's routes are written against, and the bridge
from the ASGI app's event loop to the routes' threads.

Routes are plain blocking functions (they touch the data dir, start runtimes, wait on
locks), so they run in a thread pool and never on the loop; :class:`RequestBody` lets them
read the body as a file from there, each read waiting for the loop to receive the next
piece, so a large body (an ``/async-function`` input) streams instead of being held whole.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator
from urllib.parse import parse_qs

from ...errors import InvalidService
from ...wsproxy import Receive
from ..errors import RequestTooLarge

#: Largest JSON body accepted on /system routes (a deployment carries a base64 script).
MAX_JSON_BODY = 64 * 1024 * 1024


class RequestBody:
    """A request body read from a route's thread: ``read(n)`` returns at most ``n`` bytes and
    ``b""`` at the end, as a file does.

    :raises ConnectionError: from ``read``, when the client left before the end.
    """

    def __init__(self, receive: Receive, loop: asyncio.AbstractEventLoop) -> None:
        self._receive, self._loop = receive, loop
        self._buffer = b""
        self._more = True

    async def _next(self) -> bytes:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self._more = False
            raise ConnectionError("client closed the connection in the middle of the body")
        self._more = bool(message.get("more_body", False))
        return bytes(message.get("body", b""))

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        while not self._buffer and self._more:
            self._buffer = asyncio.run_coroutine_threadsafe(self._next(), self._loop).result()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def drain(self) -> None:
        """Read and drop the rest (an answer given before the body was read)."""
        while self.read(65536):
            pass


@dataclass
class Request:
    """One HTTP request as routes see it."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: RequestBody
    client: str = ""
    params: dict[str, str] = field(default_factory=dict)

    def header(self, name: str, default: str = "") -> str:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return default

    def arg(self, name: str) -> str:
        """First value of a query parameter, ``""`` when absent."""
        return parse_qs(self.query).get(name, [""])[0]

    def json(self) -> Any:
        """The body as JSON, at most :data:`MAX_JSON_BODY` bytes.

        :raises InvalidService: the body is not valid JSON (400, as faas-netes answers).
        :raises RequestTooLarge: when the body is larger than the limit.
        """
        parts, size = [], 0
        while chunk := self.body.read(65536):
            size += len(chunk)
            if size > MAX_JSON_BODY:
                raise RequestTooLarge("request body too large")
            parts.append(chunk)
        try:
            return json.loads(b"".join(parts))
        except ValueError as err:
            raise InvalidService(f"invalid JSON in request body: {err}") from None


@dataclass
class Response:
    """A status, headers and either a small ``body`` or a ``stream`` of pieces (a blocking
    iterator, read from a thread, each piece sent as it comes)."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    stream: Iterable[bytes] | None = None
    #: Do not reuse the connection.
    close_connection: bool = False

    def chunks(self) -> Iterator[bytes]:
        if self.stream is None:
            if self.body:
                yield self.body
        else:
            yield from self.stream


def json_response(data: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(data, separators=(",", ":")).encode(),
                    {"Content-Type": "application/json"})


def text_response(text: str, status: int, headers: dict[str, str] | None = None) -> Response:
    """Plain-text answer shaped like Go's ``http.Error`` (message + newline)."""
    body = text if text.endswith("\n") or not text else text + "\n"
    hdrs = {"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"}
    hdrs.update(headers or {})
    return Response(status, body.encode(), hdrs)


def empty_response(status: int) -> Response:
    return Response(status)
