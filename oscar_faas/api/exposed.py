"""``/system/services/<name>/exposed/<path>``: an exposed service's own server, proxied.

An exposed service (``expose.api_port``) is a function whose runtime keeps the service's
server running and proxies to it (``oscar_faas/runtime/expose.py``), so the gateway only has
to pass requests to OpenFaaS ``/function/<name>/<path>``, like OSCAR's ingress passes them
to the service's pods. Served on the event loop, as ``/run`` is, because answers may be long
streams and WebSockets live for hours.

* **Paths** follow OSCAR's ingress (``pkg/backends/resources/expose.go``): by default the
  ``/system/services/<name>/exposed`` prefix is stripped (``.../exposed/a/b?q`` reaches the
  server as ``/a/b?q``); with ``rewrite_target: true`` the server gets the full path (for
  servers that know their base path, e.g. Jupyter's ``base_url``; the runtime also gives
  them ``OSCAR_SERVICE_BASE_PATH``). ``X-Forwarded-Prefix`` tells a server with stripped paths
  where it is mounted.
* **Auth**: none, as OSCAR, unless ``set_auth: true``: then Basic credentials, user = the
  service name, password = the service token; anything else is a 401. The client's
  ``Authorization``, cookies and every other end-to-end header reach the server.
* **Bodies** stream both ways. Right after a deploy OpenFaaS answers 503 until the server is
  healthy: a request whose body is small enough to re-send is retried within
  ``RUN_READY_WAIT`` seconds, then answered 503 with a message naming the service and its
  health check.
* **WebSockets** are bridged to OpenFaaS (:mod:`oscar_faas.wsproxy`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import Any

from ..auth import REALM
from ..contract import (HOP_BY_HOP_BYTES, basic_credentials, exposed_prefix,
                        refused_exposed_method)
from ..errors import (OscarFaasError, ServiceNotFound, Unauthorized, UpstreamNotReady,
                      UpstreamTimeout, UpstreamUnreachable)
from ..invoker import FunctionInvoker, _is_not_ready
from ..model import Service
from ..openfaas import system_tls_context
from .context import Gateway
from .run import (ClientGone, Receive, RequestBody, Scope, Send, backward_headers,
                  error_response)

log = logging.getLogger(__name__)

SERVICES_PREFIX = "/system/services/"
#: Request headers never passed on (hop-by-hop and framing, which the proxy redoes).
_NOT_FORWARDED = HOP_BY_HOP_BYTES | {b"content-length", b"expect"}


def match(scope: Scope) -> tuple[str, str] | None:
    """``(name, rest)`` for ``/system/services/<name>/exposed<rest>`` (``rest`` is empty or
    starts with ``/``, percent-encoding kept), else ``None``."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else scope["path"]
    if not path.startswith(SERVICES_PREFIX):
        return None
    name, sep, rest = path[len(SERVICES_PREFIX):].partition("/")
    if not sep or not name or not (rest == "exposed" or rest.startswith("exposed/")):
        return None
    return name, rest[len("exposed"):]


def server_path(service: Service, rest: str) -> str:
    """The path the server sees (OSCAR's ingress rewrite): ``rest`` without the prefix, or
    the full public path with ``rewrite_target``."""
    if service.expose["rewrite_target"]:
        return exposed_prefix(service.name) + (rest or "/")
    return rest or "/"


class Unexposed(OscarFaasError):
    status = 404


