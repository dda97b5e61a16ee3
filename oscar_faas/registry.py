"""Service management on top of OpenFaaS: create, read, update, delete, list.

Each operation validates everything first and undoes what it did when a later step fails,
so a bad request never leaves a half-created service. Reads go through a short-lived cache
(one per app, so per gunicorn worker) that keeps ``/run`` from asking OpenFaaS for the token
on every call; writes go through it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable

from . import storage, triggers
from .config import Settings
from .contract import STORAGE_SECRET_PREFIX, is_dns1123_label
from .errors import (BodyTooLarge, InvalidService, OscarFaasError, ServiceExists,
                     ServiceNotFound, UpstreamError)
from .model import MAX_NAME_LENGTH, Service
from .openfaas import OpenFaaSClient
from .plan import DeploymentPlan, plan_deployment, prepare_service, secret_name
from .translate import service_to_deployment, status_to_service

log = logging.getLogger(__name__)

#: Largest FunctionDeployment sent to OpenFaaS, checked before anything is written (the
#: embedded provider refuses JSON bodies over 64 MiB; a cluster's gateway has its own limit).
MAX_DEPLOYMENT_SIZE = 32 * 1024 * 1024


class ServiceCache:
    """Services by name, each kept for ``ttl`` seconds."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._entries: dict[str, tuple[float, Service]] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Service | None:
        entry = self._entries.get(name)
        if entry is None or entry[0] < self._clock():
            return None
        return entry[1]

    def put(self, service: Service) -> None:
        with self._lock:
            self._entries[service.name] = (self._clock() + self.ttl, service)

    def drop(self, name: str) -> None:
        with self._lock:
            self._entries.pop(name, None)


