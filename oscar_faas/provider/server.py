"""The provider's HTTP server: ``http.server.ThreadingHTTPServer`` with HTTP/1.1 keep-alive.

Why not Flask under werkzeug or gunicorn: the provider must keep all state in one process
(gunicorn workers would each get a copy), must be startable in a thread by ``oscar-faas serve``
(gunicorn's arbiter wants the main thread and forks), must stream chunked request bodies with
no Content-Length (as oscar-cli sends them) straight into a child's stdin, and must add little
per call. A thread per connection, a tiny router (:mod:`.routes`) and a streaming body reader
(:mod:`.httpio`) do all of that with the standard library.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import sys
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ..netutil import descriptor_cap
from ..errors import ConfigError
from .backend import LocalBackend
from .http_handler import HttpLimits, ProviderRequestHandler
from .isolation import Isolation
from .isolation import wanted as isolation_wanted
from .launch import HostLauncher, Launcher
from .routes import App
from .waiting import WaitingRoom

log = logging.getLogger("oscar_faas.provider")

#: Descriptors kept free for everything that is not a client connection (function
#: processes' pipes, state files).
FD_RESERVE = 256


class ProviderServer(ThreadingHTTPServer):
    """One thread per connection; the :class:`App` and backend are shared."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: App,
                 limits: HttpLimits | None = None) -> None:
        self.app = app
        self.limits = limits or HttpLimits()
        # as many connections again may wait for their first byte (a descriptor each)
        cap = descriptor_cap(2 * self.limits.max_connections, FD_RESERVE)
        self.max_connections = max(1, cap // 2)
        self._active = 0
        self._active_lock = threading.Lock()
        #: handlers waiting for their connection's next request, oldest first
        self._idle: dict[ProviderRequestHandler, None] = {}
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, ProviderRequestHandler)
        self.waiting_room = WaitingRoom(self._admit, self.limits.first_byte_timeout,
                                        self.max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        """A new connection waits for its first byte apart (:mod:`.waiting`)."""
        self.waiting_room.add(request, client_address)

    def _admit(self, request: Any, client_address: Any) -> None:
        """A connection with a request coming: a thread, if a slot is free or can be freed."""
        with self._active_lock:
            refuse = self._active >= self.max_connections and not self._make_room()
            if not refuse:
                self._active += 1
        if refuse:
            log.warning("%d connections busy: refusing one from %s (--max-connections)",
                        self.max_connections, client_address[0])
            body = b"too many connections: try again later\n"
            try:  # read the head that came (unread bytes would turn the close into a reset)
                request.recv(65536, socket.MSG_DONTWAIT)
            except OSError:
                pass
            try:
                request.settimeout(1)
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
                                b"Content-Type: text/plain; charset=utf-8\r\n"
                                b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def _make_room(self) -> bool:
        """Close the connection idle the longest between two requests (HTTP lets a server
        close an idle keep-alive connection at any time); under ``_active_lock``."""
        for handler in list(self._idle):
            del self._idle[handler]
            if _readable(handler.connection):
                continue  # its next request is arriving: leave it be
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)  # wakes its wait, quietly
            except OSError:
                pass
            return True
        return False

    def idle_enter(self, handler: ProviderRequestHandler) -> None:
        with self._active_lock:
            self._idle[handler] = None

    def idle_leave(self, handler: ProviderRequestHandler) -> bool:
        """False: the connection was closed to make room while it waited."""
        with self._active_lock:
            return self._idle.pop(handler, False) is None

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._active_lock:
                self._active -= 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that vanished is one line; anything else keeps its traceback."""
        err = sys.exc_info()[1]
        if isinstance(err, (ConnectionError, TimeoutError)):
            log.info("client %s disconnected: %s", client_address[0],
                     err or type(err).__name__)
        else:
            log.exception("unhandled error serving %s", client_address[0])

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if ":" in str(host):
            host = f"[{host}]"
        return f"http://{host}:{port}"

    def server_bind(self) -> None:
        # ``HTTPServer.server_bind`` calls ``getfqdn``, which can stall on a DNS lookup.
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def server_close(self) -> None:
        super().server_close()
        self.waiting_room.close()

    def close(self) -> None:
        """Stop listening and kill any function process still running."""
        self.server_close()
        queue = getattr(self.app.backend, "async_queue", None)
        if queue is not None:
            queue.close()
        self.app.backend.close()
        logs = getattr(self.app.backend, "logs", None)
        if logs is not None:
            logs.detach()


def _readable(sock: socket.socket) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _logs(folder: Path):
    """The functions' logs (``GET /system/logs``), fed by their loggers."""
    from .logs import FUNCTION_LOGGER, FunctionLogs
    from .types import DEFAULT_NAMESPACE
    logs = FunctionLogs(DEFAULT_NAMESPACE, folder)
    function_loggers = logging.getLogger(FUNCTION_LOGGER)
    logs.attach(function_loggers)
    if function_loggers.getEffectiveLevel() > logging.DEBUG:
        function_loggers.setLevel(logging.DEBUG)  # each function's own level filters
    return logs


