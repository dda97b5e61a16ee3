"""What the backend keeps per function: plain records, apart from the logic.

:class:`FunctionEntry` is everything an invocation needs, computed once per deploy;
:func:`runtime_spec` is what a launcher needs to run a function's runtime (an OSCAR
service's, or a classic ``fprocess``'s).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..contract import ENV_FPROCESS, ENV_RUNTIME_CLASSIC
from ..launchers.launch import RuntimeSpec
from .state.store import FunctionRecord
from .state.types import FunctionDeployment

#: ``limits``/``requests`` keys that ask for a GPU.
GPU_KEYS = ("nvidia.com/gpu", "amd.com/gpu", "intel.com/gpu")


@dataclass(frozen=True)
class FunctionEntry:
    """Everything an invocation needs, computed at deploy time."""

    record: FunctionRecord
    #: what its runtime is started with; None without an envProcess (never ready: 503)
    spec: RuntimeSpec | None = None


def runtime_spec(fd: FunctionDeployment, secrets_dir: Path,
                 fprocess: str | None = None) -> RuntimeSpec:
    """What a launcher needs to run ``fd``'s runtime.

    :param fprocess: a classic-watchdog function's command (not the oscar supervisor): its
        runtime runs it once per call (``OSCAR_RUNTIME_CLASSIC``), on the host.
    """
    limits = fd.limits or {}
    requests = fd.requests or {}
    gpu = any((limits.get(k) or requests.get(k) or "0") not in ("", "0") for k in GPU_KEYS)
    env = dict(fd.env_vars)
    if fprocess is not None:
        env.update({ENV_FPROCESS: fprocess, ENV_RUNTIME_CLASSIC: "true"})
    return RuntimeSpec(name=fd.service, image=fd.image, env=env,
                       secrets_dir=secrets_dir, memory=limits.get("memory") or None,
                       cpu=limits.get("cpu") or None, gpu=gpu, classic=fprocess is not None)
