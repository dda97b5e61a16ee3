"""The HTTP side: uvicorn (httptools parser, asyncio loop) serving a raw ASGI app.

Why this stack: the event loop holds every connection and every queued caller without a
thread each, httptools parses a request in microseconds, and uvicorn brings the HTTP details
(keep-alive, chunked bodies both ways, ``Expect: 100-continue``, flow control) that a function
runtime must get right. The work of a call is blocking (disk, ``fork``/``wait``, MinIO), so it
runs in a pool of ``slots`` threads; the body reaches it through :class:`BodyReader` and the
answer leaves through :class:`Answer`, one chunk at a time, with backpressure both ways.

The caller is checked first (:mod:`.caller`): an OSCAR service answers only its token.
Concurrency: at most ``slots`` calls run (``max_inflight``; 0 = 4 per CPU for a script, one
worker per CPU the service may use for a warm worker, :mod:`.sizing`); up to ``max_queue``
more wait in order, without reading their bodies; the next one gets 429 at once. ``GET /_/health`` is 200 only when ready (every warm worker has said it
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Mapping

from ..contract import ENV_RUNTIME_LIFELINE, HEADER_DUPLICATE
from ..supervisor.logs import SupervisorLog, stderr_logger
from ..supervisor.upload import secret_environment
from ..wsproxy import SERVER_OPTIONS as WEBSOCKET_OPTIONS
from . import guardian
from .asgi_io import Answer, BodyReader, Receive, Scope, Send, plain
from .caller import CallerCheck, refuse_stranger
from .claim import claim, claim_target
from .hints import isolation_hint
from .cgi import cgi_env
from .expose import ExposeApp
from .expose_settings import ExposeSettings
from .invoke import Invoker
from .limiter import Limiter, QueueFull
from .settings import RuntimeSettings
from .workers import WorkerPool


def call_head(scope: Scope, content_type: str | None
              ) -> tuple[list[tuple[bytes, bytes]], int | None, bool]:
    """The answer's first headers and the request's framing, from one pass over its headers.

    Content-Type is the function's ``content_type`` setting, else the request's, else
    ``text/plain`` (the watchdogs' rule); the caller's ``X-Call-Id`` is echoed. The framing:
    ``Content-Length`` (None when absent or not digits) and whether the body is chunked.
    """
    call_id = length = None
    chunked = False
    for name, value in scope["headers"]:
        if name == b"content-type" and not content_type:
            content_type = value.decode("latin-1")
        elif name == b"x-call-id":
            call_id = value
        elif name == b"content-length" and value.isdigit():
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = True
    headers = [(b"content-type", (content_type or "text/plain").encode("latin-1"))]
    if call_id is not None:
        headers.append((b"x-call-id", call_id))
    return headers, length, chunked


class RuntimeApp:
    """The ASGI application: routes, limiter, thread pool, and the :class:`Invoker`."""

    def __init__(self, env: Mapping[str, str], settings: RuntimeSettings,
                 log: SupervisorLog, workdir: Path) -> None:
        self.settings = settings
        self.log = log
        self.pool: WorkerPool | None = None
        self.invoker = self._invoker(env, workdir)
        self.caller = CallerCheck(env)
        self.limiter = Limiter(settings.slots, settings.max_queue)
        self.executor = ThreadPoolExecutor(settings.slots, thread_name_prefix="call")

    def _invoker(self, env: Mapping[str, str], workdir: Path) -> Invoker:
        """What runs a call: the OSCAR I/O contract around the script or warm workers (their
        pool made first, as :attr:`pool`)."""
        if self.settings.worker:
            worker_env = dict(env)
            try:
                worker_env.update(secret_environment(env))
            except Exception as err:  # noqa: BLE001 - calls will answer it; start anyway
                self.log.error("%s", err)
            self.pool = WorkerPool(self.settings.worker, worker_env, self.settings.slots,
                                   self.log, workdir)
        return Invoker(env, self.settings, self.log, workdir, self.pool)

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

    def _not_ready(self) -> bytes:
        """The health 503's body: ``failed: `` and why a warm worker could not start (the
        provider shows it as the service's cause), or just ``not ready`` while they load."""
        errors = [w.error for w in self.pool.workers if w.error] if self.pool else []
        if not errors:
            return b"not ready\n"
        text = ("failed: " + errors[0].rstrip("\n") + "\n"
                + isolation_hint(self.invoker.env, errors[0]))
        return text.encode("utf-8", "replace")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = time.monotonic()
        path = scope["path"]
        if path == "/_/health":
            ok = self.ready
            await plain(send, 200 if ok else 503, b"OK\n" if ok else self._not_ready(),
                        started)
            return
        if path == "/_/status":
            doc = {"ready": self.ready, "slots": self.limiter.slots,
                   "running": self.limiter.running, "queued": self.limiter.queued,
                   "max_queue": self.limiter.max_queue}
            await plain(send, 200, json.dumps(doc).encode() + b"\n", started,
                        b"application/json")
            return
        if not await refuse_stranger(self.caller, scope, send, started, self.log):
            return
        try:
            await self.limiter.acquire()
        except QueueFull:
            self.log.warning("429: %d call(s) running and %d waiting", self.limiter.running,
                             self.limiter.queued)
            await plain(send, 429, self._queue_full(), started)
            return
        released = False

        def release() -> None:
            """The slot is free once the answer leaves (the call's clean-up may still run;
            the thread pool holds the next call until it ends)."""
            nonlocal released
            if not released:
                released = True
                self.limiter.release()

        try:
            if await self._claimed_elsewhere(scope, send, started):
                return
            await self._invoke(scope, receive, send, started, time.monotonic() - started,
                               release)
        finally:
            release()

    def _queue_full(self) -> bytes:
        """The 429's body: every slot busy and the wait queue full."""
        return (f"too many requests: {self.limiter.running} running and {self.limiter.queued} "
                f"waiting (max_inflight={self.limiter.slots}, "
                f"max_queue={self.limiter.max_queue})\n").encode()

    async def _claimed_elsewhere(self, scope: Scope, send: Send, started: float) -> bool:
        """A queued job claims its run from the gateway first (:mod:`.claim`); a redelivery
        is answered 409 here and runs nothing."""
        target = claim_target(scope["headers"])
        if target is None:
            return False
        loop = asyncio.get_running_loop()
        run, words = await loop.run_in_executor(self.executor, claim, target[1])
        self.log.info("job %s: %s", target[0], words)
        if run:
            return False
        body = (f"job {target[0]} was already delivered to this service; this redelivery "
                f"(the queue's ack_wait passed) did not run\n").encode()
        await send({"type": "http.response.start", "status": 409, "headers": [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (HEADER_DUPLICATE.lower().encode(), b"1")]})
        await send({"type": "http.response.body", "body": body})
        return True

    async def _invoke(self, scope: Scope, receive: Receive, send: Send, started: float,
                      queued: float, release: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        first = await receive()
        if first["type"] == "http.disconnect":
            return
        headers, _, _ = call_head(scope, self.settings.content_type)
        body = BodyReader(loop, receive, first, self.settings.read_timeout)
        answer = Answer(loop, send, headers, started, self.settings.write_timeout)
        answer.timings["queue"] = queued
        answer.sending = release
        try:
            await body.prefetch()  # on the loop: a small body reaches the thread whole
            await loop.run_in_executor(self.executor, self._run, body, cgi_env(scope), answer)
        except TimeoutError as err:
            self.log.warning("%s", err)
            if answer.streaming or answer.sent:
                raise
            answer.status, answer.buffer = 408, bytearray(f"{err}\n".encode())
        except ConnectionError as err:
            self.log.warning("%s", err)
            return
        if not answer.sent:  # the thread sends the answers it completes (Answer.finish)
            await answer.send_whole()

    def _run(self, body: BodyReader, cgi: dict[str, str], answer: Answer) -> None:
        self.invoker(body, cgi, answer)  # type: ignore[arg-type]
        answer.finish()


def serve(host: str, port: int, env: Mapping[str, str] | None = None) -> int:
    """Run the runtime until SIGTERM/SIGINT; returns the exit code.

    The socket is bound before anything else, and the first log line says where
    (``listening on http://H:P``, with the real port when ``port`` is 0).
    """
    import uvicorn

    guardian.start()  # what the runtime starts dies with it, even on SIGKILL
    env = dict(os.environ if env is None else env)
    log = SupervisorLog(stderr_logger())
    # An ignored signal stays ignored across exec: a parent that ignored SIGTERM (a provider
    # shutting down) would make the lifeline's SIGTERM, sent before the handler below is
    # set, a no-op, and the runtime would outlive its provider for good.
    if signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if env.pop(LIFELINE_ENV, "") == "stdin":
        threading.Thread(target=_lifeline, name="lifeline", daemon=True).start()
    try:
        settings = RuntimeSettings.from_env(env)
    except ValueError as err:
        log.error("%s", err)
        return 2
    try:  # a classic fprocess is the function, whatever else its env says
        expose = None if settings.classic else ExposeSettings.from_env(env)
    except ValueError as err:
        log.error("invalid expose settings: %s", err)
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
    try:
        workspace = tempfile.TemporaryDirectory(prefix="oscar-runtime-")
    except OSError as err:  # an image without a writable /tmp (and no TMPDIR)
        log.error("no writable temporary folder (TMPDIR=%s, else /tmp, /var/tmp, the working "
                  "folder): %s; the image needs a writable /tmp", env.get("TMPDIR", "unset"),
                  err.strerror or err)
        return 1
    with workspace as workdir:
        app: RuntimeApp | ExposeApp
        bound = sock.getsockname()
        ws = "none"
        if expose is not None:
            app = ExposeApp(expose, env, log, Path(workdir))
            ws = _websockets_impl(log)
            log.logger.info("listening on http://%s:%d (expose mode: %s on port %d, health "
                            "check %s)", bound[0], bound[1], expose.name, expose.port,
                            expose.check)
        else:
            if settings.classic:
                from .classic_app import ClassicApp  # it builds on RuntimeApp
                app = ClassicApp(env, settings, log, Path(workdir))
                mode = "classic watchdog: " + " ".join(settings.classic)
            else:
                app = RuntimeApp(env, settings, log, Path(workdir))
                mode = ("warm worker " + " ".join(settings.worker) if settings.worker
                        else "script")
            log.logger.info("listening on http://%s:%d (%s, %d slot(s), "
                    "max_queue %d)", bound[0], bound[1], mode, settings.slots,
                    settings.max_queue)
        config = uvicorn.Config(app, loop="asyncio", http="httptools", ws=ws,  # type: ignore[arg-type]
                                lifespan="off", access_log=False, log_config=None,
                                log_level="warning", server_header=False, date_header=False,
                                timeout_graceful_shutdown=5, **WEBSOCKET_OPTIONS)
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


def _websockets_impl(log: SupervisorLog) -> str:
    """uvicorn's WebSocket support for expose mode: the ``websockets`` package, when there."""
    try:
        import websockets  # noqa: F401
    except ImportError:
        log.warning("the websockets package is missing: WebSocket upgrades are refused")
        return "none"
    return "auto"  # uvicorn picks its sans-I/O websockets protocol


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)
