"""The OSCAR Service and its parts: defaults, validation, Go-compatible JSON (readers in
``gojson.py``).

Pure data, no I/O (like faas-provider's ``types`` package). Two client dialects come in:
oscar-python's minimal dict and oscar-cli's full v3.3.0 Go struct (every field present, nulls
and zero values, ``environment.Variables`` with a capital V). Go's ``encoding/json`` matches
keys case-insensitively and turns ``null`` into the zero value, so :meth:`Service.from_dict`
does the same. Going out, every field is present with its Go type (ints stay ints, lists and
objects are never ``null``), because oscar-cli decodes into typed structs and fails otherwise.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from .contract import is_dns1123_label
from .errors import InvalidService
from .gojson import (as_bool, as_int, as_list, as_map, as_quantity, as_str, as_str_list,
                     as_str_map, check_json, ci_get, copy_json)
from .service_parts import (STORAGE_TYPES, StorageIOConfig, first_port, parse_environment,
                            parse_expose, parse_replicas, parse_storage_providers,
                            parse_synchronous)

DEFAULT_MEMORY = "256Mi"
DEFAULT_CPU = "0.2"
DEFAULT_LOG_LEVEL = "INFO"
DEFAULT_VISIBILITY = "private"
ADMIN_OWNER = "cluster_admin"
HIDDEN = "hidden"
LOG_LEVELS = ("NOTSET", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MAX_NAME_LENGTH = 39
#: Providers whose paths start with an S3 bucket name.
BUCKET_STORAGE_TYPES = ("minio", "s3")
#: S3 bucket naming rules (AWS "general purpose bucket naming rules", which MinIO applies).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4 = re.compile(r"\d+\.\d+\.\d+\.\d+")
#: Inputs OSCAR accepts (anything else: "unrecognized input").
INPUT_STORAGE_TYPES = ("minio", "webdav", "rucio")
#: Provider fields that are credentials: masked in every stored or returned copy.
CREDENTIAL_KEYS = frozenset({"access_key", "secret_key", "token", "password", "refresh_token"})


def valid_bucket(name: str) -> bool:
    """An S3 bucket name MinIO and AWS accept."""
    return (bool(_BUCKET.fullmatch(name)) and ".." not in name and ".-" not in name
            and "-." not in name and not _IPV4.fullmatch(name))


def new_token() -> str:
    """A service token as OSCAR makes it: 32 random bytes, 64 lowercase hex characters."""
    return secrets.token_hex(32)


def dumps(data: Any) -> str:
    """Compact JSON as gin emits it; oscar-tests does substring checks like ``"name":"x"``."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------- service

