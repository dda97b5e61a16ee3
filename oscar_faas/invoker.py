"""Synchronous calls to OpenFaaS ``/function/<name>``: the gateway's hot path.

Management calls are rare and go through :class:`~oscar_faas.openfaas.OpenFaaSClient`
(``requests``, in threads). ``/run`` is the call that is made thousands of times a second, so
it runs on the worker's event loop over :class:`~oscar_faas.upstream.Upstream`, one pool of
keep-alive connections per worker process: no thread hand-off, and both bodies stream with
backpressure. One method, :meth:`FunctionInvoker.invoke`, holds every decision about
retrying and every translation of a transport error into the package's error tree.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any, AsyncIterable, Mapping
from urllib.parse import urlsplit

from .config import Settings
from .errors import (ConfigError, UpstreamError, UpstreamNotReady, UpstreamTimeout,
                     UpstreamUnreachable)
from .openfaas import system_tls_context
from .upstream import Response, Upstream


class FunctionInvoker:
    """Calls the functions of one OpenFaaS gateway; create it per process, use it from the
    event loop that serves requests, :meth:`close` it when that loop stops."""

    def __init__(self, settings: Settings, base_url: str | None = None) -> None:
        url = base_url or settings.openfaas_url
        if not url:
            raise ValueError("FunctionInvoker needs a gateway URL (OPENFAAS_URL)")
        self.base_url = url.rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"OPENFAAS_URL must be an http:// or https:// URL (got {url!r})")
        tls = parts.scheme == "https"
        self._prefix = parts.path.rstrip("/")
        self.run_timeout = settings.run_timeout
        #: :class:`~oscar_faas.metrics.RunMetrics` (retries, upstream errors), or None
        self.metrics: Any = None
        self.ready_wait = settings.run_ready_wait
        self.upstream = Upstream(parts.hostname, parts.port or (443 if tls else 80),
                                 settings.openfaas_timeout, settings.run_timeout or None,
                                 ssl=system_tls_context() if tls else None)
        self._auth_headers = {"Authorization": "Basic " + base64.b64encode(
            f"{settings.openfaas_username}:{settings.openfaas_password or ''}".encode()
        ).decode()} if settings.openfaas_username else {}

    async def close(self) -> None:
        self.upstream.close()

    async def invoke(self, name: str, body: bytes | AsyncIterable[bytes],
                     headers: Mapping[str, str], length: int | None = None) -> Response:
        """Start a synchronous call and return the response with its body unread; the
        caller streams it, then calls ``release()`` (read to the end) or ``close()``.

        Right after a deploy OpenFaaS answers 503 until the function is ready: a replayable
        body (bytes) is re-sent with backoff within ``ready_wait`` seconds; a stream can be
        sent only once, so it waits for an available replica first.

        :raises UpstreamNotReady: still 503 after the wait.
        :raises UpstreamUnreachable: no connection.
        :raises UpstreamTimeout: no answer within the run timeout, or OpenFaaS' own empty
            502 after a while (its ``upstream_timeout``).
        :raises UpstreamError: OpenFaaS' own empty 502 at once (it cannot reach the function).
        """
        path = f"{self._prefix}/function/{name}"
        deadline = time.monotonic() + self.ready_wait
        delay = 0.05
        replayable = isinstance(body, (bytes, bytearray))
        if not replayable:
            await self._wait_ready(name, deadline)
        while True:
            sent = time.monotonic()
            resp = await self._post(name, path, body, headers, length)
            if resp.status == 502 and _is_bare_502(resp):
                resp.close()
                err = _bare_502_error(name, time.monotonic() - sent)
                self._count_error(name, "openfaas_timeout" if isinstance(err, UpstreamTimeout)
                                  else "bad_gateway")
                raise err
            if resp.status != 503 or not _is_not_ready(resp):
                return resp
            detail = (await resp.read()).decode("utf-8", "replace").strip()
            resp.close()
            retry = resp.header(b"Retry-After")  # it cannot start now: no use waiting
            if retry is not None or not replayable or time.monotonic() >= deadline:
                self._count_error(name, "not_ready")
                raise UpstreamNotReady(  # with Retry-After, the client learns when to retry
                    not_ready_message(name, self.ready_wait, detail, retry is not None),
                    headers=None if retry is None else {"Retry-After": retry.decode("latin-1")})
            if self.metrics is not None:
                self.metrics.ready_retry(name)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _count_error(self, name: str, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.upstream_error(name, kind)

    async def _post(self, name: str, path: str, body: bytes | AsyncIterable[bytes],
                    headers: Mapping[str, str], length: int | None) -> Response:
        try:
            return await self.upstream.request("POST", path, headers, body, length)
        except TimeoutError:
            self._count_error(name, "timeout")
            raise UpstreamTimeout(
                f"service {name} did not answer within {self.run_timeout:g} s (RUN_TIMEOUT);"
                f" use an asynchronous service or raise the timeout") from None
        except ConnectionError:  # refused, reset, closed early, not HTTP
            self._count_error(name, "unreachable")
            raise UpstreamUnreachable(
                f"cannot reach OpenFaaS at {self.base_url} to run {name}: is the gateway "
                f"running and OPENFAAS_URL right?") from None

    async def _wait_ready(self, name: str, deadline: float) -> None:
        """Poll the function's status until it has a ready replica or the deadline passes;
        any answer that says nothing about replicas ends the wait (the call then tells)."""
        delay = 0.05
        while True:
            try:
                resp = await self.upstream.request(
                    "GET", f"{self._prefix}/system/function/{name}", self._auth_headers)
                data = await resp.read()
                resp.release()
                status = json.loads(data) if resp.status == 200 else {}
            except (OSError, ValueError):
                return
            ready = status.get("availableReplicas") if isinstance(status, dict) else None
            runtime = status.get("runtime") if isinstance(status, dict) else None
            failed = isinstance(runtime, dict) and "retryIn" in runtime  # the call tells why
            if ready is None or ready > 0 or failed or time.monotonic() >= deadline:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


def not_ready_message(name: str, waited: float, detail: str, failed: bool) -> str:
    """A service that is not ready: the provider's words, whole (the embedded provider names
    the cause: an image that cannot be pulled, a runtime or worker that fails at start)."""
    if failed:
        return f"service {name} is not ready: {detail}"
    return (f"service {name} is not ready after {waited:g} s (RUN_READY_WAIT; OpenFaaS "
            "answers 503" + (f": {detail}" if detail else "") + "): check its logs and try "
            "again")


#: A bare 502 that took at least this long is taken for the OpenFaaS gateway giving up on the
#: function (``upstream_timeout``); a quicker one for its provider being unreachable.
TIMEOUT_HINT_AFTER = 1.0


def _is_bare_502(resp: Response) -> bool:
    """The OpenFaaS gateway's own 502: an empty body and no ``X-Duration-Seconds`` (which
    every answer of a watchdog carries, so a function's own 502 is never taken for it)."""
    return (resp.header(b"Content-Length") == b"0"
            and resp.header(b"X-Duration-Seconds") is None)


def _bare_502_error(name: str, elapsed: float) -> UpstreamError:
    """Name the likely cause of an empty 502, as the RUN_TIMEOUT message does for ours."""
    if elapsed >= TIMEOUT_HINT_AFTER:
        return UpstreamTimeout(
            f"service {name}: OpenFaaS gave up after {elapsed:.1f} s with an empty 502; its "
            f"gateway's upstream_timeout (default 60 s) is most likely shorter than the "
            f"script: raise upstream_timeout, read_timeout and write_timeout on the OpenFaaS "
            f"gateway (and exec_timeout on the function), or use an asynchronous service")
    return UpstreamError(
        f"service {name}: OpenFaaS answered 502 with an empty body at once; its gateway "
        f"most likely cannot reach its provider or the function: check the OpenFaaS "
        f"gateway's and provider's logs")


def _is_not_ready(resp: Response) -> bool:
    """A 503 the platform made (not ready), as opposed to one the function returned."""
    return (resp.header(b"X-OpenFaaS-Internal") is not None
            or resp.header(b"X-Duration-Seconds") is None)
