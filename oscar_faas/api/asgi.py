"""The ASGI front of the gateway: one fast route, then Flask for everything else.

Flask serves the OSCAR API, where a request costs little next to what it does (a deploy, a
listing). ``POST /run/<name>`` is different: its own work is forwarding bytes, so the
server's per-request cost is the overhead users see. The front therefore answers ``/run`` on
the event loop (:class:`~.run.RunEndpoint`) and hands every other request to the Flask app
through ``a2wsgi``'s thread pool, which keeps the management API plain synchronous Flask.
"""

from __future__ import annotations

from typing import Any, Callable

from a2wsgi import WSGIMiddleware
from flask import Flask

from ..asgibody import lifespan
from ..invoker import FunctionInvoker
from ..metrics import run_metrics
from .context import EXTENSION
from .exposed import ExposedEndpoint, match as match_exposed
from .logstream import LogFollower, match as match_follow
from .run import Receive, RunEndpoint, Scope, Send
from .usage import USAGE

RUN_PREFIX = "/run/"


def _terminated_input(app: Callable[..., Any]) -> Callable[..., Any]:
    """Tell werkzeug that a body without Content-Length ends where the stream ends (a2wsgi's
    input does; without the flag werkzeug reads a chunked body as empty)."""
    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        environ.setdefault("wsgi.input_terminated", True)
        return app(environ, start_response)
    return wsgi


def prefers_async(headers: list[tuple[bytes, bytes]]) -> bool:
    """``Prefer: respond-async`` (RFC 7240) among the request's headers."""
    return any(key == b"prefer" and b"respond-async" in value.lower()
               for key, value in headers)


class GatewayASGI:
    """Routes ``POST /run/<name>`` to the fast path, exposed services' paths (HTTP and
    WebSocket) to their proxy (:mod:`.exposed`), followed log streams to
    :mod:`.logstream`, and the rest to Flask."""

    def __init__(self, flask_app: Flask, threads: int = 32) -> None:
        self.flask_app = flask_app
        gateway = flask_app.extensions[EXTENSION]
        self.invoker = FunctionInvoker(gateway.settings)
        self.run = RunEndpoint(gateway, self.invoker)
        self.exposed = ExposedEndpoint(gateway, self.invoker)
        self.metrics = self.invoker.metrics = self.run.metrics = run_metrics()
        self.metrics.usage = flask_app.extensions[USAGE]
        self.metrics.basic_user = gateway.settings.oscar_username
        self.follower = LogFollower(gateway)
        self._cache = gateway.registry.cache
        self.wsgi = WSGIMiddleware(_terminated_input(flask_app), workers=threads)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if scope["method"] == "POST" and path.startswith(RUN_PREFIX):
                name = path[len(RUN_PREFIX):]
                if name and "/" not in name:
                    if prefers_async(scope["headers"]):  # a job: Flask's /job queues it
                        path = f"/job/{name}"
                        scope = dict(scope, path=path, raw_path=path.encode())
                    else:
                        await self.metrics.track(self.run, scope, receive, send, name,
                                                 self._known)
                        return
            exposed = match_exposed(scope)
            if exposed is not None:
                await self.metrics.track_exposed(self.exposed, scope, receive, send,
                                                 exposed, self._known)
                return
            followed = match_follow(scope)
            if followed is not None:
                await self.follower(scope, receive, send, followed)
                return
            await self.wsgi(scope, receive, send)
        elif scope["type"] == "websocket":
            exposed = match_exposed(scope)
            if exposed is not None:
                self.metrics.count_exposed(exposed[0], self._known)
                await self.exposed.websocket(scope, receive, send, *exposed)
            # anything else: returning without accepting makes the server answer 403
        elif scope["type"] == "lifespan":
            await lifespan(receive, send, self._shutdown)

    def _known(self, name: str) -> bool:
        return self._cache.get(name) is not None

    async def _shutdown(self) -> None:
        await self.invoker.close()  # return the pooled connections cleanly
        self.follower.close()
        self.metrics.usage.close()  # the last counts to the file
