"""The parts of an OSCAR Service: storage paths (``StorageIOConfig``) and the small Go structs
(``synchronous``, ``expose``, ``environment``, ``storage_providers``, ``replicas``), each read
as Go's ``encoding/json`` would and kept in the form OSCAR answers with.

Exists so :mod:`.model` holds the ``Service`` itself (fields, normalisation, validation,
masking) and reads each part through one parser from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidService
from .gojson import as_bool, as_int, as_map, as_str, as_str_list, as_str_map, ci_get, type_error

STORAGE_TYPES = ("minio", "s3", "onedata", "webdav", "rucio")


@dataclass
class StorageIOConfig:
    """One input or output path: ``{storage_provider, path, suffix?, prefix?}``."""

    storage_provider: str = ""
    path: str = ""
    suffix: list[str] = field(default_factory=list)
    prefix: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Any, path: str) -> "StorageIOConfig":
        data = as_map(data, path)
        return cls(
            storage_provider=as_str(ci_get(data, "storage_provider"), f"{path}.storage_provider"),
            path=as_str(ci_get(data, "path"), f"{path}.path"),
            suffix=as_str_list(ci_get(data, "suffix"), f"{path}.suffix"),
            prefix=as_str_list(ci_get(data, "prefix"), f"{path}.prefix"),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"storage_provider": self.storage_provider, "path": self.path}
        if self.suffix:
            out["suffix"] = list(self.suffix)
        if self.prefix:
            out["prefix"] = list(self.prefix)
        return out

    @property
    def provider(self) -> tuple[str, str]:
        """``(type, id)``: split on the first dot; a bare type means id ``default``."""
        kind, _, ident = self.storage_provider.partition(".")
        return kind.lower(), ident or "default"

    @property
    def bucket(self) -> str:
        return self.path.strip("/").split("/", 1)[0]

    @property
    def folder(self) -> str:
        parts = self.path.strip("/").split("/", 1)
        return parts[1].strip("/") if len(parts) > 1 else ""


def _int_struct(keys: tuple[str, ...], bools: tuple[str, ...] = ()):
    """Parse/emit small Go structs made of ints and bools (synchronous, expose)."""

    def parse(value: Any, path: str) -> dict[str, Any]:
        data = as_map(value, path)
        out: dict[str, Any] = {}
        for key in keys:
            out[key] = as_int(ci_get(data, key), f"{path}.{key}")
        for key in bools:
            out[key] = as_bool(ci_get(data, key), f"{path}.{key}")
        return out

    return parse


parse_synchronous = _int_struct(("min_scale", "max_scale"))
_parse_expose_numbers = _int_struct(
    ("min_scale", "max_scale", "cpu_threshold"), ("rewrite_target", "default_command", "set_auth"))


def _as_port(value: Any, path: str) -> int | list[int]:
    """A port as OSCAR 3.x sends it (a number) or as OSCAR 4.1 does (a list of numbers);
    kept in the form sent, so GET answers what the client's struct expects."""
    if isinstance(value, list):
        return [as_int(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise type_error(path, "a whole number or a list of whole numbers", value)
    return as_int(value, path)


def parse_expose(value: Any, path: str) -> dict[str, Any]:
    """OSCAR's ``ExposeSettings``, in the Go struct's key order (``health_path`` from 3.6.5)."""
    data = as_map(value, path)
    numbers = _parse_expose_numbers(value, path)
    return {
        "min_scale": numbers["min_scale"],
        "max_scale": numbers["max_scale"],
        "api_port": _as_port(ci_get(data, "api_port"), f"{path}.api_port"),
        "cpu_threshold": numbers["cpu_threshold"],
        "rewrite_target": numbers["rewrite_target"],
        "nodePort": _as_port(ci_get(data, "nodePort"), f"{path}.nodePort"),
        "default_command": numbers["default_command"],
        "set_auth": numbers["set_auth"],
        "health_path": as_str(ci_get(data, "health_path"), f"{path}.health_path").strip(),
    }


def first_port(value: int | list[int]) -> int:
    """The port that is served: the number, or the first of a list (0: none)."""
    if isinstance(value, list):
        return value[0] if value else 0
    return value


def parse_environment(value: Any, path: str) -> dict[str, dict[str, str]]:
    data = as_map(value, path)
    return {
        "variables": as_str_map(ci_get(data, "variables"), f"{path}.variables"),
        "secrets": as_str_map(ci_get(data, "secrets"), f"{path}.secrets"),
    }


def parse_storage_providers(value: Any, path: str) -> dict[str, dict[str, dict[str, Any]]]:
    """``{type: {id: {key: value}}}``; type names are lower-cased, ids kept."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for kind, entries in as_map(value, path).items():
        if entries is None:
            continue
        kind_l = str(kind).lower()
        if kind_l not in STORAGE_TYPES:
            raise InvalidService(
                f"The service specification is not valid: '{path}.{kind}' is not a storage "
                f"provider type (valid: {', '.join(STORAGE_TYPES)})")
        for ident, conf in as_map(entries, f"{path}.{kind}").items():
            conf = as_map(conf, f"{path}.{kind}.{ident}")
            out.setdefault(kind_l, {})[str(ident)] = {str(k).lower(): v for k, v in conf.items()}
    return out


def parse_replicas(value: Any, path: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise type_error(path, "a list", value)
    return [as_map(item, f"{path}[{i}]") for i, item in enumerate(value)]
