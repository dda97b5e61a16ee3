"""``oscar-faas serve``: the gateway under gunicorn, on a cluster or on the embedded provider.

With ``OPENFAAS_URL`` unset, the embedded local provider is started first as a child process
on a free loopback port, with fresh random credentials, and the gateway is pointed at it over
real HTTP: the same code path as against a cluster.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import urllib.error
import urllib.request

from gunicorn.app.base import BaseApplication

from .config import Settings

#: prometheus_client's multiprocess folder (read when it is imported; see oscar_faas.metrics)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class GatewayApplication(BaseApplication):
    """gunicorn running :func:`oscar_faas.api.create_asgi_app` on event-loop workers: long
    synchronous calls wait without holding a thread, and the management API gets
    ``threads`` threads per worker."""

    def __init__(self, options: Mapping[str, Any], threads: int = 32) -> None:
        self.options = dict(options)
        self.threads = threads
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from .api import create_asgi_app
        return create_asgi_app(threads=self.threads)


def start_provider(data_dir: Path, username: str, password: str,
                   log_path: Path, runtime: str = "host") -> tuple[subprocess.Popen, str]:
    """Start the embedded provider and wait until it answers; return it and its URL.

    :param runtime: its ``--runtime``: functions as ``host`` processes or ``container``s.

    :raises RuntimeError: it exited or did not answer within 20 s (see ``log_path``).
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, OPENFAAS_USERNAME=username, OPENFAAS_PASSWORD=password)
    env.pop(MULTIPROC_ENV, None)  # the provider is one process with its own metrics
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "oscar_faas.provider", "--host", "127.0.0.1", "--port",
         str(port), "--data-dir", str(data_dir), "--runtime", runtime],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the embedded provider exited with {proc.returncode}; "
                               f"see {log_path}")
        try:  # urllib, not requests: this process is gunicorn's master, keep it small
            with urllib.request.urlopen(url + "/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return proc, url
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    proc.terminate()
    raise RuntimeError(f"the embedded provider did not start within 20 s; see {log_path}")


def metrics_dir() -> tuple[Path, bool]:
    """The folder where gunicorn's workers keep their metrics (prometheus_client's
    multiprocess mode): ``PROMETHEUS_MULTIPROC_DIR`` if set, emptied of old values, else a
    new temporary one. Returns it and whether it is ours to remove at the end."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for old in path.glob("*.db"):  # a previous run's values would add up with ours
            old.unlink()
        return path, False
    return Path(tempfile.mkdtemp(prefix="oscar-faas-metrics-")), True


def _child_exit(server: Any, worker: Any) -> None:
    """gunicorn hook: a dead worker's in-flight gauges no longer count."""
    from .metrics import mark_process_dead
    mark_process_dead(worker.pid)


def serve(host: str, port: int, data_dir: Path, workers: int, threads: int,
          runtime: str = "host") -> int:
    """Run the gateway until interrupted; returns the exit code."""
    settings = Settings.from_env()  # fail early, with a clear message, on bad settings
    provider = None
    if not settings.openfaas_url:
        data_dir.mkdir(parents=True, exist_ok=True)
        user, password = "admin", secrets.token_urlsafe(24)
        provider, url = start_provider(data_dir, user, password, data_dir / "provider.log",
                                       runtime)
        os.environ.update(OPENFAAS_URL=url, OPENFAAS_USERNAME=user, OPENFAAS_PASSWORD=password)
        where = "containers of their images" if runtime == "container" else "host processes"
        backend = f"embedded local provider at {url}, functions as {where} (state in " \
                  f"{data_dir}, log in {data_dir / 'provider.log'})"
    else:
        backend = f"OpenFaaS at {settings.openfaas_url}"
    endpoint = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
    default_password = settings.oscar_password == Settings.oscar_password
    shown = settings.oscar_password if default_password else "<OSCAR_PASSWORD>"
    print(f"oscar-faas gateway on {endpoint}\n"
          f"  backend:     {backend}\n"
          f"  credentials: {settings.oscar_username} / {shown}"
          f"  (OSCAR_USERNAME / OSCAR_PASSWORD)\n"
          f"  try:         oscar-faas apply examples/hello/hello.yaml", flush=True)
    if default_password and host not in ("127.0.0.1", "localhost", "::1"):
        print(f"  WARNING: {host} is reachable from other machines and the password is the "
              f"default one: set OSCAR_PASSWORD", file=sys.stderr, flush=True)
    metrics, own_metrics_dir = metrics_dir()
    os.environ[MULTIPROC_ENV] = str(metrics)  # before any worker imports prometheus_client
    options = {
        "child_exit": _child_exit,
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "oscar_faas.worker.GatewayWorker",
        # The worker's loop heartbeats while calls are in flight, so this bounds a hung
        # loop, not a long call (RUN_TIMEOUT does that).
        "timeout": 30,
        "graceful_timeout": 5,
        "keepalive": 75,
        "accesslog": None,
        "loglevel": "warning",
    }
    try:
        GatewayApplication(options, threads=threads).run()
    finally:
        if own_metrics_dir:
            shutil.rmtree(metrics, ignore_errors=True)
        if provider is not None:
            provider.terminate()
            try:
                provider.wait(timeout=10)
            except subprocess.TimeoutExpired:
                provider.kill()
    return 0
