"""``POST /run/<service>``: synchronous invocation, streamed both ways.

The view does everything that can fail *before* the first byte leaves (lookup, auth, size
limit, connecting upstream); the body then streams from OpenFaaS to the client through a
generator that holds plain values only.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from flask import Blueprint, Response, request
from werkzeug.http import is_hop_by_hop_header

from ..auth import require_run_access
from ..errors import BodyTooLarge
from ..openfaas import finish
from .context import gateway

bp = Blueprint("run", __name__)

#: Read size for streamed bodies: gunicorn re-copies its read-ahead buffer on every read,
#: so small reads cost more CPU than they save memory.
CHUNK = 1024 * 1024
#: Bodies up to this size are read whole, so they can be re-sent while a fresh function
#: answers 503; larger ones stream once, after a readiness check.
REPLAYABLE = 1024 * 1024
#: Request headers never forwarded to the function (``expect``: gunicorn has already
#: answered curl's ``100-continue``; the body is on its way).
_DROP_REQUEST = {"host", "authorization", "content-length", "cookie", "expect"}
#: Response headers the WSGI server sets itself.
_DROP_RESPONSE = {"server", "date"}


def forward_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Request headers for the function: end-to-end ones, minus credentials and framing."""
    return {k: v for k, v in headers
            if k.lower() not in _DROP_REQUEST and not is_hop_by_hop_header(k)}


def backward_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers
            if k.lower() not in _DROP_RESPONSE and not is_hop_by_hop_header(k)]


def _limited(stream, limit: int, head: bytes) -> Iterator[bytes]:
    """Yield ``head`` then the rest of ``stream``, refusing to pass ``limit`` bytes."""
    seen = len(head)
    if head:
        yield head
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            return
        seen += len(chunk)
        if limit and seen > limit:
            raise BodyTooLarge(_too_large(limit))
        yield chunk


def _too_large(limit: int) -> str:
    return (f"request body larger than the limit of {limit} bytes (MAX_BODY_SIZE); "
            f"send a smaller input or store it in MinIO")


def _read_head(stream, size: int) -> bytes:
    parts: list[bytes] = []
    got = 0
    while got < size:
        chunk = stream.read(min(CHUNK, size - got))
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def request_body(stream, length: int | None, limit: int) -> bytes | Iterator[bytes]:
    """The body to forward: bytes when it is small (so a 503 while the function starts can
    be retried), else a bounded stream.

    :raises BodyTooLarge: the body passes ``limit`` (0: no limit); for a stream this may
    happen later, while it is being forwarded.
    """
    if limit and length is not None and length > limit:
        raise BodyTooLarge(_too_large(limit))
    head = _read_head(stream, REPLAYABLE + 1)
    if len(head) > REPLAYABLE:
        return _limited(stream, limit, head)
    if limit and len(head) > limit:
        raise BodyTooLarge(_too_large(limit))
    return head


def relay(upstream) -> Iterator[bytes]:
    """Stream the function's answer, then give its connection back (or drop it when the
    client went away half-way)."""
    complete = False
    try:
        yield from upstream.stream(CHUNK, decode_content=False)
        complete = True
    finally:
        finish(upstream, complete)


@bp.post("/run/<name>")
def run(name: str) -> Response:
    gw = gateway()
    service = gw.registry.get_cached(name)  # unknown service: 404, before auth (as OSCAR)
    require_run_access(request.headers.get("Authorization"), service.token, gw.settings)
    length = request.content_length
    body = request_body(request.stream, length, gw.settings.max_body_size)
    headers = forward_headers(request.headers.items())
    if length is not None and not isinstance(body, bytes):
        headers["Content-Length"] = str(length)  # stream as is: no chunk framing to copy
    upstream = gw.openfaas.invoke(name, body, headers)
    return Response(relay(upstream), status=upstream.status,
                    headers=backward_headers(upstream.headers.items()),
                    direct_passthrough=True)


@bp.post("/job/<name>")
def job(name: str) -> Response:
    """Asynchronous invocations need a job runner, which oscar-faas does not have yet; say so
    (after the same lookup and auth as /run) instead of a bare 404."""
    gw = gateway()
    service = gw.registry.get_cached(name)
    require_run_access(request.headers.get("Authorization"), service.token, gw.settings)
    return Response(f"asynchronous invocation (/job) is not supported by oscar-faas: invoke "
                    f"{name} synchronously with POST /run/{name}\n", status=501,
                    mimetype="text/plain")
