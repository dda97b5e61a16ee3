"""Service <-> OpenFaaS FunctionDeployment, at one boundary.

The gateway keeps no database: the whole service (credentials masked) travels in one
annotation of its function, so OpenFaaS is the source of truth and any number of gateway
replicas agree. The same :func:`service_to_deployment` feeds the REST deploy and the
faas-cli ``stack.yml`` export, so the two cannot drift apart.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Mapping

import yaml

from . import contract as c
from .config import Settings
from .contract import SERVICE_ANNOTATION, SUPERVISOR_PROCESS
from .errors import InvalidService
from .model import Service, dumps

SCALE_MIN_LABEL = "com.openfaas.scale.min"
SCALE_MAX_LABEL = "com.openfaas.scale.max"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def function_config(service: Service) -> str:
    """The service as the supervisor reads it (``FUNCTION_CONFIG``): YAML with JSON key
    names, no script (it travels in ``SCRIPT``), no token or cluster credentials, and
    storage credentials masked."""
    data = service.masked().to_dict()
    for key in ("script", "token", "clusters"):
        data.pop(key, None)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def _resources(service: Service) -> dict[str, str]:
    resources = {"memory": service.memory, "cpu": service.cpu}
    if service.enable_gpu:
        resources["nvidia.com/gpu"] = "1"
    return resources


def service_to_deployment(service: Service, settings: Settings,
                          storage_secret: str | None) -> dict[str, Any]:
    """The FunctionDeployment (faas-provider JSON) that runs ``service`` on OpenFaaS.

    ``service`` must be normalized and validated; ``storage_secret`` is the name of its
    storage secret, if it has one (``plan.secret_name``). No Pro-only labels are sent.
    """
    env: dict[str, str] = {
        # Classic watchdog settings; a service may override them in its variables (e.g. a
        # longer exec_timeout), except combine_output, which keeps logs out of responses.
        c.WATCHDOG_MAX_INFLIGHT: str(settings.watchdog_max_inflight),
        c.WATCHDOG_EXEC_TIMEOUT: str(settings.watchdog_exec_timeout),
        c.WATCHDOG_READ_TIMEOUT: str(settings.watchdog_read_timeout),
        c.WATCHDOG_WRITE_TIMEOUT: str(settings.watchdog_write_timeout),
        c.WATCHDOG_WRITE_DEBUG: "false",
        c.WATCHDOG_CONTENT_TYPE: c.RUN_ANSWER_CONTENT_TYPE,
    }
    env.update(service.environment["variables"])
    env.update({
        c.WATCHDOG_COMBINE_OUTPUT: "false",
        c.ENV_SCRIPT: _b64(service.script),
        c.ENV_FUNCTION_CONFIG: _b64(function_config(service)),
        c.ENV_LOG_LEVEL: service.log_level,
    })
    labels = dict(service.labels)
    if service.exposed:
        env.update(expose_env(service))
        labels.update(expose_labels(service))
    deployment: dict[str, Any] = {
        "service": service.name,
        "image": (settings.function_image.format(name=service.name)
                  if settings.function_image else service.image),
        "envProcess": SUPERVISOR_PROCESS,
        "envVars": env,
        "labels": labels,
        "annotations": {**service.annotations,
                        SERVICE_ANNOTATION: dumps(service.masked().to_dict())},
        "limits": _resources(service),
        "requests": _resources(service),
    }
    if storage_secret:
        env[c.ENV_STORAGE_SECRET] = storage_secret
        deployment["secrets"] = [storage_secret]
    return deployment


def expose_health_path(service: Service) -> str:
    """The path the runtime probes, as the server sees it: ``health_path`` under the exposed
    prefix when ``rewrite_target`` keeps that prefix (as OSCAR's probes do); empty when unset
    (then the port accepting connections is the health check)."""
    health = service.expose["health_path"]
    if health and service.expose["rewrite_target"]:
        return c.exposed_prefix(service.name) + health
    return health


def expose_env(service: Service) -> dict[str, str]:
    """The env that puts the function runtime in expose mode (docs/internals.md)."""
    return {
        c.ENV_EXPOSE_PORT: str(service.expose_port),
        c.ENV_EXPOSE_HEALTH_PATH: expose_health_path(service),
        c.ENV_EXPOSE_DEFAULT_COMMAND: "true" if service.expose["default_command"] else "false",
        c.ENV_SERVICE_BASE_PATH: c.exposed_prefix(service.name),
    }


def expose_labels(service: Service) -> dict[str, str]:
    """Replica bounds as OpenFaaS labels: ``com.openfaas.scale.min`` sets the replicas a
    cluster starts (faas-netes reads it in CE); ``com.openfaas.scale.max`` bounds an
    autoscaler where one runs. The embedded provider runs one runtime whatever they say."""
    labels = {}
    if service.expose["min_scale"] > 0:
        labels[SCALE_MIN_LABEL] = str(service.expose["min_scale"])
    if service.expose["max_scale"] > 0:
        labels[SCALE_MAX_LABEL] = str(service.expose["max_scale"])
    return labels


def is_oscar_function(status: Mapping[str, Any]) -> bool:
    """Whether a FunctionStatus carries an OSCAR service (others share the namespace)."""
    annotations = status.get("annotations") or {}
    return isinstance(annotations, Mapping) and SERVICE_ANNOTATION in annotations


def status_to_service(status: Mapping[str, Any]) -> Service | None:
    """Rebuild the service stored in a FunctionStatus; ``None`` when the function is not an
    OSCAR service (no annotation, or one that does not parse)."""
    annotations = status.get("annotations") or {}
    raw = annotations.get(SERVICE_ANNOTATION) if isinstance(annotations, Mapping) else None
    if not isinstance(raw, str):
        return None
    try:
        return Service.from_dict(json.loads(raw))
    except (ValueError, InvalidService):
        return None
