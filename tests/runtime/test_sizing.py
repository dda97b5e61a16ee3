"""The default number of warm workers: one per CPU the service may use, within its memory."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from oscar_faas.runtime import sizing
from oscar_faas.runtime.settings import RuntimeSettings
from oscar_faas.runtime.sizing import WORKER_MEMORY, service_resources, worker_slots

GIB = 1 << 30


@pytest.mark.parametrize("cores, cpus, memories, expected", [
    (2, [], [], 2),                          # nothing but the host: one per core
    (2, [None, None], [None, None], 2),      # unknown limits are no limits
    (8, [2.0], [], 2),                       # the FDL's cpu
    (8, [1.5], [], 2),                       # rounded up: the half CPU is used too
    (8, [0.2], [], 1),                       # OSCAR's default cpu: one worker, never 0
    (8, [4.0, 3.0], [], 3),                  # the least of the FDL and the cgroup
    (2, [16.0], [], 2),                      # never more than the cores it may run on
    (8, [8.0], [GIB], GIB // WORKER_MEMORY), # memory holds 4 workers at 256 MiB
    (8, [8.0], [256 << 20], 1),              # OSCAR's default memory: one
    (8, [8.0], [100 << 20], 1),              # less than a worker's budget: still one
    (8, [], [64 * GIB, 2 * GIB, None], 8),   # the least memory limit decides
    (0, [], [], 1),                          # an odd affinity answer
])
def test_worker_slots(cores: int, cpus: list, memories: list, expected: int) -> None:
    assert worker_slots(cores, cpus, memories) == expected


def config(doc: dict) -> dict[str, str]:
    return {"FUNCTION_CONFIG": base64.b64encode(yaml.safe_dump(doc).encode()).decode()}


def test_service_resources_read_the_fdl() -> None:
    assert service_resources(config({"cpu": "500m", "memory": "2Gi"})) == (0.5, 2 * GIB)
    assert service_resources(config({"cpu": "2", "memory": "512M"})) == (2.0, 512_000_000)
    assert service_resources(config({"cpu": "lots"})) == (None, None)
    assert service_resources({"FUNCTION_CONFIG": "%%%"}) == (None, None)
    assert service_resources({}) == (None, None)


def test_cgroup_limits_are_read_v1_and_v2(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    (tmp_path / "memory.max").write_text("1073741824\n")
    for name in ("cpu", "cpu,cpuacct"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "cpu.cfs_quota_us").write_text("300000\n")
        (tmp_path / name / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    cpu, memory = sizing.cgroup_cpu(tmp_path), sizing.cgroup_memory(tmp_path)
    lines = Path("/proc/self/cgroup").read_text()
    if "0::" in lines:  # v2 (or hybrid): cpu.max and memory.max apply
        assert cpu == 1.5 and memory == GIB
    else:  # v1 only
        assert cpu == 3.0 and memory is None
    empty = tmp_path / "empty"
    empty.mkdir()
    assert sizing.cgroup_cpu(empty) is None and sizing.cgroup_memory(empty) is None


def test_max_inflight_overrides_the_default_and_scripts_keep_theirs() -> None:
    env = dict(config({"cpu": "0.2", "memory": "256Mi"}), OSCAR_WORKER="python3 w.py")
    assert RuntimeSettings.from_env(env).slots == 1
    assert RuntimeSettings.from_env(dict(env, max_inflight="6")).slots == 6
    settings = RuntimeSettings.from_env(dict(env, OSCAR_WORKER_FORK="false"))
    assert settings.fork is False and settings.memory_limit == 256 << 20
    script = RuntimeSettings.from_env(config({"cpu": "0.2"}))
    assert script.worker is None and script.slots >= 4 and script.memory_limit is None
