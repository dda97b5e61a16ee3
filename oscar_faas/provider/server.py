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
import resource
import socket
import sys
import threading
import time
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO, Callable

from .. import __version__
from ..errors import ConfigError
from .backend import LocalBackend
from .isolation import Isolation
from .isolation import wanted as isolation_wanted
from .launch import HostLauncher, Launcher
from .httpio import BodyReader, FramingError, Request, Response, parse_framing, text_response
from .routes import App
from .runtimes import START_WAIT

log = logging.getLogger("oscar_faas.provider")
access_log = logging.getLogger("oscar_faas.provider.access")

#: Unread request body we are willing to read and drop to keep a connection alive.
DRAIN_LIMIT = 4 * 1024 * 1024
#: Idle keep-alive connections (and stalled uploads) are closed after this many seconds.
SOCKET_TIMEOUT = 300.0
WRITE_CHUNK = 256 * 1024
#: Descriptors kept free for everything that is not a client connection (function
#: processes' pipes, state files).
FD_RESERVE = 256


@dataclass(frozen=True)
class HttpLimits:
    """What one client may cost the provider (options of ``oscar-faas provider``)."""

    #: Request line plus headers, in bytes (431 above; the request line alone: 414 above
    #: 64 KiB, the standard library's limit).
    max_header_size: int = 64 * 1024
    #: Seconds to send a whole request head, counted from the connection's first byte or
    #: from the end of the previous answer (a silent or dribbling client is closed).
    header_timeout: float = 30.0
    #: Seconds a socket read or write may wait once a request is under way.
    socket_timeout: float = SOCKET_TIMEOUT
    #: Connections served at once (one thread each); more are answered 503 and closed.
    max_connections: int = 1000


class HeadTooLarge(Exception):
    pass


class HeadTimeout(Exception):
    """Not a ``TimeoutError``: the standard library would close without a word."""


