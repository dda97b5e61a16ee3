"""Payload shapes of the faas-provider REST contract, with Go's JSON rules.

One dataclass per payload (as faas-provider's ``types/`` package has one struct per payload),
explicit camelCase ``to_dict``/``from_dict``, validation and no I/O. Byte-level compatibility
matters to clients written against real providers, so the ``omitempty`` rules of the Go structs
are reproduced exactly:

* strings, slices, plain maps, numbers and bools are dropped when empty/zero;
* ``labels``, ``annotations``, ``limits`` and ``requests`` are *pointers* in Go, so they are
  dropped only when absent (``None``); an empty ``{}`` is sent back as ``{}``;
* ``createdAt`` is a struct, so it is always present.

Unknown incoming keys are ignored, as Go's decoder ignores them.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from ...contract import DNS1123_LABEL, is_dns1123_label
from ...errors import InvalidService

#: The only namespace this provider has (the default of faas-netes and faasd).
DEFAULT_NAMESPACE = "openfaas-fn"

#: Keys of FunctionResources (``limits``/``requests``); all string-valued, all omitempty.
RESOURCE_KEYS = ("memory", "cpu", "nvidia.com/gpu", "amd.com/gpu", "intel.com/gpu")

_DNS_SUBDOMAIN = re.compile(rf"{DNS1123_LABEL}(\.{DNS1123_LABEL})*")
_ZERO_TIME = datetime(1, 1, 1, tzinfo=timezone.utc)


def validate_function_name(name: str) -> None:
    """A DNS-1123 label: what faas-netes and ``faas-cli new`` accept as a function name.

    :raises InvalidService: with faas-netes' wording, so clients see a familiar message.
    """
    if not is_dns1123_label(name):
        raise InvalidService(
            f"validation failed: ({name}) must be a valid DNS entry for service name")


def validate_secret_name(name: str) -> None:
    """Secrets are Kubernetes objects upstream: DNS-1123 subdomains. The rule also keeps the
    name safe as a file name (no ``/``, no ``..``).

    :raises InvalidService: the name breaks the rule.
    """
    if not name:
        raise InvalidService("validation failed: secret name is required")
    if len(name) > 253 or _DNS_SUBDOMAIN.fullmatch(name) is None:
        raise InvalidService(
            f"validation failed: ({name}) must be a valid DNS-1123 subdomain for secret name")


def check_namespace(namespace: str | None) -> None:
    """Accept the empty (default) namespace and ``openfaas-fn``; there is no other one here.

    :raises InvalidService: any other namespace (faas-netes also answers 400).
    """
    if namespace and namespace != DEFAULT_NAMESPACE:
        raise InvalidService(
            f"namespace {namespace} is not allowed; this provider only has {DEFAULT_NAMESPACE}")


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with Go's trailing-zero trimming (``2024-05-01T10:00:00Z``)."""
    m = moment.astimezone(timezone.utc)
    # not strftime: glibc prints year 1 (Go's zero time) as "1", not "0001"
    text = f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}"
    if m.microsecond:
        text += f".{m.microsecond:06d}".rstrip("0")
    return text + "Z"


