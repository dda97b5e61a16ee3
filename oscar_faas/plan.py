"""One deployment plan: everything a deploy of a service needs, decided once, with no I/O.

:func:`plan_deployment` turns a normalized, validated service and the gateway settings into
the FunctionDeployment, the storage secret (or none) and the MinIO buckets and folders to
make. The registry (create, update) and ``oscar-faas stack`` both consume it, so the REST
path and the faas-cli export cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import storage
from .config import Settings
from .contract import SECRET_TOKEN_KEY, storage_secret_name
from .errors import InvalidService
from .model import HIDDEN, Service, dumps
from .service_parts import StorageIOConfig
from .translate import service_to_deployment


@dataclass(frozen=True)
class StorageSecret:
    """The OpenFaaS secret a function reads its credentials from (docs/internals.md)."""

    name: str
    value: str


@dataclass(frozen=True)
class DeploymentPlan:
    """What deploying ``service`` takes."""

    service: Service
    #: The FunctionDeployment (faas-provider JSON) to send to OpenFaaS.
    deployment: dict[str, Any]
    #: The storage secret to write first, or ``None`` when the function needs none.
    secret: StorageSecret | None
    #: Buckets and folders on ``minio.default`` to make (empty without a MinIO).
    paths: tuple[StorageIOConfig, ...]


def cluster_minio(settings: Settings) -> dict[str, Any]:
    """The cluster's MinIO as :meth:`Service.normalized` takes it."""
    return {"endpoint": settings.minio_endpoint, "verify": settings.minio_tls_verify,
            "region": settings.minio_region}


def prepare_service(service: Service, settings: Settings, *,
                    token: str | None = None) -> Service:
    """Apply the server-side defaults and validate.

    :raises InvalidService: the service breaks a rule (the message names it).
    """
    service = service.normalized(token=token, minio=cluster_minio(settings))
    service.validate()
    return service


def plan_deployment(service: Service, settings: Settings) -> DeploymentPlan:
    """The plan for a normalized, validated ``service``.

    :raises InvalidService: the service uses ``minio.default`` but no MinIO is set up, or a
        user provider's credential reads ``hidden``.
    """
    storage.check_configured(service, settings)
    name = secret_name(service)
    secret = StorageSecret(name, storage_secret_value(service, settings)) if name else None
    paths = tuple(storage.default_paths(service)) if settings.minio_configured else ()
    return DeploymentPlan(service, service_to_deployment(service, settings, name), secret,
                          paths)


def secret_name(service: Service) -> str | None:
    """The name of the service's secret. Every OSCAR service has one: it carries the token
    its runtime checks callers against (:mod:`oscar_faas.runtime.caller`), besides any
    storage credentials and environment secrets. (``None`` is kept in the signature for
    services stored by an older gateway, which may have none.)"""
    return storage_secret_name(service.name)


def storage_secret_value(service: Service, settings: Settings) -> str:
    """The JSON the function reads its token and credentials from (docs/internals.md).

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
    secret[SECRET_TOKEN_KEY] = service.token
    if service.environment["secrets"]:
        secret["environment"] = dict(service.environment["secrets"])
    return dumps(secret)