@dataclass
class Service:
    """An OSCAR service (``pkg/types/service.go`` of OSCAR v3.6.4), field for field.

    Field order is the Go struct's, so ``to_dict`` emits keys in the order OSCAR does.
    """

    name: str = ""
    cluster_id: str = ""
    memory: str = DEFAULT_MEMORY
    cpu: str = DEFAULT_CPU
    total_memory: str = ""
    total_cpu: str = ""
    enable_gpu: bool = False
    enable_sgx: bool = False
    image_prefetch: bool = False
    synchronous: dict[str, int] = field(default_factory=lambda: parse_synchronous(None, ""))
    replicas: list[dict[str, Any]] = field(default_factory=list)
    rescheduler_threshold: int = 0
    delegation: str = ""
    log_level: str = DEFAULT_LOG_LEVEL
    image: str = ""
    alpine: bool = False
    token: str = ""
    file_stage_in: bool = False
    input: list[StorageIOConfig] = field(default_factory=list)
    output: list[StorageIOConfig] = field(default_factory=list)
    script: str = ""
    image_pull_secrets: list[str] = field(default_factory=list)
    expose: dict[str, Any] = field(default_factory=lambda: parse_expose(None, ""))
    environment: dict[str, dict[str, str]] = field(
        default_factory=lambda: {"variables": {}, "secrets": {}})
    annotations: dict[str, str] = field(default_factory=dict)
    vo: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    storage_providers: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    clusters: dict[str, dict[str, Any]] = field(default_factory=dict)
    owner: str = ADMIN_OWNER
    interlink_node_name: str = ""
    visibility: str = DEFAULT_VISIBILITY
    allowed_users: list[str] = field(default_factory=list)
    isolation_level: str = ""
    bucket_list: list[str] = field(default_factory=list)
    mount: StorageIOConfig = field(default_factory=StorageIOConfig)

    # ------------------------------------------------------------------ parsing

    @classmethod
    def from_dict(cls, data: Any) -> "Service":
        """Parse a client body (either dialect). Applies no defaults and validates nothing:
        see :meth:`normalized` and :meth:`validate`.

        :raises InvalidService: a field has a type Go would refuse; the message names it.
        """
        if not isinstance(data, Mapping):
            raise InvalidService(
                "The service specification is not valid: the body must be a JSON object")
        check_json(data)
        g = lambda key: ci_get(data, key)  # noqa: E731 - tiny local alias
        return cls(
            name=as_str(g("name"), "name").strip(),
            cluster_id=as_str(g("cluster_id"), "cluster_id"),
            memory=as_quantity(g("memory"), "memory", ""),
            cpu=as_quantity(g("cpu"), "cpu", ""),
            total_memory=as_str(g("total_memory"), "total_memory"),
            total_cpu=as_str(g("total_cpu"), "total_cpu"),
            enable_gpu=as_bool(g("enable_gpu"), "enable_gpu"),
            enable_sgx=as_bool(g("enable_sgx"), "enable_sgx"),
            image_prefetch=as_bool(g("image_prefetch"), "image_prefetch"),
            synchronous=parse_synchronous(g("synchronous"), "synchronous"),
            replicas=parse_replicas(g("replicas"), "replicas"),
            rescheduler_threshold=as_int(g("rescheduler_threshold"), "rescheduler_threshold"),
            delegation=as_str(g("delegation"), "delegation"),
            log_level=as_str(g("log_level"), "log_level"),
            image=as_str(g("image"), "image").strip(),
            alpine=as_bool(g("alpine"), "alpine"),
            token=as_str(g("token"), "token"),
            file_stage_in=as_bool(g("file_stage_in"), "file_stage_in"),
            input=[StorageIOConfig.from_dict(x, f"input[{i}]")
                   for i, x in enumerate(as_list(g("input"), "input"))],
            output=[StorageIOConfig.from_dict(x, f"output[{i}]")
                    for i, x in enumerate(as_list(g("output"), "output"))],
            script=as_str(g("script"), "script").replace("\r\n", "\n"),
            image_pull_secrets=as_str_list(g("image_pull_secrets"), "image_pull_secrets"),
            expose=parse_expose(g("expose"), "expose"),
            environment=parse_environment(g("environment"), "environment"),
            annotations=as_str_map(g("annotations"), "annotations"),
            vo=as_str(g("vo"), "vo"),
            labels=as_str_map(g("labels"), "labels"),
            storage_providers=parse_storage_providers(g("storage_providers"), "storage_providers"),
            clusters={str(k): as_map(v, f"clusters.{k}")
                      for k, v in as_map(g("clusters"), "clusters").items()},
            owner=as_str(g("owner"), "owner"),
            interlink_node_name=as_str(g("interlink_node_name"), "interlink_node_name"),
            visibility=as_str(g("visibility"), "visibility"),
            allowed_users=as_str_list(g("allowed_users"), "allowed_users"),
            isolation_level=as_str(g("isolation_level"), "isolation_level"),
            bucket_list=as_str_list(g("bucket_list"), "bucket_list"),
            mount=StorageIOConfig.from_dict(g("mount"), "mount"),
        )

    # ------------------------------------------------------------------ defaults

    def normalized(self, *, token: str | None = None, minio: Mapping[str, Any] | None = None,
                   ) -> "Service":
        """Apply OSCAR's server-side defaults (``checkValues`` in OSCAR's create handler).

        Client-sent ``token`` and ``owner`` are ignored: the token is ``token`` (a new one
        when ``None``) and the owner is the admin, since basic auth is the only auth here.
        ``minio`` is the cluster's MinIO ``{endpoint, verify, region}``; ``minio.default`` is
        always overwritten with it and with masked keys, as OSCAR does.
        """
        svc = Service(**{f.name: getattr(self, f.name) for f in fields(self)})
        svc.memory = svc.memory or DEFAULT_MEMORY
        svc.cpu = svc.cpu or DEFAULT_CPU
        level = svc.log_level.strip().upper()
        svc.log_level = level if level in LOG_LEVELS else DEFAULT_LOG_LEVEL
        svc.visibility = svc.visibility or DEFAULT_VISIBILITY
        svc.owner = ADMIN_OWNER
        svc.token = token or new_token()
        svc.labels = {**svc.labels, "oscar_service": svc.name, "applicationId": svc.name,
                      "queue": f"root.oscar-queue.{svc.name}"}
        minio = minio or {}
        providers = {kind: {ident: dict(conf) for ident, conf in entries.items()}
                     for kind, entries in svc.storage_providers.items()}
        providers.setdefault("minio", {})["default"] = {
            "endpoint": minio.get("endpoint", ""),
            "verify": bool(minio.get("verify", True)),
            "access_key": HIDDEN,
            "secret_key": HIDDEN,
            "region": minio.get("region", "us-east-1"),
        }
        svc.storage_providers = providers
        return svc

    @property
    def exposed(self) -> bool:
        """An exposed service (``expose.api_port`` set): its function runs a server."""
        return first_port(self.expose["api_port"]) != 0

    @property
    def expose_port(self) -> int:
        """The port of the exposed server (the first of ``api_port``), 0 when not exposed."""
        return first_port(self.expose["api_port"])

    # ------------------------------------------------------------------ validation

    def validate(self) -> None:
        """Check the rules OSCAR, OpenFaaS and Kubernetes would enforce, before anything is
        created, so a bad service never gets half-way.

        :raises InvalidService: the first broken rule, named with its field.
        """
        for key in ("name", "image", "script"):
            if not getattr(self, key).strip():
                raise InvalidService(
                    f"The service specification is not valid: field '{key}' is required")
        if len(self.name) > MAX_NAME_LENGTH:
            raise InvalidService(
                f"The service specification is not valid: field 'name' must be at most "
                f"{MAX_NAME_LENGTH} characters, got {len(self.name)}")
        if not is_dns1123_label(self.name):
            raise InvalidService(
                f"The service specification is not valid: field 'name' must be a DNS-1123 "
                f"label (lower-case letters, digits and '-', starting and ending with a letter "
                f"or digit), got {self.name!r}")
        for key in ("memory", "cpu"):
            as_quantity(getattr(self, key), key, "")
        for label, ios in (("input", self.input), ("output", self.output)):
            for i, io in enumerate(ios):
                self._validate_io(io, f"{label}[{i}]", is_input=label == "input")
        if self.mount.storage_provider or self.mount.path:
            self._validate_io(self.mount, "mount", is_input=False)
        for kind in ("variables", "secrets"):
            for key, value in self.environment[kind].items():
                where = f"environment.{kind}.{key}"
                if not key or "=" in key or "\0" in key:
                    raise InvalidService(
                        f"The service specification is not valid: '{where}': a variable name "
                        f"must not be empty or hold '=' or a NUL byte")
                if "\0" in value:
                    raise InvalidService(
                        f"The service specification is not valid: '{where}' must not hold a "
                        f"NUL byte")
        self._validate_expose()

    def _validate_expose(self) -> None:
        exp = self.expose
        bad = "The service specification is not valid: "
        ports = exp["api_port"] if isinstance(exp["api_port"], list) else [exp["api_port"]]
        if isinstance(exp["api_port"], list) and exp["api_port"] and 0 in ports:
            raise InvalidService(f"{bad}'expose.api_port' must list ports from 1 to 65535, "
                                 f"got {exp['api_port']}")
        for port in ports:
            if not 0 <= port <= 65535:
                raise InvalidService(f"{bad}'expose.api_port' must be a port from 1 to 65535, "
                                     f"got {port}")
        if not self.exposed:
            return
        for key in ("min_scale", "max_scale", "cpu_threshold"):
            if exp[key] < 0:
                raise InvalidService(f"{bad}'expose.{key}' must not be negative, got {exp[key]}")
        if exp["max_scale"] and exp["max_scale"] < exp["min_scale"]:
            raise InvalidService(f"{bad}'expose.max_scale' ({exp['max_scale']}) must not be "
                                 f"below 'expose.min_scale' ({exp['min_scale']})")
        health = exp["health_path"]
        if health and (not health.startswith("/") or any(c in health for c in " \t\r\n#")):
            raise InvalidService(f"{bad}'expose.health_path' must be a path starting with '/' "
                                 f"(a query is allowed, no spaces), got {health!r}")

    def _validate_io(self, io: StorageIOConfig, where: str, *, is_input: bool) -> None:
        spec = io.storage_provider.strip()
        kind, _, ident = spec.partition(".")
        if not spec or kind.lower() not in STORAGE_TYPES or (_ and not ident):
            raise InvalidService(
                f"The service specification is not valid: '{where}.storage_provider' must be "
                f"'<type>' or '<type>.<id>' with type one of {', '.join(STORAGE_TYPES)}, "
                f"got {spec!r}")
        if is_input and kind.lower() not in INPUT_STORAGE_TYPES:
            raise InvalidService(
                f"unrecognized input (valid inputs are MinIO and dCache): '{where}' uses {spec!r}")
        if not io.bucket:
            raise InvalidService(
                f"The service specification is not valid: '{where}.path' must be "
                f"'<bucket>[/<folder>]', got {io.path!r}")
        kind_l, ident = io.provider
        if kind_l in BUCKET_STORAGE_TYPES and not valid_bucket(io.bucket):
            raise InvalidService(
                f"The service specification is not valid: '{where}.path' must start with a "
                f"valid bucket name (3-63 lower-case letters, digits, '.' and '-', starting "
                f"and ending with a letter or digit), got {io.bucket!r}")
        if (kind_l, ident) != ("minio", "default") and ident not in self.storage_providers.get(
                kind_l, {}):
            raise InvalidService(
                f"The service specification is not valid: '{where}' uses storage provider "
                f"'{kind_l}.{ident}', which is not defined in storage_providers")

    # ------------------------------------------------------------------ output

    def to_dict(self) -> dict[str, Any]:
        """The service as OSCAR's GET returns it: every field, Go types, no nulls."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("replicas", "image_pull_secrets") and not value:
                continue  # omitempty in Go
            if f.name in ("input", "output"):
                value = [io.to_dict() for io in value]
            elif f.name == "mount":
                value = {"storage_provider": value.storage_provider, "path": value.path}
            elif f.name == "expose":  # api_port is omitempty in Go
                value = {k: v for k, v in value.items() if k != "api_port" or v}
            out[f.name] = copy_json(value)
        return out

    def masked(self) -> "Service":
        """A copy safe to show or store where others can read it: credentials read ``hidden``,
        environment secrets are blanked (OSCAR stores them blank too)."""
        svc = Service(**{f.name: getattr(self, f.name) for f in fields(self)})
        svc.storage_providers = {
            kind: {ident: {k: (HIDDEN if k in CREDENTIAL_KEYS and v not in ("", None) else v)
                           for k, v in conf.items()}
                   for ident, conf in entries.items()}
            for kind, entries in self.storage_providers.items()}
        svc.environment = {"variables": dict(self.environment["variables"]),
                           "secrets": {k: "" for k in self.environment["secrets"]}}
        svc.clusters = {cid: {k: (HIDDEN if k in ("auth_password", "oidc_refresh_token") and v
                                  else v) for k, v in conf.items()}
                        for cid, conf in self.clusters.items()}
        return svc

    def storage_credentials(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The user-defined providers whose credentials the function needs (not
        ``minio.default``, which comes from the gateway's own settings)."""
        return {kind: {ident: dict(conf) for ident, conf in entries.items()
                       if (kind, ident) != ("minio", "default")}
                for kind, entries in self.storage_providers.items()
                if any((kind, ident) != ("minio", "default") for ident in entries)}
