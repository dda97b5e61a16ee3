"""Expose mode: the runtime as the keeper and reverse proxy of an exposed service's server.

An OSCAR exposed service (``expose.api_port``) is not a script per call but a long-lived HTTP
server (a DEEPaaS API, Jupyter, nginx). When ``OSCAR_EXPOSE_PORT`` is set, the runtime:

* starts the server once: the user script run by ``/bin/sh`` (``default_command: false``, as
  OSCAR runs ``/bin/sh -c script.sh``), or the image's own command from
  ``OSCAR_EXPOSE_COMMAND`` (``default_command: true``), with the function's env plus its
  ``environment.secrets``, in a session of its own, its output going line by line (prefixed
  ``server: ``) to the runtime's stderr;
* probes it every :data:`PROBE_INTERVAL` seconds: ``GET OSCAR_EXPOSE_HEALTH_PATH`` answering
  200-399 (Kubernetes' rule), or, without a health path, the port accepting a connection;
  ``GET /_/health`` is 200 only while that holds;
* restarts it when it exits, with a growing delay (1 s doubling to 30 s, back to 1 s once it
  has been healthy);
* passes every other request, whatever its method and path, to ``127.0.0.1:<port>``: the
  query string, the headers (``Host`` included) and both bodies stream through, and WebSocket
  upgrades are bridged (:mod:`oscar_faas.wsproxy`). While the server is not healthy, a request
  waits up to ``OSCAR_EXPOSE_READY_WAIT`` seconds (default 10) for it, then gets a 503 that
  names the service, the health check and the server's last output.

``/_/health`` and ``/_/status`` stay the runtime's own: the server cannot serve those paths.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..contract import (ENV_EXPOSE_COMMAND, ENV_EXPOSE_DEFAULT_COMMAND, ENV_EXPOSE_HEALTH_PATH,
                        ENV_EXPOSE_PORT, ENV_EXPOSE_READY_WAIT, HOP_BY_HOP, is_true)
from ..supervisor.config import load_script
from ..supervisor.logs import SupervisorLog
from ..supervisor.upload import secret_environment
from .settings import parse_duration
from .workers import _Tail

#: Seconds between health probes.
PROBE_INTERVAL = 0.5
#: Seconds a probe may take.
PROBE_TIMEOUT = 2.0
#: Restart delays: the first, and the cap of the doubling.
RESTART_DELAY, RESTART_DELAY_MAX = 1.0, 30.0
#: Seconds the server gets to stop after SIGTERM before SIGKILL.
STOP_GRACE = 3.0
#: Seconds to wait for a connection to the server.
CONNECT_TIMEOUT = 10.0
#: Longest wait of a request for the server to be healthy before its 503.
READY_WAIT = 10.0

_NOT_FORWARDED = frozenset(n.encode() for n in HOP_BY_HOP) | {b"content-length", b"expect"}
_NOT_RETURNED = frozenset(n.encode() for n in HOP_BY_HOP)


@dataclass(frozen=True)
class ExposeSettings:
    """The expose-mode part of the function's env (set by the gateway's translation)."""

    port: int
    health_path: str = ""
    default_command: bool = False
    #: the image's own command (``OSCAR_EXPOSE_COMMAND``, shlex-split), for default_command
    command: tuple[str, ...] = ()
    #: the service's name (from ``FUNCTION_CONFIG``), for messages
    name: str = "the exposed service"
    #: seconds a request waits for the server to be healthy (``OSCAR_EXPOSE_READY_WAIT``)
    ready_wait: float = READY_WAIT

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ExposeSettings | None:
        """``None`` when the function is not exposed.

        :raises ValueError: the port or ``OSCAR_EXPOSE_COMMAND`` is malformed.
        """
        raw = (env.get(ENV_EXPOSE_PORT) or "").strip()
        if not raw:
            return None
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise ValueError(f"{ENV_EXPOSE_PORT} must be a port from 1 to 65535, got {raw!r}")
        return cls(port=int(raw), health_path=(env.get(ENV_EXPOSE_HEALTH_PATH) or "").strip(),
                   default_command=is_true(env.get(ENV_EXPOSE_DEFAULT_COMMAND)),
                   command=tuple(shlex.split(env.get(ENV_EXPOSE_COMMAND) or "")),
                   name=_service_name(env),
                   ready_wait=parse_duration(env.get(ENV_EXPOSE_READY_WAIT)) or READY_WAIT)

    @property
    def check(self) -> str:
        """The health check in words, for messages."""
        if self.health_path:
            return f"GET {self.health_path} on port {self.port}"
        return f"a connection to port {self.port}"


def _die_with_parent():
    """A ``preexec_fn`` that makes the server get SIGKILL when the runtime dies (Linux
    ``PR_SET_PDEATHSIG``): the server runs in a session of its own, so a launcher killing the
    runtime's process group would otherwise leave it holding the port. ``None`` elsewhere."""
    try:
        import ctypes
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before the fork
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def _service_name(env: Mapping[str, str]) -> str:
    try:
        config = yaml.safe_load(base64.b64decode(env.get("FUNCTION_CONFIG") or ""))
        name = config.get("name") if isinstance(config, dict) else None
    except Exception:  # noqa: BLE001 - a name for messages only
        name = None
    return f"exposed service {name}" if isinstance(name, str) and name else \
        "the exposed service"


