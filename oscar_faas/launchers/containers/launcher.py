"""``--runtime container``: each function's runtime as a container of its own image.

:class:`ContainerLauncher` is the provider's :class:`~..launch.Launcher` on top of
:class:`~.engine.ContainerEngine` (the Docker Engine API at ``DOCKER_HOST``: Docker, or
``podman system service``). For every function it runs a container of ``spec.image`` whose
entry point is the static function runtime (:mod:`.runtime_binary`), bind-mounted read-only at
``/oscar``; the image is not rebuilt, so any image with ``/bin/sh`` works.

* ``spec.env`` (the function's env) is the container's whole environment on top of the
  image's own (nothing of the provider's: ``PATH``, ``HOME``... are the image's), with
  ``OSCAR_SECRETS_DIR=/var/openfaas/secrets``, where ``spec.secrets_dir`` is mounted read-only.
* ``memory``/``cpu`` become the container's limits, ``gpu`` a request for every GPU.
* The runtime's port 8080 is published on ``127.0.0.1`` (a port picked here); the handle's
  ``url`` is that address.
* Labels: the function, this provider's id (:func:`provider_id`, kept in the data dir: a
  provider restarted on the same data dir finds its containers, another provider never takes
  them), ``spec.fingerprint`` and the runtime binary's identity. :meth:`ContainerLauncher.adopt`
  hands the running ones back; a container started with another runtime binary gets a
  fingerprint that matches no spec, so the manager recreates it.
* The container's output (the runtime's and the script's stderr) goes to the function's
  logger, hence to ``/system/logs``; :meth:`ContainerHandle.output_tail` has its last lines.
  So do the image pull's progress and a failure to start (a missing image, say).
* The engine never restarts a container itself (restart policy ``no``): the runtime manager
  notices a dead one (:meth:`ContainerHandle.alive`) and starts a new one, with backoff.
* A provider stopped cleanly (SIGTERM, Ctrl-C) stops and removes its containers (the runtime
  manager stops every handle); one that died leaves them running and the next provider on the
  same data dir adopts them. Deleting a function removes its container.

What the engine (:mod:`.engine`) leaves to its user:

* The container runs as the image's own ``USER``: secret files must be readable by it (mode
  0644 in a folder of the function's own, or owned by that uid).
* On SELinux hosts (Fedora, RHEL) bind mounts need relabelling (``:z``) before a container may
  read them; nothing here does it yet (no SELinux host to test on).
* In ``bridge`` mode a function reaches the host's services (MinIO) through the engine's
  gateway name (``host.containers.internal`` on Podman; Docker needs
  ``--add-host host.docker.internal:host-gateway``), not through ``127.0.0.1``; or use
  ``network="host"``. Other containers on the same bridge can reach a runtime's port 8080
  directly, as functions inside an OpenFaaS cluster can.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Mapping

import docker.errors
import requests

from ...contract import ENV_SECRETS_DIR
from ...errors import OscarFaasError
from .specs import FunctionContainer
from .engine import SECRETS_MOUNT, ContainerEngine
from .engine_api import ContainerError, connect
from ..launch import _RUNTIME_LINE, LaunchError, RuntimeSpec, function_logger
from .runtime_binary import ensure_runtime, planned_dir

log = logging.getLogger("oscar_faas.launchers.containers.engine")

#: Which runtime binary a container was started with (the cache folder's name).
LABEL_RUNTIME = "com.oscar-faas.runtime"
#: The file in the data dir holding this provider's id.
PROVIDER_ID_FILE = "provider-id"
#: Lines of a container's output kept for :meth:`ContainerHandle.output_tail`.
TAIL_LINES = 50
ENV_NETWORK = "OSCAR_FAAS_CONTAINER_NETWORK"


def provider_id(data_dir: str | Path) -> str:
    """This provider's id: made once and kept in ``<data_dir>/provider-id``."""
    path = Path(data_dir) / PROVIDER_ID_FILE
    try:
        value = path.read_text().strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    value = secrets.token_hex(6)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(value + "\n")
    os.replace(tmp, path)
    return value


