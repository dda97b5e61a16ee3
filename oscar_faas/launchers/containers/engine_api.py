"""Reaching the Docker Engine API (``DOCKER_HOST``), reading its answers, and the errors the
container code raises.

Exists so :mod:`.engine` (the engine's use) and :mod:`.launcher` share one
:func:`connect` and one family of errors whose messages name the function and the fix.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from typing import Any

import docker
import docker.errors
import requests

from ...errors import OscarFaasError

class ContainerError(OscarFaasError):
    """The engine refused or failed something; the message says what and for which function."""

    status = 500


class EngineUnavailable(ContainerError, ConnectionError):
    """No Docker Engine API answers at ``DOCKER_HOST``."""

    status = 503


class ImageUnavailable(ContainerError, LookupError):
    """The function's image is not on this machine and cannot be pulled."""

    status = 400


class FunctionNotReady(ContainerError, TimeoutError):
    """The container did not become ready (exited, or its runtime never answered)."""

    status = 503




def connect(timeout: float = 120) -> docker.DockerClient:
    """A client of the Docker Engine API at ``DOCKER_HOST`` (default: Docker's socket).

    :raises EngineUnavailable: nothing answers there; the message says how to start one.
    """
    where = os.environ.get("DOCKER_HOST") or "the default Docker socket (DOCKER_HOST unset)"
    try:
        client = docker.from_env(timeout=int(timeout))
        client.ping()
    except (docker.errors.DockerException, requests.RequestException) as err:
        raise EngineUnavailable(
            f"no container engine answers at {where}: {err}. Start Docker, or Podman's API "
            "service (`podman system service --time=0 unix:///run/oscar-faas-podman.sock`, see "
            "scripts/setup-podman.sh) and set DOCKER_HOST to its socket") from err
    return client


def explain(err: Exception) -> str:
    explanation = getattr(err, "explanation", None)
    return str(explanation or err)


def pull_error(image: str, reason: str) -> ImageUnavailable:
    return ImageUnavailable(
        f"image {image} is not on this machine and cannot be pulled: {reason}. Check the "
        f"service's 'image' (name and tag), log in to its registry (docker/podman login), or "
        f"put it on this machine first (docker/podman pull, load or build)")


def created_at(container: Any) -> float:
    """When a container was created: a Unix time in list answers, RFC 3339 in inspect ones."""
    created = container.attrs.get("Created")
    if isinstance(created, (int, float)):
        return float(created)
    try:
        return datetime.fromisoformat(str(created)[:26].rstrip("Z")).timestamp()
    except ValueError:
        return 0.0


def container_state(client: Any, container_id: str, tries: int = 5) -> str:
    """The container's state ("" when gone). Podman answers an inspect made as the
    container's process exits with a 500 "read /proc/<pid>/cgroup: no such process": a
    moment, not an error, so it is asked again."""
    for attempt in range(tries):
        try:
            return str(client.api.inspect_container(container_id)["State"]["Status"])
        except docker.errors.NotFound:
            return ""
        except docker.errors.APIError as err:
            if "no such process" not in str(err).lower() or attempt == tries - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    return ""
