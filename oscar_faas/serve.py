"""``oscar-faas serve``: the gateway under gunicorn, on a cluster or on the embedded provider.

With ``OPENFAAS_URL`` unset, the embedded local provider is started first as a child process
on a free loopback port, with fresh random credentials, and the gateway is pointed at it over
real HTTP: the same code path as against a cluster.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Mapping

import urllib.error
import urllib.request

from gunicorn.app.base import BaseApplication

from .config import Settings
from .errors import OscarFaasError
from .netutil import free_port

#: prometheus_client's multiprocess folder (read when it is imported; see oscar_faas.metrics)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


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


#: Seconds the provider gets to stop (every function, each container removed) before SIGKILL.
PROVIDER_STOP_GRACE = 20.0
#: The file ``serve`` hands the provider its credentials in (0600, in the data dir).
CREDENTIALS_FILE = "provider.credentials"
#: Variables the provider is started with, besides :data:`PROVIDER_ENV_PREFIXES` and what
#: functions inherit (``launchers.host.launcher.INHERITED_ENV``, ``LC_*``).
PROVIDER_ENV = ("LD_PRELOAD", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR", "DOCKER_HOST",
                "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY", "CONTAINER_HOST")
PROVIDER_ENV_PREFIXES = ("PYTHON", "OSCAR_FAAS_", "COV_CORE_", "COVERAGE_")


def provider_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The environment the embedded provider is started with: what it and its functions
    need (paths, locale, proxies, CA files, its engine, its own ``OSCAR_FAAS_*``
    settings), never a credential: ``/proc/<pid>/environ`` keeps a process's start-time
    environment for its whole life, so removing them later would not hide them."""
    from .launchers.host.launcher import inherited_env
    picked = inherited_env(env)
    picked.update({k: v for k, v in env.items()
                   if k in PROVIDER_ENV or k.startswith(PROVIDER_ENV_PREFIXES)})
    picked.pop(MULTIPROC_ENV, None)  # the provider is one process with its own metrics
    return {k: v for k, v in picked.items()
            if not any(word in k.upper() for word in ("PASSWORD", "SECRET", "TOKEN"))}


def write_credentials(path: Path, username: str, password: str) -> None:
    """The provider's credentials for ``--credentials-file``: 0600, never in an environment."""
    from .files import atomic_write
    atomic_write(path, f"{username}\n{password}\n".encode(), 0o600)


def stop_process(proc: subprocess.Popen, grace: float = 10) -> None:
    """SIGTERM (the provider then stops its functions), SIGKILL after ``grace`` seconds."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_provider(data_dir: Path, username: str, password: str, log_path: Path,
                   port: int | None = None, runtime: str = "host",
                   cancel: threading.Event | None = None) -> tuple[subprocess.Popen, str]:
    """Start the embedded provider and wait until it answers; return it and its URL.

    It logs to ``log_path``, rotated at 10 MiB with 3 old files kept; whatever it writes to
    stdout or stderr outside its log (a crash) goes to ``log_path`` with ``.out`` added.
    Its credentials reach it in ``<data_dir>/provider.credentials`` (0600), and its
    environment is :func:`provider_environment`: none of the gateway's secrets.

    :param runtime: its ``--runtime``: functions as ``host`` processes or ``container``s.
    :param cancel: set while it starts (the gateway is stopping): it is stopped again.
    :raises RuntimeError: it exited, did not answer within 20 s (see ``log_path``) or was
        cancelled.
    """
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    credentials = data_dir / CREDENTIALS_FILE
    write_credentials(credentials, username, password)
    fd = os.open(log_path.with_name(log_path.name + ".out"),
                 os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    out = os.fdopen(fd, "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "oscar_faas.provider", "--host", "127.0.0.1", "--port",
         str(port), "--data-dir", str(data_dir), "--log-file", str(log_path),
         "--runtime", runtime, "--credentials-file", str(credentials)],
        env=provider_environment(os.environ), stdout=out, stderr=subprocess.STDOUT)
    out.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if cancel is not None and cancel.is_set():
            stop_process(proc)
            raise RuntimeError("the embedded provider's start was cancelled")
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
    stop_process(proc)
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


class ProviderSupervisor:
    """Keeps the embedded provider running: when it dies it is started again on the same
    port, with the same credentials and data dir, after a back-off that doubles from
    :attr:`first_delay` to :attr:`max_delay` (and starts over once it has stayed up for
    :attr:`stable_after` seconds). Meanwhile the gateway's ``/health`` answers 503.

    :meth:`stop` ends whichever provider is current, including one still starting when the
    gateway stops (a restart racing the shutdown would otherwise outlive the gateway,
    orphaned with its functions)."""

    first_delay = 0.5
    max_delay = 30.0
    stable_after = 60.0

    def __init__(self, data_dir: Path, username: str, password: str, log_path: Path,
                 runtime: str = "host") -> None:
        self.first_delay = float(os.environ.get("PROVIDER_RESTART_DELAY") or self.first_delay)
        self.data_dir, self.username, self.password = data_dir, username, password
        self.log_path, self.runtime = log_path, runtime
        self.proc, self.url = start_provider(data_dir, username, password, log_path,
                                             runtime=runtime)
        self.port = int(self.url.rsplit(":", 1)[1])
        self.restarts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # self.proc is replaced or stopped, never both at once
        self._thread = threading.Thread(target=self._watch, name="provider-supervisor",
                                        daemon=True)

    def start(self) -> "ProviderSupervisor":
        self._thread.start()
        return self

    def _watch(self) -> None:
        delay = self.first_delay
        while not self._stopping.is_set():
            started = time.monotonic()
            code = self.proc.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started > self.stable_after:
                delay = self.first_delay
            print(f"oscar-faas: the embedded provider exited with {code}; restarting it in "
                  f"{delay:g} s (see {self.log_path})", file=sys.stderr, flush=True)
            while not self._stopping.wait(delay):
                delay = min(delay * 2, self.max_delay)
                try:
                    proc, _ = start_provider(self.data_dir, self.username, self.password,
                                             self.log_path, self.port, self.runtime,
                                             cancel=self._stopping)
                except (RuntimeError, OSError) as err:
                    if self._stopping.is_set():
                        return
                    print(f"oscar-faas: restarting the embedded provider failed: {err}; "
                          f"trying again in {delay:g} s", file=sys.stderr, flush=True)
                    continue
                with self._lock:
                    if self._stopping.is_set():  # stop() came while it started
                        stop_process(proc)
                        return
                    self.proc = proc
                self.restarts += 1
                print("oscar-faas: the embedded provider is running again", file=sys.stderr,
                      flush=True)
                break

    def stop(self) -> None:
        """Stop the provider, and any restart under way, before returning: the watcher is
        a daemon thread, so what it had not stopped when the gateway exits would outlive it."""
        self._stopping.set()
        with self._lock:
            proc = self.proc
        stop_process(proc, PROVIDER_STOP_GRACE)
        if self._thread.is_alive():
            self._thread.join(timeout=30)


def clean_orphan_secrets(settings: Settings) -> None:
    """Before serving: delete storage secrets whose service is gone (a create or delete that
    failed half-way); a failure here only warns."""
    from .openfaas import OpenFaaSClient
    from .registry import ServiceRegistry

    try:
        removed = ServiceRegistry(settings, OpenFaaSClient(settings)).clean_orphan_secrets()
    except Exception as err:  # noqa: BLE001 - never a reason not to start
        print(f"  WARNING: could not look for orphan storage secrets: {err}", file=sys.stderr,
              flush=True)
        return
    if removed:
        print(f"  cleaned:     {len(removed)} storage secret(s) of services that no longer "
              f"exist: {', '.join(removed)}", flush=True)


def check_bindable(host: str, port: int) -> None:
    """Bind ``host:port`` the way gunicorn will (``SO_REUSEADDR``) and let it go again, so
    that a port in use fails at once, in one line naming the port and ``--port``, before
    the banner and the provider: gunicorn itself would retry five times and then print
    only ``Can't connect``.

    :raises OscarFaasError: the address is in use, not this machine's, or not allowed.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise OscarFaasError(
                    f"port {port} on {host} is already in use (another 'oscar-faas serve'?): "
                    f"stop what uses it or pick another port with --port") from None
            raise OscarFaasError(f"cannot listen on {host}:{port}: "
                                 f"{err.strerror or err} (see --host and --port)") from None


