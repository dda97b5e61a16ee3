"""The provider's behaviour behind the routes: what faas-netes does with Kubernetes, done with
host processes.

:class:`Backend` is the contract routes rely on (faas-provider's ``FaaSHandlers`` split into
methods); :class:`LocalBackend` implements it on top of :class:`~.state.store.Store` (durable
deployments and secrets) and one way of running a function: every function with an
``envProcess`` gets one long-lived runtime (:mod:`.runtimes.manager`, started by a
:class:`~oscar_faas.launchers.launch.Launcher`), and ``/function/<name>`` is proxied to it
(:mod:`.http.function_proxy`):

* the functions the gateway deploys (``envProcess`` is the oscar supervisor,
  :data:`SUPERVISOR_COMMANDS`): the OSCAR I/O contract, where the provider's launcher says;
* any other ``envProcess`` (what faas-cli deploys): the runtime's classic-watchdog mode runs
  it once per call (:mod:`oscar_faas.runtime.classic`), on the host.

Per-function data (runtime spec) is derived once per deploy, so an invocation does no parsing.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Mapping, Protocol

from .. import contract as c
from ..contract import ENV_EXPOSE_PORT
from ..errors import ServiceNotFound, UpstreamNotReady
from ..launchers.host.isolation import Isolation
from ..launchers.host.launcher import HostLauncher
from ..launchers.launch import Launcher
from .entries import FunctionEntry, runtime_spec
from .errors import ProviderError, Unsupported
from .runtimes.state import FAILED
from .runtimes.manager import START_WAIT, ManagedRuntime, RuntimeManager
from .state.store import FunctionRecord, Store
from .state.types import (DEFAULT_NAMESPACE, FunctionDeployment, FunctionStatus,
                    ScaleServiceRequest, Secret)

log = logging.getLogger("oscar_faas.provider")

#: Every ``envProcess`` that means "the oscar supervisor": its module form and the path
#: function images install it at (what the gateway deploys). Such functions get a runtime
#: with the OSCAR I/O contract; any other envProcess a classic-watchdog one.
SUPERVISOR_COMMANDS = frozenset({c.SUPERVISOR_MODULE, c.SUPERVISOR_PROCESS})
#: Longest wait of a classic function's deploy (of the provider's start, for all of them) for
#: its runtime to be ready (a start takes under a second), so it is available
#: (``availableReplicas`` 1) once deployed, as when the provider ran its processes itself.
DEPLOY_WAIT = 10.0


class NotFound(ServiceNotFound):
    """Invocation of an unknown function."""


class NotReady(UpstreamNotReady):
    """Deployed, but no replica can serve it (no ``envProcess``, or its runtime is not
    running): OpenFaaS' 503. ``headers``: ``Retry-After`` when its runtime failed and the
    next try is known (the gateway then answers at once instead of waiting)."""


class RuntimeFailed(ProviderError):
    """The function's runtime went away in the middle of a call: 502."""

    status = 502


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
    def known(self, name: str) -> bool: ...
    def exposed(self, name: str) -> bool: ...
    def runtime_for(self, name: str) -> ManagedRuntime | None: ...
    def close(self) -> None: ...