class ServerKeeper:
    """Starts the server, probes it, restarts it when it exits; one thread does it all."""

    def __init__(self, settings: ExposeSettings, env: Mapping[str, str], log: SupervisorLog,
                 workdir: Path) -> None:
        self.settings = settings
        self.env = dict(env)
        self.log = log
        self.workdir = workdir
        self.healthy = False
        self.restarts = 0
        #: why it is not healthy (for 503 answers)
        self.problem = "it is starting"
        self._proc: subprocess.Popen[bytes] | None = None
        self._tail: _Tail | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="expose", daemon=True)

    # --- public --------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(PROBE_TIMEOUT + STOP_GRACE + 2)
        self._kill()

    def tail(self) -> str:
        return self._tail.text() if self._tail is not None else ""

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # --- the thread ----------------------------------------------------------------------

    def _argv(self) -> list[str]:
        """:raises ValueError: nothing to run (the message says what is missing)."""
        if self.settings.default_command:
            if not self.settings.command:
                raise ValueError(
                    f"default_command is true but {ENV_EXPOSE_COMMAND} is not set: the runtime "
                    f"cannot know the image's own command (set {ENV_EXPOSE_COMMAND} to it in "
                    f"the service's environment variables, or use default_command: false and "
                    f"start the server from the script)")
            return list(self.settings.command)
        script = load_script(self.env)
        if not script:
            raise ValueError("the service has no script to start its server with")
        path = self.workdir / "expose-script.sh"
        path.write_bytes(script)
        return ["/bin/sh", str(path)]

    def _spawn(self) -> None:
        argv = self._argv()
        env = dict(self.env)
        try:
            env.update(secret_environment(self.env))
        except Exception as err:  # noqa: BLE001 - the server may not need them; say why
            self.log.error("%s", err)
        log_r, log_w = os.pipe()
        try:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_w,
                                          stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True,
                                          preexec_fn=_die_with_parent())
        except OSError as err:
            os.close(log_r)
            raise ValueError(f"cannot start {argv[0]!r}: {err.strerror or err}") from None
        finally:
            os.close(log_w)
        self._tail = _Tail(log_r, "server: ")
        self.log.info("%s: server started (pid %d): %s", self.settings.name, self._proc.pid,
                      " ".join(argv))

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        except (ProcessLookupError, PermissionError):
            proc.wait()

    def _run(self) -> None:
        try:
            self._keep()
        finally:  # from this thread: the server's death signal is tied to it
            self._kill()

    def _keep(self) -> None:
        delay = RESTART_DELAY
        while not self._stop.is_set():
            try:
                self._spawn()
            except ValueError as err:
                self.problem = str(err)
                self.log.error("%s: %s", self.settings.name, err)
                self._stop.wait(delay)
                delay = min(delay * 2, RESTART_DELAY_MAX)
                continue
            self.problem = f"its server does not answer {self.settings.check} yet"
            was_healthy = False
            while not self._stop.is_set():
                proc = self._proc
                code = proc.poll() if proc is not None else -1
                if code is not None:
                    self.healthy = False
                    try:  # what it left behind (a backgrounded server) goes with it
                        if proc is not None:
                            os.killpg(proc.pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                    self.problem = (f"its server exited with status {code}"
                                    f"{' and is being restarted' if not self._stop.is_set() else ''}")
                    self.log.error("%s: the server exited with status %s; restarting it in "
                                   "%gs", self.settings.name, code, delay)
                    break
                ok = self._probe()
                if ok != self.healthy:
                    self.log.info("%s: the server is %s", self.settings.name,
                                  "healthy" if ok else f"not healthy ({self.problem})")
                self.healthy = ok
                if ok:
                    was_healthy = True
                    delay = RESTART_DELAY
                self._stop.wait(PROBE_INTERVAL)
            self._proc = None if self._proc is not None and self._proc.poll() is not None \
                else self._proc
            if self._stop.is_set():
                return
            if was_healthy:
                delay = RESTART_DELAY
            self.restarts += 1
            self._stop.wait(delay)
            delay = min(delay * 2, RESTART_DELAY_MAX)

    def _probe(self) -> bool:
        port = self.settings.port
        if not self.settings.health_path:
            try:
                socket.create_connection(("127.0.0.1", port), PROBE_TIMEOUT).close()
            except OSError as err:
                self.problem = (f"its server does not accept connections on port {port} "
                                f"({err.strerror or err})")
                return False
            return True
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_TIMEOUT)
        try:
            conn.request("GET", self.settings.health_path, headers={"User-Agent": "oscar-probe"})
            status = conn.getresponse().status
        except (OSError, http.client.HTTPException) as err:
            self.problem = (f"its server does not answer GET {self.settings.health_path} on "
                            f"port {port} ({getattr(err, 'strerror', None) or err})")
            return False
        finally:
            conn.close()
        if not 200 <= status < 400:
            self.problem = (f"its server answers GET {self.settings.health_path} on port "
                            f"{port} with {status}")
            return False
        return True


