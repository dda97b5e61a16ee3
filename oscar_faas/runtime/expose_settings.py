"""Expose mode's settings: the ``OSCAR_EXPOSE_*`` part of the function's env (set by the
gateway's translation), read once into :class:`ExposeSettings`.

Exists so the runtime's start-up (:mod:`.server`) can tell expose mode from the normal one, and
the keeper and the proxy share one reading of the env.
"""

from __future__ import annotations

import base64
import shlex
from dataclasses import dataclass
from typing import Mapping

import yaml

from ..contract import (ENV_EXPOSE_COMMAND, ENV_EXPOSE_DEFAULT_COMMAND, ENV_EXPOSE_HEALTH_PATH,
                        ENV_EXPOSE_PORT, ENV_EXPOSE_READY_WAIT, is_true)
from .settings import parse_duration

#: Longest wait of a request for the server to be healthy before its 503.
READY_WAIT = 10.0


@dataclass(frozen=True)
class ExposeSettings:
    """The expose-mode part of the function's env (set by the gateway's translation)."""

    port: int
    health_path: str = ""
    default_command: bool = False
    #: the image's own command (``OSCAR_EXPOSE_COMMAND``, shlex-split), for default_command
    command: tuple[str, ...] = ()
    #: the service's name (from ``FUNCTION_CONFIG``), for messages
    name: str = "the exposed service"
    #: seconds a request waits for the server to be healthy (``OSCAR_EXPOSE_READY_WAIT``)
    ready_wait: float = READY_WAIT

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ExposeSettings | None:
        """``None`` when the function is not exposed.

        :raises ValueError: the port or ``OSCAR_EXPOSE_COMMAND`` is malformed.
        """
        raw = (env.get(ENV_EXPOSE_PORT) or "").strip()
        if not raw:
            return None
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise ValueError(f"{ENV_EXPOSE_PORT} must be a port from 1 to 65535, got {raw!r}")
        return cls(port=int(raw), health_path=(env.get(ENV_EXPOSE_HEALTH_PATH) or "").strip(),
                   default_command=is_true(env.get(ENV_EXPOSE_DEFAULT_COMMAND)),
                   command=tuple(shlex.split(env.get(ENV_EXPOSE_COMMAND) or "")),
                   name=_service_name(env),
                   ready_wait=parse_duration(env.get(ENV_EXPOSE_READY_WAIT)) or READY_WAIT)

    @property
    def check(self) -> str:
        """The health check in words, for messages."""
        if self.health_path:
            return f"GET {self.health_path} on port {self.port}"
        return f"a connection to port {self.port}"


def _service_name(env: Mapping[str, str]) -> str:
    try:
        config = yaml.safe_load(base64.b64decode(env.get("FUNCTION_CONFIG") or ""))
        name = config.get("name") if isinstance(config, dict) else None
    except Exception:  # noqa: BLE001 - a name for messages only
        name = None
    return f"exposed service {name}" if isinstance(name, str) and name else \
        "the exposed service"
