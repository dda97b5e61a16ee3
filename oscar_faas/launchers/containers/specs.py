"""What a function's container is started with and what the provider keeps of a running one.

Exists so the plain records of :mod:`.engine` (a spec and its digest, a running
container's address) stand apart from the engine calls.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Mapping, Sequence

#: The runtime's readiness path: 200 only when the function is ready.
HEALTH_PATH = "/_/health"


@dataclass(frozen=True)
class FunctionContainer:
    """A function's running container, as the provider needs it."""

    function: str
    id: str
    name: str
    url: str
    spec: str
    status: str = "running"
    labels: Mapping[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class FunctionSpec:
    """What a function's container is started with (see :meth:`ContainerEngine.start`)."""

    function: str
    image: str
    env: Mapping[str, str]
    secrets_dir: str | None = None
    memory: str | None = None
    cpu: str | None = None
    gpu: bool = False
    command: Sequence[str] | None = None
    network: str = "bridge"

    def digest(self, runtime_dir: str) -> str:
        data = {"image": self.image, "env": dict(sorted(self.env.items())),
                "secrets_dir": self.secrets_dir, "memory": self.memory, "cpu": self.cpu,
                "gpu": self.gpu, "command": list(self.command or []), "network": self.network,
                "runtime_dir": runtime_dir}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
