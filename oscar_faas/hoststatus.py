"""What ``GET /system/status`` says about the machine the functions run on, in the shape of
OSCAR's ``StatusInfo`` (``pkg/types/status.go``, OSCAR v4): read from ``/proc``, no I/O
beyond it, so the API view stays thin and these figures are testable on their own.

Units follow OSCAR's: ``*_cores`` fields hold **millicores** (OSCAR fills them from
Kubernetes' ``MilliValue``), ``*_bytes`` fields bytes. "Capacity" is the machine's CPUs and
``MemTotal``; "usage" is the CPU time spent over a short sample of ``/proc/stat`` and
``MemTotal - MemAvailable``; "request" is what the deployed services ask for (their ``cpu``
and ``memory``), as Kubernetes sums its pods' requests.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any, Iterable

#: Seconds between the two ``/proc/stat`` reads when no earlier read is recent enough.
CPU_SAMPLE = 0.1


def meminfo(path: Path = Path("/proc/meminfo")) -> dict[str, int]:
    """``/proc/meminfo`` in bytes (empty where there is none)."""
    values: dict[str, int] = {}
    try:
        for line in path.read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                values[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    except OSError:
        pass
    return values


def _cpu_times() -> tuple[int, int] | None:
    """``(busy, total)`` jiffies of all CPUs from ``/proc/stat``; None where there is none."""
    try:
        with open("/proc/stat") as handle:
            fields = handle.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class CpuSampler:
    """CPU use in millicores between two ``/proc/stat`` reads: the previous call's read when
    it is at least :data:`CPU_SAMPLE` old, else a fresh pair (one short sleep)."""

    def __init__(self) -> None:
        self._last: tuple[float, tuple[int, int]] | None = None

    def usage_millicores(self, cpus: int) -> int:
        now = _cpu_times()
        if now is None:
            return _loadavg_millicores(cpus)
        last = self._last
        if last is None or time.monotonic() - last[0] < CPU_SAMPLE:
            time.sleep(CPU_SAMPLE)
            last = (0.0, now)
            now = _cpu_times() or now
        self._last = (time.monotonic(), now)
        busy, total = now[0] - last[1][0], now[1] - last[1][1]
        if total <= 0:
            return 0
        return min(cpus * 1000, round(cpus * 1000 * busy / total))


def _loadavg_millicores(cpus: int) -> int:
    try:
        return min(cpus * 1000, int(os.getloadavg()[0] * 1000))
    except OSError:
        return 0


def gpu_count() -> int:
    """NVIDIA GPUs the kernel shows (``/dev/nvidia0``, ...)."""
    return len(list(Path("/dev").glob("nvidia[0-9]*")))


def machine_node(sampler: CpuSampler, requested: tuple[int, int] = (0, 0)) -> dict[str, Any]:
    """This machine as one OSCAR ``NodeDetail``.

    :param requested: ``(millicores, bytes)`` the deployed services ask for.
    """
    cpus = os.cpu_count() or 1
    mem = meminfo()
    mem_total = mem.get("MemTotal", 0)
    mem_used = max(0, mem_total - mem.get("MemAvailable", mem.get("MemFree", 0)))
    return {
        "name": platform.node() or "localhost",
        "cpu": {"capacity_cores": cpus * 1000,
                "usage_cores": sampler.usage_millicores(cpus),
                "request_cores": requested[0]},
        "memory": {"capacity_bytes": mem_total, "usage_bytes": mem_used,
                   "request_bytes": requested[1]},
        "gpu": gpu_count(),
        "is_interlink": False,
        "status": "Ready",
        "conditions": [{"type": "Ready", "status": True}],
    }


def cluster(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """OSCAR's ``ClusterInfo`` from node details: free = capacity - usage, schedulable =
    capacity - requests, each summed and the largest on one node."""
    free_cpu = [n["cpu"]["capacity_cores"] - n["cpu"]["usage_cores"] for n in nodes]
    free_mem = [n["memory"]["capacity_bytes"] - n["memory"]["usage_bytes"] for n in nodes]
    sched_cpu = [max(0, n["cpu"]["capacity_cores"] - n["cpu"]["request_cores"]) for n in nodes]
    sched_mem = [max(0, n["memory"]["capacity_bytes"] - n["memory"]["request_bytes"])
                 for n in nodes]
    return {
        "nodes_count": len(nodes),
        "metrics": {
            "cpu": {"total_free_cores": sum(free_cpu),
                    "max_free_on_node_cores": max(free_cpu, default=0),
                    "total_schedulable_cores": sum(sched_cpu),
                    "total_schedulable_on_node_cores": max(sched_cpu, default=0)},
            "memory": {"total_free_bytes": sum(free_mem),
                       "max_free_on_node_bytes": max(free_mem, default=0),
                       "total_schedulable_bytes": sum(sched_mem),
                       "max_schedulable_on_node_bytes": max(sched_mem, default=0)},
            "gpu": {"total_gpu": sum(n["gpu"] for n in nodes)},
        },
        "nodes": nodes,
    }


#: Kubernetes' pod phases, which OSCAR's status always lists (zero or not).
POD_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")


def pod_states(ready: Iterable[bool]) -> dict[str, Any]:
    """OSCAR's ``PodStates`` for the services' functions: one "pod" each, ``Running`` with a
    ready replica, else ``Pending``."""
    states = dict.fromkeys(POD_PHASES, 0)
    total = 0
    for is_ready in ready:
        states["Running" if is_ready else "Pending"] += 1
        total += 1
    return {"total": total, "states": states}
