"""The HTTP side: uvicorn (httptools parser, asyncio loop) serving a raw ASGI app.

Why this stack: the event loop holds every connection and every queued caller without a
thread each, httptools parses a request in microseconds, and uvicorn brings the HTTP details
(keep-alive, chunked bodies both ways, ``Expect: 100-continue``, flow control) that a function
runtime must get right. The work of a call is blocking (disk, ``fork``/``wait``, MinIO), so it
runs in a pool of ``slots`` threads; the body reaches it through :class:`BodyReader` and the
answer leaves through :class:`Answer`, one chunk at a time, with backpressure both ways.

Concurrency: at most ``slots`` calls run (``max_inflight``; 0 = 4 per CPU for a script, 1 for
a warm worker); up to ``max_queue`` more wait in order, without reading their bodies; the next
one gets 429 at once. ``GET /_/health`` is 200 only when ready (every warm worker has said it
is), else 503; ``GET /_/status`` is a JSON snapshot (ready, slots, running, queued).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

from ..contract import ENV_RUNTIME_LIFELINE
from ..supervisor.logs import SupervisorLog, stderr_logger
from ..supervisor.upload import secret_environment
from .invoke import Invoker
from .settings import RuntimeSettings
from .workers import WorkerPool

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

#: Answer bytes gathered before they are sent as one chunk; answers that fit are sent whole
#: with a Content-Length, straight from the event loop.
FLUSH_BYTES = 256 << 10

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                         "proxy-connection", "te", "trailer", "trailers", "transfer-encoding",
                         "upgrade", "host", "content-length"})


class QueueFull(Exception):
    """Every slot is busy and the wait queue is full."""


class Limiter:
    """At most ``slots`` holders; up to ``max_queue`` waiters, served first come first served
    (a freed slot is handed to the oldest waiter, so late arrivals cannot overtake it)."""

    def __init__(self, slots: int, max_queue: int) -> None:
        self.slots = max(1, slots)
        self.max_queue = max(0, max_queue)
        self.running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> None:
        """:raises QueueFull: no free slot and no room in the queue."""
        if self.running < self.slots and not self._waiters:
            self.running += 1
            return
        if len(self._waiters) >= self.max_queue:
            raise QueueFull()
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed over just before the cancel
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.running -= 1


class BodyReader:
    """The request body as a blocking ``read(n)`` for the call thread, pulled from the event
    loop one ASGI message at a time (so at most one chunk is in memory)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, receive: Receive, first: dict[str, Any],
                 timeout: float) -> None:
        self._loop, self._receive, self._timeout = loop, receive, timeout or None
        self._data = memoryview(first.get("body", b""))
        self._more = first.get("more_body", False)

    def read(self, size: int = -1) -> bytes:
        while not self._data and self._more:
            future = asyncio.run_coroutine_threadsafe(self._receive(), self._loop)
            try:
                message = future.result(self._timeout)
            except TimeoutError:
                future.cancel()
                raise TimeoutError(f"read_timeout ({self._timeout:g}s) reached while "
                                   "reading the request body") from None
            if message["type"] == "http.disconnect":
                raise ConnectionError("the client closed the connection before the body ended")
            self._data = memoryview(message.get("body", b""))
            self._more = message.get("more_body", False)
        if size is None or size < 0 or size >= len(self._data):
            chunk, self._data = self._data, memoryview(b"")
        else:
            chunk, self._data = self._data[:size], self._data[size:]
        return bytes(chunk)


