"""Synchronous calls to OpenFaaS ``/function/<name>``: the gateway's hot path.

Management calls are rare and go through :class:`~oscar_faas.openfaas.OpenFaaSClient`
(``requests``, in threads). ``/run`` is the call that is made thousands of times a second, so
it runs on the worker's event loop with one pooled ``aiohttp`` session per worker process: no
thread hand-off, no per-call allocation of a client, and both bodies stream with
backpressure. One method, :meth:`FunctionInvoker.invoke`, holds every decision about
retrying and every translation of a transport error into the package's error tree.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import AsyncIterable, Mapping

import aiohttp

from .config import Settings
from .errors import UpstreamNotReady, UpstreamTimeout, UpstreamUnreachable

#: Connections kept open to the OpenFaaS gateway per worker; /run calls reuse them.
POOL_SIZE = 64
#: Headers aiohttp would add on its own. A function must see what the client sent, nothing
#: more: no invented Content-Type for oscar-cli's bare base64 body, no Accept-Encoding that
#: would let a function compress an answer the client cannot decode.
NO_AUTO_HEADERS = ("Content-Type", "Accept-Encoding", "Accept", "User-Agent")


class FunctionInvoker:
    """Calls the functions of one OpenFaaS gateway; create it per process, use it from the
    event loop that serves requests, :meth:`close` it when that loop stops."""

    def __init__(self, settings: Settings, base_url: str | None = None) -> None:
        url = base_url or settings.openfaas_url
        if not url:
            raise ValueError("FunctionInvoker needs a gateway URL (OPENFAAS_URL)")
        self.base_url = url.rstrip("/")
        self.connect_timeout = settings.openfaas_timeout
        self.run_timeout = settings.run_timeout
        self.ready_wait = settings.run_ready_wait
        self._auth_headers = {"Authorization": "Basic " + base64.b64encode(
            f"{settings.openfaas_username}:{settings.openfaas_password or ''}".encode()
        ).decode()} if settings.openfaas_username else {}
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        """The session, made on first use: it belongs to the loop that is running then
        (gunicorn builds the app before the worker's loop exists)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=POOL_SIZE, limit_per_host=POOL_SIZE,
                                               ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout,
                                              sock_read=self.run_timeout or None),
                auto_decompress=False, skip_auto_headers=NO_AUTO_HEADERS,
                trust_env=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def invoke(self, name: str, body: bytes | AsyncIterable[bytes],
                     headers: Mapping[str, str]) -> aiohttp.ClientResponse:
        """Start a synchronous call and return the response with its body unread; the
        caller streams it, then calls ``release()`` (read to the end) or ``close()``.

        Right after a deploy OpenFaaS answers 503 until the function is ready: a replayable
        body (bytes) is re-sent with backoff within ``ready_wait`` seconds; a stream can be
        sent only once, so it waits for an available replica first.

        :raises UpstreamNotReady: still 503 after the wait.
        :raises UpstreamUnreachable: no connection.
        :raises UpstreamTimeout: no answer within the run timeout.
        """
        url = f"{self.base_url}/function/{name}"
        deadline = time.monotonic() + self.ready_wait
        delay = 0.05
        replayable = isinstance(body, (bytes, bytearray))
        if not replayable:
            await self._wait_ready(name, deadline)
        while True:
            resp = await self._post(name, url, body, headers)
            if resp.status != 503 or not _is_not_ready(resp):
                return resp
            resp.close()
            if not replayable or time.monotonic() >= deadline:
                raise UpstreamNotReady(
                    f"service {name} is not ready after {self.ready_wait:g} s (OpenFaaS "
                    f"answers 503): check its logs and try again")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _post(self, name: str, url: str, body: bytes | AsyncIterable[bytes],
                    headers: Mapping[str, str]) -> aiohttp.ClientResponse:
        try:
            return await self._client().post(url, data=body, headers=headers,
                                              allow_redirects=False)
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamTimeout(
                f"service {name} did not answer within {self.run_timeout:g} s (RUN_TIMEOUT);"
                f" use an asynchronous service or raise the timeout") from None
        except (aiohttp.ClientError, OSError):  # refused, reset, DNS...
            raise UpstreamUnreachable(
                f"cannot reach OpenFaaS at {self.base_url} to run {name}: is the gateway "
                f"running and OPENFAAS_URL right?") from None

    async def _wait_ready(self, name: str, deadline: float) -> None:
        """Poll the function's status until it has a ready replica or the deadline passes;
        any answer that says nothing about replicas ends the wait (the call then tells)."""
        delay = 0.05
        while True:
            try:
                async with self._client().get(f"{self.base_url}/system/function/{name}",
                                              headers=self._auth_headers) as resp:
                    status = await resp.json() if resp.status == 200 else {}
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError):
                return
            ready = status.get("availableReplicas") if isinstance(status, dict) else None
            if ready is None or ready > 0 or time.monotonic() >= deadline:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


def _is_not_ready(resp: aiohttp.ClientResponse) -> bool:
    """A 503 the platform made (not ready), as opposed to one the function returned."""
    return (resp.headers.get("X-OpenFaaS-Internal") is not None
            or resp.headers.get("X-Duration-Seconds") is None)