class ContainerHandle:
    """A function's runtime in a container (a :class:`~..launch.RuntimeHandle`)."""

    def __init__(self, launcher: ContainerLauncher, fc: FunctionContainer,
                 fingerprint: str) -> None:
        self.function = fc.function
        self.url = fc.url
        self.container_id = fc.id
        self.container_name = fc.name
        #: ``spec.fingerprint`` it was started with ("" when unknown or stale).
        self.fingerprint = fingerprint
        self._engine = launcher.engine
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._follower = threading.Thread(target=self._follow,
                                          name=f"container-output-{fc.function}", daemon=True)
        self._follower.start()

    def __repr__(self) -> str:
        return f"<ContainerHandle {self.function} {self.container_name} {self.url}>"

    def alive(self) -> bool:
        """The container is running (a stopped, exited or removed one is not).

        When the engine does not answer, the container is taken as alive: Podman's containers
        run on without its API service, and restarting would fail anyway; a call that cannot
        reach the runtime still makes the manager look again.
        """
        if self._stopped.is_set():
            return False
        try:
            return self._engine.state(self.container_id) in ("running", "created")
        except (docker.errors.DockerException, requests.RequestException, OSError) as err:
            log.warning("function %s: the engine does not answer (%s); taking container %s "
                        "as alive", self.function, err, self.container_name)
            return True

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the container (SIGTERM, SIGKILL after ``timeout``) and remove it. Idempotent."""
        with self._lock:
            if self._stopped.is_set():
                return
            self._stopped.set()
        client = self._engine.client
        try:
            client.api.stop(self.container_id, timeout=max(0, int(round(timeout))))
        except docker.errors.NotFound:
            return
        except (docker.errors.DockerException, requests.RequestException, OSError) as err:
            log.debug("function %s: stopping %s: %s", self.function, self.container_name, err)
        try:
            client.api.remove_container(self.container_id, force=True)
            log.info("function %s: removed container %s", self.function, self.container_name)
        except docker.errors.NotFound:
            pass
        except (docker.errors.DockerException, requests.RequestException, OSError) as err:
            log.warning("function %s: cannot remove container %s (%s); remove it with "
                        "docker/podman rm -f %s", self.function, self.container_name, err,
                        self.container_name)

    def output_tail(self) -> str:
        """The last lines of the container's output."""
        if self._tail:
            return "\n".join(self._tail)
        return self._engine._tail(self.container_id, tail=TAIL_LINES).rstrip("\n")

    def _follow(self) -> None:
        """Copy the container's output, line by line, to the function's logger."""
        logger = function_logger(self.function)
        try:
            stream = self._engine.client.api.logs(self.container_id, stdout=True, stderr=True,
                                                  stream=True, follow=True)
            pending = b""
            for chunk in stream:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    self._line(logger, raw)
            if pending:
                self._line(logger, pending)
        except Exception as err:  # noqa: BLE001 - the engine went away: only output is lost
            if not self._stopped.is_set():
                log.debug("function %s: output of %s no longer followed: %s", self.function,
                          self.container_name, err)

    def _line(self, logger: logging.Logger, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        self._tail.append(line)
        match = _RUNTIME_LINE.match(line)  # the runtime's own lines keep their level
        if match is not None:
            logger.log(logging.getLevelName(match.group(1)), "%s", match.group(2))
        else:
            logger.info("%s", line)


class ContainerLauncher:
    """Starts function runtimes as containers (a :class:`~..launch.Launcher`).

    :param data_dir: the provider's data dir (its id is kept there).
    :param env: where ``DOCKER_HOST``, ``OSCAR_FAAS_RUNTIME_BINARY``,
        ``OSCAR_FAAS_CONTAINER_NETWORK`` and ``XDG_CACHE_HOME`` are read.
    :param runtime_dir: a folder holding the static ``runtime`` (default: built or found by
        :func:`~.runtime_binary.ensure_runtime`, in the background from now on).
    :raises EngineUnavailable: no engine answers at ``DOCKER_HOST``.
    """

    kind = "container"

    def __init__(self, data_dir: str | Path, env: Mapping[str, str] | None = None, *,
                 runtime_dir: str | Path | None = None, client: Any = None,
                 provider: str | None = None) -> None:
        env = dict(os.environ if env is None else env)
        self.network = env.get(ENV_NETWORK) or "bridge"
        if self.network not in ("bridge", "host"):
            raise ContainerError(f"{ENV_NETWORK} must be 'bridge' or 'host', "
                                 f"not {self.network!r}")
        client = client if client is not None else connect()
        planned = Path(runtime_dir) if runtime_dir is not None else planned_dir(env)
        #: The runtime binary's identity: containers started with another one are recreated.
        self.runtime_id = planned.name
        self.provider_id = provider or provider_id(data_dir)
        self.engine = ContainerEngine(planned, provider_id=self.provider_id, client=client,
                                      restart_policy={"Name": "no"})
        self._runtime: Future[Path] = Future()
        if runtime_dir is not None:
            self._runtime.set_result(planned)
        else:
            threading.Thread(target=self._prepare_runtime, args=(env,),
                             name="runtime-binary", daemon=True).start()
        log.info("container runtime: engine at %s, provider id %s, network %s",
                 env.get("DOCKER_HOST") or "the default Docker socket", self.provider_id,
                 self.network)

    def _prepare_runtime(self, env: Mapping[str, str]) -> None:
        try:
            self._runtime.set_result(ensure_runtime(env, log))
        except BaseException as err:  # noqa: BLE001 - handed to every start()
            log.error("%s", err)
            self._runtime.set_exception(err)

    def runtime_dir(self, timeout: float | None = None) -> Path:
        """The folder holding the runtime binary, once it is there.

        :raises RuntimeBinaryError: it cannot be built.
        """
        return self._runtime.result(timeout)

    def start(self, spec: RuntimeSpec) -> ContainerHandle:
        """Pull the image when missing, start the container; returns once it runs (its
        runtime answers ``/_/health`` a moment later).

        :raises LaunchError: the image cannot be had (the message names it), the runtime
            binary cannot be built, the engine refused the container or a limit is invalid.
        """
        try:
            return self._start(spec)
        except (OscarFaasError, docker.errors.DockerException, requests.RequestException) as err:
            # the service's own log says it too: that is where its user looks
            function_logger(spec.name).error("cannot start its container: %s", err)
            raise LaunchError(f"cannot start the container of {spec.name}: {err}") from err

    def _start(self, spec: RuntimeSpec) -> ContainerHandle:
        if not self._runtime.done():  # said in the service's log: `oscar-faas apply` shows it
            function_logger(spec.name).info(
                "waiting for the static runtime binary, built once on first use (about a "
                "minute; its progress is in the provider's log)")
        folder = self.runtime_dir()
        self.engine.runtime_dir = str(folder.resolve())
        # pull progress goes to the service's log (and from there to the provider's)
        self.engine.ensure_image(spec.image, function_logger(spec.name))
        secrets_dir = Path(spec.secrets_dir) if spec.secrets_dir else None
        if secrets_dir is not None:
            secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fc = self.engine.start(
            spec.name, spec.image, {**spec.env, ENV_SECRETS_DIR: SECRETS_MOUNT},
            secrets_dir=secrets_dir,
            memory=spec.memory, cpu=spec.cpu, gpu=spec.gpu, network=self.network, pull=False,
            fingerprint=spec.fingerprint, labels={LABEL_RUNTIME: self.runtime_id})
        return ContainerHandle(self, fc, spec.fingerprint)

    def adopt(self) -> dict[str, ContainerHandle]:
        """The containers a previous provider on this data dir left, by function name.

        One started with another runtime binary (oscar-faas was upgraded) comes back with an
        empty fingerprint, which matches no spec: the manager replaces it.
        """
        handles = {}
        for name, fc in self.engine.adopt().items():
            current = fc.labels.get(LABEL_RUNTIME) == self.runtime_id
            if not current:
                log.info("function %s: container %s runs an older runtime binary; it will be "
                         "replaced", name, fc.name)
            handles[name] = ContainerHandle(self, fc, fc.spec if current else "")
        return handles

    def close(self) -> None:
        """Close the engine client (the runtime manager has stopped every container)."""
        try:
            self.engine.client.close()
        except Exception:  # noqa: BLE001
            pass


__all__ = ["ContainerHandle", "ContainerLauncher", "LABEL_RUNTIME", "provider_id"]
