"""``POST /run/<service>``: synchronous invocation, streamed both ways, on the event loop.

This is the one route not served by Flask. Every call pays for whatever sits between the
socket and OpenFaaS, so the route is a plain ASGI handler: headers are read straight from
the scope, the service comes from the registry's cache, and the bodies stream through a
pooled HTTP client (:mod:`oscar_faas.upstream`) with backpressure. Everything that can fail
(lookup, auth, size limit, connecting upstream) fails before the response starts, so errors
are whole answers.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, MutableMapping

from ..asgibody import BodyPieces, ClientGone
from ..asgibody import disconnected as _disconnect
from ..auth import require_run_access
from ..contract import HOP_BY_HOP_BYTES
from ..errors import BodyTooLarge, NotInvocable, OscarFaasError
from ..invoker import FunctionInvoker
from .context import Gateway
from .errors import error_answer

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: Bodies up to this size are read whole, so they can be re-sent while a fresh function
#: answers 503; larger ones stream once, after a readiness check.
REPLAYABLE = 1024 * 1024
#: Request headers never forwarded to the function: credentials, framing the client redoes
#: and ``expect`` (the server has already answered curl's ``100-continue``).
_NOT_FORWARDED = HOP_BY_HOP_BYTES | {b"host", b"authorization", b"content-length", b"cookie",
                                b"expect"}
#: Response headers the server sets itself, besides the hop-by-hop ones.
_NOT_RETURNED = HOP_BY_HOP_BYTES | {b"server", b"date"}


def read_headers(headers: Iterable[tuple[bytes, bytes]],
                 ) -> tuple[str | None, int | None, dict[str, str]]:
    """One pass over the request headers (lower-case, as ASGI gives them): the
    ``Authorization`` value, the ``Content-Length`` (``None`` when absent or malformed) and
    the headers for the function (end-to-end ones, minus credentials and framing)."""
    authorization = length = None
    forward: dict[str, str] = {}
    for key, value in headers:
        if key in _NOT_FORWARDED:
            if key == b"authorization":
                authorization = value.decode("latin-1")
            elif key == b"content-length":
                length = int(value) if value.isdigit() else None
            continue
        name, text = key.decode("latin-1"), value.decode("latin-1")
        forward[name] = f"{forward[name]}, {text}" if name in forward else text
    return authorization, length, forward


def backward_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Response headers for the client: the function's, minus framing the server redoes."""
    return [(key, value) for key, value in headers if key.lower() not in _NOT_RETURNED]


def too_large(limit: int) -> str:
    return (f"request body larger than the limit of {limit} bytes (MAX_BODY_SIZE); "
            f"send a smaller input or store it in MinIO")


async def error_response(send: Send, err: OscarFaasError) -> None:
    """The answer the Flask app gives for the same error (:func:`.errors.error_answer`)."""
    status, text, extra = error_answer(err)
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"),
               (b"content-length", str(len(body)).encode()),
               *((k.lower().encode(), v.encode()) for k, v in extra.items())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestBody(BodyPieces):
    """The client's body as the function gets it: bytes when small, else a bounded stream.

    The stream remembers when it had to stop at the limit, so the handler can answer 413
    whatever error the upstream client wraps the interruption in.
    """

    def __init__(self, receive: Receive, limit: int) -> None:
        super().__init__(receive)
        self.limit = limit
        self.too_large = False

    async def read(self, length: int | None) -> bytes | AsyncIterator[bytes]:
        """:raises BodyTooLarge: the body passes the limit (0: none) within the first
        :data:`REPLAYABLE` bytes; later, the stream stops and sets :attr:`too_large`."""
        if self.limit and length is not None and length > self.limit:
            raise BodyTooLarge(too_large(self.limit))
        parts: list[bytes] = []
        got = 0
        while got <= REPLAYABLE:
            chunk = await self.next_chunk()
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        head = parts[0] if len(parts) == 1 else b"".join(parts)
        if self.limit and got > self.limit:
            raise BodyTooLarge(too_large(self.limit))
        if not self.more:
            return head
        return self._stream(head, got)

    async def _stream(self, head: bytes, seen: int) -> AsyncIterator[bytes]:
        yield head
        while True:
            chunk = await self.next_chunk()
            if not chunk:
                return
            seen += len(chunk)
            if self.limit and seen > self.limit:
                self.too_large = True
                raise BodyTooLarge(too_large(self.limit))
            yield chunk


class RunEndpoint:
    """Serves ``POST /run/<name>`` for one gateway (one per worker process)."""

    def __init__(self, gateway: Gateway, invoker: FunctionInvoker) -> None:
        self.gateway = gateway
        self.invoker = invoker
        #: :class:`~oscar_faas.metrics.RunMetrics` (in-flight calls), set by the front
        self.metrics: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send, name: str) -> None:
        try:
            upstream = await self._start(scope, receive, name)
        except OscarFaasError as err:
            await error_response(send, err)
            return
        except ClientGone:
            return
        complete = False
        gone: asyncio.Future[Any] | None = None
        if self.metrics is not None:
            self.metrics.started(name)
        try:
            await send({"type": "http.response.start", "status": upstream.status,
                        "headers": backward_headers(upstream.raw_headers)})
            pieces = 0
            async for chunk in upstream.chunks():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                # The server drops writes to a client that left without saying so; watch
                # for it once the answer is longer than two pieces, and stop reading then.
                pieces += 1
                if pieces == 2:
                    gone = asyncio.ensure_future(_disconnect(receive))
                elif gone is not None and gone.done():
                    return
            await send({"type": "http.response.body", "body": b""})
            complete = True
        except (ConnectionError, TimeoutError) as err:
            # The function's answer broke off after it started: the client sees the
            # connection close before the end, which is the truth; no traceback.
            log.warning("run %s: the answer from OpenFaaS broke off: %s", name, err)
        finally:
            if self.metrics is not None:
                self.metrics.finished(name)
            if gone is not None:
                gone.cancel()
                if gone.done() and not gone.cancelled():
                    gone.exception()  # retrieved: a failed watch needs no warning
            if complete:
                upstream.release()
            else:  # half-read: its connection cannot be reused
                upstream.close()

    async def _start(self, scope: Scope, receive: Receive, name: str):
        """Everything before the first byte of the answer; errors are raised, not sent."""
        gw = self.gateway
        service = gw.registry.cache.get(name)
        if service is None:  # unknown service: 404, before auth (as OSCAR)
            service = await asyncio.get_running_loop().run_in_executor(
                None, gw.registry.get, name)
        authorization, length, headers = read_headers(scope["headers"])
        require_run_access(authorization, service.token, gw.settings)
        # The function checks its own caller (oscar_faas.runtime.caller): prove the call with
        # the service's token, whatever the client sent (never its own credentials).
        headers["Authorization"] = f"Bearer {service.token}"
        if service.exposed:
            raise NotInvocable(
                f"service {name} is an exposed service: its own server answers at "
                f"/system/services/{name}/exposed/ (POST /run runs scripts, which it has not)")
        body = RequestBody(receive, gw.settings.max_body_size)
        data = await body.read(length)
        try:  # a stream goes with its length when known, without chunk framing
            return await self.invoker.invoke(name, data, headers, length)
        except OscarFaasError:
            if body.too_large:
                raise BodyTooLarge(too_large(body.limit)) from None
            raise
