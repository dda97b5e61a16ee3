"""A client for the OpenFaaS gateway REST API: one method per call, errors translated once.

Like ``requests.Session`` over its adapters, every call goes through :meth:`_send`, the only
place that catches transport errors, always passes a timeout and maps OpenFaaS statuses to
the package's error tree. The session pools connections (one pool per gateway process).
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Mapping

import requests
import urllib3
from requests.adapters import HTTPAdapter

from .config import Settings
from .errors import (ServiceNotFound, UpstreamError, UpstreamNotReady, UpstreamTimeout,
                     UpstreamUnreachable)

#: Connections kept open to the gateway; /run calls reuse them.
POOL_SIZE = 64


class OpenFaaSClient:
    """Talks to one OpenFaaS gateway (a cluster's, or the embedded provider)."""

    def __init__(self, settings: Settings, base_url: str | None = None) -> None:
        url = base_url or settings.openfaas_url
        if not url:
            raise ValueError("OpenFaaSClient needs a gateway URL (OPENFAAS_URL)")
        self.base_url = url.rstrip("/")
        self.timeout = settings.openfaas_timeout
        self.run_timeout = settings.run_timeout
        self.ready_wait = settings.run_ready_wait
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.trust_env = False
        self._pool = urllib3.PoolManager(num_pools=4, maxsize=POOL_SIZE, retries=False)
        self._run_timeout = urllib3.Timeout(connect=self.timeout,
                                            read=self.run_timeout or None)
        self._auth = (
            (settings.openfaas_username, settings.openfaas_password or "")
            if settings.openfaas_username else None)

    # ------------------------------------------------------------------ transport

    def _send(self, method: str, path: str, *, ok: Iterable[int] = (200,),
              not_found: str | None = None, **kwargs: Any) -> requests.Response:
        """Send one management call; return the response when its status is in ``ok``.

        :raises ServiceNotFound: OpenFaaS answered 404 and ``not_found`` names the thing.
        :raises UpstreamUnreachable: no connection (the message names the URL).
        :raises UpstreamTimeout: no answer within the timeout.
        :raises UpstreamError: any other status; a 4xx keeps its status and message.
        """
        url = self.base_url + path
        kwargs.setdefault("timeout", self.timeout)
        try:
            resp = self.session.request(method, url, auth=self._auth, **kwargs)
        except requests.Timeout:
            raise UpstreamTimeout(
                f"OpenFaaS at {self.base_url} did not answer {method} {path} within "
                f"{kwargs['timeout']} s") from None
        except requests.ConnectionError:
            raise UpstreamUnreachable(
                f"cannot reach OpenFaaS at {self.base_url}: is the gateway running and "
                f"OPENFAAS_URL right?") from None
        if resp.status_code in ok:
            return resp
        if resp.status_code == 404 and not_found:
            raise ServiceNotFound(not_found)
        message = resp.text.strip() or resp.reason or ""
        if resp.status_code == 401:
            raise UpstreamError(
                f"OpenFaaS at {self.base_url} refused the credentials (401): set "
                f"OPENFAAS_USERNAME/OPENFAAS_PASSWORD", status=502)
        status = resp.status_code if 400 <= resp.status_code < 500 else 502
        raise UpstreamError(
            f"OpenFaaS {method} {path} failed with {resp.status_code}: {message}", status=status)

    # ------------------------------------------------------------------ functions

    def info(self) -> dict[str, Any]:
        return self._send("GET", "/system/info").json()

    def list_functions(self) -> list[dict[str, Any]]:
        return self._send("GET", "/system/functions").json() or []

    def get_function(self, name: str) -> dict[str, Any]:
        return self._send("GET", f"/system/function/{name}",
                          not_found=f"function {name} not found").json()

    def deploy(self, deployment: Mapping[str, Any]) -> None:
        self._send("POST", "/system/functions", json=deployment, ok=(200, 201, 202))

    def update(self, deployment: Mapping[str, Any]) -> None:
        name = deployment["service"]
        self._send("PUT", "/system/functions", json=deployment, ok=(200, 201, 202),
                   not_found=f"function {name} not found")

    def delete(self, name: str) -> None:
        self._send("DELETE", "/system/functions", json={"functionName": name},
                   ok=(200, 202, 204), not_found=f"function {name} not found")

    # ------------------------------------------------------------------ secrets

    def put_secret(self, name: str, value: str) -> None:
        """Create or replace a secret (PUT, then POST when it does not exist yet)."""
        body = {"name": name, "value": value}
        try:
            self._send("PUT", "/system/secrets", json=body, ok=(200, 201, 202, 204),
                       not_found=f"secret {name} not found")
        except ServiceNotFound:
            self._send("POST", "/system/secrets", json=body, ok=(200, 201, 202, 204))
        except UpstreamError as exc:
            # Some providers answer 500 or 400 instead of 404 for an unknown secret.
            if isinstance(exc, (UpstreamUnreachable, UpstreamTimeout)):
                raise
            self._send("POST", "/system/secrets", json=body, ok=(200, 201, 202, 204))

    def delete_secret(self, name: str) -> None:
        """Delete a secret; one that is already gone is fine."""
        try:
            self._send("DELETE", "/system/secrets", json={"name": name},
                       ok=(200, 202, 204), not_found=f"secret {name} not found")
        except ServiceNotFound:
            pass

    # ------------------------------------------------------------------ invocation

    def invoke(self, name: str, body: bytes | Iterable[bytes], headers: Mapping[str, str],
               ) -> urllib3.BaseHTTPResponse:
        """Start a synchronous call and return the unread response; the caller streams it
        and then calls :func:`finish`.

        This is the hot path, so it speaks urllib3 directly (requests' conveniences cost
        more than half a millisecond a call) over a pool kept for the app's lifetime.

        Right after a deploy OpenFaaS answers 503 ("No endpoints available") until the
        function is ready; retry with backoff within ``ready_wait`` seconds. Retrying is
        only possible while the body has not been consumed, so a replayable body (bytes)
        is retried and a stream is sent once after waiting for readiness.

        :raises UpstreamNotReady: still 503 after the wait.
        :raises UpstreamUnreachable: no connection.
        :raises UpstreamTimeout: no answer within the run timeout.
        """
        url = f"{self.base_url}/function/{name}"
        deadline = time.monotonic() + self.ready_wait
        delay = 0.05
        replayable = isinstance(body, (bytes, bytearray))
        if not replayable:
            self._wait_ready(name, deadline)
        while True:
            try:
                sized = replayable or "Content-Length" in headers
                resp = self._pool.urlopen(
                    "POST", url, body=body, headers=dict(headers), chunked=not sized,
                    preload_content=False, decode_content=False, retries=False,
                    release_conn=False, timeout=self._run_timeout)
            except urllib3.exceptions.ReadTimeoutError:
                raise UpstreamTimeout(
                    f"service {name} did not answer within {self.run_timeout:g} s (RUN_TIMEOUT);"
                    f" use an asynchronous service or raise the timeout") from None
            except urllib3.exceptions.HTTPError:  # refused, reset, connect timeout...
                raise UpstreamUnreachable(
                    f"cannot reach OpenFaaS at {self.base_url} to run {name}: is the gateway "
                    f"running?") from None
            if resp.status != 503 or not _is_not_ready(resp):
                return resp
            finish(resp, complete=False)
            if not replayable or time.monotonic() >= deadline:
                raise UpstreamNotReady(
                    f"service {name} is not ready after {self.ready_wait:g} s (OpenFaaS "
                    f"answers 503): check its logs and try again")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _wait_ready(self, name: str, deadline: float) -> None:
        """Poll the function status until it has a ready replica or the deadline passes."""
        delay = 0.05
        while True:
            try:
                status = self.get_function(name)
            except ServiceNotFound:
                return
            ready = status.get("availableReplicas")
            if ready is None or ready > 0 or time.monotonic() >= deadline:
                return
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def finish(resp: urllib3.BaseHTTPResponse, complete: bool) -> None:
    """Return a fully read response's connection to the pool; drop a half-read one (its
    remaining bytes would corrupt the next call on that connection)."""
    if complete:
        resp.release_conn()
    else:
        resp.close()
        resp.release_conn()


def _is_not_ready(resp: urllib3.BaseHTTPResponse) -> bool:
    """A 503 the platform made (not ready), as opposed to one the function returned."""
    return resp.headers.get("X-OpenFaaS-Internal") is not None or resp.headers.get(
        "X-Duration-Seconds") is None
