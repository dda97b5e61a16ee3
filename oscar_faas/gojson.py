"""Go ``encoding/json`` semantics for the service model: typed field readers.

Go matches keys case-insensitively and turns ``null`` into the zero value; these readers do
the same, and raise :class:`InvalidService` naming the field when Go would refuse a type.
Pure functions, no I/O.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from .errors import InvalidService

#: A Kubernetes resource quantity: a non-negative decimal with an optional binary or
#: decimal SI suffix, or a decimal exponent (``128974848``, ``129e6``, ``123Mi``, ``500m``).
_QUANTITY = re.compile(r"^\+?(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?$")


#: Deepest nesting a service body may have (the deepest real field,
#: ``storage_providers.<type>.<id>.<key>``, is 4 levels down).
MAX_DEPTH = 16


def _shown(key: str) -> str:
    return key.encode("utf-8", "backslashreplace").decode("utf-8")


def check_json(value: Any, path: str = "", depth: int = 0) -> None:
    """Refuse what could be stored but not served back: strings (keys too) that are not valid
    Unicode (a lone surrogate from a ``\\ud800`` escape cannot be encoded as UTF-8) and
    nesting deeper than :data:`MAX_DEPTH`.

    :raises InvalidService: naming the field.
    """
    where = path or "the body"
    if depth > MAX_DEPTH:
        raise InvalidService(
            f"The service specification is not valid: field '{where}' is nested deeper than "
            f"{MAX_DEPTH} levels")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidService(
                f"The service specification is not valid: field '{where}' is not valid "
                f"Unicode text (a lone surrogate such as \\ud800)") from None
    elif isinstance(value, Mapping):
        for key, item in value.items():
            name = f"{path}.{_shown(str(key))}" if path else _shown(str(key))
            if isinstance(key, str):
                check_json(key, name, depth + 1)
            check_json(item, name, depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_json(item, f"{where}[{i}]", depth + 1)


def ci_get(data: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """Look ``key`` up as Go's encoding/json does: exact match first, then case-insensitive."""
    if key in data:
        return data[key]
    lowered = key.lower()
    for k, v in data.items():
        if isinstance(k, str) and k.lower() == lowered:
            return v
    return default


def type_error(path: str, expected: str, value: Any) -> InvalidService:
    got = "null" if value is None else type(value).__name__
    return InvalidService(
        f"The service specification is not valid: field '{path}' must be {expected}, got {got}")


def as_str(value: Any, path: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    raise type_error(path, "a string", value)


def as_bool(value: Any, path: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    raise type_error(path, "true or false", value)


def as_int(value: Any, path: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise type_error(path, "a whole number", value)
    if isinstance(value, float) and not value.is_integer():
        raise type_error(path, "a whole number", value)
    return int(value)


def as_str_list(value: Any, path: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise type_error(path, "a list of strings", value)
    return [as_str(item, f"{path}[{i}]") for i, item in enumerate(value)]


def as_str_map(value: Any, path: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise type_error(path, "an object of strings", value)
    out: dict[str, str] = {}
    for k, v in value.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = str(v)  # YAML turns `PORT: 8080` into an int; Go would reject, we forgive.
        out[str(k)] = as_str(v, f"{path}.{k}")
    return out


def as_map(value: Any, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise type_error(path, "an object", value)
    return dict(value)


def as_quantity(value: Any, path: str, default: str) -> str:
    """cpu and memory: strings in Go; numbers are accepted (``cpu: 1.0`` in a YAML file)."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise type_error(path, "a Kubernetes quantity", value)
    if isinstance(value, (int, float)):
        value = str(value)
    if not isinstance(value, str):
        raise type_error(path, "a Kubernetes quantity", value)
    value = value.strip()
    if not _QUANTITY.match(value):
        raise InvalidService(
            f"The service specification is not valid: field '{path}' must be a Kubernetes "
            f"quantity such as '256Mi', '1Gi', '0.5' or '500m', got {value!r}")
    return value


def as_list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise type_error(path, "a list", value)
    return value


def copy_json(value: Any) -> Any:
    """A deep copy of plain JSON data, so callers never share mutable state with a Service."""
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) for v in value]
    return value