class LimitedReader:
    """The connection's read side, counting and timing what the request head reads."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._budget: int | None = None
        self._deadline = 0.0

    def limit_head(self, budget: int, deadline: float) -> None:
        self._budget, self._deadline = budget, deadline

    def unlimit(self) -> None:
        self._budget = None

    def readline(self, size: int = -1) -> bytes:
        if self._budget is None:
            return self._raw.readline(size)
        if time.monotonic() > self._deadline:
            raise HeadTimeout("request head too slow")
        want = self._budget + 1 if size is None or size < 0 else min(size, self._budget + 1)
        line = self._raw.readline(want)
        self._budget -= len(line)
        if self._budget < 0:
            raise HeadTooLarge()
        return line

    def read(self, size: int = -1) -> bytes:
        return self._raw.read(size)

    def close(self) -> None:
        self._raw.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class ProviderRequestHandler(BaseHTTPRequestHandler):
    """Turns each HTTP/1.1 request into a :class:`Request` for :class:`App`."""

    protocol_version = "HTTP/1.1"
    server_version = f"oscar-faas-provider/{__version__}"
    disable_nagle_algorithm = True  # small answers must not wait for a delayed ACK
    timeout = SOCKET_TIMEOUT
    server: ProviderServer
    rfile: LimitedReader  # type: ignore[assignment]

    def setup(self) -> None:
        super().setup()
        self.rfile = LimitedReader(self.rfile)  # type: ignore[assignment]

    def handle_one_request(self) -> None:
        # Waiting for the next request and reading its head: HEADER_TIMEOUT per read, and in
        # total (checked per header line); the request itself then gets the socket timeout.
        limits = self.server.limits
        self.connection.settimeout(limits.header_timeout or None)
        self.rfile.limit_head(limits.max_header_size, time.monotonic() + limits.header_timeout)
        try:
            super().handle_one_request()
        except HeadTimeout:
            self._refuse(text_response(
                f"request head not received within {limits.header_timeout:g} s", 408))
        except HeadTooLarge:  # the request line alone
            self._refuse(self._too_large())
        finally:
            self.rfile.unlimit()

    def parse_request(self) -> bool:
        try:
            return super().parse_request()
        except HeadTooLarge:
            self._refuse(self._too_large())
            return False

    def _too_large(self) -> Response:
        return text_response(f"request line and headers larger than "
                             f"{self.server.limits.max_header_size} bytes", 431)

    def _refuse(self, resp: Response) -> None:
        """Answer an unreadable request and close; the client may be gone already."""
        self.close_connection = True
        self.command = getattr(self, "command", None) or "GET"
        self.path = getattr(self, "path", None) or ""
        try:
            self._send(resp)
        except OSError as err:
            self._gone(err)

    def _dispatch(self) -> None:
        self.rfile.unlimit()
        self.connection.settimeout(self.server.limits.socket_timeout or None)
        path, _, query = self.path.partition("?")
        if (path.startswith("/function/") and self.headers.get("Upgrade")
                and "upgrade" in self.headers.get("Connection", "").lower()):
            if self.server.app.guard_upgrade(self.headers):
                self._upgrade(path, query)
            else:
                self._send(text_response("invalid credentials", 401,
                                         {"WWW-Authenticate": 'Basic realm="Restricted"'}))
            return
        try:
            length, chunked = parse_framing(self.headers.get_all("Content-Length") or [],
                                            self.headers.get_all("Transfer-Encoding") or [])
        except FramingError as err:
            self.close_connection = True
            self._send(text_response(err.message, 400))
            return
        body = BodyReader(self.rfile, length, chunked)
        req = Request(method=self.command, path=path, query=query,
                      headers=list(self.headers.items()), body=body,
                      client=self.client_address[0] if self.client_address else "")
        try:
            resp = self.server.app.handle(req)
        except (ConnectionError, TimeoutError) as err:
            self._gone(err)
            return
        except Exception:  # noqa: BLE001 - a bug must not kill the connection thread silently
            log.exception("unhandled error on %s %s", self.command, path)
            resp = text_response("internal error", 500)
        if body.broken:  # whatever ran saw a cut-off body: the request was malformed
            resp.close()
            resp = text_response("malformed chunked request body", 400)
            resp.close_connection = True
        try:
            self._send(resp)
        except (ConnectionError, TimeoutError) as err:
            self._gone(err)
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

    def _gone(self, err: BaseException) -> None:
        """One line per client that leaves early, never a traceback."""
        self.close_connection = True
        log.info("client %s disconnected during %s %s: %s", self.client_address[0],
                 getattr(self, "command", "?"), getattr(self, "path", "?"),
                 err or type(err).__name__)

    def _upgrade(self, path: str, query: str) -> None:
        """A protocol upgrade (WebSocket) to a function: its request goes to the function's
        runtime as it came, and from then on bytes are copied both ways (a tunnel) until
        either side closes. OpenFaaS' gateway passes upgrades the same way."""
        self.close_connection = True
        name, _, rest = path[len("/function/"):].partition("/")
        name = name.partition(".")[0]
        address = getattr(self.server.app.backend, "runtime_address", None)
        got = address(name, START_WAIT) if address is not None else None
        if got is None:
            self._send(text_response(f"No endpoints available for: {name}.", 503,
                                     {"X-OpenFaaS-Internal": "proxy"}))
            return
        host, port, release = got
        try:
            try:
                upstream = socket.create_connection((host, port), timeout=5)
            except OSError as err:
                self._send(text_response(f"Can't reach service for: {name}. ({err})", 502,
                                         {"X-OpenFaaS-Internal": "proxy"}))
                return
            with upstream:
                upstream.settimeout(None)
                self.connection.settimeout(None)  # a WebSocket may idle for hours
                target = "/" + rest + (f"?{query}" if query else "")
                head = [f"{self.command} {target} HTTP/1.1\r\n"]
                head += [f"{k}: {v}\r\n" for k, v in self.headers.items()]
                upstream.sendall(("".join(head) + "\r\n").encode("latin-1"))
                access_log.info('%s "%s %s" upgrade', self.client_address[0], self.command,
                                self.path)
                _tunnel(self.rfile, self.connection, upstream)
        finally:
            release()

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

    def log_error(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        log.info(format, *args)  # timeouts and malformed requests: one line each


def _tunnel(client_in: BinaryIO, client: socket.socket, upstream: socket.socket) -> None:
    """Copy bytes both ways until both directions have ended (each end's EOF is passed on
    as a half-close)."""

    def pump(read: Callable[[int], bytes], sink: socket.socket) -> None:
        try:
            while data := read(65536):
                sink.sendall(data)
        except OSError:
            pass
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    back = threading.Thread(target=pump, args=(upstream.recv, client), daemon=True,
                            name="tunnel")
    back.start()
    pump(client_in.read1, upstream)  # type: ignore[attr-defined]
    back.join()


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
        self.max_connections = descriptor_cap(self.limits.max_connections)
        self._active = 0
        self._active_lock = threading.Lock()
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, ProviderRequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._active_lock:
            refuse = self._active >= self.max_connections
            if not refuse:
                self._active += 1
        if refuse:
            log.warning("%d connections open: refusing one from %s (--max-connections)",
                        self.max_connections, client_address[0])
            body = b"too many connections: try again later\n"
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


def descriptor_cap(wanted: int) -> int:
    """Raise the soft descriptor limit to the hard one; how many connections fit with
    :data:`FD_RESERVE` to spare (at most ``wanted``)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - FD_RESERVE))


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