def parse_time(text: str) -> datetime:
    """Inverse of :func:`format_time`; also accepts offsets other than ``Z``."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


# --- small strict readers: a wrong JSON type is a 400, as Go's decoder makes it -------------

def _get_str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidService(f"validation failed: {key} must be a string")
    return value


def _get_str_map(data: Mapping[str, Any], key: str) -> dict[str, str] | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidService(f"validation failed: {key} must be an object of strings")
    return dict(value)


def _get_str_list(data: Mapping[str, Any], key: str) -> list[str]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidService(f"validation failed: {key} must be an array of strings")
    return list(value)


def _get_resources(data: Mapping[str, Any], key: str) -> dict[str, str] | None:
    value = _get_str_map(data, key)
    if value is None:
        return None
    return {k: value[k] for k in RESOURCE_KEYS if value.get(k)}


def _get_bool(data: Mapping[str, Any], key: str) -> bool:
    value = data.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidService(f"validation failed: {key} must be a boolean")
    return value


def _require_object(data: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(data, dict):
        raise InvalidService(f"validation failed: the {what} must be a JSON object")
    return data


def _put_optional(out: dict[str, Any], key: str, value: Any) -> None:
    """omitempty for Go pointers: only ``None`` is dropped."""
    if value is not None:
        out[key] = dict(value)


@dataclass(frozen=True)
class FunctionDeployment:
    """Body of ``POST``/``PUT /system/functions`` (faas-provider ``FunctionDeployment``)."""

    service: str
    image: str
    namespace: str = ""
    env_process: str = ""
    env_vars: dict[str, str] = field(default_factory=dict)
    constraints: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    limits: dict[str, str] | None = None
    requests: dict[str, str] | None = None
    read_only_root_filesystem: bool = False

    @classmethod
    def from_dict(cls, data: Any) -> FunctionDeployment:
        """Parse and validate; nothing is created before this has succeeded.

        :raises InvalidService: missing ``service``/``image``, bad name, wrong JSON types,
            a namespace other than ``openfaas-fn`` or an invalid secret name.
        """
        data = _require_object(data, "function deployment")
        service = _get_str(data, "service")
        if not service:
            raise InvalidService("validation failed: service is required")
        validate_function_name(service)
        image = _get_str(data, "image")
        if not image:
            raise InvalidService("validation failed: image is required")
        namespace = _get_str(data, "namespace")
        check_namespace(namespace)
        secrets = _get_str_list(data, "secrets")
        for secret in secrets:
            validate_secret_name(secret)
        return cls(
            service=service,
            image=image,
            namespace=namespace,
            env_process=_get_str(data, "envProcess"),
            env_vars=_get_str_map(data, "envVars") or {},
            constraints=_get_str_list(data, "constraints"),
            secrets=list(dict.fromkeys(secrets)),
            labels=_get_str_map(data, "labels"),
            annotations=_get_str_map(data, "annotations"),
            limits=_get_resources(data, "limits"),
            requests=_get_resources(data, "requests"),
            read_only_root_filesystem=_get_bool(data, "readOnlyRootFilesystem"),
        )

    def to_dict(self) -> dict[str, Any]:
        """Go-compatible JSON object (``omitempty`` applied)."""
        out: dict[str, Any] = {"service": self.service, "image": self.image}
        out.update(_common_fields(self))
        return out


def _common_fields(fd: FunctionDeployment) -> dict[str, Any]:
    """The fields FunctionDeployment and FunctionStatus share, after ``service``/``name``."""
    out: dict[str, Any] = {}
    if fd.namespace:
        out["namespace"] = fd.namespace
    if fd.env_process:
        out["envProcess"] = fd.env_process
    if fd.env_vars:
        out["envVars"] = dict(fd.env_vars)
    if fd.constraints:
        out["constraints"] = list(fd.constraints)
    if fd.secrets:
        out["secrets"] = list(fd.secrets)
    _put_optional(out, "labels", fd.labels)
    _put_optional(out, "annotations", fd.annotations)
    _put_optional(out, "limits", fd.limits)
    _put_optional(out, "requests", fd.requests)
    if fd.read_only_root_filesystem:
        out["readOnlyRootFilesystem"] = True
    return out


def _go_number(value: float) -> int | float:
    """Go prints a whole float64 without ``.0``; keep the same bytes."""
    return int(value) if float(value).is_integer() else value


@dataclass(frozen=True)
class FunctionStatus:
    """Answer of ``GET /system/function/<name>`` and items of ``GET /system/functions``."""

    deployment: FunctionDeployment
    invocation_count: float = 0
    replicas: int = 0
    available_replicas: int = 0
    created_at: datetime = _ZERO_TIME
    #: the embedded provider's runtime state (``state``, ``reason``, ``since``, ``restarts``,
    #: ``retryIn``, ``running``): an addition to OpenFaaS' shape, which Go clients ignore
    runtime: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.deployment.service

    def to_dict(self) -> dict[str, Any]:
        """Go-compatible JSON object: zero counters and replicas are omitted."""
        out: dict[str, Any] = {"name": self.deployment.service, "image": self.deployment.image}
        out.update(_common_fields(self.deployment))
        if self.invocation_count:
            out["invocationCount"] = _go_number(self.invocation_count)
        if self.replicas:
            out["replicas"] = self.replicas
        if self.available_replicas:
            out["availableReplicas"] = self.available_replicas
        out["createdAt"] = format_time(self.created_at)
        if self.runtime is not None:
            out["runtime"] = self.runtime
        return out


@dataclass(frozen=True)
class Secret:
    """Body of ``/system/secrets`` calls: ``value`` (text) or ``rawValue`` (base64 bytes)."""

    name: str
    namespace: str = ""
    value: str = ""
    raw_value: bytes = b""

    @property
    def payload(self) -> bytes:
        """The bytes written to the secret file: ``rawValue`` wins, as in faas-netes."""
        return self.raw_value if self.raw_value else self.value.encode()

    @classmethod
    def from_dict(cls, data: Any) -> Secret:
        """:raises InvalidService: bad name, namespace, types or base64 in ``rawValue``."""
        data = _require_object(data, "secret")
        name = _get_str(data, "name")
        validate_secret_name(name)
        namespace = _get_str(data, "namespace")
        check_namespace(namespace)
        raw_text = _get_str(data, "rawValue")
        try:
            raw = base64.b64decode(raw_text, validate=True) if raw_text else b""
        except (binascii.Error, ValueError):
            raise InvalidService("validation failed: rawValue must be base64") from None
        return cls(name=name, namespace=namespace, value=_get_str(data, "value"), raw_value=raw)

    def to_dict(self) -> dict[str, Any]:
        """What ``GET /system/secrets`` lists: the name and namespace, never the value."""
        return {"name": self.name, "namespace": self.namespace or DEFAULT_NAMESPACE}


@dataclass(frozen=True)
class DeleteFunctionRequest:
    """Body of ``DELETE /system/functions``."""

    function_name: str
    namespace: str = ""

    @classmethod
    def from_dict(cls, data: Any) -> DeleteFunctionRequest:
        """:raises InvalidService: ``functionName`` missing or a foreign namespace."""
        data = _require_object(data, "delete request")
        name = _get_str(data, "functionName")
        if not name:
            raise InvalidService("validation failed: functionName is required")
        namespace = _get_str(data, "namespace")
        check_namespace(namespace)
        return cls(function_name=name, namespace=namespace)


@dataclass(frozen=True)
class ScaleServiceRequest:
    """Body of ``POST /system/scale-function/<name>``."""

    service_name: str
    replicas: int
    namespace: str = ""

    @classmethod
    def from_dict(cls, data: Any) -> ScaleServiceRequest:
        """:raises InvalidService: wrong types, or a negative replica count."""
        data = _require_object(data, "scale request")
        replicas = data.get("replicas", 0)
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise InvalidService("validation failed: replicas must be a whole number >= 0")
        namespace = _get_str(data, "namespace")
        check_namespace(namespace)
        return cls(service_name=_get_str(data, "serviceName"), replicas=replicas,
                   namespace=namespace)
