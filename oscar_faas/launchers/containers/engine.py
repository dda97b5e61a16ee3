"""Functions as containers of their own image, through the Docker Engine API.

The embedded provider's container runtime (issue 14): each function runs as a container of its
FDL ``image``, with the function runtime put into it *without rebuilding the image*: a static
executable (``function-templates/oscar/build-runtime.sh``: no libc needed, so any image with
``/bin/sh`` works, glibc, musl or busybox-only) sits in a host folder that is bind-mounted
read-only at ``/oscar``, and the container runs ``/oscar/runtime --host 0.0.0.0 --port 8080``.

The engine is whatever serves the Docker Engine API at ``DOCKER_HOST``: Docker Engine on a
laptop, ``podman system service`` here (``scripts/setup-podman.sh``). Only the ``docker`` SDK is
used, so both behave the same.

What a container gets:

* the function's env (the caller's mapping: the container never sees the provider's own);
* its secrets folder bind-mounted read-only at ``/var/openfaas/secrets``, as OpenFaaS does;
* ``memory`` and ``cpu`` (OSCAR/OpenFaaS quantities: ``512Mi``, ``1Gi``, ``0.5``, ``500m``) as
  ``mem_limit`` and ``nano_cpus``;
* ``gpu=True`` (OSCAR's ``enable_gpu``) as a device request for every GPU with the ``gpu``
  capability: what ``docker run --gpus all`` sends. It needs the NVIDIA container toolkit on
  Docker, or CDI on Podman; untested here (no GPU);
* a port: the runtime's 8080 published on ``127.0.0.1`` at a free host port picked here (not
  left to the engine: Docker picks a new one on every restart, and the provider keeps the URL);
  or, with ``network="host"``, the host's network and the runtime listening on 127.0.0.1 at a
  free port (for functions that must reach services on the host's loopback, e.g. MinIO);
* labels: ``com.oscar-faas.function`` (its name), ``com.oscar-faas.provider`` (which provider
  owns it, so two providers, or tests, never take each other's containers) and
  ``com.oscar-faas.spec`` (a digest of what it was started with), so a restarted provider finds
  (:meth:`ContainerEngine.adopt`) its containers and can tell whether they are still current.
"""

from __future__ import annotations

import logging
import secrets
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import docker
import docker.errors
import docker.types
import requests

from ...errors import InvalidService
from ...netutil import free_port
from .specs import HEALTH_PATH, FunctionContainer, FunctionSpec
from .engine_api import (ContainerError, FunctionNotReady, ImageUnavailable, connect,
                         container_state, created_at, explain, pull_error)
from ...quantities import memory_bytes, nano_cpus

log = logging.getLogger(__name__)

#: Where the runtime folder (holding the static ``runtime`` executable) is mounted.
RUNTIME_MOUNT = "/oscar"
#: Where the function's secrets are mounted, as OpenFaaS mounts them.
SECRETS_MOUNT = "/var/openfaas/secrets"
#: The port the runtime listens on inside the container (the watchdog's).
CONTAINER_PORT = 8080

LABEL_FUNCTION = "com.oscar-faas.function"
LABEL_PROVIDER = "com.oscar-faas.provider"
LABEL_SPEC = "com.oscar-faas.spec"
LABEL_PORT = "com.oscar-faas.port"

#: Seconds between progress lines of a long pull.
PULL_PROGRESS_EVERY = 5.0


# --------------------------------------------------------------------------- the engine


