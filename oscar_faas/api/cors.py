"""CORS for browser clients hosted on another origin (the OSCAR dashboard, mostly).

An ASGI middleware in front of the whole gateway, so every route gets the same treatment,
``/run`` included, and a preflight never reaches authentication: a browser sends its
``OPTIONS`` preflight without the ``Authorization`` header, and a 401 there makes the real
call impossible.

Safe by construction: ``Access-Control-Allow-Credentials`` is never sent, so a browser never
attaches cookies or cached Basic credentials to a cross-origin call; a page can only use the
credentials its own code puts in ``Authorization`` (which is what the dashboard does). Origins
are matched exactly against a list (``*`` allows any); a request from another origin gets no
CORS header at all, and the browser keeps the answer from the page.
"""

from __future__ import annotations

from typing import Any, Iterable

from .run import Receive, Scope, Send

ALLOW_METHODS = b"GET, POST, PUT, DELETE, OPTIONS"
#: Headers a page may read from an answer besides the CORS-safelisted ones.
EXPOSE_HEADERS = (b"X-Duration-Seconds, Server-Timing, X-Call-Id, X-Start-Time, X-Oscar-Job-Name, "
                  b"Location")
#: Headers a page may send when a preflight does not list them (it normally does).
DEFAULT_ALLOW_HEADERS = b"Authorization, Content-Type, Accept"
MAX_AGE = b"600"


class CORSMiddleware:
    """Wraps an ASGI app; answers preflights itself and adds CORS headers to answers."""

    def __init__(self, app: Any, origins: Iterable[str]) -> None:
        self.app = app
        allowed = tuple(origins)
        self.any_origin = "*" in allowed
        self.origins = frozenset(o.encode("latin-1") for o in allowed if o != "*")

    def __getattr__(self, name: str) -> Any:  # the wrapped app's attributes (run, invoker)
        return getattr(self.app, name)

    def allowed(self, origin: bytes) -> bool:
        return self.any_origin or origin in self.origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = request_method = request_headers = None
        for key, value in scope["headers"]:
            if key == b"origin":
                origin = value
            elif key == b"access-control-request-method":
                request_method = value
            elif key == b"access-control-request-headers":
                request_headers = value
        if origin is None:  # not a cross-origin browser call: nothing to add
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and request_method is not None:
            await self._preflight(send, origin, request_headers)
            return
        if not self.allowed(origin):
            await self.app(scope, receive, send)
            return
        extra = [(b"access-control-allow-origin", b"*" if self.any_origin else origin),
                 (b"access-control-expose-headers", EXPOSE_HEADERS),
                 (b"timing-allow-origin", b"*" if self.any_origin else origin),
                 (b"vary", b"Origin")]

        async def send_with_cors(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(self, send: Send, origin: bytes, request_headers: bytes | None
                         ) -> None:
        """204 for every preflight, before any authentication; the CORS headers only when
        the origin is allowed (otherwise the browser stops there)."""
        headers = [(b"vary", b"Origin"), (b"content-length", b"0")]
        if self.allowed(origin):
            headers += [
                (b"access-control-allow-origin", b"*" if self.any_origin else origin),
                (b"access-control-allow-methods", ALLOW_METHODS),
                (b"access-control-allow-headers", request_headers or DEFAULT_ALLOW_HEADERS),
                (b"access-control-max-age", MAX_AGE),
            ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