class ExposeApp:
    """The ASGI app of a runtime in expose mode."""

    def __init__(self, settings: ExposeSettings, env: Mapping[str, str], log: SupervisorLog,
                 workdir: Path) -> None:
        from ..upstream import Upstream

        self.settings = settings
        self.log = log
        self.keeper = ServerKeeper(settings, env, log, workdir)
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
            await _plain(send, 200 if ok else 503,
                         b"OK\n" if ok else self.not_ready_message().encode(), started)
            return
        if path == "/_/status":
            import json
            doc = {"ready": self.ready, "mode": "expose", "port": self.settings.port,
                   "health_check": self.settings.check, "restarts": self.keeper.restarts,
                   "server_pid": self.keeper.pid, "problem": None if self.ready
                   else self.keeper.problem}
            await _plain(send, 200, json.dumps(doc).encode() + b"\n", started,
                         b"application/json")
            return
        if not await self._wait_ready():
            await _plain(send, 503, self.not_ready_message().encode(), started)
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
            await _plain(send, 502, f"{self.settings.name}: its server did not answer: "
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


async def _plain(send: Any, status: int, body: bytes, started: float,
                 content_type: bytes = b"text/plain; charset=utf-8") -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", content_type), (b"content-length", str(len(body)).encode()),
        (b"x-duration-seconds", f"{time.monotonic() - started:f}".encode())]})
    await send({"type": "http.response.body", "body": body})