class Answer:
    """The call thread's end of the answer: a status, then bytes.

    Small answers are only gathered (the event loop sends them whole, with a Content-Length);
    from :data:`FLUSH_BYTES` on, the headers and each chunk are sent from the thread through
    the loop, waiting for each send (uvicorn's flow control), so memory stays bounded.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, send: Send, headers: list[tuple[bytes, bytes]],
                 started: float, timeout: float) -> None:
        self._loop, self._send, self._timeout = loop, send, timeout or None
        self.headers = headers
        self.started = started
        self.status = 0
        self.streaming = False
        #: seconds per phase (queue, setup, script, upload), sent as ``Server-Timing``
        self.timings: dict[str, float] = {}
        self.buffer = bytearray()

    def start(self, status: int) -> None:
        self.status = status

    def write(self, data: bytes) -> int:
        self.buffer += data
        if len(self.buffer) >= FLUSH_BYTES:
            self._flush(more=True)
        return len(data)

    def flush(self) -> None:
        """Nothing: chunks leave when they are big enough, or at the end."""

    def finish(self) -> None:
        """End a streamed answer (a gathered one is sent by the loop)."""
        if self.streaming:
            self._flush(more=False)

    def start_message(self, length: int | None) -> dict[str, Any]:
        headers = list(self.headers)
        headers.append((b"x-duration-seconds", f"{time.monotonic() - self.started:f}".encode()))
        if self.timings:
            headers.append((b"server-timing", server_timing(self.timings).encode()))
        if length is not None:
            headers.append((b"content-length", str(length).encode()))
        return {"type": "http.response.start", "status": self.status or 500, "headers": headers}

    def _flush(self, more: bool) -> None:
        if not self.streaming:
            self.streaming = True
            self._call(self._send(self.start_message(None)))
        body, self.buffer = bytes(self.buffer), bytearray()
        self._call(self._send({"type": "http.response.body", "body": body, "more_body": more}))

    def _call(self, coro: Awaitable[None]) -> None:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        try:
            future.result(self._timeout)
        except TimeoutError:
            future.cancel()
            raise TimeoutError(f"write_timeout ({self._timeout:g}s) reached while sending "
                               "the answer") from None


#: ``Server-Timing`` names, in the order a call goes through them, with their descriptions
#: (no commas: naive parsers split the header on them).
TIMING_PHASES = (("queue", "waiting for a slot (max_inflight)"),
                 ("setup", "configuration and input"),
                 ("script", "the user script"),
                 ("upload", "outputs to storage and the answer"))


def server_timing(timings: Mapping[str, float]) -> str:
    """``Server-Timing`` (W3C) from phase -> seconds: ``queue;dur=0.1;desc="..."``, in ms."""
    return ", ".join(f'{phase};dur={timings[phase] * 1000:.3f};desc="{desc}"'
                     for phase, desc in TIMING_PHASES if phase in timings)


def canonical_header(name: str) -> str:
    """Go's canonical form (``x-call-id`` -> ``X-Call-Id``), which decides the CGI names."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def cgi_env(scope: Scope) -> dict[str, str]:
    """The classic watchdog's CGI variables for one request (``Http_Method``, ``Http_Path``,
    ``Http_<Header>``...), which it passes to the process it forks and so to the script."""
    env: dict[str, str] = {}
    length, chunked, host = "-1", False, ""
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        lower = name.lower()
        if lower == "content-length":
            length = value
        elif lower == "transfer-encoding":
            chunked = "chunked" in value.lower()
        elif lower == "host":
            host = value
        if lower in _HOP_BY_HOP:
            continue
        env.setdefault("Http_" + canonical_header(name).replace("-", "_"), value)
    env["Http_Method"] = scope["method"]
    env["Http_ContentLength"] = env["Http_Content_Length"] = "-1" if chunked else length
    query = scope.get("query_string", b"").decode("latin-1")
    if query:
        env["Http_Query"] = query
    env["Http_Path"] = scope.get("path") or "/"
    if host:
        env["Http_Host"] = host
    if chunked:
        env["Http_Transfer_Encoding"] = "chunked"
    return env


