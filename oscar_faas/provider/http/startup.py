"""The provider's server: the backend and its helpers built from the data dir, a socket
bound, and uvicorn serving :class:`~.app.ProviderApp` on it.

The provider runs as one process (its state, runtimes and metrics in memory), serving on its
main thread's event loop; the HTTP limits are the shared bounded protocol's
(:mod:`oscar_faas.httpserver`), as on the gateway. uvicorn turns SIGTERM and Ctrl-C into a
graceful stop and then gives the signal back to the handler installed before it
(:func:`oscar_faas.provider.__main__.run`'s). At the signal, before calls under way are waited
for, the async queue stops taking jobs and every function's runtime is stopped, as a
provider's stop always did: a call under way ends with its function, it is not run out.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Callable

import uvicorn

from ... import __version__
from ...errors import ConfigError
from ...httpserver import HttpLimits, server_options
from ...launchers.host.isolation import Isolation
from ...launchers.host.isolation import wanted as isolation_wanted
from ...launchers.host.launcher import HostLauncher
from ...launchers.launch import Launcher
from ..backend import LocalBackend
from .app import ProviderApp

log = logging.getLogger("oscar_faas.provider")

#: Descriptors kept free for everything that is not a client connection (function
#: processes' pipes, runtime connections, state files).
FD_RESERVE = 256
#: Seconds calls under way get to finish once a stop is asked (then the runtimes stop).
GRACE = 2.0


class _Server(uvicorn.Server):
    """uvicorn's server, telling :class:`ProviderServer` first when a signal stops it."""

    on_exit: Callable[[], None] = staticmethod(lambda: None)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.on_exit()
        super().handle_exit(sig, frame)


class ProviderServer:
    """A bound socket and the uvicorn server that will serve the app on it."""

    def __init__(self, address: tuple[str, int], app: ProviderApp,
                 limits: HttpLimits | None = None) -> None:
        self.app = app
        self.limits = limits or HttpLimits(strict_transfer_encoding=True)
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets that say it
        self.socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind(address)
            self.socket.listen(1024)
        except OSError:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()
        config = uvicorn.Config(
            app, lifespan="on", access_log=False, log_config=None, server_header=False,
            date_header=True, headers=[("Server", f"oscar-faas-provider/{__version__}")],
            timeout_graceful_shutdown=GRACE, **server_options(self.limits, FD_RESERVE))
        self.uvicorn = _Server(config)
        self.uvicorn.on_exit = self._stop_functions
        self._stopped = threading.Event()
        self._stopping: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if ":" in str(host):
            host = f"[{host}]"
        return f"http://{host}:{port}"

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` (or, on the main thread, SIGTERM/SIGINT)."""
        try:
            self.uvicorn.run(sockets=[self.socket])
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Ask :meth:`serve_forever` to stop, from another thread, and wait for it."""
        self.uvicorn.should_exit = True
        self._stopped.wait(GRACE + 10)

    def close(self) -> None:
        """Stop listening and every function's runtime (waiting for them)."""
        self.socket.close()
        self._stop_functions()
        assert self._stopping is not None
        self._stopping.join()

    def _stop_functions(self) -> None:
        """Once: the async queue stops now; the runtimes stop in a thread (a container's
        removal takes seconds), while the server winds down."""
        with self._lock:
            if self._stopping is not None:
                return
            self._stopping = threading.Thread(target=self._close_backend, name="stop")
        queue = getattr(self.app.backend, "async_queue", None)
        if queue is not None:
            queue.close()
        self._stopping.start()

    def _close_backend(self) -> None:
        self.app.backend.close()
        logs = getattr(self.app.backend, "logs", None)
        if logs is not None:
            logs.detach()


def _logs(folder: Path) -> Any:
    """The functions' logs (``GET /system/logs``), fed by their loggers."""
    from ...launchers.launch import FUNCTION_LOGGER
    from ..logs import FunctionLogs
    from ..state.types import DEFAULT_NAMESPACE
    logs = FunctionLogs(DEFAULT_NAMESPACE, folder)
    function_loggers = logging.getLogger(FUNCTION_LOGGER)
    logs.attach(function_loggers)
    if function_loggers.getEffectiveLevel() > logging.DEBUG:
        function_loggers.setLevel(logging.DEBUG)  # each function's own level filters
    return logs


def _metrics(backend: LocalBackend) -> Any:
    """The provider's Prometheus metrics (:class:`~oscar_faas.metrics.ProviderMetrics`).

    One process keeps them in memory: a ``PROMETHEUS_MULTIPROC_DIR`` inherited from a
    gateway must not send them to the gateway's files, so it is dropped first.
    """
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    from ...metrics import ProviderMetrics
    from ..state.types import DEFAULT_NAMESPACE
    return ProviderMetrics(backend.function_load, DEFAULT_NAMESPACE)


def make_launcher(runtime: str, data_dir: str | Path,
                  isolation: Isolation | None = None) -> Launcher:
    """The launcher of ``--runtime``: ``host`` or ``container``.

    :param isolation: host runtimes run as their function's own user
        (:mod:`oscar_faas.launchers.host.isolation`).
    :raises EngineUnavailable: ``container``, and no engine answers at ``DOCKER_HOST``.
    """
    if runtime == "container":
        from ...launchers.containers.launcher import ContainerLauncher
        return ContainerLauncher(data_dir)
    if runtime != "host":
        raise ConfigError(f"unknown runtime {runtime!r}: 'host' or 'container'")
    return HostLauncher(isolation=isolation)


def _start_async_queue(backend: LocalBackend, data_dir: str | Path, url: str) -> None:
    """``/async-function``'s queue on disk (:mod:`..async_calls`), each function running up
    to its own ``max_inflight`` jobs; it calls this server's ``/function`` at ``url``."""
    from ...runtime.settings import script_slots
    from ..async_calls import AsyncQueue

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
    app = ProviderApp(backend, username, password, metrics=_metrics(backend))
    server = ProviderServer((host, port), app, limits)
    _start_async_queue(backend, data_dir, server.url)
    if username and password:
        log.info("basic auth enabled on /system/*")
    return server


def serve(host: str, port: int, data_dir: str | Path, username: str | None = None,
          password: str | None = None, limits: HttpLimits | None = None,
          runtime: str = "host") -> None:
    """Run the embedded OpenFaaS-compatible provider until interrupted (blocking).

    :param username: with ``password``, require basic auth on ``/system/*`` (not on
        ``/function/*`` or ``/healthz``), as an OpenFaaS gateway does.
    """
    server = make_server(host, port, data_dir, username, password, limits, runtime)
    log.info("oscar-faas local provider ready on %s (data dir %s, %s runtime)", server.url,
             Path(data_dir).resolve(), runtime)
    try:
        server.serve_forever()
    finally:
        server.close()