def serve(host: str, port: int, data_dir: Path, workers: int, threads: int,
          runtime: str = "host") -> int:
    """Run the gateway until interrupted; returns the exit code.

    :raises OscarFaasError: bad settings, or ``host:port`` cannot be listened on.
    """
    settings = Settings.from_env()  # fail early, with a clear message, on bad settings
    check_bindable(host, port)
    provider = None
    if not settings.openfaas_url:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        user, password = "admin", secrets.token_urlsafe(24)
        provider = ProviderSupervisor(data_dir, user, password, data_dir / "provider.log",
                                      runtime)
        url = provider.url
        os.environ.update(OPENFAAS_URL=url, OPENFAAS_USERNAME=user, OPENFAAS_PASSWORD=password,
                          OSCAR_EMBEDDED_PROVIDER="true")
        settings = Settings.from_env()
        where = "containers of their images" if runtime == "container" else "host processes"
        backend = f"embedded local provider at {url}, functions as {where} (state in " \
                  f"{data_dir}, log in {data_dir / 'provider.log'})"
    else:
        backend = f"OpenFaaS at {settings.openfaas_url}"
    endpoint = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
    os.environ.setdefault("JOBS_DIR", str(data_dir.resolve() / "jobs"))  # without MinIO
    if provider is not None:  # the embedded provider calls jobs back here
        os.environ.setdefault("JOB_CALLBACK_URL", endpoint)
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
    os.environ.setdefault("USAGE_DB", str(data_dir / "usage.sqlite3"))  # /system/metrics
    metrics, own_metrics_dir = metrics_dir()
    os.environ[MULTIPROC_ENV] = str(metrics)  # before any worker imports prometheus_client
    if settings.clean_orphan_secrets:
        clean_orphan_secrets(settings)
    if provider is not None:
        provider.start()
    options = {
        "child_exit": _child_exit,
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "oscar_faas.worker.GatewayWorker",
        # The worker's loop heartbeats while calls are in flight, so this bounds a hung
        # loop, not a long call (RUN_TIMEOUT does that).
        "timeout": 30,
        "graceful_timeout": 5,
        "keepalive": int(settings.keepalive_timeout) or 1,
        "accesslog": None,
        "loglevel": "warning",
    }
    try:
        GatewayApplication(options, threads=threads).run()
    finally:
        if own_metrics_dir:
            shutil.rmtree(metrics, ignore_errors=True)
        if provider is not None:
            provider.stop()
            (data_dir / CREDENTIALS_FILE).unlink(missing_ok=True)
    return 0