class RuntimeApp:
    """The ASGI application: routes, limiter, thread pool, and the :class:`Invoker`."""

    def __init__(self, env: Mapping[str, str], settings: RuntimeSettings,
                 log: SupervisorLog, workdir: Path) -> None:
        self.settings = settings
        self.log = log
        self.pool: WorkerPool | None = None
        if settings.worker:
            worker_env = dict(env)
            try:
                worker_env.update(secret_environment(env))
            except Exception as err:  # noqa: BLE001 - calls will answer it; start anyway
                log.error("%s", err)
            self.pool = WorkerPool(settings.worker, worker_env, settings.slots, log, workdir)
        self.invoker = Invoker(env, settings, log, workdir, self.pool)
        self.limiter = Limiter(settings.slots, settings.max_queue)
        self.executor = ThreadPoolExecutor(settings.slots, thread_name_prefix="call")

    def start(self) -> None:
        if self.pool is not None:
            self.pool.start()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
        self.invoker.close()
        self.executor.shutdown(wait=False, cancel_futures=True)

    @property
    def ready(self) -> bool:
        return self.pool is None or self.pool.ready

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = time.monotonic()
        path = scope["path"]
        if path == "/_/health":
            ok = self.ready
            await _plain(send, 200 if ok else 503, b"OK\n" if ok else b"not ready\n", started)
            return
        if path == "/_/status":
            doc = {"ready": self.ready, "slots": self.limiter.slots,
                   "running": self.limiter.running, "queued": self.limiter.queued,
                   "max_queue": self.limiter.max_queue}
            await _plain(send, 200, json.dumps(doc).encode() + b"\n", started,
                         b"application/json")
            return
        try:
            await self.limiter.acquire()
        except QueueFull:
            self.log.warning("429: %d call(s) running and %d waiting", self.limiter.running,
                             self.limiter.queued)
            await _plain(send, 429, f"too many requests: {self.limiter.running} running and "
                         f"{self.limiter.queued} waiting (max_inflight={self.limiter.slots}, "
                         f"max_queue={self.limiter.max_queue})\n".encode(), started)
            return
        try:
            await self._invoke(scope, receive, send, started, time.monotonic() - started)
        finally:
            self.limiter.release()

    async def _invoke(self, scope: Scope, receive: Receive, send: Send, started: float,
                      queued: float) -> None:
        loop = asyncio.get_running_loop()
        first = await receive()
        if first["type"] == "http.disconnect":
            return
        content_type = self.settings.content_type
        call_id = None
        for name, value in scope["headers"]:
            if name == b"content-type" and not content_type:
                content_type = value.decode("latin-1")
            elif name == b"x-call-id":
                call_id = value
        headers = [(b"content-type", (content_type or "text/plain").encode("latin-1"))]
        if call_id is not None:
            headers.append((b"x-call-id", call_id))
        body = BodyReader(loop, receive, first, self.settings.read_timeout)
        answer = Answer(loop, send, headers, started, self.settings.write_timeout)
        answer.timings["queue"] = queued
        try:
            await loop.run_in_executor(self.executor, self._run, body, cgi_env(scope), answer)
        except TimeoutError as err:
            self.log.warning("%s", err)
            if answer.streaming:
                raise
            answer.status, answer.buffer = 408, bytearray(f"{err}\n".encode())
        except ConnectionError as err:
            self.log.warning("%s", err)
            return
        if not answer.streaming:
            await send(answer.start_message(len(answer.buffer)))
            await send({"type": "http.response.body", "body": bytes(answer.buffer)})

    def _run(self, body: BodyReader, cgi: dict[str, str], answer: Answer) -> None:
        self.invoker(body, cgi, answer)  # type: ignore[arg-type]
        answer.finish()


async def _plain(send: Send, status: int, body: bytes, started: float,
                 content_type: bytes = b"text/plain; charset=utf-8") -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", content_type), (b"content-length", str(len(body)).encode()),
        (b"x-duration-seconds", f"{time.monotonic() - started:f}".encode())]})
    await send({"type": "http.response.body", "body": body})


def serve(host: str, port: int, env: Mapping[str, str] | None = None) -> int:
    """Run the runtime until SIGTERM/SIGINT; returns the exit code.

    The socket is bound before anything else, and the first log line says where
    (``listening on http://H:P``, with the real port when ``port`` is 0).
    """
    import uvicorn

    env = dict(os.environ if env is None else env)
    log = SupervisorLog(stderr_logger())
    if env.pop(LIFELINE_ENV, "") == "stdin":
        threading.Thread(target=_lifeline, name="lifeline", daemon=True).start()
    try:
        settings = RuntimeSettings.from_env(env)
    except ValueError as err:
        log.error("invalid OSCAR_WORKER: %s", err)
        return 2
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets that say it, and
    # without it every answer waits for a delayed ACK (40 ms) between headers and body.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        log.error("cannot listen on %s:%d: %s", host, port, err.strerror or err)
        return 1
    sock.listen(1024)
    with tempfile.TemporaryDirectory(prefix="oscar-runtime-") as workdir:
        app = RuntimeApp(env, settings, log, Path(workdir))
        bound = sock.getsockname()
        log.logger.info("listening on http://%s:%d (%s, %d slot(s), "
                "max_queue %d)", bound[0], bound[1],
                "warm worker " + " ".join(settings.worker) if settings.worker else "script",
                settings.slots, settings.max_queue)
        config = uvicorn.Config(app, loop="asyncio", http="httptools", ws="none",
                                lifespan="off", access_log=False, log_config=None,
                                log_level="warning", server_header=False, date_header=False,
                                timeout_graceful_shutdown=5)
        server = uvicorn.Server(config)
        # uvicorn shuts down gracefully on SIGTERM, then raises the signal again for the
        # previous handler: make that an exit that runs the clean-up below.
        signal.signal(signal.SIGTERM, _exit_on_signal)
        app.start()
        try:
            server.run(sockets=[sock])
        except SystemExit:
            pass
        finally:
            app.close()
    return 0


#: Set to ``stdin`` by a parent (the embedded provider) that holds the other end of our stdin:
#: when it closes, however the parent ended, the runtime stops as on SIGTERM. Not passed on to
#: scripts and workers.
LIFELINE_ENV = ENV_RUNTIME_LIFELINE


def _lifeline() -> None:
    """Read stdin until EOF (the parent is gone), then stop gracefully."""
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGTERM)


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)
