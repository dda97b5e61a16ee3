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
import ssl
import time
from typing import AsyncIterable, Mapping
from urllib.parse import urlsplit

from .config import Settings
from .errors import ConfigError, UpstreamNotReady, UpstreamTimeout, UpstreamUnreachable
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
        self.ready_wait = settings.run_ready_wait
        self.upstream = Upstream(parts.hostname, parts.port or (443 if tls else 80),
                                 settings.openfaas_timeout, settings.run_timeout or None,
                                 ssl=ssl.create_default_context() if tls else None)
        self._auth_headers = {"Authorization": "Basic " + base64.b64encode(
            f"{settings.openfaas_username}:{settings.openfaas_password or ''}".encode()
        ).decode()} if settings.openfaas_username else {}
        self._invoke_auth = self._auth_headers if settings.openfaas_invoke_auth else {}

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
        :raises UpstreamTimeout: no answer within the run timeout.
        """
        path = f"{self._prefix}/function/{name}"
        deadline = time.monotonic() + self.ready_wait
        delay = 0.05
        replayable = isinstance(body, (bytes, bytearray))
        if not replayable:
            await self._wait_ready(name, deadline)
        while True:
            resp = await self._post(name, path, body, headers, length)
            if resp.status == 401 and self._asks_for_credentials(resp) and replayable:
                resp.close()  # the embedded provider guards functions: send ours from now on
                self._invoke_auth = self._auth_headers
                resp = await self._post(name, path, body, headers, length)
            if resp.status != 503 or not _is_not_ready(resp):
                return resp
            resp.close()
            if not replayable or time.monotonic() >= deadline:
                raise UpstreamNotReady(
                    f"service {name} is not ready after {self.ready_wait:g} s (OpenFaaS "
                    f"answers 503): check its logs and try again")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _asks_for_credentials(self, resp: Response) -> bool:
        """A 401 the platform made (no ``X-Duration-Seconds``: no function ran) asking for
        Basic credentials we have and have not sent: the embedded provider with credentials.
        A real OpenFaaS gateway never asks, so its functions never see our credentials."""
        return (bool(self._auth_headers) and not self._invoke_auth
                and resp.header(b"X-Duration-Seconds") is None
                and (resp.header(b"WWW-Authenticate") or b"").startswith(b"Basic"))

    async def _post(self, name: str, path: str, body: bytes | AsyncIterable[bytes],
                    headers: Mapping[str, str], length: int | None) -> Response:
        if self._invoke_auth:  # the client's own Authorization was never forwarded
            headers = {**headers, **self._invoke_auth}
        try:
            return await self.upstream.request("POST", path, headers, body, length)
        except TimeoutError:
            raise UpstreamTimeout(
                f"service {name} did not answer within {self.run_timeout:g} s (RUN_TIMEOUT);"
                f" use an asynchronous service or raise the timeout") from None
        except ConnectionError:  # refused, reset, closed early, not HTTP
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
            if ready is None or ready > 0 or time.monotonic() >= deadline:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


def _is_not_ready(resp: Response) -> bool:
    """A 503 the platform made (not ready), as opposed to one the function returned."""
    return (resp.header(b"X-OpenFaaS-Internal") is not None
            or resp.header(b"X-Duration-Seconds") is None)