class ServiceRegistry:
    """OSCAR services stored as OpenFaaS functions (the service rides in an annotation)."""

    def __init__(self, settings: Settings, client: OpenFaaSClient) -> None:
        self.settings = settings
        self.client = client
        self.cache = ServiceCache(settings.service_cache_ttl)

    # ------------------------------------------------------------------ reads

    def get(self, name: str) -> Service:
        """:raises ServiceNotFound: no function, or one that is not an OSCAR service."""
        return self._get_with_status(name)[0]

    def _get_with_status(self, name: str) -> tuple[Service, dict[str, Any]]:
        """The service and its function's FunctionStatus.

        :raises ServiceNotFound: no function, or one that is not an OSCAR service."""
        try:
            status = self.client.get_function(name) if _valid_name(name) else None
        except ServiceNotFound:
            status = None
        service = status_to_service(status) if status else None
        if service is None or service.name != name or not isinstance(status, dict):
            raise ServiceNotFound("")
        self.cache.put(service)
        return service, status

    def get_cached(self, name: str) -> Service:
        """Like :meth:`get`, served from the cache when fresh (the ``/run`` hot path)."""
        return self.cache.get(name) or self.get(name)

    def all(self) -> list[Service]:
        services = [s for s in map(status_to_service, self.client.list_functions()) if s]
        return sorted(services, key=lambda s: s.name)

    # ------------------------------------------------------------------ writes

    def prepare(self, body: Any, *, token: str | None = None) -> DeploymentPlan:
        """Parse, default and validate a client body and plan its deploy; touches nothing
        remote.

        :raises InvalidService: the body breaks a rule (the message names it).
        """
        service = prepare_service(Service.from_dict(body), self.settings, token=token)
        plan = plan_deployment(service, self.settings)
        size = len(json.dumps(plan.deployment))
        if size > MAX_DEPLOYMENT_SIZE:
            raise BodyTooLarge(
                f"service '{service.name}' would make a deployment of {size} bytes, over the "
                f"limit of {MAX_DEPLOYMENT_SIZE}: make the script smaller")
        return plan

    def create(self, body: Any) -> Service:
        """:raises ServiceExists: a function of that name exists (OSCAR service or not)."""
        plan = self.prepare(body)
        try:
            self.client.get_function(plan.service.name)
        except ServiceNotFound:
            pass
        else:
            raise ServiceExists("A service with the provided name already exists")
        self._write_secret(plan)
        try:
            self._ensure_storage(plan)
            self.client.deploy(plan.deployment)
        except Exception:
            if plan.secret:
                self._forget_secret(plan.secret.name)
            raise
        self.cache.put(plan.service)
        triggers.register(plan.service, self.settings)  # uploads into inputs start jobs
        return plan.service

    def update(self, body: Any) -> Service:
        """Replace a service, keeping its token (a changed token breaks every client).

        :raises ServiceNotFound: no such service.
        """
        name = Service.from_dict(body).name
        if not name:
            raise InvalidService(
                "The service specification is not valid: field 'name' is required")
        current, status = self._get_with_status(name)
        plan = self.prepare(body, token=current.token)
        # the secret the function reads now, as OpenFaaS says (a gateway before issue 21 gave
        # secrets to some services only)
        old_secret = secret_name(current)
        if old_secret not in (status.get("secrets") or []):
            old_secret = None
        self._ensure_storage(plan)  # idempotent: buckets are never taken away again
        if plan.secret and not old_secret:
            # a new secret, which nothing uses yet: write it first, forget it on failure
            self._write_secret(plan)
            try:
                self.client.update(plan.deployment)
            except Exception:
                self._forget_secret(plan.secret.name)
                raise
        elif plan.secret:
            # the function already reads this secret: change the function first, then the
            # secret; if the secret cannot be written, put the previous function back
            self.client.update(plan.deployment)
            try:
                self._write_secret(plan)
            except Exception:
                self._restore(current, old_secret)
                raise
        else:
            self.client.update(plan.deployment)
            if old_secret:
                self._forget_secret(old_secret)
        self.cache.put(plan.service)
        if triggers.input_paths(current) != triggers.input_paths(plan.service):
            triggers.unregister(current, self.settings)
            triggers.register(plan.service, self.settings)
        return plan.service

    def _restore(self, service: Service, secret: str | None) -> None:
        """Deploy ``service`` (as stored: credentials masked) again, best effort."""
        try:
            self.client.update(service_to_deployment(service, self.settings, secret))
        except Exception:  # noqa: BLE001 - the original error is the one to report
            log.exception("could not put service %s back after a failed update",
                          service.name)

    def delete(self, name: str, *, purge: bool = False) -> list[str]:
        """Remove the function, then its secret (the other order could leave a function
        without its credentials). Buckets stay unless ``purge``; returns the buckets purged.

        :raises UpstreamError: the function is gone but its secret could not be deleted
            (502, naming it; :meth:`clean_orphan_secrets` removes it later).
        """
        service = self.get(name)
        self.cache.drop(name)
        self.client.delete(name)
        triggers.unregister(service, self.settings)
        secret = secret_name(service)
        if secret:
            try:
                self.client.delete_secret(secret)
            except OscarFaasError as err:
                raise UpstreamError(
                    f"service {name} was deleted, but its secret {secret} could not be: "
                    f"{err.message} (it is removed when the gateway starts next)") from None
        if purge and self.settings.minio_configured:
            return storage.purge_paths(storage.minio_client(self.settings),
                                       storage.default_paths(service))
        return []

    def clean_orphan_secrets(self) -> list[str]:
        """Delete the storage secrets whose function does not exist (a create that died
        between writing the secret and deploying, a delete whose second step failed).
        Only safe while no create runs: ``serve`` calls it before it takes requests.
        Returns the names deleted."""
        functions = {f.get("name") for f in self.client.list_functions()}
        removed = []
        for secret in self.client.list_secrets():
            if secret.startswith(STORAGE_SECRET_PREFIX) and \
                    secret[len(STORAGE_SECRET_PREFIX):] not in functions:
                self.client.delete_secret(secret)
                log.warning("deleted the secret %s: its service does not exist", secret)
                removed.append(secret)
        return removed

    # ------------------------------------------------------------------ helpers

    def _write_secret(self, plan: DeploymentPlan) -> None:
        if plan.secret:
            self.client.put_secret(plan.secret.name, plan.secret.value)

    def _forget_secret(self, name: str) -> None:
        try:
            self.client.delete_secret(name)
        except Exception:  # best effort while undoing: the original error matters more
            pass

    def _ensure_storage(self, plan: DeploymentPlan) -> None:
        if plan.paths:
            storage.ensure_paths(storage.minio_client(self.settings), plan.paths)


def _valid_name(name: str) -> bool:
    """Names a service can have; anything else cannot exist, so skip the round trip (and
    never let ``keep.openfaas-fn`` reach OpenFaaS, which reads it as ``keep``)."""
    return is_dns1123_label(name, MAX_NAME_LENGTH)
