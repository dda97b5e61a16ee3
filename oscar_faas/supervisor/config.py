"""The function's configuration, read from the env contract OSCAR's faas-supervisor reads.

``SCRIPT`` is the base64 of the user script, ``FUNCTION_CONFIG`` the base64 of the service as
YAML (script left out, credentials masked), ``LOG_LEVEL`` overrides the service's ``log_level``.
Everything is parsed from the mapping the caller passes, never from ``os.environ``, because the
embedded provider runs many functions with different envs in one process.
"""

from __future__ import annotations

import binascii
import functools
import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

from ..contract import ENV_FUNCTION_CONFIG, ENV_LOG_LEVEL, ENV_SCRIPT
from .errors import FunctionConfigError

#: libyaml's parser when PyYAML was built with it (several times faster), else pure Python.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: Level names OSCAR accepts for ``log_level``; anything else means INFO, as in OSCAR.
LOG_LEVELS = {
    "NOTSET": logging.NOTSET,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}

#: Whitespace base64 producers insert (``base64`` wraps at 76 columns, some add CRLF).
WHITESPACE = b" \t\r\n\v\f"


@dataclass(frozen=True)
class OutputSpec:
    """One ``output`` entry: where (and which) files of ``TMP_OUTPUT_DIR`` are uploaded.

    :param provider: the provider string as written, e.g. ``minio.default``.
    :param kind: the provider type (``minio``, ``s3``, ...), the part before the first dot.
    :param ident: the provider id, the part after it (``default`` for a bare ``minio``).
    :param bucket: first segment of ``path``.
    :param folder: the rest of ``path`` without surrounding slashes ("" for a bare bucket).
    """

    provider: str
    kind: str
    ident: str
    bucket: str
    folder: str = ""
    prefixes: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()

    def matches(self, name: str) -> bool:
        """True when ``name`` starts with any prefix and ends with any suffix (empty = any)."""
        if self.prefixes and not any(name.startswith(p) for p in self.prefixes):
            return False
        if self.suffixes and not any(name.endswith(s) for s in self.suffixes):
            return False
        return True

    def key_for(self, name: str) -> str:
        """Object key of the output file ``name`` (relative to ``TMP_OUTPUT_DIR``)."""
        return f"{self.folder}/{name}" if self.folder else name


@dataclass(frozen=True)
class FunctionConfig:
    """What the supervisor uses from the service definition."""

    log_level: int = logging.INFO
    outputs: tuple[OutputSpec, ...] = ()
    #: ``{"minio": {id: {...}}, "s3": {id: {...}}}`` as in the service (keys usually "hidden").
    storage_providers: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)


def decode_base64_text(name: str, value: str) -> bytes:
    """Decode a base64 env value strictly, tolerating the whitespace encoders insert.

    :raises FunctionConfigError: naming the variable, so a broken deployment is obvious.
    """
    data = value.encode("ascii", "replace").translate(None, WHITESPACE)
    try:
        return binascii.a2b_base64(data, strict_mode=True)
    except binascii.Error as err:
        raise FunctionConfigError(f"invalid {name}: not base64 ({err})") from None


def parse_log_level(value: object, default: int = logging.INFO) -> int:
    """Map a level name to its number; unknown or empty names give ``default`` (OSCAR: INFO)."""
    if value is None or value == "":
        return default
    return LOG_LEVELS.get(str(value).strip().upper(), default)


def load_script(env: Mapping[str, str]) -> bytes | None:
    """The user script from ``SCRIPT``, or None when the variable is missing."""
    value = env.get(ENV_SCRIPT)
    if value is None:
        return None
    return decode_base64_text(ENV_SCRIPT, value)


def load_config(env: Mapping[str, str]) -> FunctionConfig:
    """Parse ``FUNCTION_CONFIG`` (absent or empty means no config) and apply ``LOG_LEVEL``.

    A function's config never changes between calls, and parsing the YAML costs more than a
    millisecond, so in-process calls (the embedded provider) parse each distinct value once.

    :raises FunctionConfigError: when the value is not base64, not YAML, or an output is malformed.
    """
    return _load_config(env.get(ENV_FUNCTION_CONFIG, ""), env.get(ENV_LOG_LEVEL))


@functools.lru_cache(maxsize=256)
def _load_config(raw: str, log_level: str | None) -> FunctionConfig:
    doc: Any = {}
    if raw.strip():
        text = decode_base64_text(ENV_FUNCTION_CONFIG, raw)
        try:
            doc = yaml.load(text, Loader=_SafeLoader) or {}
        except yaml.YAMLError as err:
            raise FunctionConfigError(f"invalid FUNCTION_CONFIG: not YAML ({_one_line(err)})") from None
        if not isinstance(doc, dict):
            raise FunctionConfigError("invalid FUNCTION_CONFIG: expected a mapping at the top level")
    level = parse_log_level(doc.get("log_level"))
    level = parse_log_level(log_level, level)
    outputs = tuple(_parse_output(i, item) for i, item in enumerate(doc.get("output") or ()))
    providers = doc.get("storage_providers") or {}
    if not isinstance(providers, dict):
        raise FunctionConfigError("invalid FUNCTION_CONFIG: storage_providers must be a mapping")
    return FunctionConfig(log_level=level, outputs=outputs, storage_providers=providers)


def _parse_output(index: int, item: Any) -> OutputSpec:
    where = f"invalid FUNCTION_CONFIG: output[{index}]"
    if not isinstance(item, dict):
        raise FunctionConfigError(f"{where} must be a mapping")
    provider = str(item.get("storage_provider") or "").strip()
    if not provider:
        raise FunctionConfigError(f"{where} has no storage_provider")
    kind, _, ident = provider.partition(".")
    path = str(item.get("path") or "").strip().strip("/")
    bucket, _, folder = path.partition("/")
    if not bucket:
        raise FunctionConfigError(f"{where} has an empty path")
    return OutputSpec(
        provider=provider,
        kind=kind,
        ident=ident or "default",
        bucket=bucket,
        folder=folder.strip("/"),
        prefixes=_str_list(item.get("prefix"), f"{where}.prefix"),
        suffixes=_str_list(item.get("suffix"), f"{where}.suffix"),
    )


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    """A filter list; YAML may give null, one string, or a list."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if not isinstance(value, list):
        raise FunctionConfigError(f"{where} must be a list of strings")
    return tuple(str(v) for v in value if v not in (None, ""))


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())
