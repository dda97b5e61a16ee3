"""The few HTTP pieces the provider needs on top of ``http.server``: a streaming request body
(Content-Length or chunked, as oscar-cli sends it), and plain request/response values that
routes can be written and tested against without a socket."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterable, Iterator
from urllib.parse import parse_qs

from ..errors import InvalidService
from .errors import RequestTooLarge

#: Largest JSON body accepted on /system routes (a deployment carries a base64 script).
MAX_JSON_BODY = 64 * 1024 * 1024
#: A chunk size line: hex digits only (no sign, ``0x`` or ``_``), an optional extension.
_CHUNK_SIZE = re.compile(rb"([0-9a-fA-F]{1,16})[ \t]*(;[^\r\n]*)?\r?\n")
#: A Content-Length value: decimal digits only (``int`` would take ``+5``, ``1_0``, `` 5``).
_DIGITS = re.compile(r"[0-9]{1,18}")


class FramingError(InvalidService):
    """The request body's framing cannot be trusted: answer 400 and close the connection."""


def parse_framing(content_length: list[str], transfer_encoding: list[str]
                  ) -> tuple[int | None, bool]:
    """``(length, chunked)`` from the request's Content-Length and Transfer-Encoding header
    values, as RFC 9112 section 6 wants them read.

    :raises FramingError: both headers, a coding other than exactly ``chunked``, or a
        Content-Length that is not one plain decimal number.
    """
    if transfer_encoding:
        if content_length:
            raise FramingError("Content-Length and Transfer-Encoding together are not allowed")
        codings = [c.strip().lower() for v in transfer_encoding for c in v.split(",")]
        if codings != ["chunked"]:
            raise FramingError(f"unsupported Transfer-Encoding {', '.join(transfer_encoding)!r}"
                               f" (only 'chunked')")
        return None, True
    if not content_length:
        return 0, False
    values = {v.strip() for raw in content_length for v in raw.split(",")}
    if len(values) != 1 or not _DIGITS.fullmatch(next(iter(values))):
        raise FramingError("invalid Content-Length")
    return int(values.pop()), False


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
        #: The framing broke mid-body: the connection must not be reused.
        self.broken = False
        self._again = b""

    @property
    def done(self) -> bool:
        """The whole body has been read from the connection (whatever was put back)."""
        return self._done

    def unread(self, data: bytes) -> None:
        """Put back the first bytes of the body, read but never delivered: they are read
        again first (the proxy sends a call again whole; nothing else is ever replayed)."""
        self._again = data + self._again

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        if self._again:
            data, self._again = self._again[:size], self._again[size:]
            return data
        if self._done:
            return b""
        if self.chunked and self._left == 0 and not self._next_chunk():
            return b""
        data = self._rfile.read(min(size, self._left))
        if not data:
            raise ConnectionError("client closed the connection in the middle of the body")
        self._left -= len(data)
        if self._left == 0:
            if self.chunked:
                if self._rfile.readline(3) not in (b"\r\n", b"\n"):  # after the chunk data
                    self._done = self.broken = True
                    raise FramingError("malformed chunked request body: no CRLF after a chunk")
            else:
                self._done = True
        return data

    def _next_chunk(self) -> bool:
        line = self._rfile.readline(1024)
        if not line:
            raise ConnectionError("client closed the connection in the middle of the body")
        match = _CHUNK_SIZE.fullmatch(line)
        if match is None:
            self._done = self.broken = True  # nothing more can be read in sync: close
            raise FramingError("malformed chunked request body: bad chunk size line")
        size = int(match.group(1), 16)
        if size == 0:
            for _ in range(100):  # trailers are ignored, and bounded
                if self._rfile.readline(8192) in (b"\r\n", b"\n", b""):
                    break
            else:
                self._done = self.broken = True
                raise FramingError("malformed chunked request body: too many trailers")
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
