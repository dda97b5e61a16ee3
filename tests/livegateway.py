"""A real ``oscar-faas serve`` process (gunicorn + embedded provider) for end-to-end tests.

Like werkzeug's ``DevServerClient``: reserve a port, start the process, poll until it
answers, log to a file, terminate it (and its provider) at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping

import requests

from oscar_faas.serve import free_port


class LiveGateway:
    """``oscar-faas serve`` on a free port with its own data dir and log."""

    user = "oscar"
    password = "test-password"

    def __init__(self, workdir: Path, env: Mapping[str, str] | None = None,
                 args: list[str] | None = None, host: str = "127.0.0.1",
                 python: str | None = None, cwd: Path | None = None) -> None:
        self.workdir = workdir
        #: the interpreter (so the installation) it runs from, and its working directory
        self.python, self.cwd = python or sys.executable, cwd
        self.port = free_port()
        self.host = host
        self.args = list(args or [])
        self.url = f"http://{host}:{self.port}"
        self.log_path = workdir / "gateway.log"
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "LiveGateway":
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENFAAS_", "MINIO_"))}
        env.update(OSCAR_USERNAME=self.user, OSCAR_PASSWORD=self.password)
        env.update(self.extra_env)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [self.python, "-m", "oscar_faas.cli", "serve", "--port", str(self.port),
                 "--data-dir", str(self.workdir / "data"), "--workers", "2", *self.args],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                cwd=self.cwd)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited:\n{self.log()}")
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError(f"gateway did not start:\n{self.log()}")

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def log(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        provider_log = self.workdir / "data" / "provider.log"
        if provider_log.exists():
            text += "\n--- provider ---\n" + provider_log.read_text(errors="replace")
        return text

    @property
    def auth(self) -> tuple[str, str]:
        return (self.user, self.password)

    def oscar_python_client(self, cluster_id: str = "oscar-cluster"):
        from oscar_python.client import Client
        return Client({"cluster_id": cluster_id, "endpoint": self.url, "user": self.user,
                       "password": self.password, "ssl": False})
