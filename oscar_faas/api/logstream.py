"""``GET /system/services/<name>/logs?follow=true`` on the event loop.

A followed log stream may stay quiet for minutes. Served by Flask it held one of the
worker's WSGI threads for its whole life and never noticed the client leave (the server
drops writes to a closed connection without telling the app), so 32 abandoned
``oscar-faas logs --follow`` locked every management call out for minutes (issue 23.1).
Here a stream costs a task and a socket: it relays the provider's NDJSON chunks as they
come, and ends as soon as the client disconnects (a task waits for ``http.disconnect``),
closing the upstream stream too. At most ``MAX_LOG_FOLLOWERS`` (default 256) run at once
per worker; one more is a 429 that says so. Logs read without ``follow`` stay in Flask.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from ..auth import is_admin
from ..errors import OscarFaasError, Unauthorized, UpstreamError
from ..openfaas import system_tls_context
from ..upstream import Upstream
from .context import Gateway
from .run import Receive, Scope, Send, _disconnect, error_response

PREFIX = "/system/services/"
SUFFIX = "/logs"


def wants_follow(value: str | None) -> bool:
    """The ``follow`` query as the logs route reads it (Go's ``strconv.ParseBool`` trues)."""
    return (value or "").strip().lower() in ("1", "t", "true")


class TooManyFollowers(OscarFaasError):
    status = 429


def match(scope: Scope) -> str | None:
    """The service name of a ``GET /system/services/<name>/logs?follow=true``, else None."""
    path: str = scope["path"]
    if scope["method"] != "GET" or not path.startswith(PREFIX) or not path.endswith(SUFFIX):
        return None
    name = path[len(PREFIX):-len(SUFFIX)]
    if not name or "/" in name:
        return None
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return name if wants_follow((query.get("follow") or [""])[-1]) else None


class LogFollower:
    """Serves followed log streams for one worker (one event loop)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.limit = gateway.settings.max_log_followers
        self.active = 0
        settings = gateway.settings
        parts = urlsplit(settings.openfaas_url or "")
        tls = parts.scheme == "https"
        self._prefix = parts.path.rstrip("/")
        self._timeout = settings.openfaas_timeout
        # no read timeout: a quiet stream is fine, the client leaving ends it
        self.upstream = Upstream(parts.hostname or "127.0.0.1",
                                 parts.port or (443 if tls else 80), settings.openfaas_timeout,
                                 None, ssl=system_tls_context() if tls else None)
        self._auth = {"Authorization": "Basic " + base64.b64encode(
            f"{settings.openfaas_username}:{settings.openfaas_password or ''}".encode()
        ).decode()} if settings.openfaas_username else {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send, name: str) -> None:
        try:
            path = await self._check(scope, name)
        except OscarFaasError as err:
            await error_response(send, err)
            return
        self.active += 1
        try:
            await self._relay(path, receive, send, name)
        finally:
            self.active -= 1

    async def _check(self, scope: Scope, name: str) -> str:
        """Auth, arguments, the cap and the service; the provider path to ask."""
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        gw = self.gateway
        if not is_admin(authorization, gw.settings):
            raise Unauthorized("")
        query = {k: v[-1] for k, v in
                 parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        tail = query.get("tail", "")
        if tail and not tail.lstrip("-").isdigit():
            raise OscarFaasError("tail must be a whole number", status=422)
        if self.active >= self.limit:
            raise TooManyFollowers(
                f"too many log streams followed at once (at most {self.limit} per gateway "
                f"worker): stop one, or read without follow")
        if gw.registry.cache.get(name) is None:  # 404 for an unknown service
            await asyncio.get_running_loop().run_in_executor(None, gw.registry.get, name)
        params = {"name": name, "follow": "true"}
        if query.get("since"):
            params["since"] = query["since"]
        if tail and int(tail):
            params["tail"] = tail
        return f"{self._prefix}/system/logs?{urlencode(params)}"

    async def _relay(self, path: str, receive: Receive, send: Send, name: str) -> None:
        try:
            resp = await asyncio.wait_for(self.upstream.request("GET", path, self._auth),
                                          self._timeout)
        except (OSError, asyncio.TimeoutError):
            await error_response(send, UpstreamError(
                f"cannot reach OpenFaaS at {self.gateway.settings.openfaas_url} for the logs "
                f"of {name}"))
            return
        if resp.status != 200:
            body = (await resp.read())[:1000].decode("utf-8", "replace").strip()
            resp.close()
            status = 501 if resp.status == 501 else 502
            await error_response(send, OscarFaasError(
                f"OpenFaaS answered {resp.status} for the logs of {name}: {body}",
                status=status))
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/x-ndjson")]})
        relay = asyncio.ensure_future(self._pump(resp, send))
        gone = asyncio.ensure_future(_disconnect(receive))
        try:
            await asyncio.wait((relay, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (relay, gone):
                task.cancel()
            for task in (relay, gone):
                with contextlib.suppress(BaseException):
                    await task
            resp.close()
        if relay.done() and not relay.cancelled() and relay.exception() is None:
            await send({"type": "http.response.body", "body": b""})

    @staticmethod
    async def _pump(resp: Any, send: Send) -> None:
        async for chunk in resp.chunks():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

    def close(self) -> None:
        self.upstream.close()
