"""A client for the OpenFaaS gateway REST API: one method per call, errors translated once.

Like ``requests.Session`` over its adapters, every call goes through :meth:`_send`, the only
place that catches transport errors, always passes a timeout and maps OpenFaaS statuses to
the package's error tree. The session pools connections (one pool per gateway process).
"""

from __future__ import annotations

import ssl
from typing import Any, Iterable, Mapping

import requests
from requests.adapters import HTTPAdapter

from .config import Settings
from .errors import (OscarFaasError, ServiceNotFound, UpstreamError, UpstreamTimeout,
                     UpstreamUnreachable)

#: Connections kept open to the gateway; /run calls reuse them.
POOL_SIZE = 64


def system_tls_context() -> ssl.SSLContext:
    """What an ``https://`` OPENFAAS_URL's certificate is checked against, for management
    calls and ``/run`` alike: the system CAs (OpenSSL's default paths, so ``SSL_CERT_FILE``
    and ``SSL_CERT_DIR`` apply), not certifi's bundle."""
    return ssl.create_default_context()


class SystemTrustAdapter(HTTPAdapter):
    """``requests`` checking certificates with :func:`system_tls_context` only (by default
    it loads certifi's bundle into every connection)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = system_tls_context()
        super().init_poolmanager(*args, **kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        super().cert_verify(conn, url, verify, cert)
        if verify is True:
            conn.ca_certs = conn.ca_cert_dir = None  # keep to the context's CAs


class OpenFaaSClient:
    """Talks to one OpenFaaS gateway (a cluster's, or the embedded provider)."""

    def __init__(self, settings: Settings, base_url: str | None = None) -> None:
        url = base_url or settings.openfaas_url
        if not url:
            raise ValueError("OpenFaaSClient needs a gateway URL (OPENFAAS_URL)")
        self.base_url = url.rstrip("/")
        self.timeout = settings.openfaas_timeout
        self.session = requests.Session()
        adapter = SystemTrustAdapter(pool_connections=4, pool_maxsize=POOL_SIZE,
                                     max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.trust_env = False
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

    def healthy(self) -> bool:
        """True when the gateway's ``/healthz`` answers 200 within 2 s."""
        try:
            return self.session.get(self.base_url + "/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

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

    def logs(self, name: str, since: str = "", tail: int = 0,
             follow: bool = False) -> requests.Response:
        """``GET /system/logs`` (faas-provider's logs contract), streamed: NDJSON messages.
        The caller reads and closes it; a followed stream has no read timeout.

        :raises OscarFaasError: 501 when the provider has no logs.
        """
        params: dict[str, Any] = {"name": name, "follow": "true" if follow else "false"}
        if since:
            params["since"] = since
        if tail:
            params["tail"] = str(tail)
        resp = self._send("GET", "/system/logs", params=params, stream=True, ok=(200, 501),
                          timeout=(self.timeout, None if follow else self.timeout))
        if resp.status_code == 501:
            resp.close()
            raise OscarFaasError(f"the OpenFaaS provider at {self.base_url} does not serve "
                                 f"function logs (501)", status=501)
        return resp

    # ------------------------------------------------------------------ secrets

    def list_secrets(self) -> list[str]:
        """Names of the secrets (values are never returned)."""
        return [s["name"] for s in self._send("GET", "/system/secrets").json() or []
                if isinstance(s, dict) and isinstance(s.get("name"), str)]

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