class LocalBackend:
    """A single-machine OpenFaaS provider. Thread-safe."""

    def __init__(self, data_dir: str | Path, env: Mapping[str, str] | None = None,
                 launcher: Launcher | None = None, isolation: Isolation | None = None) -> None:
        """:param launcher: where runtimes run (default: a host launcher made here, with
            ``env`` as the host's); classic-watchdog functions' always run on the host.
        :param isolation: run every function as a user of its own
            (:mod:`oscar_faas.launchers.host.isolation`; the provider must be root); the host
            launcher made here uses it too."""
        self.isolation = isolation
        self.store = Store(data_dir, isolation)
        host = launcher if launcher is not None and launcher.kind == "host" else \
            HostLauncher(os.environ if env is None else env, isolation=isolation)
        self.runtimes = RuntimeManager(launcher or host, host)
        self._entries: dict[str, FunctionEntry] = {}
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def load(self) -> None:
        """Read the stored state and start (or adopt) the runtime of every function."""
        self.store.load()
        with self._lock:
            for record in self.store.functions():
                self._entries[record.name] = self._entry(record)
            specs = [e.spec for e in self._entries.values() if e.spec is not None]
        self.runtimes.start_all(specs)
        deadline = time.monotonic() + DEPLOY_WAIT  # classic ones: available once started
        for spec in specs:
            runtime = self.runtimes.get(spec.name) if spec.classic else None
            if runtime is not None:
                runtime.wait_ready(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        """Stop every runtime (each kills the per-call processes it still runs)."""
        self.runtimes.close()
        if self.isolation is not None:
            self.isolation.close()

    # --- per-function data --------------------------------------------------------------------

    def _entry(self, record: FunctionRecord) -> FunctionEntry:
        fd = record.deployment
        process = fd.env_process.strip()
        spec = None
        if process in SUPERVISOR_COMMANDS:
            spec = runtime_spec(fd, self.store.secrets_dir(fd.service))
        elif process:  # a classic watchdog refuses to start without fprocess: no spec then
            spec = runtime_spec(fd, self.store.secrets_dir(fd.service), fd.env_process)
        return FunctionEntry(record=record, spec=spec)

    def _install(self, record: FunctionRecord) -> None:
        with self._lock:
            entry = self._entries[record.name] = self._entry(record)
        if entry.spec is None:
            self.runtimes.remove(record.name)  # it may have had one before this update
            log.info("function %s: no envProcess, so no replica: calls get 503", record.name)
            return
        self.runtimes.ensure(entry.spec)
        if entry.spec.classic:  # available once deployed, as before: its start is quick
            runtime = self.runtimes.get(record.name)
            if runtime is not None:
                runtime.wait_ready(DEPLOY_WAIT)
            log.info("function %s: image %r is ignored; this provider runs %r on the host, a "
                     "process per call in the function's runtime", record.name,
                     record.deployment.image, record.deployment.env_process)
        else:
            log.info("function %s: served by its own runtime (%s launcher)", record.name,
                     self.runtimes.launcher.kind)

    def _ready(self, entry: FunctionEntry) -> bool:
        """Ready once its runtime's ``/_/health`` said so; never without a runtime (no
        ``envProcess``)."""
        return entry.spec is not None and self.runtimes.ready(entry.record.name)

    def _status(self, entry: FunctionEntry) -> FunctionStatus:
        fd = entry.record.deployment
        if not fd.namespace:
            fd = FunctionDeployment(**{**fd.__dict__, "namespace": DEFAULT_NAMESPACE})
        # a classic function shows no runtime state, as before: its runtime is a detail
        runtime = self.runtimes.get(fd.service) \
            if entry.spec is not None and not entry.spec.classic else None
        return FunctionStatus(deployment=fd, invocation_count=self._counts.get(fd.service, 0),
                              replicas=1, available_replicas=1 if self._ready(entry) else 0,
                              created_at=entry.record.created_at,
                              runtime=None if runtime is None else {
                                  **runtime.state.to_dict(),
                                  "running": runtime.handle is not None})

    # --- /system/functions ------------------------------------------------------------------

    def list_functions(self) -> list[FunctionStatus]:
        return [self._status(e) for e in sorted(self._entries.values(),
                                                key=lambda e: e.record.name)]

    def get_function(self, name: str) -> FunctionStatus:
        entry = self._entries.get(name)
        if entry is None:
            raise ServiceNotFound(f"function {name} not found")
        return self._status(entry)

    def deploy(self, fd: FunctionDeployment) -> None:
        self._install(self.store.create(fd))

    def update(self, fd: FunctionDeployment) -> None:
        self._install(self.store.update(fd))

    def delete(self, name: str) -> None:
        self.store.delete(name)
        with self._lock:
            self._entries.pop(name, None)
            self._counts.pop(name, None)
        self.runtimes.remove(name)
        getattr(self, "logs", None) and self.logs.forget(name)  # type: ignore[attr-defined]
        log.info("function %s deleted", name)

    def scale(self, name: str, request: ScaleServiceRequest) -> None:
        """Accepted and ignored: one host, one "replica"."""
        if name not in self._entries:
            raise ServiceNotFound(f"function {name} not found")
        if request.replicas == 0:
            raise Unsupported("scaling to zero is not supported by this provider")
        log.info("function %s: scale to %d requested; the local provider keeps 1 replica",
                 name, request.replicas)

    def function_load(self) -> list[tuple[str, int, int, int]]:
        """``(name, replicas, running, waiting)`` per function, for the metrics: a runtime's
        own ``/_/status`` (calls in flight through it when it cannot be asked)."""
        load = []
        for name in sorted(self._entries):
            runtime = self.runtimes.get(name)
            status = runtime.status() if runtime is not None else None
            if status is not None:
                load.append((name, 1, int(status.get("running", 0)),
                             int(status.get("queued", 0))))
            else:
                load.append((name, 1, runtime.inflight if runtime is not None else 0, 0))
        return load

    # --- /system/secrets ------------------------------------------------------------------

    def list_secrets(self) -> list[Secret]:
        return [Secret(name=n, namespace=DEFAULT_NAMESPACE) for n in self.store.secret_names()]

    def put_secret(self, secret: Secret, create: bool) -> None:
        self.store.put_secret(secret, create)

    def delete_secret(self, name: str) -> None:
        self.store.delete_secret(name)

    # --- /function/<name> -------------------------------------------------------------------

    def exposed(self, name: str) -> bool:
        """An exposed service's function (its runtime proxies any method to its server)."""
        entry = self._entries.get(name)
        return entry is not None and entry.spec is not None and not entry.spec.classic \
            and ENV_EXPOSE_PORT in entry.record.deployment.env_vars

    def known(self, name: str) -> bool:
        """Deployed (calls to unknown functions are not counted in the metrics)."""
        return name in self._entries

    def runtime_for(self, name: str) -> ManagedRuntime | None:
        """The runtime that answers a call to ``name`` (None while it has none: stopped or
        being replaced; the proxy waits for it and then answers :func:`not_ready`). The call
        is counted (``invocationCount``). The proxy acquires, forwards and maps errors
        (:mod:`.http.function_proxy`).

        :raises NotFound: unknown function. :raises NotReady: no ``envProcess``.
        """
        entry = self._entries.get(name)
        if entry is None:
            raise NotFound(f"error finding function {name}.{DEFAULT_NAMESPACE}: not found")
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + 1
        if entry.spec is None:  # no envProcess: a classic watchdog would not start
            raise NotReady(f"No endpoints available for: {name}.")
        return self.runtimes.get(name)


def not_ready(name: str, runtime: ManagedRuntime | None) -> NotReady:
    """The 503 of a call its runtime cannot take: failed (the cause, whole, and the next
    try, with ``Retry-After``), or still starting after :data:`START_WAIT` (what it does)."""
    state = runtime.state if runtime is not None else None
    if state is None:
        return NotReady(f"No endpoints available for: {name}.")
    if state.state == FAILED:
        retry = state.retry_in()
        return NotReady(state.not_ready_text(name), headers=None if retry is None else
                        {"Retry-After": str(max(1, math.ceil(retry)))})
    return NotReady(f"No endpoints available for: {name}. Still {state.state} after "
                    f"{START_WAIT:g} s: {state.reason}")
