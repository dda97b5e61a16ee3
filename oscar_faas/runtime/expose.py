"""Expose mode: the runtime as the keeper and reverse proxy of an exposed service's server.

An OSCAR exposed service (``expose.api_port``) is not a script per call but a long-lived HTTP
server (a DEEPaaS API, Jupyter, nginx). When ``OSCAR_EXPOSE_PORT`` is set, the runtime:

* starts the server once: the user script run by ``/bin/sh`` (``default_command: false``, as
  OSCAR runs ``/bin/sh -c script.sh``), or the image's own command from
  ``OSCAR_EXPOSE_COMMAND`` (``default_command: true``), with the function's env plus its
  ``environment.secrets``, in a process group of its own (dying with the runtime:
  :mod:`.guardian`), its output going line by line (prefixed ``server: ``) to the
  runtime's stderr;
* probes it every :data:`~.server_keeper.PROBE_INTERVAL` seconds: ``GET
  OSCAR_EXPOSE_HEALTH_PATH`` answering 200-399 (Kubernetes' rule), or, without a health path,
  the port accepting a connection;
  ``GET /_/health`` is 200 only while that holds;
* restarts it when it exits, with a growing delay (1 s doubling to 30 s, back to 1 s once it
  has been healthy);
* passes every other request, whatever its method (but ``CONNECT``, a 501) and path, to
  ``127.0.0.1:<port>``: the query string, the headers (``Host`` included) and both bodies
  stream through, and WebSocket upgrades are bridged (:mod:`oscar_faas.wsproxy`). While the server is not healthy, a request
  waits up to ``OSCAR_EXPOSE_READY_WAIT`` seconds (default 10) for it, then gets a 503 that
  names the service, the health check and the server's last output.

``/_/health`` and ``/_/status`` stay the runtime's own: the server cannot serve those paths.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Mapping

from ..contract import HOP_BY_HOP_BYTES, refused_exposed_method
from ..supervisor.logs import SupervisorLog
from .asgi_io import plain
from .caller import CallerCheck, authorization_of, refuse_stranger
from .expose_settings import ExposeSettings
from .server_keeper import ServerKeeper

#: Seconds to wait for a connection to the server.
CONNECT_TIMEOUT = 10.0

_NOT_FORWARDED = HOP_BY_HOP_BYTES | {b"content-length", b"expect"}
_NOT_RETURNED = HOP_BY_HOP_BYTES


class ExposeApp:
    """The ASGI app of a runtime in expose mode."""

    def __init__(self, settings: ExposeSettings, env: Mapping[str, str], log: SupervisorLog,
                 workdir: Path) -> None:
        from ..upstream import Upstream

        self.settings = settings
        self.log = log
        self.keeper = ServerKeeper(settings, env, log, workdir)
        #: set_auth as OSCAR applies it, here too (:mod:`.caller`)
        self.caller = CallerCheck(env, exposed=True)
        self.upstream = Upstream("127.0.0.1", settings.port, CONNECT_TIMEOUT, None)

    def start(self) -> None:
        self.keeper.start()

    def close(self) -> None:
        self.keeper.close()
        self.upstream.close()

    @property
    def ready(self) -> bool:
        return self.keeper.healthy

    def not_ready_message(self) -> str:
        text = (f"{self.settings.name} is not ready: {self.keeper.problem} (health check: "
                f"{self.settings.check})\n")
        tail = self.keeper.tail().strip()
        if tail:
            text += "its server's last output:\n" + tail[-2000:] + "\n"
        return text

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        started = time.monotonic()
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/_/health":
            ok = self.ready
            await plain(send, 200 if ok else 503,
                        b"OK\n" if ok else self.not_ready_message().encode(), started)
            return
        if path == "/_/status":
            import json
            doc = {"ready": self.ready, "mode": "expose", "port": self.settings.port,
                   "health_check": self.settings.check, "restarts": self.keeper.restarts,
                   "server_pid": self.keeper.pid, "problem": None if self.ready
                   else self.keeper.problem}
            await plain(send, 200, json.dumps(doc).encode() + b"\n", started,
                        b"application/json")
            return
        if not await refuse_stranger(self.caller, scope, send, started, self.log):
            return
        refused = refused_exposed_method(scope["method"])
        if refused:
            await plain(send, 501, f"{refused}\n".encode(), started)
            return
        if not await self._wait_ready():
            await plain(send, 503, self.not_ready_message().encode(), started)
            return
        await self._proxy(scope, receive, send, started)

    async def _wait_ready(self) -> bool:
        """Whether the server is healthy, waiting up to ``ready_wait`` seconds for it
        (a request right after a deploy or a restart waits, as calls queue for a warm
        worker; a server that stays unhealthy gets the 503 after that bound)."""
        deadline = time.monotonic() + self.settings.ready_wait
        while not self.ready:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def _websocket(self, scope: Any, receive: Any, send: Any) -> None:
        from ..wsproxy import bridge, client_headers, deny

        try:
            allowed = self.caller.allows(authorization_of(scope["headers"]))
        except PermissionError as err:
            await receive()  # websocket.connect
            await deny(send, scope, 503, f"{err}\n".encode())
            return
        if not allowed:
            await receive()  # websocket.connect
            await deny(send, scope, 401, self.caller.denied,
                       [(b"www-authenticate", self.caller.realm)])
            return
        if not await self._wait_ready():
            await receive()  # websocket.connect
            await deny(send, scope, 503, self.not_ready_message().encode())
            return
        await bridge(scope, receive, send, host="127.0.0.1", port=self.settings.port,
                     path=_target(scope), headers=client_headers(scope),
                     what=f"the server of {self.settings.name}")

    async def _proxy(self, scope: Any, receive: Any, send: Any, started: float) -> None:
        headers: dict[str, str] = {}
        length: int | None = None
        chunked = False
        for key, value in scope["headers"]:
            if key == b"content-length":
                length = int(value) if value.isdigit() else None
            if key == b"transfer-encoding":
                chunked = True
            if key in _NOT_FORWARDED:
                continue
            name, text = key.decode("latin-1"), value.decode("latin-1")
            headers[name] = f"{headers[name]}, {text}" if name in headers else text
        method = scope["method"]
        body: Any = b""
        if length or chunked:
            body = _body(receive)
        try:
            resp = await self.upstream.request(method, _target(scope), headers, body,
                                               length if length else None)
        except (ConnectionError, TimeoutError) as err:
            self.log.warning("%s: %s", self.settings.name, err)
            await plain(send, 502, f"{self.settings.name}: its server did not answer: "
                                   f"{err}\n".encode(), started)
            return
        out = [(k.lower(), v) for k, v in resp.raw_headers if k.lower() not in _NOT_RETURNED]
        out.append((b"x-duration-seconds", f"{time.monotonic() - started:f}".encode()))
        complete = False
        try:
            await send({"type": "http.response.start", "status": resp.status, "headers": out})
            if method != "HEAD":
                async for chunk in resp.chunks():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            complete = method != "HEAD"
        except (ConnectionError, TimeoutError) as err:
            self.log.warning("%s: the answer broke off: %s", self.settings.name, err)
        finally:
            if complete:
                resp.release()
            else:
                resp.close()


def _target(scope: Any) -> str:
    """The request's path (as sent, percent-encoding kept) and query."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else scope["path"]
    query = scope.get("query_string") or b""
    return path + ("?" + query.decode("latin-1") if query else "")


async def _body(receive: Any):
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("the client closed the connection before the body ended")
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return
