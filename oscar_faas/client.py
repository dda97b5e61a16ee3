"""A small OSCAR API client for the ``oscar-faas`` CLI (the CLI is to this what
``requests.api`` is to ``Session``).

It talks to any OSCAR-compatible endpoint exactly as oscar-cli does: Basic auth on
``/system/*``, GET-then-PUT-or-POST for ``apply``, and a base64 body streamed to ``/run``.
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import requests

from .errors import OscarFaasError
from .fdl import load_fdl

CHUNK = 3 * 64 * 1024  # a multiple of 3, so base64 chunks concatenate cleanly
#: Show a progress bar for inputs and outputs at least this large.
PROGRESS_MIN = 4 * 1024 * 1024


class ClientError(OscarFaasError):
    """The endpoint refused a call or could not be reached; the message says what to do."""


@dataclass
class Endpoint:
    url: str
    user: str
    password: str
    verify: bool = True
    timeout: float = 60.0


class Progress:
    """A one-line progress bar on stderr, shown only on a terminal for large transfers."""

    def __init__(self, label: str, total: int | None, stream: IO[str] = sys.stderr) -> None:
        self.label, self.total, self.stream = label, total, stream
        self.done = 0
        self.enabled = stream.isatty() and (total is None or total >= PROGRESS_MIN)

    def advance(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        mib = self.done / 2**20
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            self.stream.write(f"\r{self.label} [{bar:<30}] {frac:4.0%} {mib:8.1f} MiB")
        else:
            self.stream.write(f"\r{self.label} {mib:8.1f} MiB")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def base64_chunks(source: IO[bytes], progress: Progress | None = None) -> Iterator[bytes]:
    """Stream ``source`` as standard padded base64 without newlines (as oscar-cli does)."""
    while True:
        chunk = source.read(CHUNK)
        if not chunk:
            return
        if progress:
            progress.advance(len(chunk))
        yield base64.b64encode(chunk)


class OscarClient:
    """One OSCAR endpoint, one pooled session."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.session = requests.Session()
        self.session.auth = (endpoint.user, endpoint.password)
        self.session.verify = endpoint.verify

    def _call(self, method: str, path: str, *, ok: tuple[int, ...] = (200, 201, 204),
              **kwargs: Any) -> requests.Response:
        url = self.endpoint.url.rstrip("/") + path
        kwargs.setdefault("timeout", self.endpoint.timeout)
        try:
            resp = self.session.request(method, url, **kwargs)
        except requests.ConnectionError:
            raise ClientError(
                f"cannot reach {self.endpoint.url}: start the gateway with 'oscar-faas serve' "
                f"or pass --endpoint / set OSCAR_ENDPOINT") from None
        except requests.Timeout:
            raise ClientError(f"{self.endpoint.url} did not answer {method} {path} in time")
        if resp.status_code in ok:
            return resp
        if resp.status_code == 401:
            raise ClientError("invalid credentials: pass --user/--password or set "
                              "OSCAR_USERNAME/OSCAR_PASSWORD")
        raise ClientError(f"{method} {path} failed with {failure(resp)}")

    def get_service(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/system/services/{name}", ok=(200,)).json()

    def list_services(self) -> list[dict[str, Any]]:
        return self._call("GET", "/system/services", ok=(200,)).json() or []

    def remove_service(self, name: str, purge: bool = False) -> None:
        self._call("DELETE", f"/system/services/{name}",
                   params={"purge": "true"} if purge else None)

    def logs(self, name: str, since: str = "", tail: int = 0, follow: bool = False
             ) -> Iterator[dict[str, Any]]:
        """The log messages of service ``name`` (``GET /system/services/<name>/logs``), as
        they come; with ``follow``, until the server ends the stream."""
        params = {"follow": "true" if follow else "false"}
        if since:
            params["since"] = since
        if tail:
            params["tail"] = str(tail)
        resp = self._call("GET", f"/system/services/{name}/logs", ok=(200,), params=params,
                          stream=True, timeout=(self.endpoint.timeout,
                                                None if follow else self.endpoint.timeout))
        with resp:
            for line in resp.iter_lines():
                if line.strip():  # blank lines keep a quiet stream alive
                    yield json.loads(line)

    def apply(self, fdl_path: str | Path, env: dict[str, str] | None = None,
              warn: Callable[[str], None] | None = None) -> list[tuple[str, str]]:
        """Create or update every service of an FDL file (GET, then PUT or POST, like
        oscar-cli); ``env`` adds or overrides ``environment.variables`` of every service
        (like faas-cli's ``--env``). Returns ``(name, "created"|"updated")`` pairs.

        Each key of the file that no service has (a typo: ``memroy:``) is passed to ``warn``
        first (default: a ``warning:`` line on stderr); it is ignored, as the server would.
        """
        fdl = load_fdl(fdl_path)
        for line in fdl.warnings:
            (warn or _warn_on_stderr)(line)
        done = []
        for service in fdl.services:
            service.environment["variables"].update(env or {})
            body = service.to_dict()
            found = self._call("GET", f"/system/services/{service.name}", ok=(200, 404))
            if found.status_code == 200:
                self._call("PUT", "/system/services", json=body)
                done.append((service.name, "updated"))
            else:
                self._call("POST", "/system/services", json=body)
                done.append((service.name, "created"))
        return done

    def run(self, name: str, source: IO[bytes], size: int | None, out: IO[bytes],
            token: str | None = None, timeout: float | None = None) -> None:
        """Invoke ``name`` with ``source`` (base64 on the wire) and write the decoded answer
        to ``out``: base64 answers are decoded, anything else is written as it came.

        :raises ClientError: the call failed; the message carries the service's output.
        """
        headers = {"Authorization": f"Bearer {token}"} if token else None
        # With a token, no Basic: the session's own auth would replace the header (a bare
        # ``None`` falls back to it), so a no-op auth keeps the Bearer header as it is.
        auth = _keep_headers if token else (self.endpoint.user, self.endpoint.password)
        up = Progress("upload  ", size)
        try:
            resp = self.session.post(
                self.endpoint.url.rstrip("/") + f"/run/{name}",
                data=base64_chunks(source, up), headers=headers, auth=auth, stream=True,
                timeout=(self.endpoint.timeout, timeout))
        except requests.ConnectionError:
            raise ClientError(f"cannot reach {self.endpoint.url}: is the gateway running?")
        finally:
            up.close()
        with resp:
            if resp.status_code == 404 and not resp.text.strip():
                # OSCAR answers an unknown service with a 404 and nothing else
                raise ClientError(f"service {name} not found (404) at {self.endpoint.url}: "
                                  f"'oscar-faas ls' lists the services there")
            if resp.status_code >= 400:
                raise ClientError(f"run {name} failed with {failure(resp)}")
            length = resp.headers.get("Content-Length")
            down = Progress("download", int(length) if length else None)
            with tempfile.TemporaryFile() as raw:
                for chunk in resp.iter_content(CHUNK):
                    raw.write(chunk)
                    down.advance(len(chunk))
                down.close()
                decode_answer(raw, out)


def failure(resp: requests.Response) -> str:
    """``<status>: <what the server said>``, or the status's reason phrase when it said
    nothing (never a bare ``404: ``)."""
    text = resp.text.strip()
    return f"{resp.status_code}: {text or resp.reason or 'no reason given'}"


def _warn_on_stderr(line: str) -> None:
    print(f"oscar-faas: warning: {line}", file=sys.stderr, flush=True)


def _keep_headers(request: requests.PreparedRequest) -> requests.PreparedRequest:
    return request


_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


def decode_answer(raw: IO[bytes], out: IO[bytes]) -> bool:
    """Write the base64-decoded ``raw`` to ``out`` if it is base64, else ``raw`` as is
    (oscar-cli's rule). Returns True when it decoded. Streams in both cases."""
    raw.seek(0)
    with tempfile.TemporaryFile() as decoded:
        pending, total, ok = b"", 0, True
        while ok:
            chunk = raw.read(CHUNK * 4)
            if not chunk:
                break
            chunk = pending + chunk.translate(None, b"\r\n")
            total += len(chunk) - len(pending)
            cut = len(chunk) - len(chunk) % 4
            try:
                ok = not chunk.translate(None, _B64_ALPHABET)
                decoded.write(base64.b64decode(chunk[:cut], validate=True))
            except binascii.Error:
                ok = False
            pending = chunk[cut:]
        ok = ok and not pending and total > 0
        source = decoded if ok else raw
        source.seek(0)
        while chunk := source.read(CHUNK):
            out.write(chunk)
        out.flush()
        return ok