def _metrics(backend: LocalBackend):
    """The provider's Prometheus metrics (:class:`~oscar_faas.metrics.ProviderMetrics`).

    One process keeps them in memory: a ``PROMETHEUS_MULTIPROC_DIR`` inherited from a
    gateway must not send them to the gateway's files, so it is dropped first.
    """
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    from ..metrics import ProviderMetrics
    from .types import DEFAULT_NAMESPACE
    return ProviderMetrics(backend.function_load, DEFAULT_NAMESPACE)


def make_launcher(runtime: str, data_dir: str | Path,
                  isolation: Isolation | None = None) -> Launcher:
    """The launcher of ``--runtime``: ``host`` or ``container``.

    :param isolation: host runtimes run as their function's own user (:mod:`.isolation`).
    :raises EngineUnavailable: ``container``, and no engine answers at ``DOCKER_HOST``.
    """
    if runtime == "container":
        from .container_launcher import ContainerLauncher
        return ContainerLauncher(data_dir)
    if runtime != "host":
        raise ConfigError(f"unknown runtime {runtime!r}: 'host' or 'container'")
    return HostLauncher(isolation=isolation)


def _start_async_queue(backend: LocalBackend, data_dir: str | Path, url: str) -> None:
    """``/async-function``'s queue on disk (:mod:`.async_calls`), each function running up
    to its own ``max_inflight`` jobs; it calls this server's ``/function`` at ``url``."""
    from ..runtime.settings import script_slots
    from .async_calls import AsyncQueue

    def concurrency(name: str) -> int:
        return script_slots(backend.get_function(name).deployment.env_vars)

    queue = backend.async_queue = AsyncQueue(data_dir, concurrency)  # type: ignore[attr-defined]
    queue.start(url.replace("//0.0.0.0:", "//127.0.0.1:").replace("//[::]:", "//[::1]:"))


def make_server(host: str, port: int, data_dir: str | Path, username: str | None = None,
                password: str | None = None, limits: HttpLimits | None = None,
                runtime: str = "host") -> ProviderServer:
    """Load the state from ``data_dir`` and bind ``host:port`` (0 picks a free port).

    :param runtime: where functions run (:func:`make_launcher`).
    :raises ConfigError: the stored state cannot be read.
    :raises OSError: the address cannot be bound (or, ``container``, no engine answers).
    """
    # root: every function runs as a user of its own (its runtime and per-call processes)
    isolation = Isolation(data_dir) if isolation_wanted() else None
    if isolation is not None and runtime == "host":
        isolation.runtime_python()  # none its users can run: refuse to start, saying why
    backend = LocalBackend(data_dir, launcher=make_launcher(runtime, data_dir, isolation),
                           isolation=isolation)
    # before load(): runtimes started (or adopted) there log into it at once
    backend.logs = _logs(Path(data_dir) / "logs")  # type: ignore[attr-defined]
    backend.load()
    server = ProviderServer((host, port), App(backend, username, password,
                                              metrics=_metrics(backend)), limits)
    _start_async_queue(backend, data_dir, server.url)
    if username and password:
        log.info("basic auth enabled on /system/*")
    return server


def serve(host: str, port: int, data_dir: str | Path, username: str | None = None,
          password: str | None = None, ready_event: threading.Event | None = None,
          limits: HttpLimits | None = None, runtime: str = "host") -> None:
    """Run the embedded OpenFaaS-compatible provider until interrupted (blocking).

    :param username: with ``password``, require basic auth on ``/system/*`` (not on
        ``/function/*`` or ``/healthz``), as an OpenFaaS gateway does.
    :param ready_event: set once the socket listens, for callers running this in a thread.
    """
    server = make_server(host, port, data_dir, username, password, limits, runtime)
    log.info("oscar-faas local provider ready on %s (data dir %s, %s runtime)", server.url,
             Path(data_dir).resolve(), runtime)
    if ready_event is not None:
        ready_event.set()
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.close()
