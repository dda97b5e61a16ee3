"""``/function/<name>[/path]`` on the provider's event loop: each call proxied to its function's
runtime with the package's one HTTP client (:mod:`oscar_faas.upstream`), WebSocket upgrades
bridged with :mod:`oscar_faas.wsproxy`.

What faas-provider's ``proxy.go`` and the OpenFaaS gateway do for a call, in one place: the
method rule (the classic watchdog's methods, any method for an exposed service), the headers
the gateway adds (``X-Call-Id``, ``X-Start-Time``, ``X-Forwarded-*``; ``X-Duration-Seconds`` on
the answer), hop-by-hop headers dropped both ways, the call counted in the metrics (unknown
functions are not: their names would grow the label set) and the error answers (404, 503 with
``Retry-After`` for a failed runtime, 502 with the runtime's last output when it died in the
call).

Delivery rule (issue 22): a call is delivered at most once and never with part of its body
missing. A body of at most :data:`INLINE_BODY` bytes is read whole before it is sent, so it can
be sent again when the runtime cannot have taken it (a stale pooled connection, a runtime that
restarts: :class:`~oscar_faas.upstream.NotSent`); a larger one is streamed while the answer is
awaited (a runtime's early 429 is heard at once) and never sent twice once any of it was read.

The runtime is acquired without blocking the loop: at once when it is running; a call for one
that is starting waits for it in a thread of its own (rare: deploys and restarts).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
import uuid
import weakref
from typing import Any, AsyncIterator

from ...asgibody import BodyPieces, ClientGone, disconnected
from ...contract import HOP_BY_HOP_BYTES, canonical_header, refused_exposed_method
from ...errors import OscarFaasError, ServiceNotFound
from ...upstream import NotSent, Response, Upstream
from ...wsproxy import Receive, Scope, Send, bridge, client_headers, deny
from ..backend import LocalBackend, RuntimeFailed, not_ready
from ..runtimes.manager import START_WAIT, ManagedRuntime
from ..state.types import DEFAULT_NAMESPACE

log = logging.getLogger("oscar_faas.provider.proxy")

#: Methods the classic watchdog runs a function for; others get 405 (exposed services: any).
WATCHDOG_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
#: Request bodies up to this size are read whole and may be sent again (see the docstring).
INLINE_BODY = 64 * 1024
#: ``/function/<name>[.<namespace>][/rest]``, on the raw (still percent-encoded) path.
_PATH = re.compile(r"/function/([-a-zA-Z_0-9.]+)(/.*)?")
#: Request headers never forwarded (framing is the client's own: the upstream redoes it).
_NOT_FORWARD = HOP_BY_HOP_BYTES | {b"content-length"}
#: Answer headers never passed back (the provider's server sets its own).
_NOT_BACK = HOP_BY_HOP_BYTES | {b"date", b"server"}
#: Answer headers the provider sets (canonical names, as the OpenFaaS gateway).
_OURS = frozenset({"X-Duration-Seconds", "X-Call-Id", "X-Start-Time"})
_INTERNAL = ("X-OpenFaaS-Internal", "proxy")


class RequestBody(BodyPieces):
    """The client's body: read whole when small (kept until the call is delivered, so it can
    be sent again), else streamed once."""

    def __init__(self, receive: Receive, length: int | None, chunked: bool) -> None:
        super().__init__(receive)
        self.length, self.chunked = length, chunked
        self._held: list[bytes] = []

    async def whole(self, limit: int = INLINE_BODY) -> bytes | None:
        """The whole body when it has at most ``limit`` bytes (kept: call again at will),
        else None (what was read is kept for :meth:`stream`)."""
        if self.length is not None and self.length > limit:
            return None
        size = sum(map(len, self._held))
        while self.more and size <= limit:
            chunk = await self.next_chunk()
            self._held.append(chunk)
            size += len(chunk)
        if self.more or size > limit:
            return None
        return b"".join(self._held)

    async def stream(self) -> AsyncIterator[bytes]:
        """What was read, then the rest, once."""
        held, self._held = self._held, []
        for chunk in held:
            yield chunk
        while chunk := await self.next_chunk():
            yield chunk


async def forward(pool: Upstream, method: str, target: str,
                  headers: list[tuple[str, str]], body: RequestBody) -> Response:
    """Send one call to the runtime behind ``pool``; its answer, body unread.

    :raises NotSent: the runtime cannot have taken it and the body is whole (retry at will).
    :raises ConnectionError: it went away before answering, or before the body went whole.
    """
    whole = await body.whole()
    if whole is not None:
        return await pool.request(method, target, headers, whole, chunked=body.chunked)
    return await pool.request(method, target, headers, body.stream(), length=body.length)


async def acquire(runtime: ManagedRuntime, wait: float) -> tuple[Any, Upstream] | None:
    """:meth:`ManagedRuntime.acquire` for the event loop: at once when the runtime runs;
    else waited for in a thread (the caller must release a non-None answer; a cancelled
    wait releases what it got)."""
    got = runtime.acquire(0)
    if got is not None or wait <= 0 or runtime.state.retry_at is not None:
        return got
    loop = asyncio.get_running_loop()
    future: asyncio.Future[tuple[Any, Upstream] | None] = loop.create_future()

    def wait_for_it() -> None:
        result = runtime.acquire(wait)

        def deliver() -> None:
            if future.done():  # the call was given up meanwhile
                if result is not None:
                    runtime.release()
            else:
                future.set_result(result)
        try:
            loop.call_soon_threadsafe(deliver)
        except RuntimeError:  # the loop is closed
            if result is not None:
                runtime.release()

    threading.Thread(target=wait_for_it, daemon=True, name=f"wait-{runtime.name}").start()
    return await future


class FunctionProxy:
    """The ASGI endpoint of ``/function/...`` (``http`` and ``websocket`` scopes)."""

    def __init__(self, backend: LocalBackend, metrics: Any = None) -> None:
        self.backend = backend
        #: :class:`~oscar_faas.metrics.ProviderMetrics`, or None
        self.metrics = metrics
        #: the runtimes' pools this loop has used (each is closed with its runtime too)
        self._pools: weakref.WeakSet[Upstream] = weakref.WeakSet()

    async def aclose(self) -> None:
        """Close the connections to the runtimes while the loop still runs (the runtimes,
        stopped after it, could only ask a loop that no longer turns)."""
        for pool in list(self._pools):
            pool.close()

    # --- HTTP ------------------------------------------------------------------------------

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _PATH.fullmatch(_raw_path(scope))
        if match is None:
            await _text(send, 404, "404 page not found")
            return
        name = match[1].partition(".")[0]
        if self.metrics is None or not self.backend.known(name):
            await self._call(scope, receive, send, match)
            return
        started = time.monotonic()
        self.metrics.started(name)
        status = await self._call(scope, receive, send, match)
        if status:  # not a client that left before its answer
            self.metrics.observe(name, status, time.monotonic() - started)

    async def _call(self, scope: Scope, receive: Receive, send: Send,
                    match: re.Match[str]) -> int:
        """Answer one call; the status answered."""
        started, start_ns = time.monotonic(), time.time_ns()
        raw = [(k.lower(), v) for k, v in scope["headers"]]
        call_id = _header(raw, b"x-call-id") or str(uuid.uuid4())
        internal = [_INTERNAL, ("X-Call-Id", call_id)]
        method, (name, _, namespace) = scope["method"], match[1].partition(".")
        refused = refused_exposed_method(method)
        if refused is not None:
            return await _text(send, 501, refused, [("X-Call-Id", call_id)])
        if method not in WATCHDOG_METHODS and not self.backend.exposed(name):
            return await _text(send, 405, "Method not allowed", [("X-Call-Id", call_id)])
        if namespace not in ("", DEFAULT_NAMESPACE):
            return await _text(send, 404, f"error finding function {match[1]}: not found",
                               internal)
        query = scope.get("query_string", b"").decode("latin-1")
        target = (match[2] or "/") + (f"?{query}" if query else "")
        headers = _forwarded(raw, call_id, start_ns, scope)
        chunked = "chunked" in _header(raw, b"transfer-encoding").lower()
        length = _header(raw, b"content-length")  # the server checked it is a number
        body = RequestBody(receive, int(length) if length.isdigit() and not chunked else None,
                           chunked)
        try:
            runtime, handle, resp = await self._deliver(name, method, target, headers, body)
        except ClientGone:
            return 0
        except ServiceNotFound as err:
            return await _text(send, err.status, err.message, internal)
        except OscarFaasError as err:
            extra = internal if err.status != 429 else [("X-Call-Id", call_id)]
            return await _text(send, err.status, err.message, extra + list(err.headers.items()))
        try:
            back = [(canonical_header(k.decode("latin-1")), v.decode("latin-1"))
                    for k, v in resp.raw_headers if k.lower() not in _NOT_BACK]
            back = [(k, v) for k, v in back if k not in _OURS]
            back += [("X-Duration-Seconds", f"{time.monotonic() - started:f}"),
                     ("X-Call-Id", call_id), ("X-Start-Time", str(start_ns))]
            await _answer(name, resp, back, receive, send)
            return resp.status
        finally:
            runtime.release()

    async def _deliver(self, name: str, method: str, target: str,
                       headers: list[tuple[str, str]], body: RequestBody
                       ) -> tuple[ManagedRuntime, Any, Response]:
        """Acquire the runtime and send the call (again while it cannot have been taken),
        within :data:`~..runtimes.manager.START_WAIT`.

        :raises NotFound, NotReady, RuntimeFailed: as the backend's errors say.
        """
        runtime = self.backend.runtime_for(name)
        deadline = time.monotonic() + START_WAIT
        while True:
            got = await acquire(runtime, deadline - time.monotonic()) if runtime else None
            if got is None:
                current = self.backend.runtimes.get(name)
                if current is not None and current is not runtime \
                        and time.monotonic() < deadline:
                    runtime = current  # replaced while we waited: ask the new one
                    continue
                raise not_ready(name, runtime)
            assert runtime is not None
            handle, pool = got
            self._pools.add(pool)
            try:
                return runtime, handle, await forward(pool, method, target, headers, body)
            except NotSent:
                runtime.release()
                if not await asyncio.to_thread(runtime.suspect, handle):
                    await asyncio.sleep(0.02)  # dying, not yet dead: look again shortly
                if time.monotonic() >= deadline:
                    raise not_ready(name, runtime) from None
            except ConnectionError as err:
                runtime.release()
                await asyncio.to_thread(runtime.suspect, handle)
                tail = (await asyncio.to_thread(handle.output_tail)).strip().splitlines()[-10:]
                raise RuntimeFailed(f"the runtime of {name} went away during the call "
                                    f"({err})" + ("\n" + "\n".join(tail) if tail else "")
                                    ) from None
            except BaseException:
                runtime.release()
                raise
            runtime = self.backend.runtimes.get(name)

    # --- WebSocket ---------------------------------------------------------------------------

    async def websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Bridge an upgrade to an exposed service's runtime (its server answers it); open,
        as every call: the function checks its caller."""
        match = _PATH.fullmatch(_raw_path(scope))
        if match is None:
            await deny(send, scope, 404, b"404 page not found")
            return
        name = match[1].partition(".")[0]
        runtime = self.backend.runtimes.get(name) if self.backend.known(name) else None
        got = await acquire(runtime, START_WAIT) if runtime is not None else None
        if got is None:
            await deny(send, scope, 503, f"No endpoints available for: {name}.".encode(),
                       [(b"x-openfaas-internal", b"proxy")])
            return
        assert runtime is not None
        try:
            if not self.backend.exposed(name):
                await deny(send, scope, 404, f"function {name} takes no WebSocket (only an "
                           "exposed service's server does)".encode())
                return
            query = scope.get("query_string", b"").decode("latin-1")
            pool = got[1]
            await bridge(scope, receive, send, host=pool.host, port=pool.port,
                         path=(match[2] or "/") + (f"?{query}" if query else ""),
                         headers=client_headers(scope), what=f"the runtime of {name}")
        finally:
            runtime.release()


