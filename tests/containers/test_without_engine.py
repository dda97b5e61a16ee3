"""Without a container engine the container tests say why once, not once per test; with
OSCAR_FAAS_REQUIRE_CONTAINERS=1 they fail instead."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def pytest_run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("OSCAR_FAAS_REQUIRE_CONTAINERS", "PYTEST_ADDOPTS")}
    environ.update(DOCKER_HOST=f"unix://{tmp_path}/no-engine.sock", **env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
         "tests/containers/test_engine.py", "tests/containers/test_launcher.py",
         "tests/containers/test_quantities.py"],
        cwd=ROOT, env=environ, capture_output=True, text=True, timeout=300)


def test_no_engine_is_said_once(tmp_path):
    done = pytest_run(tmp_path)
    assert done.returncode == 0, done.stdout[-3000:]
    said = [line for line in done.stdout.splitlines() if "no container engine" in line]
    assert len(said) == 1, done.stdout[-3000:]
    assert "container tests not run" in said[0] and "setup-podman.sh" in said[0]
    assert "SKIPPED" not in done.stdout and " passed" in done.stdout


def test_required_containers_still_fail_without_an_engine(tmp_path):
    done = pytest_run(tmp_path, OSCAR_FAAS_REQUIRE_CONTAINERS="1")
    assert done.returncode == 1 and "containers are required" in done.stdout
