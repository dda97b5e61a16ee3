"""Who may call this function: the runtime checks its own caller.

OpenFaaS leaves ``/function/<name>`` open (faas-provider has no auth on its proxy, and the
real gateway sends no credentials there), and on one machine any local process can reach a
runtime's loopback port. So the check that matters is made here, at the last hop, the same
whichever way a call came: an OSCAR service answers only calls that carry its token, as
OSCAR asks for it:

* a service run by scripts or warm workers: ``Authorization: Bearer <token>`` (the gateway's
  ``/run`` sends it after checking the client's token or the cluster's Basic credentials);
* an exposed service with ``set_auth``: Basic ``<service name>:<token>`` (OSCAR's rule);
  without ``set_auth`` it is open, as in OSCAR.

The token travels in the service's secret (``$OSCAR_SECRETS_DIR/$OSCAR_STORAGE_SECRET``,
key :data:`~oscar_faas.contract.SECRET_TOKEN_KEY`), never in env or annotations, and is read
again whenever that file changes, so a new token counts from the next call. A function with
no token in its secret (what faas-cli deploys) stays open, as in OpenFaaS. Health and status
paths are always open: platforms probe them without credentials.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import threading
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..contract import (ENV_FUNCTION_CONFIG, ENV_SECRETS_DIR, ENV_STORAGE_SECRET,
                        OPENFAAS_SECRETS_DIR, SECRET_TOKEN_KEY, basic_credentials,
                        bearer_token)
from .asgi_io import plain

#: What a caller without the right credentials is told (no hint of what was wrong with them).
DENIED_BEARER = (b"invalid or missing service token: send 'Authorization: Bearer <token>' "
                 b"(the 'token' field of GET /system/services/<name>)\n")
DENIED_BASIC = (b"this exposed service has set_auth: send Basic credentials, user = the "
                b"service name, password = its token\n")


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


class CallerCheck:
    """The runtime's caller check (see the module's documentation). Thread-safe: calls run
    on the event loop and the token is re-read only when the secret's file changes."""

    def __init__(self, env: Mapping[str, str], *, exposed: bool = False) -> None:
        name = (env.get(ENV_STORAGE_SECRET) or "").strip()
        self.path: Path | None = (Path(env.get(ENV_SECRETS_DIR) or OPENFAAS_SECRETS_DIR) / name
                                  if name else None)
        self.exposed = exposed
        config = _function_config(env)
        self.service = str(config.get("name") or "")
        expose = config.get("expose") if isinstance(config.get("expose"), dict) else {}
        #: an exposed service without set_auth is open, as in OSCAR
        self.open_exposed = exposed and not bool(expose.get("set_auth"))
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None
        self._token: str | None = None
        self._problem: str | None = None

    @property
    def realm(self) -> bytes:
        return (b'Basic realm="Authorization Required"' if self.exposed
                else b'Bearer realm="oscar-faas"')

    @property
    def denied(self) -> bytes:
        return DENIED_BASIC if self.exposed else DENIED_BEARER

    def token(self) -> str | None:
        """The service's token, or None when it has none (an open function).

        :raises PermissionError: the secret is named but cannot be read (fail closed; the
            message says which file and why).
        """
        if self.path is None:
            return None
        try:
            info = os.stat(self.path)
        except OSError as err:
            raise PermissionError(f"cannot read the service's secret {self.path}: "
                                  f"{err.strerror or err}") from None
        seen = (info.st_ino, info.st_mtime_ns, info.st_size)
        with self._lock:
            if seen != self._seen:
                self._token, self._problem = _read_token(self.path)
                self._seen = seen
            if self._problem is not None:
                raise PermissionError(self._problem)
            return self._token

    def allows(self, authorization: str | None) -> bool:
        """Whether a call with this ``Authorization`` header may run.

        :raises PermissionError: the token cannot be read (the caller answers 503).
        """
        if self.open_exposed:
            return True
        token = self.token()
        if token is None:
            return True
        if self.exposed:
            creds = basic_credentials(authorization)
            return (creds is not None and _equal(creds[0], self.service)
                    and _equal(creds[1], token))
        given = bearer_token(authorization)
        return given is not None and _equal(given, token)


async def refuse_stranger(caller: CallerCheck, scope: Any, send: Any, started: float,
                          log: Any) -> bool:
    """Answer a call that may not run (401, or 503 when the token cannot be read) and say
    False; True when it may go on."""
    try:
        if caller.allows(authorization_of(scope["headers"])):
            return True
    except PermissionError as err:
        log.error("%s", err)
        await plain(send, 503, f"{err}\n".encode(), started)
        return False
    await send({"type": "http.response.start", "status": 401, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(caller.denied)).encode()),
        (b"www-authenticate", caller.realm)]})
    await send({"type": "http.response.body", "body": caller.denied})
    return False


def authorization_of(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The ``Authorization`` value of an ASGI scope's headers."""
    for key, value in headers:
        if key == b"authorization":
            return value.decode("latin-1")
    return None


def _read_token(path: Path) -> tuple[str | None, str | None]:
    """``(token, problem)`` from the secret's JSON."""
    try:
        doc = json.loads(path.read_text())
    except OSError as err:
        return None, f"cannot read the service's secret {path}: {err.strerror or err}"
    except ValueError as err:
        return None, f"the service's secret {path} is not valid JSON: {err}"
    token = doc.get(SECRET_TOKEN_KEY) if isinstance(doc, dict) else None
    return (token if isinstance(token, str) and token else None), None


def _function_config(env: Mapping[str, str]) -> dict:
    try:
        config = yaml.safe_load(base64.b64decode(env.get(ENV_FUNCTION_CONFIG) or ""))
    except Exception:  # noqa: BLE001 - a malformed config is reported by the supervisor
        return {}
    return config if isinstance(config, dict) else {}
