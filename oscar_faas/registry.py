"""Service management on top of OpenFaaS: create, read, update, delete, list.

Each operation validates everything first and undoes what it did when a later step fails,
so a bad request never leaves a half-created service. Reads go through a short-lived cache
(one per app, so per gunicorn worker) that keeps ``/run`` from asking OpenFaaS for the token
on every call; writes go through it.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from .config import Settings
from .errors import InvalidService, ServiceExists, ServiceNotFound
from .model import Service
from .openfaas import OpenFaaSClient
from . import storage
from .translate import (needs_storage_secret, service_to_deployment, status_to_service,
                        storage_secret_name, storage_secret_value)


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
        try:
            status = self.client.get_function(name) if _valid_name(name) else None
        except ServiceNotFound:
            status = None
        service = status_to_service(status) if status else None
        if service is None:
            raise ServiceNotFound("")
        self.cache.put(service)
        return service

    def get_cached(self, name: str) -> Service:
        """Like :meth:`get`, served from the cache when fresh (the ``/run`` hot path)."""
        return self.cache.get(name) or self.get(name)

    def all(self) -> list[Service]:
        services = [s for s in map(status_to_service, self.client.list_functions()) if s]
        return sorted(services, key=lambda s: s.name)

    def exists(self, name: str) -> bool:
        try:
            self.get(name)
        except ServiceNotFound:
            return False
        return True

    # ------------------------------------------------------------------ writes

    def prepare(self, body: Any, *, token: str | None = None) -> Service:
        """Parse, default and validate a client body; touches nothing remote.

        :raises InvalidService: the body breaks a rule (the message names it).
        """
        service = Service.from_dict(body).normalized(token=token, minio=self._minio())
        service.validate()
        storage.check_configured(service, self.settings)
        if needs_storage_secret(service):
            storage_secret_value(service, self.settings)  # raises on masked credentials
        return service

    def create(self, body: Any) -> Service:
        """:raises ServiceExists: a function of that name exists (OSCAR service or not)."""
        service = self.prepare(body)
        try:
            self.client.get_function(service.name)
        except ServiceNotFound:
            pass
        else:
            raise ServiceExists("A service with the provided name already exists")
        secret = self._write_secret(service)
        try:
            self._ensure_storage(service)
            self.client.deploy(service_to_deployment(service, self.settings))
        except Exception:
            if secret:
                self._forget_secret(secret)
            raise
        self.cache.put(service)
        return service

    def update(self, body: Any) -> Service:
        """Replace a service, keeping its token (a changed token breaks every client).

        :raises ServiceNotFound: no such service.
        """
        name = Service.from_dict(body).name
        if not name:
            raise InvalidService(
                "The service specification is not valid: field 'name' is required")
        current = self.get(name)
        service = self.prepare(body, token=current.token)
        self._write_secret(service)
        self._ensure_storage(service)
        self.client.update(service_to_deployment(service, self.settings))
        if not needs_storage_secret(service) and needs_storage_secret(current):
            self._forget_secret(storage_secret_name(name))
        self.cache.put(service)
        return service

    def delete(self, name: str, *, purge: bool = False) -> list[str]:
        """Remove the function and its secret. Buckets stay unless ``purge``; returns the
        buckets purged."""
        service = self.get(name)
        self.cache.drop(name)
        self.client.delete(name)
        if needs_storage_secret(service):
            self._forget_secret(storage_secret_name(name))
        if purge and self.settings.minio_configured:
            return storage.purge_paths(storage.minio_client(self.settings),
                                       storage.default_paths(service))
        return []

    # ------------------------------------------------------------------ helpers

    def _minio(self) -> dict[str, Any]:
        s = self.settings
        return {"endpoint": s.minio_endpoint, "verify": s.minio_tls_verify,
                "region": s.minio_region}

    def _write_secret(self, service: Service) -> str | None:
        if not needs_storage_secret(service):
            return None
        name = storage_secret_name(service.name)
        self.client.put_secret(name, storage_secret_value(service, self.settings))
        return name

    def _forget_secret(self, name: str) -> None:
        try:
            self.client.delete_secret(name)
        except Exception:  # best effort while undoing: the original error matters more
            pass

    def _ensure_storage(self, service: Service) -> None:
        paths = storage.default_paths(service)
        if paths and self.settings.minio_configured:
            storage.ensure_paths(storage.minio_client(self.settings), paths)


def _valid_name(name: str) -> bool:
    """Names OpenFaaS could route; anything else cannot exist, so skip the round trip."""
    return bool(name) and len(name) <= 63 and all(c.isalnum() or c in "-_." for c in name)
