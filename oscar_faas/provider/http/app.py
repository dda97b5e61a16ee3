"""The provider's ASGI app: what reaches it goes to the function proxy or a route.

``/function/*`` (any method, and WebSocket upgrades) goes straight to
:class:`~.function_proxy.FunctionProxy`, on the event loop: a call's path stays asynchronous
end to end. Everything else is the REST API (:mod:`.routes`): Basic auth on ``/system/*``
(constant time), ``/metrics``, 404/405, and the package's errors turned into their status
codes. Routes block (the data dir, runtimes, locks), so each runs in a thread of
:attr:`ProviderApp.threads`, never on the loop; a streamed answer (``/system/logs`` with
``follow``) is read from a thread of its own pool, so followers cannot starve the routes.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

from ...asgibody import lifespan
from ...errors import OscarFaasError
from ...wsproxy import Receive, Scope, Send
from .function_proxy import FunctionProxy
from .messages import Request, RequestBody, Response, text_response
from .routes import ON_LOOP, Handler, check_basic_auth, find, guarded

log = logging.getLogger("oscar_faas.provider")
access_log = logging.getLogger("oscar_faas.provider.access")

#: Routes running at once (each a blocking call: a deploy may wait for a runtime to start).
ROUTE_THREADS = 32
#: Streamed answers read at once (a ``follow`` of the logs lasts as long as its client).
STREAM_THREADS = 256


class ProviderApp:
    """Dispatch, auth and error mapping around a backend."""

    def __init__(self, backend: Any, username: str | None = None,
                 password: str | None = None, metrics: Any = None) -> None:
        self.backend = backend
        self.credentials = (username, password) if username and password else None
        #: :class:`~oscar_faas.metrics.ProviderMetrics`, or None (no ``/metrics``)
        self.metrics = metrics
        self.proxy = FunctionProxy(backend, metrics)
        self.threads = ThreadPoolExecutor(ROUTE_THREADS, thread_name_prefix="route")
        self.stream_threads = ThreadPoolExecutor(STREAM_THREADS, thread_name_prefix="stream")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and access_log.isEnabledFor(logging.INFO):
            send = _logged(scope, send)
        if scope.get("path", "").startswith("/function/"):
            if kind == "http":
                await self.proxy.http(scope, receive, send)
            elif kind == "websocket":
                await self.proxy.websocket(scope, receive, send)
            return
        if kind == "websocket":  # nothing else upgrades: refused (403)
            await send({"type": "websocket.close", "code": 1008})
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await lifespan(receive, send, self.aclose)

    async def aclose(self) -> None:
        """Stop the proxy's connections and the threads (a route still running ends alone)."""
        await self.proxy.aclose()
        self.threads.shutdown(wait=False, cancel_futures=True)
        self.stream_threads.shutdown(wait=False, cancel_futures=True)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        raw = scope.get("raw_path")
        path = raw.decode("latin-1") if raw else scope["path"]
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        client = scope.get("client")
        req = Request(method=scope["method"], path=path,
                      query=scope.get("query_string", b"").decode("latin-1"), headers=headers,
                      body=RequestBody(receive, loop),
                      client=client[0] if client else "")
        if req.method == "GET" and path == "/metrics" and self.metrics is not None:
            resp = await loop.run_in_executor(self.threads, self._exposition)
        elif self.credentials and guarded(path) and not check_basic_auth(
                req.header("Authorization"), *self.credentials):
            resp = text_response("invalid credentials", 401,
                                 {"WWW-Authenticate": 'Basic realm="Restricted"'})
        else:
            handler, req.params, status = find(req.method, path)
            if handler is None:
                resp = text_response("Method Not Allowed" if status == 405
                                     else "404 page not found", status)
            else:
                got = (self._run(handler, req) if handler in ON_LOOP
                       else await loop.run_in_executor(self.threads, self._run, handler, req))
                if got is None:
                    return  # the client left during its body: nobody to answer
                resp = got
        await self._send(req, resp, receive, send)

    def _exposition(self) -> Response:
        body, content_type = self.metrics.exposition()
        return Response(200, body, {"Content-Type": content_type})

    def _run(self, handler: Handler, req: Request) -> Response | None:
        """One route, in a thread; never raises for expected errors."""
        try:
            return handler(self.backend, req)
        except OscarFaasError as err:
            return text_response(err.message, err.status, err.headers)
        except ConnectionError as err:
            log.info("client %s disconnected during %s %s: %s", req.client, req.method,
                     req.path, err)
            return None
        except Exception:  # noqa: BLE001 - a bug answers 500 and leaves its traceback
            log.exception("unhandled error on %s %s", req.method, req.path)
            return text_response("internal error", 500)

    async def _send(self, req: Request, resp: Response, receive: Receive, send: Send) -> None:
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers.items()]
        if resp.close_connection:
            headers.append((b"Connection", b"close"))
        if resp.stream is None:
            headers.append((b"Content-Length", str(len(resp.body)).encode()))
        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        if resp.stream is None:
            await send({"type": "http.response.body", "body": resp.body})
            return
        await self._stream(iter(resp.stream), receive, send)

    async def _stream(self, pieces: Iterator[bytes], receive: Receive, send: Send) -> None:
        """Each piece as it comes (chunked), until the stream ends or the client leaves."""
        loop = asyncio.get_running_loop()
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.ensure_future(watch())
        try:
            while not gone.is_set():
                piece = await loop.run_in_executor(self.stream_threads, next, pieces, None)
                if piece is None:
                    await send({"type": "http.response.body", "body": b""})
                    return
                if piece:
                    await send({"type": "http.response.body", "body": piece,
                                "more_body": True})
        finally:
            watcher.cancel()
            close = getattr(pieces, "close", None)
            if close is not None:
                try:
                    await loop.run_in_executor(self.stream_threads, close)
                except (ValueError, RuntimeError):  # still running: it ends at its next piece
                    pass


def _logged(scope: Scope, send: Send) -> Send:
    """``send``, writing the access line (client, method, path, status) as the answer starts."""
    async def logged(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            client = scope.get("client")
            access_log.info('%s "%s %s" %d', client[0] if client else "-", scope["method"],
                            scope["path"], message["status"])
        await send(message)
    return logged
