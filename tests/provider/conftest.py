"""Live-provider fixtures: a real ``python -m oscar_faas.provider`` process per fixture.

As werkzeug's ``DevServerClient``: reserve a port, ``Popen``, poll ``/healthz`` until ready, log
to ``tmp_path``, terminate at teardown. Tests talk to it over real HTTP with ``requests``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests

from oscar_faas.serve import free_port

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 20.0


class ProviderProcess:
    """A provider subprocess plus a ``requests`` session pointed at it."""

    def __init__(self, data_dir: Path, log_path: Path, env: dict[str, str] | None = None,
                 auth: tuple[str, str] | None = None,
                 extra_args: list[str] | None = None) -> None:
        self.data_dir, self.log_path, self.auth = data_dir, log_path, auth
        self.extra_args = list(extra_args or [])
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.session = requests.Session()
        if auth:
            self.session.auth = auth

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ProviderProcess:
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": str(REPO), **self.extra_env}
        if self.auth:
            env["OPENFAAS_USERNAME"], env["OPENFAAS_PASSWORD"] = self.auth
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "oscar_faas.provider", "--host", "127.0.0.1",
             "--port", str(self.port), "--data-dir", str(self.data_dir),
             *self.extra_args],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"provider exited early:\n{self.log()}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except requests.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"provider did not become ready:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self.session.close()
        self.session = requests.Session()
        if self.auth:
            self.session.auth = self.auth

    def restart(self) -> ProviderProcess:
        self.stop()
        return self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # --- helpers for repeated calls ------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 60)
        return self.session.request(method, self.url + path, **kwargs)

    def deploy(self, name: str, env_process: str, **fields: Any) -> requests.Response:
        body = {"service": name, "image": "ignored:latest", "envProcess": env_process, **fields}
        resp = self.request("POST", "/system/functions", json=body)
        assert resp.status_code == 202, resp.text
        return resp

    def invoke(self, name: str, data: Any = b"", method: str = "POST", path: str = "",
               **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 60)
        # no provider credentials: /function is open, as the real gateway calls it (issue 21)
        return requests.request(method, f"{self.url}/function/{name}{path}", data=data,
                                **kwargs)


def secrets_folder(data_dir: Path, name: str) -> Path:
    """The folder a provider with ``data_dir`` keeps function ``name``'s secrets in: in the
    data dir, or (a root provider, host mode isolation) in its isolation area."""
    area = data_dir / "isolation-area"
    if area.exists():
        return Path(area.read_text().strip()) / name / "secrets"
    return data_dir.resolve() / "functions" / name / "secrets"


@pytest.fixture(scope="session")
def shared_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderProcess]:
    """One provider for the tests that only need fresh function names."""
    base = tmp_path_factory.mktemp("shared-provider")
    provider = ProviderProcess(base / "data", base / "provider.log").start()
    yield provider
    provider.stop()


@pytest.fixture
def make_provider(tmp_path: Path) -> Iterator[Callable[..., ProviderProcess]]:
    """Factory for a dedicated provider (auth, restarts, its own data dir)."""
    started: list[ProviderProcess] = []

    def factory(auth: tuple[str, str] | None = None, env: dict[str, str] | None = None,
                data_dir: Path | None = None,
                extra_args: list[str] | None = None) -> ProviderProcess:
        index = len(started)
        provider = ProviderProcess(data_dir or tmp_path / f"data{index}",
                                   tmp_path / f"provider{index}.log", env=env, auth=auth,
                                   extra_args=extra_args)
        started.append(provider)
        return provider.start()

    yield factory
    for provider in started:
        provider.stop()


@pytest.fixture
def script(tmp_path: Path) -> Callable[[str, str], str]:
    """Write a shell script into ``tmp_path``; returns the ``envProcess`` that runs it
    (fprocess is split on spaces with no quoting, so inline ``sh -c`` is impossible)."""

    def write(name: str, body: str) -> str:
        path = tmp_path / f"{name}.sh"
        path.write_text("set -e\n" + textwrap.dedent(body).lstrip())
        return f"sh {path}"

    return write


_counter = iter(range(1_000_000))


@pytest.fixture
def fn_name(request: pytest.FixtureRequest) -> str:
    """A fresh DNS-1123 function name per test, so tests can share a provider."""
    base = request.node.name.lower().replace("_", "-")
    base = "".join(c if c.isalnum() or c == "-" else "-" for c in base)[:40].strip("-")
    return f"{base}-{next(_counter)}"
