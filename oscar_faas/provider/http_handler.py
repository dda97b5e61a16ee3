"""One HTTP/1.1 exchange of the provider: read a request head within limits, hand a
:class:`Request` to the :class:`~.routes.App`, write its :class:`Response` (or tunnel an upgrade).

Exists so :mod:`.server` (the listening socket, connection cap and start-up) and the
per-request work (:class:`ProviderRequestHandler`, its :class:`HttpLimits`) each read alone.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any, BinaryIO, Callable

from .. import __version__
from ..contract import FIRST_BYTE_TIMEOUT, KEEPALIVE_IDLE
from .httpio import BodyReader, FramingError, Request, Response, parse_framing, text_response
from .runtimes import START_WAIT

if TYPE_CHECKING:
    from .server import ProviderServer

log = logging.getLogger("oscar_faas.provider")
access_log = logging.getLogger("oscar_faas.provider.access")

#: Unread request body we are willing to read and drop to keep a connection alive.
DRAIN_LIMIT = 4 * 1024 * 1024
#: A read or write of a request under way (a stalled upload or reader) may wait this long.
SOCKET_TIMEOUT = 300.0
WRITE_CHUNK = 256 * 1024


@dataclass(frozen=True)
class HttpLimits:
    """What one client may cost the provider (options of ``oscar-faas provider``)."""

    #: Request line plus headers, in bytes (431 above; the request line alone: 414 above
    #: 64 KiB, the standard library's limit).
    max_header_size: int = 64 * 1024
    #: Seconds to send a whole request head, counted from its first byte (408 after).
    header_timeout: float = 30.0
    #: Seconds a keep-alive connection may wait for its next request (then closed quietly).
    keepalive_timeout: float = KEEPALIVE_IDLE
    #: Seconds a new connection may wait before its first byte (then closed quietly).
    first_byte_timeout: float = FIRST_BYTE_TIMEOUT
    #: Seconds a socket read or write may wait once a request is under way.
    socket_timeout: float = SOCKET_TIMEOUT
    #: Connections served at once (one thread each); past it, a connection waiting for its
    #: next request is closed to make room, else the newest is answered 503 and closed.
    #: Connections that have sent nothing yet wait apart, as many more, without a thread.
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
        try:
            line = self._raw.readline(want)
        except TimeoutError:  # a head begun, then silence: answered, unlike an idle wait
            raise HeadTimeout("request head too slow") from None
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
        # Wait for the next request's first byte: an idle connection is closed quietly (time
        # spent idle is never held against a request); then its head must come within the
        # header timeout (408), checked per line; the request itself gets the socket timeout.
        limits = self.server.limits
        if not self._next_request(limits.keepalive_timeout):
            self.close_connection = True
            return
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

    def _next_request(self, idle_timeout: float) -> bool:
        """Wait up to ``idle_timeout`` s for a byte of the next request; False: the client
        closed, stayed idle, or the server closed this idle connection to make room."""
        got = False
        self.server.idle_enter(self)
        try:
            self.connection.settimeout(idle_timeout or None)
            got = bool(self.rfile.peek(1))
        except (OSError, ValueError):  # a timeout, a reset, or shut down to make room
            pass
        finally:
            kept = self.server.idle_leave(self)
        return got and kept

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
            self._upgrade(path, query)  # open, as every call: the function checks its caller
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

    def __getattr__(self, name: str) -> Any:
        """Every other method (WebDAV's PROPFIND, TRACE, ...) goes to the app too: a function
        or an exposed service's server decides what it means. CONNECT stays 501."""
        if name.startswith("do_") and name != "do_CONNECT":
            return self._dispatch
        raise AttributeError(name)

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
