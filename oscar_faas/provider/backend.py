"""The provider's behaviour behind the routes: what faas-netes does with Kubernetes, done with
host processes.

:class:`Backend` is the contract routes rely on (faas-provider's ``FaaSHandlers`` split into
methods); :class:`LocalBackend` implements it on top of :class:`~.state.Store` (durable
deployments and secrets) and :class:`~.watchdog.Watchdog` (per-call processes). Per-function
runtime data (argv, env, limiter) is derived once per deploy, so an invocation does no parsing.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Mapping, Protocol

from ..contract import ENV_SECRETS_DIR
from ..errors import ServiceNotFound, UpstreamNotReady
from .errors import TooManyRequests, Unsupported
from .limits import Limiter, QueueFull, WatchdogConfig
from .state import FunctionRecord, Store
from .types import (DEFAULT_NAMESPACE, FunctionDeployment, FunctionStatus,
                    ScaleServiceRequest, Secret)
from .watchdog import SUPERVISOR_COMMANDS, Result, SuperviseFn, Watchdog

log = logging.getLogger("oscar_faas.provider")

#: Host variables a function inherits (a container would have its image's own). Everything
#: else, notably the provider's OPENFAAS_PASSWORD, stays out of functions.
INHERITED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR",
                 "TERM", "PYTHONPATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "SSL_CERT_FILE",
                 "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CUDA_VISIBLE_DEVICES", "HTTP_PROXY",
                 "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


def inherited_env(env: Mapping[str, str]) -> dict[str, str]:
    """The part of the provider's environment handed to every function."""
    picked = {k: env[k] for k in INHERITED_ENV if k in env}
    picked.update({k: v for k, v in env.items() if k.startswith("LC_")})
    return picked


class NotFound(ServiceNotFound):
    """Invocation of an unknown function."""


class NotReady(UpstreamNotReady):
    """Deployed, but no replica can serve it (no ``envProcess``): OpenFaaS' 503."""


class Backend(Protocol):
    """What the routes need from a provider."""

    def list_functions(self) -> list[FunctionStatus]: ...
    def get_function(self, name: str) -> FunctionStatus: ...
    def deploy(self, fd: FunctionDeployment) -> None: ...
    def update(self, fd: FunctionDeployment) -> None: ...
    def delete(self, name: str) -> None: ...
    def scale(self, name: str, request: ScaleServiceRequest) -> None: ...
    def list_secrets(self) -> list[Secret]: ...
    def put_secret(self, secret: Secret, create: bool) -> None: ...
    def delete_secret(self, name: str) -> None: ...
    def invoke(self, name: str, body: BinaryIO, content_length: int | None,
               cgi: Mapping[str, str]) -> tuple[Result, WatchdogConfig]: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class FunctionRuntime:
    """Everything an invocation needs, computed at deploy time."""

    record: FunctionRecord
    argv: tuple[str, ...]
    env: dict[str, str]
    config: WatchdogConfig
    limiter: Limiter
    in_process: bool

    @property
    def ready(self) -> bool:
        """A classic watchdog refuses to start without ``fprocess``: never ready then."""
        return bool(self.argv)