class ExposedEndpoint:
    """Serves ``/system/services/<name>/exposed[/...]``: HTTP and WebSocket."""

    def __init__(self, gateway: Gateway, invoker: FunctionInvoker) -> None:
        self.gateway = gateway
        self.invoker = invoker

    async def _service(self, name: str, authorization: str | None) -> Service:
        gw = self.gateway
        service = gw.registry.cache.get(name)
        if service is None:
            try:
                service = await asyncio.get_running_loop().run_in_executor(
                    None, gw.registry.get, name)
            except ServiceNotFound:
                raise ServiceNotFound(f"service {name} not found") from None
        if not service.exposed:
            raise Unexposed(f"service {name} is not exposed (it has no expose.api_port): "
                            f"invoke it with POST /run/{name}")
        if service.expose["set_auth"]:
            creds = basic_credentials(authorization)
            ok = creds is not None and all([
                hmac.compare_digest(creds[0].encode(), service.name.encode()),
                hmac.compare_digest(creds[1].encode(), service.token.encode())])
            if not ok:
                raise Unauthorized(
                    f"exposed service {name} needs Basic credentials: user {name}, password "
                    f"the service's token (the 'token' field of GET /system/services/{name})")
        return service

    def _headers(self, scope: Scope, service: Service) -> tuple[str | None, int | None,
                                                                 bool, dict[str, str]]:
        authorization = length = None
        chunked = False
        forward: dict[str, str] = {}
        for key, value in scope["headers"]:
            if key == b"authorization":
                authorization = value.decode("latin-1")
            elif key == b"content-length":
                length = int(value) if value.isdigit() else None
            elif key == b"transfer-encoding":
                chunked = True
            if key in _NOT_FORWARDED:
                continue
            name, text = key.decode("latin-1"), value.decode("latin-1")
            forward[name] = f"{forward[name]}, {text}" if name in forward else text
        client = scope.get("client")
        if client:
            prior = forward.get("x-forwarded-for")
            forward["x-forwarded-for"] = f"{prior}, {client[0]}" if prior else client[0]
        forward.setdefault("x-forwarded-proto", scope.get("scheme", "http").replace("ws", "http"))
        if "host" in forward:
            forward.setdefault("x-forwarded-host", forward["host"])
        if not service.expose["rewrite_target"]:
            forward["x-forwarded-prefix"] = exposed_prefix(service.name)
        return authorization, length, chunked, forward

    def _target(self, scope: Scope, service: Service, rest: str) -> str:
        query = scope.get("query_string") or b""
        return (f"{self.invoker._prefix}/function/{service.name}{server_path(service, rest)}"
                + ("?" + query.decode("latin-1") if query else ""))

    # ---------------------------------------------------------------- HTTP

    async def __call__(self, scope: Scope, receive: Receive, send: Send, name: str,
                       rest: str) -> None:
        try:
            resp = await self._start(scope, receive, name, rest)
        except OscarFaasError as err:
            await error_response(send, err)
            return
        except ClientGone:
            return
        complete = False
        try:
            await send({"type": "http.response.start", "status": resp.status,
                        "headers": backward_headers(resp.raw_headers)})
            if scope["method"] != "HEAD":
                async for chunk in resp.chunks():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            complete = scope["method"] != "HEAD"
        except (ConnectionError, TimeoutError) as err:
            log.warning("exposed %s: the answer broke off: %s", name, err)
        finally:
            if complete:
                resp.release()
            else:
                resp.close()

    async def _start(self, scope: Scope, receive: Receive, name: str, rest: str):
        gw = self.gateway
        authorization = next((v.decode("latin-1") for k, v in scope["headers"]
                              if k == b"authorization"), None)
        service = await self._service(name, authorization)
        refused = refused_exposed_method(scope["method"])
        if refused:
            raise OscarFaasError(refused, status=501)
        _, length, chunked, headers = self._headers(scope, service)
        body: Any = b""
        if length or chunked:
            body = await RequestBody(receive, gw.settings.max_body_size).read(length)
        target = self._target(scope, service, rest)
        method = scope["method"]
        replayable = isinstance(body, (bytes, bytearray))
        deadline = time.monotonic() + gw.settings.run_ready_wait
        delay = 0.05
        while True:
            try:
                resp = await self.invoker.upstream.request(method, target, headers, body,
                                                           length if not replayable else None)
            except TimeoutError:
                raise UpstreamTimeout(f"exposed service {name} did not answer within "
                                      f"{gw.settings.run_timeout:g} s (RUN_TIMEOUT)") from None
            except ConnectionError:
                raise UpstreamUnreachable(
                    f"cannot reach OpenFaaS at {self.invoker.base_url} for exposed service "
                    f"{name}: is the gateway running and OPENFAAS_URL right?") from None
            if resp.status not in (502, 503) or not _is_not_ready(resp):
                return resp
            detail = (await resp.read()).decode("utf-8", "replace").strip()
            resp.close()
            if resp.header(b"Retry-After") is not None:  # its runtime cannot start: say why
                raise UpstreamNotReady(f"exposed service {name} is not ready: {detail}")
            if not replayable or time.monotonic() >= deadline:
                raise UpstreamNotReady(self._not_ready(service, detail))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _not_ready(self, service: Service, detail: str) -> str:
        health = service.expose["health_path"]
        check = (f"GET {health} on port {service.expose_port}" if health
                 else f"a connection to port {service.expose_port}")
        return (f"exposed service {service.name} is not ready after "
                f"{self.gateway.settings.run_ready_wait:g} s (RUN_READY_WAIT): its server does "
                f"not pass its health check ({check}); check the service's logs"
                + (f" (OpenFaaS said: {detail})" if detail else ""))

    # ---------------------------------------------------------------- WebSocket

    async def websocket(self, scope: Scope, receive: Receive, send: Send, name: str,
                        rest: str) -> None:
        from ..wsproxy import bridge, client_headers, deny

        authorization = next((v.decode("latin-1") for k, v in scope["headers"]
                              if k == b"authorization"), None)
        try:
            service = await self._service(name, authorization)
        except OscarFaasError as err:
            await receive()  # websocket.connect
            extra = [(b"www-authenticate", REALM.encode())] \
                if isinstance(err, Unauthorized) else []
            status = 404 if isinstance(err, ServiceNotFound) else err.status
            await deny(send, scope, status, f"{err.message}\n".encode(), extra)
            return
        _, _, _, forwarded = self._headers(scope, service)
        drop = {k for k in forwarded} - {k.decode("latin-1") for k, _ in scope["headers"]}
        headers = client_headers(scope) + [(k, forwarded[k]) for k in sorted(drop)]
        up = self.invoker.upstream
        await bridge(scope, receive, send, host=up.host, port=up.port,
                     path=self._target(scope, service, rest), headers=headers,
                     ssl=system_tls_context() if up.ssl is not None else None,
                     what=f"exposed service {name}")