class ContainerEngine:
    """Runs functions as containers through the Docker Engine API (Docker or Podman).

    :param runtime_dir: host folder holding the static ``runtime`` executable; mounted
        read-only at ``/oscar`` in every container.
    :param provider_id: tells this provider's containers from others' (labels).
    :param client: a ``docker.DockerClient``; default: ``docker.from_env()`` (``DOCKER_HOST``).
    """

    def __init__(self, runtime_dir: str | Path, *, provider_id: str = "default",
                 client: docker.DockerClient | None = None, timeout: float = 120,
                 restart_policy: Mapping[str, Any] | None = None) -> None:
        self.runtime_dir = str(Path(runtime_dir).resolve())
        self.provider_id = provider_id
        #: What the engine does when a container exits on its own (default: start it again,
        #: up to 3 times). The container launcher passes ``{"Name": "no"}``: its runtime
        #: manager restarts dead runtimes itself, with backoff.
        self.restart_policy = dict(restart_policy or {"Name": "on-failure",
                                                      "MaximumRetryCount": 3})
        self.client = client if client is not None else connect(timeout=timeout)

    # ----------------------------------------------------------------- images

    def ensure_image(self, image: str, logger: logging.Logger | None = None) -> None:
        """Pull ``image`` unless it is on this machine, with progress in the log.

        :param logger: where progress goes (default: this module's logger).
        :raises ImageUnavailable: it cannot be had; the message names the image and the fix.
        """
        try:
            self.client.images.get(image)
            return
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as err:
            raise self._engine_error(f"cannot look up image {image}", err) from err
        repository, tag = docker.utils.parse_repository_tag(image)
        if not tag:
            tag = "latest"
        out = logger or log
        out.info("pulling image %s (not on this machine)", image)
        started = last = time.monotonic()
        layers: dict[str, str] = {}
        sizes: dict[str, tuple[int, int]] = {}  # layer -> (bytes so far, total), when told
        try:
            for event in self.client.api.pull(repository, tag=tag, stream=True, decode=True):
                if event.get("error"):
                    raise pull_error(image, event["error"])
                layer = event.get("id")
                if layer and event.get("status"):
                    layers[layer] = event["status"]
                    detail = event.get("progressDetail") or {}
                    if detail.get("total") and "download" in event["status"].lower():
                        sizes[layer] = (int(detail.get("current") or 0), int(detail["total"]))
                now = time.monotonic()
                if now - last >= PULL_PROGRESS_EVERY:
                    last = now
                    done = sum(1 for status in layers.values()
                               if "complete" in status.lower() or "exists" in status.lower())
                    got, total = (sum(size[i] for size in sizes.values()) for i in (0, 1))
                    volume = f", {got / 1e6:.0f}/{total / 1e6:.0f} MB" if total else ""
                    out.info("pulling image %s: %.0f s, %d/%d layers done%s", image,
                             now - started, done, len(layers), volume)
            self.client.images.get(image)
        except ImageUnavailable:
            raise
        except docker.errors.ImageNotFound as err:
            raise pull_error(image, explain(err)) from err
        except (docker.errors.APIError, requests.RequestException) as err:
            raise pull_error(image, explain(err)) from err
        out.info("pulled image %s in %.1f s", image, time.monotonic() - started)

    # ----------------------------------------------------------------- lifecycle

    def start(self, function: str, image: str, env: Mapping[str, str], *,
              secrets_dir: str | Path | None = None, memory: str | None = None,
              cpu: str | None = None, gpu: bool = False,
              command: Sequence[str] | None = None, network: str = "bridge",
              pull: bool = True, fingerprint: str | None = None,
              labels: Mapping[str, str] | None = None) -> FunctionContainer:
        """Create and start a container of ``image`` running the function runtime.

        Does not wait for readiness (see :meth:`wait_ready`); other containers of the same
        function are left alone (an update starts the new one, then stops the old).

        :param env: the function's whole environment (nothing of the provider's is added).
        :param secrets_dir: host folder mounted read-only at ``/var/openfaas/secrets``.
        :param memory: memory limit quantity (``512Mi``); ``None``: no limit.
        :param cpu: CPU limit quantity (``0.5``, ``500m``); ``None``: no limit.
        :param gpu: request every GPU (``docker run --gpus all``).
        :param command: replaces ``/oscar/runtime --host H --port P`` (tests' stand-ins);
            ``{host}`` and ``{port}`` in it are filled in.
        :param network: ``bridge`` (published port on 127.0.0.1) or ``host``.
        :param fingerprint: the ``com.oscar-faas.spec`` label (default: a digest of the
            arguments and the runtime folder).
        :param labels: more labels.
        :raises ImageUnavailable: see :meth:`ensure_image`.
        :raises ContainerError: the engine refused the container.
        """
        spec = FunctionSpec(function, image, dict(env), str(secrets_dir) if secrets_dir else None,
                            memory, cpu, gpu, tuple(command) if command else None, network)
        if pull:
            self.ensure_image(image)
        kwargs = self._run_kwargs(spec)
        for attempt in range(3):  # a picked port can be taken before the engine binds it
            port = free_port()
            if network == "host":
                host, container_port = "127.0.0.1", port
                extra: dict[str, Any] = {"network_mode": "host"}
            else:
                host, container_port = "0.0.0.0", CONTAINER_PORT
                extra = {"ports": {f"{CONTAINER_PORT}/tcp": ("127.0.0.1", port)}}
            argv = [part.replace("{host}", host).replace("{port}", str(container_port))
                    for part in (spec.command or [f"{RUNTIME_MOUNT}/runtime", "--host", "{host}",
                                                  "--port", "{port}"])]
            name = f"oscar-faas-{function}-{secrets.token_hex(3)}"
            tags = {**(labels or {}), LABEL_FUNCTION: function,
                    LABEL_PROVIDER: self.provider_id,
                    LABEL_SPEC: fingerprint or spec.digest(self.runtime_dir),
                    LABEL_PORT: str(port)}
            try:
                container = self.client.containers.run(
                    image, name=name, entrypoint=argv[:1], command=argv[1:], labels=tags,
                    detach=True, **kwargs, **extra)
            except docker.errors.ImageNotFound as err:
                raise pull_error(image, explain(err)) from err
            except docker.errors.APIError as err:
                self._remove_named(name)
                if "address already in use" in str(err).lower() and attempt < 2:
                    continue
                raise self._engine_error(f"cannot start a container of {image} for "
                                         f"function {function}", err) from err
            log.info("function %s: container %s of %s started, runtime on 127.0.0.1:%d",
                     function, name, image, port)
            return FunctionContainer(function, container.id, name, f"http://127.0.0.1:{port}",
                                     tags[LABEL_SPEC], labels=tags)
        raise AssertionError("unreachable")

    def wait_ready(self, fc: FunctionContainer, timeout: float = 60, *,
                   path: str = HEALTH_PATH) -> float:
        """Wait until ``GET url+path`` answers 200; return the seconds waited.

        :raises FunctionNotReady: the container exited (the message carries its output's
            tail), or ``timeout`` passed.
        """
        started = time.monotonic()
        deadline = started + timeout
        delay = 0.02
        while True:
            try:
                if requests.get(fc.url + path, timeout=2).status_code == 200:
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            state = self.state(fc.id)
            if state not in ("running", "created", "restarting"):
                self._settle(fc.id)  # its output is whole only once the engine says so
                raise FunctionNotReady(
                    f"function {fc.function}: its container {fc.name} is {state or 'gone'} "
                    f"before its runtime answered; its output:\n{self._tail(fc.id)}")
            if time.monotonic() >= deadline:
                raise FunctionNotReady(
                    f"function {fc.function}: no answer from {fc.url}{path} within "
                    f"{timeout:g} s; its output:\n{self._tail(fc.id)}")
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    def remove(self, function: str) -> str:
        """Remove every container of ``function``; return their last output (for its logs)."""
        output = []
        for container in self._containers(function):
            output.append(self._tail(container.id, tail=None))
            self._remove_container(container)
        return "".join(output)

    def remove_all(self) -> None:
        """Remove every container of this provider."""
        for container in self._containers():
            self._remove_container(container)

    def adopt(self) -> dict[str, FunctionContainer]:
        """The running containers of this provider after a provider restart, by function.

        Stopped ones are started again; one that will not start is removed (the provider
        recreates it from its stored function). When a function has several (an update cut
        short), the newest is kept and the others removed.
        """
        found: dict[str, FunctionContainer] = {}
        containers = sorted(self._containers(), key=created_at, reverse=True)
        for container in containers:
            labels = container.labels
            function = labels.get(LABEL_FUNCTION, "")
            if function in found:
                self._remove_container(container)
                continue
            if container.status != "running":
                try:
                    container.start()
                    container.reload()
                except docker.errors.APIError as err:
                    log.warning("function %s: container %s does not start again (%s); "
                                "removing it", function, container.name, explain(err))
                    self._remove_container(container)
                    continue
            found[function] = FunctionContainer(
                function, container.id, container.name,
                f"http://127.0.0.1:{labels.get(LABEL_PORT, '')}", labels.get(LABEL_SPEC, ""),
                container.status, labels=dict(labels))
            log.info("function %s: adopted container %s", function, container.name)
        return found

    def logs(self, function: str, tail: int | None = None) -> str:
        """The output (stdout and stderr) of ``function``'s containers, oldest first."""
        containers = sorted(self._containers(function), key=created_at)
        return "".join(self._tail(c.id, tail=tail) for c in containers)

    def state(self, container_id: str) -> str:
        """The container's state, "" when it is gone (:func:`.engine_api.container_state`)."""
        return container_state(self.client, container_id)

    def inspect(self, fc: FunctionContainer) -> dict[str, Any]:
        """The engine's ``inspect`` document of a function's container."""
        return self.client.api.inspect_container(fc.id)

    # ----------------------------------------------------------------- internals

    def _run_kwargs(self, spec: FunctionSpec) -> dict[str, Any]:
        mounts = [docker.types.Mount(RUNTIME_MOUNT, self.runtime_dir, type="bind",
                                     read_only=True)]
        if spec.secrets_dir:
            mounts.append(docker.types.Mount(SECRETS_MOUNT, str(Path(spec.secrets_dir).resolve()),
                                             type="bind", read_only=True))
        kwargs: dict[str, Any] = {"environment": dict(spec.env), "mounts": mounts,
                                  "restart_policy": dict(self.restart_policy)}
        if spec.memory:
            kwargs["mem_limit"] = memory_bytes(spec.memory)
        if spec.cpu:
            kwargs["nano_cpus"] = nano_cpus(spec.cpu)
        if spec.gpu:
            kwargs["device_requests"] = [docker.types.DeviceRequest(count=-1,
                                                                    capabilities=[["gpu"]])]
        if spec.network not in ("bridge", "host"):
            raise InvalidService(f"network must be 'bridge' or 'host', got {spec.network!r}")
        return kwargs

    def _containers(self, function: str | None = None) -> list[Any]:
        filters = [f"{LABEL_PROVIDER}={self.provider_id}"]
        if function is not None:
            filters.append(f"{LABEL_FUNCTION}={function}")
        for attempt in range(5):
            try:
                return self.client.containers.list(all=True, filters={"label": filters})
            except docker.errors.APIError as err:
                # the SDK inspects each listed container: one removed meanwhile (an update,
                # a delete) is not an error, just a reason to list again (Docker says 404,
                # Podman may say 500 "no such container")
                vanished = isinstance(err, docker.errors.NotFound) or \
                    "no such container" in str(err).lower()
                if not vanished or attempt == 4:
                    raise self._engine_error("cannot list containers", err) from err
        raise AssertionError("unreachable")

    def _tail(self, container_id: str, tail: int | None = 50) -> str:
        try:
            data = self.client.api.logs(container_id, stdout=True, stderr=True,
                                        tail="all" if tail is None else tail)
        except docker.errors.APIError:
            return ""
        return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)

    def _remove_container(self, container: Any) -> None:
        try:
            container.remove(force=True)
            log.info("removed container %s", container.name)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as err:
            raise self._engine_error(f"cannot remove container {container.name}", err) from err

    def _remove_named(self, name: str, patience: float = 10) -> None:
        """Remove a container for sure: an engine busy with the container's own exit (Podman
        cleaning it up) can refuse the first try, so try until it is gone (``patience`` s)."""
        deadline = time.monotonic() + patience
        while True:
            try:
                self.client.api.remove_container(name, force=True)
                return
            except docker.errors.NotFound:
                return
            except (docker.errors.APIError, requests.RequestException) as err:
                if time.monotonic() >= deadline:
                    log.warning("cannot remove container %s (%s); remove it with "
                                "docker/podman rm -f %s", name, explain(err), name)
                    return
                self._settle(name)

    def _settle(self, container_id: str) -> None:
        """Wait (5 s at most) until the engine has recorded the container's exit: its state
        says "exited" as soon as the process is gone, its log and exit code come after."""
        try:
            self.client.api.wait(container_id, timeout=5)
        except (docker.errors.DockerException, requests.RequestException, OSError):
            pass

    @staticmethod
    def _engine_error(what: str, err: Exception) -> ContainerError:
        return ContainerError(f"{what}: {explain(err)}")