async def _answer(name: str, resp: Response, headers: list[tuple[str, str]],
                  receive: Receive, send: Send) -> None:
    """Stream the runtime's answer to the client; a client that leaves closes the upstream
    connection (a half-read answer's connection is never reused)."""
    complete = False
    gone: asyncio.Future[None] | None = None
    try:
        await send({"type": "http.response.start", "status": resp.status,
                    "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]})
        pieces = 0
        async for chunk in resp.chunks():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            # The server drops writes to a client that left without saying so; once the
            # body is sent, watch for it past two pieces and stop reading then.
            pieces += 1
            if gone is None and pieces >= 2 and resp.body_sent:
                gone = asyncio.ensure_future(disconnected(receive))
            elif (gone is not None and gone.done()) or resp.body_failed:
                return  # the client left (while it still sent its body, in the latter)
        await send({"type": "http.response.body", "body": b""})
        complete = True
    except (ConnectionError, TimeoutError) as err:  # includes a client gone (OSError)
        log.info("function %s: the answer broke off: %s", name, err)
    finally:
        if gone is not None:
            gone.cancel()
            if gone.done() and not gone.cancelled():
                gone.exception()
        if complete:
            resp.release()
        else:
            resp.close()


def _raw_path(scope: Scope) -> str:
    raw = scope.get("raw_path")
    return raw.decode("latin-1") if raw else scope["path"]


def _header(raw: list[tuple[bytes, bytes]], name: bytes) -> str:
    return next((v.decode("latin-1") for k, v in raw if k == name), "")


def _forwarded(raw: list[tuple[bytes, bytes]], call_id: str, start_ns: int,
               scope: Scope) -> list[tuple[str, str]]:
    """The headers a function sees: the client's minus hop-by-hop ones (each value of a
    repeated one kept), plus what the OpenFaaS gateway adds (call id, start time,
    forwarded-for/host)."""
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw
               if k not in _NOT_FORWARD]
    present = {k for k, _ in raw}
    client = scope.get("client")
    extra = ((b"x-call-id", "X-Call-Id", call_id), (b"x-start-time", "X-Start-Time",
                                                     str(start_ns)),
             (b"x-forwarded-for", "X-Forwarded-For", client[0] if client else ""),
             (b"x-forwarded-host", "X-Forwarded-Host", _header(raw, b"host")))
    headers.extend((name, value) for key, name, value in extra
                   if key not in present and value)
    return headers


async def _text(send: Send, status: int, text: str,
                headers: list[tuple[str, str]] | None = None) -> int:
    """A plain-text answer of the provider's own, shaped like Go's ``http.Error`` (message
    and a newline); its status."""
    body = (text if text.endswith("\n") else text + "\n").encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"), (b"x-content-type-options", b"nosniff"),
        (b"content-length", str(len(body)).encode()),
        *((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers or ())]})
    await send({"type": "http.response.body", "body": body})
    return status
