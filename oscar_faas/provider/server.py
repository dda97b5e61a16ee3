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
import socket
import threading
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .. import __version__
from ..errors import ConfigError
from .backend import LocalBackend
from .launch import HostLauncher, Launcher
from .httpio import BodyReader, Request, Response, text_response
from .routes import App

log = logging.getLogger("oscar_faas.provider")
access_log = logging.getLogger("oscar_faas.provider.access")

#: Unread request body we are willing to read and drop to keep a connection alive.
DRAIN_LIMIT = 4 * 1024 * 1024
#: Idle keep-alive connections (and stalled uploads) are closed after this many seconds.
SOCKET_TIMEOUT = 300.0
WRITE_CHUNK = 256 * 1024


class ProviderRequestHandler(BaseHTTPRequestHandler):
    """Turns each HTTP/1.1 request into a :class:`Request` for :class:`App`."""

    protocol_version = "HTTP/1.1"
    server_version = f"oscar-faas-provider/{__version__}"
    disable_nagle_algorithm = True  # small answers must not wait for a delayed ACK
    timeout = SOCKET_TIMEOUT
    server: ProviderServer

    def _dispatch(self) -> None:
        path, _, query = self.path.partition("?")
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        length = self._content_length()
        if length is None and not chunked:
            return
        body = BodyReader(self.rfile, length, chunked)
        req = Request(method=self.command, path=path, query=query,
                      headers=list(self.headers.items()), body=body,
                      client=self.client_address[0] if self.client_address else "")
        try:
            resp = self.server.app.handle(req)
        except ConnectionError as err:
            log.debug("client went away: %s", err)
            self.close_connection = True
            return
        except Exception:  # noqa: BLE001 - a bug must not kill the connection thread silently
            log.exception("unhandled error on %s %s", self.command, path)
            resp = text_response("internal error", 500)
        try:
            self._send(resp)
        except (ConnectionError, TimeoutError) as err:
            log.debug("client went away while answering: %s", err)
            self.close_connection = True
        finally:
            resp.close()
        if resp.close_connection:
            self.close_connection = True
        elif not body.done:
            try:
                if not body.drain(DRAIN_LIMIT):
                    self.close_connection = True
            except (OSError, ValueError):
                self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch

    def _content_length(self) -> int | None:
        """Declared body length; 0 when there is none, None (after a 400) when invalid."""
        raw = self.headers.get("Content-Length")
        if raw is None:
            return 0
        try:
            length = int(raw)
            if length < 0:
                raise ValueError(raw)
        except ValueError:
            self.close_connection = True
            self._send(text_response("invalid Content-Length", 400))
            return None
        return length

    def _send(self, resp: Response) -> None:
        """Write status, headers and body; small answers leave in a single ``send``."""
        if resp.close_connection:
            self.close_connection = True
        reason = self.responses.get(resp.status, ("",))[0]
        lines = [f"{self.protocol_version} {resp.status} {reason}",
                 f"Server: {self.server_version}", f"Date: {formatdate(usegmt=True)}"]
        lines.extend(f"{k}: {v}" for k, v in resp.headers.items())
        if resp.chunked:
            lines.append("Transfer-Encoding: chunked")
        else:
            lines.append(f"Content-Length: {resp.content_length}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        access_log.info('%s "%s %s" %d %d', self.client_address[0], self.command,
                        self.path, resp.status, resp.content_length)
        if self.command == "HEAD":
            self.wfile.write(head)
            return
        if resp.chunked:
            self._send_chunked(head, resp)
            return
        pending = head
        for chunk in resp.chunks():
            if pending is not None and len(pending) + len(chunk) <= WRITE_CHUNK:
                pending += chunk
                continue
            if pending is not None:
                self.wfile.write(pending)
                pending = None
            self.wfile.write(chunk)
        if pending is not None:
            self.wfile.write(pending)

    def _send_chunked(self, head: bytes, resp: Response) -> None:
        """A live stream: every piece leaves at once (``wfile`` is unbuffered)."""
        self.wfile.write(head)
        for chunk in resp.chunks():
            if chunk:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        log.debug(format, *args)


class ProviderServer(ThreadingHTTPServer):
    """One thread per connection; the :class:`App` and backend are shared."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, ProviderRequestHandler)

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

    def close(self) -> None:
        """Stop listening and kill any function process still running."""
        self.server_close()
        self.app.backend.close()
        logs = getattr(self.app.backend, "logs", None)
        if logs is not None:
            logs.detach()


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


def make_launcher(runtime: str, data_dir: str | Path) -> Launcher:
    """The launcher of ``--runtime``: ``host`` or ``container``.

    :raises EngineUnavailable: ``container``, and no engine answers at ``DOCKER_HOST``.
    """
    if runtime == "container":
        from .container_launcher import ContainerLauncher
        return ContainerLauncher(data_dir)
    if runtime != "host":
        raise ConfigError(f"unknown runtime {runtime!r}: 'host' or 'container'")
    return HostLauncher()


def make_server(host: str, port: int, data_dir: str | Path, username: str | None = None,
                password: str | None = None, runtime: str = "host") -> ProviderServer:
    """Load the state from ``data_dir`` and bind ``host:port`` (0 picks a free port).

    :param runtime: where functions run (:func:`make_launcher`).
    :raises ConfigError: the stored state cannot be read.
    :raises OSError: the address cannot be bound (or, ``container``, no engine answers).
    """
    backend = LocalBackend(data_dir, launcher=make_launcher(runtime, data_dir))
    # before load(): runtimes started (or adopted) there log into it at once
    backend.logs = _logs(Path(data_dir) / "logs")  # type: ignore[attr-defined]
    backend.load()
    server = ProviderServer((host, port), App(backend, username, password,
                                              metrics=_metrics(backend)))
    if username and password:
        log.info("basic auth enabled on /system/*")
    return server


def serve(host: str, port: int, data_dir: str | Path, username: str | None = None,
          password: str | None = None, ready_event: threading.Event | None = None,
          runtime: str = "host") -> None:
    """Run the embedded OpenFaaS-compatible provider until interrupted (blocking).

    :param username: with ``password``, require basic auth on ``/system/*`` (not on
        ``/function/*`` or ``/healthz``), as an OpenFaaS gateway does.
    :param ready_event: set once the socket listens, for callers running this in a thread.
    """
    server = make_server(host, port, data_dir, username, password, runtime)
    log.info("oscar-faas local provider ready on %s (data dir %s, %s runtime)", server.url,
             Path(data_dir).resolve(), runtime)
    if ready_event is not None:
        ready_event.set()
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.close()