class LocalBackend:
    """A single-machine OpenFaaS provider. Thread-safe."""

    def __init__(self, data_dir: str | Path, env: Mapping[str, str] | None = None,
                 max_inflight: int | None = None) -> None:
        self.store = Store(data_dir)
        self.watchdog = Watchdog(logging.getLogger("oscar_faas.provider.watchdog"))
        self._base_env = inherited_env(os.environ if env is None else env)
        self._max_inflight = max_inflight
        self._runtimes: dict[str, FunctionRuntime] = {}
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._supervise: SuperviseFn | None = None
        self._supervise_warned = False

    def load(self) -> None:
        self.store.load()
        with self._lock:
            for record in self.store.functions():
                self._runtimes[record.name] = self._runtime(record, None)

    def close(self) -> None:
        self.watchdog.close()

    # --- runtime ---------------------------------------------------------------------------

    def _runtime(self, record: FunctionRecord, old: FunctionRuntime | None) -> FunctionRuntime:
        fd = record.deployment
        config = WatchdogConfig.from_env(fd.env_vars, self._max_inflight)
        process = fd.env_process.strip()
        env = dict(self._base_env)
        env.update(fd.env_vars)
        env["fprocess"] = fd.env_process
        env[ENV_SECRETS_DIR] = str(self.store.secrets_dir(fd.service))
        same_limits = old is not None and (old.config.max_inflight, old.config.max_queue) == (
            config.max_inflight, config.max_queue)
        # keep the limiter across an update that does not change it: calls in flight hold it
        limiter = old.limiter if old is not None and same_limits else Limiter(
            config.max_inflight, config.max_queue)
        return FunctionRuntime(record=record, argv=tuple(a for a in process.split(" ") if a),
                               env=env, config=config, limiter=limiter,
                               in_process=process in SUPERVISOR_COMMANDS)

    def _install(self, record: FunctionRecord) -> None:
        with self._lock:
            self._runtimes[record.name] = self._runtime(record, self._runtimes.get(record.name))
        log.info("function %s: image %r is ignored; this provider runs %r on the host",
                 record.name, record.deployment.image, record.deployment.env_process)

    def _status(self, runtime: FunctionRuntime) -> FunctionStatus:
        fd = runtime.record.deployment
        if not fd.namespace:
            fd = FunctionDeployment(**{**fd.__dict__, "namespace": DEFAULT_NAMESPACE})
        return FunctionStatus(deployment=fd, invocation_count=self._counts.get(fd.service, 0),
                              replicas=1, available_replicas=1 if runtime.ready else 0,
                              created_at=runtime.record.created_at)

    # --- /system/functions ------------------------------------------------------------------

    def list_functions(self) -> list[FunctionStatus]:
        return [self._status(r) for r in sorted(self._runtimes.values(),
                                                key=lambda r: r.record.name)]

    def get_function(self, name: str) -> FunctionStatus:
        runtime = self._runtimes.get(name)
        if runtime is None:
            raise ServiceNotFound(f"function {name} not found")
        return self._status(runtime)

    def deploy(self, fd: FunctionDeployment) -> None:
        self._install(self.store.create(fd))

    def update(self, fd: FunctionDeployment) -> None:
        self._install(self.store.update(fd))

    def delete(self, name: str) -> None:
        self.store.delete(name)
        with self._lock:
            self._runtimes.pop(name, None)
            self._counts.pop(name, None)
        log.info("function %s deleted", name)

    def scale(self, name: str, request: ScaleServiceRequest) -> None:
        """Accepted and ignored: one host, one "replica" that forks per call."""
        if name not in self._runtimes:
            raise ServiceNotFound(f"function {name} not found")
        if request.replicas == 0:
            raise Unsupported("scaling to zero is not supported by this provider")
        log.info("function %s: scale to %d requested; the local provider keeps 1 replica",
                 name, request.replicas)

    def function_load(self) -> list[tuple[str, int, int, int]]:
        """``(name, replicas, running, waiting)`` per function, for the metrics."""
        return [(name, 1, rt.limiter.running, rt.limiter.waiting)
                for name, rt in sorted(self._runtimes.items())]

    # --- /system/secrets ------------------------------------------------------------------

    def list_secrets(self) -> list[Secret]:
        return [Secret(name=n, namespace=DEFAULT_NAMESPACE) for n in self.store.secret_names()]

    def put_secret(self, secret: Secret, create: bool) -> None:
        self.store.put_secret(secret, create)

    def delete_secret(self, name: str) -> None:
        self.store.delete_secret(name)

    # --- /function/<name> -------------------------------------------------------------------

    def invoke(self, name: str, body: BinaryIO, content_length: int | None,
               cgi: Mapping[str, str]) -> tuple[Result, WatchdogConfig]:
        """Run one call, waiting for a slot if the function is busy.

        :raises NotFound: unknown function. :raises NotReady: no ``envProcess``.
        :raises TooManyRequests: when ``max_inflight`` is reached and the queue is full.
        """
        runtime = self._runtimes.get(name)
        if runtime is None:
            raise NotFound(f"error finding function {name}.{DEFAULT_NAMESPACE}: not found")
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + 1
        if not runtime.ready:
            raise NotReady(f"No endpoints available for: {name}.")
        env = {**runtime.env, **cgi}
        queued = time.monotonic()
        try:
            runtime.limiter.acquire()
        except QueueFull:
            raise TooManyRequests("Concurrent request limit exceeded. Max concurrent requests: "
                                  f"{runtime.config.max_inflight}") from None
        timings = {"queue": time.monotonic() - queued}
        try:
            supervise = self._load_supervise() if runtime.in_process else None
            if supervise is not None:
                result = self.watchdog.run_in_process(name, supervise, env, body, runtime.config,
                                                      timings)
            else:
                argv = list(runtime.argv)
                if runtime.in_process:  # not importable in-process: fork it with our python
                    argv = [sys.executable, "-m", "oscar_faas.supervisor"]
                result = self.watchdog.run_process(name, argv, env, body, content_length,
                                                   runtime.config)
        finally:
            runtime.limiter.release()
        result.timings = {**timings, **result.timings}
        return result, runtime.config

    def _load_supervise(self) -> SuperviseFn | None:
        """Import the supervisor lazily: the provider works (forking it) before it exists."""
        if self._supervise is None:
            try:
                module = importlib.import_module("oscar_faas.supervisor.core")
                self._supervise = module.supervise
            except (ImportError, AttributeError) as err:
                if not self._supervise_warned:
                    log.warning("in-process supervisor unavailable (%s); forking it instead",
                                err)
                    self._supervise_warned = True
                return None
        return self._supervise
