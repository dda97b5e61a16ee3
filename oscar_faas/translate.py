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

from .config import Settings
from .errors import InvalidService
from .model import HIDDEN, Service, dumps

#: The supervisor path OSCAR uses; images built from ``function-templates/oscar`` have it,
#: and the embedded provider runs the supervisor in-process for it.
SUPERVISOR_PROCESS = "/oscar/bin/supervisor"
#: The annotation that carries the stored service.
SERVICE_ANNOTATION = "com.oscar-faas.service"
#: Env var naming the storage secret (see docs/internals.md).
STORAGE_SECRET_ENV = "OSCAR_STORAGE_SECRET"


def storage_secret_name(service_name: str) -> str:
    return f"oscar-storage-{service_name}"


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


def needs_storage_secret(service: Service) -> bool:
    """True when the function needs credentials: it writes outputs, defines providers of
    its own or has environment secrets."""
    return bool(service.output or service.storage_credentials()
                or service.environment["secrets"])


def storage_secret_value(service: Service, settings: Settings) -> str:
    """The JSON the function reads its credentials from (docs/internals.md).

    :raises InvalidService: a user provider's credential reads ``hidden`` (a client sent
        back what GET showed); the real value is needed, since OpenFaaS never returns it.
    """
    providers: dict[str, dict[str, dict[str, Any]]] = service.storage_credentials()
    for kind, entries in providers.items():
        for ident, conf in entries.items():
            for key, value in conf.items():
                if value == HIDDEN:
                    raise InvalidService(
                        f"storage_providers.{kind}.{ident}.{key} reads 'hidden': send the real "
                        f"credential (GET responses mask it and it cannot be read back)")
    if settings.minio_configured:
        providers.setdefault("minio", {})["default"] = {
            "endpoint": settings.minio_endpoint,
            "verify": settings.minio_tls_verify,
            "region": settings.minio_region,
            "access_key": settings.minio_access_key,
            "secret_key": settings.minio_secret_key,
        }
    secret: dict[str, Any] = dict(providers)
    if service.environment["secrets"]:
        secret["environment"] = dict(service.environment["secrets"])
    return dumps(secret)


def _resources(service: Service) -> dict[str, str]:
    resources = {"memory": service.memory, "cpu": service.cpu}
    if service.enable_gpu:
        resources["nvidia.com/gpu"] = "1"
    return resources


def service_to_deployment(service: Service, settings: Settings) -> dict[str, Any]:
    """The FunctionDeployment (faas-provider JSON) that runs ``service`` on OpenFaaS.

    ``service`` must be normalized and validated. No Pro-only labels are sent.
    """
    env: dict[str, str] = {
        # Classic watchdog settings; a service may override them in its variables (e.g. a
        # longer exec_timeout), except combine_output, which keeps logs out of responses.
        "max_inflight": str(settings.watchdog_max_inflight),
        "exec_timeout": str(settings.watchdog_exec_timeout),
        "read_timeout": str(settings.watchdog_read_timeout),
        "write_timeout": str(settings.watchdog_write_timeout),
        "write_debug": "false",
    }
    env.update(service.environment["variables"])
    env.update({
        "combine_output": "false",
        "SCRIPT": _b64(service.script),
        "FUNCTION_CONFIG": _b64(function_config(service)),
        "LOG_LEVEL": service.log_level,
    })
    deployment: dict[str, Any] = {
        "service": service.name,
        "image": (settings.function_image.format(name=service.name)
                  if settings.function_image else service.image),
        "envProcess": SUPERVISOR_PROCESS,
        "envVars": env,
        "labels": dict(service.labels),
        "annotations": {**service.annotations,
                        SERVICE_ANNOTATION: dumps(service.masked().to_dict())},
        "limits": _resources(service),
        "requests": _resources(service),
    }
    if needs_storage_secret(service):
        secret = storage_secret_name(service.name)
        env[STORAGE_SECRET_ENV] = secret
        deployment["secrets"] = [secret]
    return deployment


def is_oscar_function(status: Mapping[str, Any]) -> bool:
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
