"""TEMPORARY BRIDGE (branch ``phttp``): ``/function/<name>`` over the old blocking
``backend.invoke`` in a thread, until helper ``pproxy``'s asynchronous proxy replaces this
file (same name and interface). Not meant to be kept; WebSocket upgrades are refused here."""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote

from ...contract import HOP_BY_HOP, canonical_header
from ...errors import OscarFaasError, ServiceNotFound
from ..entries import Call
from ..types import DEFAULT_NAMESPACE
from .messages import RequestBody, text_response

WATCHDOG_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})


class FunctionProxy:
    def __init__(self, backend: Any, metrics: Any = None) -> None:
        self.backend, self.metrics = backend, metrics
        self.pool = ThreadPoolExecutor(512, thread_name_prefix="call")

    async def aclose(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def websocket(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "websocket.close", "code": 1011})

    async def http(self, scope: Any, receive: Any, send: Any) -> None:
        loop = asyncio.get_running_loop()
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        length = next((v for k, v in headers if k == "content-length"), None)
        body = RequestBody(receive, loop, int(length) if length else None,
                           any(k == "transfer-encoding" for k, _ in headers))
        raw = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        rest = raw[len("/function/"):]
        full, _, tail = rest.partition("/")
        name = full.partition(".")[0]
        counted = False
        if self.metrics is not None:
            try:
                await loop.run_in_executor(self.pool, self.backend.get_function, name)
                counted = True
            except ServiceNotFound:
                pass
        started = time.monotonic()
        if counted:
            self.metrics.started(name)
        status, resp_headers, chunks, close = await loop.run_in_executor(
            self.pool, self._invoke, scope, headers, body, full, "/" + tail if tail else "/")
        out = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in resp_headers]
        await send({"type": "http.response.start", "status": status, "headers": out})
        try:
            while (piece := await loop.run_in_executor(self.pool, next, chunks, None)) is not None:
                if piece:
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await loop.run_in_executor(self.pool, close)
            if counted:
                self.metrics.observe(name, status, time.monotonic() - started)

    def _invoke(self, scope: Any, headers: list[tuple[str, str]], body: RequestBody,
                full: str, raw_path: str) -> Any:
        started, start_ns = time.monotonic(), time.time_ns()
        call_id = next((v for k, v in headers if k == "x-call-id"), "") or str(uuid.uuid4())
        internal = {"X-OpenFaaS-Internal": "proxy", "X-Call-Id": call_id}
        name, _, namespace = full.partition(".")
        method = scope["method"]

        def text(message: str, status: int, extra: dict[str, str]) -> Any:
            resp = text_response(message, status, extra)
            hdrs = list(resp.headers.items()) + [("Content-Length", str(len(resp.body)))]
            return status, hdrs, iter([resp.body]), lambda: None

        exposed = getattr(self.backend, "exposed", None)
        if method not in WATCHDOG_METHODS and not (exposed and exposed(name)):
            return text("Method not allowed", 405, {"X-Call-Id": call_id})
        if namespace not in ("", DEFAULT_NAMESPACE):
            return text(f"error finding function {full}: not found", 404, internal)
        host = next((v for k, v in headers if k == "host"), "")
        fwd = [(canonical_header(k), v) for k, v in headers if k not in HOP_BY_HOP]
        present = {k for k, _ in fwd}
        client = scope.get("client")
        extra = {"X-Call-Id": call_id, "X-Start-Time": str(start_ns),
                 "X-Forwarded-For": client[0] if client else "", "X-Forwarded-Host": host}
        fwd.extend((k, v) for k, v in extra.items() if k not in present and v)
        query = scope.get("query_string", b"").decode("latin-1")
        call = Call(method=method, raw_path=raw_path, path=unquote(raw_path), query=query,
                    headers=fwd, host=host, body=body, content_length=body.content_length,
                    chunked=body.chunked)
        try:
            answer = self.backend.invoke(name, call)
        except ServiceNotFound as err:
            return text(err.message, err.status, internal)
        except OscarFaasError as err:
            return text(err.message, err.status,
                        {**(internal if err.status != 429 else {"X-Call-Id": call_id}),
                         **err.headers})
        hdrs = {canonical_header(k): v for k, v in answer.headers}
        hdrs.update({"X-Duration-Seconds": f"{time.monotonic() - started:f}",
                     "X-Call-Id": call_id, "X-Start-Time": str(start_ns)})
        if answer.length is not None:
            hdrs["Content-Length"] = str(answer.length)
        if answer.close_connection:
            hdrs["Connection"] = "close"
        return answer.status, list(hdrs.items()), iter(answer.chunks), answer.close
