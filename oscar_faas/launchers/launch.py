"""Starting a function's long-lived runtime: the interface every launcher implements.

The embedded provider runs one runtime (``python -m oscar_faas.runtime``, see
:mod:`oscar_faas.runtime`) per function (an OSCAR service, or a classic ``fprocess`` that
the runtime runs once per call) and proxies ``/function/<name>`` to it. *Where* that runtime
runs is a :class:`Launcher`'s business (a classic function's is always the host's):

* :class:`~.host.launcher.HostLauncher`: a child process of the provider on this host;
* :class:`~.containers.launcher.ContainerLauncher`: the function's image, under Podman or
  Docker.

A :class:`RuntimeSpec` is everything needed to start one; :meth:`Launcher.start` returns a
:class:`RuntimeHandle` once the runtime is *started* (its URL known), not necessarily *ready*:
readiness is ``GET {url}/_/health`` == 200, which the caller (the provider's
``RuntimeManager``) polls. A runtime's lines go to :func:`function_logger` of its function's
name, from where the provider serves them as that function's log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

#: Parent of the per-function loggers a function's lines go to (its runtime's output, the
#: launcher's and the manager's messages about it); the provider's logs read them from there.
FUNCTION_LOGGER = "oscar_faas.provider.function"

#: Lines of a runtime's output kept for error messages (:meth:`RuntimeHandle.output_tail`).
TAIL_LINES = 40

#: The runtime's log format (``supervisor.logs.LOG_FORMAT``): ``<date> <time> - supervisor -
#: LEVEL - message``; such lines reach the function log at their own level.
_RUNTIME_LINE = re.compile(r"^\S+ \S+ - supervisor - (DEBUG|INFO|WARNING|ERROR|CRITICAL) - (.*)$")


def function_logger(name: str) -> logging.Logger:
    """Where the lines of function ``name`` go (and from where they reach its log)."""
    return logging.getLogger(f"{FUNCTION_LOGGER}.{name}")


@dataclass(frozen=True)
class RuntimeSpec:
    """Everything needed to start one function's runtime."""

    #: function name
    name: str
    #: the FDL/deployment image (ignored by the host launcher)
    image: str
    #: the function's env (SCRIPT, FUNCTION_CONFIG, ..., watchdog settings)
    env: dict[str, str]
    #: the function's secrets folder (mount read-only at /var/openfaas/secrets)
    secrets_dir: Path
    #: limits.memory of the deployment ("512Mi"), None = none
    memory: str | None = None
    #: limits.cpu ("500m", "1"), None = none
    cpu: str | None = None
    #: the deployment asks for a GPU
    gpu: bool = False
    #: a classic-watchdog function (``fprocess`` per call): it runs on the host whatever the
    #: provider's launcher, its image ignored (its env says so too, hence not fingerprinted)
    classic: bool = False
    #: digest of the spec: same fingerprint = same runtime (adoption)
    fingerprint: str = field(default="")

    def __post_init__(self) -> None:
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", spec_fingerprint(self))


def spec_fingerprint(spec: RuntimeSpec) -> str:
    """A digest of everything that makes a runtime what it is (not the fingerprint itself).

    The secrets folder's *contents* are not part of it: the runtime reads them per call.
    """
    doc = {"name": spec.name, "image": spec.image, "env": dict(sorted(spec.env.items())),
           "secrets_dir": str(spec.secrets_dir), "memory": spec.memory, "cpu": spec.cpu,
           "gpu": spec.gpu}
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()[:32]


class RuntimeHandle(Protocol):
    """One started runtime.

    A handle that :meth:`Launcher.adopt` returns should also carry ``fingerprint: str`` (the
    :attr:`RuntimeSpec.fingerprint` it was started with): the provider keeps an adopted
    runtime only when it equals the stored function's, and replaces it otherwise (a handle
    without one is always replaced).
    """

    #: base URL of the runtime, e.g. http://127.0.0.1:PORT
    url: str

    def alive(self) -> bool:
        """The process (container) is still running."""
        ...

    def stop(self, timeout: float = 5.0) -> None:
        """Stop it (SIGTERM, then SIGKILL after ``timeout``) and clean up; idempotent."""
        ...

    def output_tail(self) -> str:
        """The last lines of its output, for error messages."""
        ...


class Launcher(Protocol):
    """Starts runtimes somewhere (``kind``: ``"host"`` or ``"container"``)."""

    kind: str

    def start(self, spec: RuntimeSpec) -> RuntimeHandle:
        """Start a runtime for ``spec``; returns once started (its URL known), not
        necessarily ready.

        :raises LaunchError: it could not be started (the message says why).
        """
        ...

    def adopt(self) -> dict[str, RuntimeHandle]:
        """Running runtimes left by a previous provider (name -> handle): host: ``{}``;
        container: found by labels."""
        ...

    def close(self) -> None:
        """Release the launcher's own resources (not the runtimes it started)."""
        ...


class LaunchError(RuntimeError):
    """A runtime could not be started; ``str()`` says why (with the runtime's output)."""
