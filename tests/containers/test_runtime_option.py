"""``--runtime`` / ``OSCAR_FAAS_RUNTIME`` of ``oscar-faas provider`` and ``serve``: the
errors a user sees before any container runs (no engine needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "oscar_faas.cli", *args], cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                          capture_output=True, text=True, timeout=60)


def test_an_unknown_runtime_in_the_environment_is_refused(tmp_path: Path) -> None:
    for command in ("provider", "serve"):
        done = run_cli(command, "--port", "0", "--data-dir", str(tmp_path / "data"),
                       env={"OSCAR_FAAS_RUNTIME": "vm"}, cwd=tmp_path)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert "OSCAR_FAAS_RUNTIME='vm'" in done.stderr
        assert "host, container" in done.stderr


def test_container_runtime_without_an_engine_says_how_to_start_one(tmp_path: Path) -> None:
    socket = tmp_path / "no-engine.sock"
    done = run_cli("provider", "--port", "0", "--data-dir", str(tmp_path / "data"),
                   "--runtime", "container", env={"DOCKER_HOST": f"unix://{socket}"},
                   cwd=tmp_path)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"no container engine answers at unix://{socket}" in done.stderr
    assert "podman system service" in done.stderr


def test_help_documents_the_option(tmp_path: Path) -> None:
    for command in ("provider", "serve"):
        done = run_cli(command, "--help", env={}, cwd=tmp_path)
        assert "--runtime {host,container}" in done.stdout
        assert "OSCAR_FAAS_RUNTIME" in done.stdout
