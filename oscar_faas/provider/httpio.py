"""The few HTTP pieces the provider needs on top of ``http.server``: a streaming request body
(Content-Length or chunked, as oscar-cli sends it), and plain request/response values that
routes can be written and tested against without a socket."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterable, Iterator
from urllib.parse import parse_qs

from ..errors import InvalidService
from .errors import RequestTooLarge

#: Largest JSON body accepted on /system routes (a deployment carries a base64 script).
MAX_JSON_BODY = 64 * 1024 * 1024


class BodyReader:
    """File-like view of a request body that never reads past it.

    ``read(n)`` returns at most ``n`` bytes and ``b""`` at the end, whatever the framing, so the
    connection stays in sync for the next keep-alive request.
    """

    def __init__(self, rfile: BinaryIO, content_length: int | None, chunked: bool) -> None:
        self._rfile = rfile
        self.chunked = chunked
        self.content_length = None if chunked else (content_length or 0)
        self._left = 0 if chunked else (content_length or 0)  # bytes left in body or chunk
        self._done = not chunked and not self._left

    @property
    def done(self) -> bool:
        return self._done

    def read(self, size: int = -1) -> bytes:
        if self._done:
            return b""
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        if self.chunked and self._left == 0 and not self._next_chunk():
            return b""
        data = self._rfile.read(min(size, self._left))
        if not data:
            raise ConnectionError("client closed the connection in the middle of the body")
        self._left -= len(data)
        if self._left == 0:
            if self.chunked:
                self._rfile.readline(16)  # CRLF after the chunk data
            else:
                self._done = True
        return data

    def _next_chunk(self) -> bool:
        line = self._rfile.readline(1024)
        if not line:
            raise ConnectionError("client closed the connection in the middle of the body")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise InvalidService("malformed chunked request body") from None
        if size == 0:
            while self._rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                pass  # trailers are ignored
            self._done = True
            return False
        self._left = size
        return True

    def drain(self, limit: int | None = None) -> bool:
        """Read and drop the rest; False if more than ``limit`` bytes were left."""
        dropped = 0
        while chunk := self.read(65536):
            dropped += len(chunk)
            if limit is not None and dropped > limit:
                return False
        return True


@dataclass
class Request:
    """One HTTP request as routes see it."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: BodyReader
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
    """A status, headers and either a small ``body`` or a ``stream`` of known ``length``."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    stream: Iterable[bytes] | None = None
    length: int = 0
    #: Do not reuse the connection (a worker may still be reading the request body).
    close_connection: bool = False
    on_close: list[Any] = field(default_factory=list)
    #: Length unknown: send ``stream`` with chunked framing, each piece as it comes.
    chunked: bool = False

    def chunks(self) -> Iterator[bytes]:
        if self.stream is None:
            if self.body:
                yield self.body
        else:
            yield from self.stream

    @property
    def content_length(self) -> int:
        return len(self.body) if self.stream is None else self.length

    def close(self) -> None:
        for callback in self.on_close:
            callback()
        self.on_close.clear()


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
