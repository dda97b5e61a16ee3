"""How many warm workers a service gets when ``max_inflight`` does not say.

A warm worker serves one call at a time on (about) one CPU, so one worker is one CPU's worth of
throughput: the default is one worker per CPU the service may use, the least of

* the service's ``cpu`` (its FDL, read from ``FUNCTION_CONFIG``; OSCAR makes it the pod's
  limit, so more workers than that only queue on the CPU quota);
* the CPU limit of the cgroup the runtime runs in (a container's ``--cpus``, a pod's limit:
  cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``);
* the cores the process may run on (``os.sched_getaffinity``),

rounded up (``cpu: 1.5`` is two workers), and no more workers than the memory the service may
use holds at :data:`WORKER_MEMORY` each (the least of its ``memory``, the cgroup's limit and
the host's RAM). Workers forked from one ``setup()`` share the model, so a worker costs much
less than a copy of it; :data:`WORKER_MEMORY` is a budget, not a measure.

The readers never fail: an unreadable or absent limit is no limit.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
from pathlib import Path
from typing import Iterable, Mapping

#: Memory budgeted per worker: OSCAR's default ``memory`` of a service (256Mi).
WORKER_MEMORY = 256 << 20
#: Where cgroups are mounted.
CGROUP_ROOT = Path("/sys/fs/cgroup")


def worker_slots(cores: int, cpu_limits: Iterable[float | None] = (),
                 memory_limits: Iterable[int | None] = ()) -> int:
    """The default number of warm workers (pure: every input is given).

    :param cores: CPUs the process may run on (``len(os.sched_getaffinity(0))``).
    :param cpu_limits: CPU quotas in CPUs (``0.5``, ``2.0``); None = no limit.
    :param memory_limits: memory limits in bytes; None = no limit.
    """
    cpu = min([float(max(cores, 1))] + [c for c in cpu_limits if c is not None and c > 0])
    by_cpu = max(1, math.ceil(cpu - 1e-9))
    memory = [m for m in memory_limits if m is not None and m > 0]
    by_memory = max(1, min(memory) // WORKER_MEMORY) if memory else by_cpu
    return min(by_cpu, by_memory)


def service_resources(env: Mapping[str, str]) -> tuple[float | None, int | None]:
    """The service's ``cpu`` (CPUs) and ``memory`` (bytes) from ``FUNCTION_CONFIG``; None
    where absent or not a quantity (the supervisor reports a broken config on each call)."""
    import yaml

    from ..contract import ENV_FUNCTION_CONFIG
    from ..quantities import parse_quantity

    raw = env.get(ENV_FUNCTION_CONFIG, "")
    try:
        doc = yaml.safe_load(base64.b64decode(raw.encode("ascii", "replace"))) if raw else {}
    except (binascii.Error, ValueError, yaml.YAMLError):
        return None, None
    if not isinstance(doc, dict):
        return None, None
    values: list[float | None] = []
    for key in ("cpu", "memory"):
        try:
            values.append(float(parse_quantity(str(doc[key]))) if doc.get(key) else None)
        except (ValueError, ArithmeticError):
            values.append(None)
    cpu, memory = values
    return cpu, int(memory) if memory else None


def cores() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def host_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def _cgroup_dirs(controller: str, root: Path = CGROUP_ROOT) -> list[Path]:
    """The folders, innermost first, whose limits apply to this process for ``controller``
    (v2 when its line is ``0::path``); the mount's own root too, as a container sees it."""
    found: list[Path] = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        _, names, path = line.split(":", 2)
        if names == "" and (root / "cgroup.controllers").exists():
            base = root
        elif controller in names.split(","):
            base = root / names
            if not base.is_dir():
                base = root / controller
        else:
            continue
        folder = base / path.lstrip("/")
        while True:
            found.append(folder)
            if folder == base or folder.parent == folder:
                break
            folder = folder.parent
        found.append(base)
    return found


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def cgroup_cpu(root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota of this process's cgroups, in CPUs; None when unlimited."""
    quotas = []
    for folder in _cgroup_dirs("cpu", root):
        v2 = _read(folder / "cpu.max").split()
        if len(v2) == 2 and v2[0] != "max" and v2[0].isdigit() and v2[1].isdigit():
            quotas.append(int(v2[0]) / max(int(v2[1]), 1))
        quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
        if quota.isdigit() and period.isdigit() and int(quota) > 0:
            quotas.append(int(quota) / max(int(period), 1))
    return min(quotas) if quotas else None


def cgroup_memory(root: Path = CGROUP_ROOT) -> int | None:
    """The memory limit of this process's cgroups, in bytes; None when unlimited."""
    limits = []
    for folder in _cgroup_dirs("memory", root):
        for name in ("memory.max", "memory.limit_in_bytes"):
            value = _read(folder / name)
            if value.isdigit() and int(value) < (1 << 60):  # v1 says "no limit" with ~2^63
                limits.append(int(value))
    return min(limits) if limits else None


def default_worker_slots(env: Mapping[str, str]) -> int:
    """:func:`worker_slots` for this process and the service in ``env``."""
    cpu, memory = service_resources(env)
    return worker_slots(cores(), [cpu, cgroup_cpu()], [memory, cgroup_memory(), host_memory()])
