"""Services that cannot start say why, through the CLI a user types (issue 22.3), and a
failing script's stderr reaches the logs at log_level CRITICAL (issue 22.4): a live
``oscar-faas serve`` (host runtimes), ``oscar-faas apply``/``run``/``ls``/``logs``, and OSCAR's
deployment routes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from tests.livegateway import LiveGateway

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    with LiveGateway(tmp_path_factory.mktemp("startup")) as gw:
        yield gw


def cli(gw: LiveGateway, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OSCAR_ENDPOINT": gw.url, "OSCAR_USERNAME": gw.user,
           "OSCAR_PASSWORD": gw.password}
    return subprocess.run([sys.executable, "-m", "oscar_faas.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def fdl(tmp_path: Path, services: dict[str, dict]) -> str:
    (tmp_path / "script.sh").write_text('echo "the answer"\necho "why it broke" >&2\nexit 3\n')
    doc = {"functions": {"oscar": [{"c": {"name": name, "image": "alpine",
                                          "script": "script.sh", **extra}}
                                   for name, extra in services.items()]}}
    (tmp_path / "fdl.yaml").write_text(yaml.safe_dump(doc))
    return "fdl.yaml"


def worker(command: str) -> dict:
    return {"environment": {"variables": {"OSCAR_WORKER": command}}}


def test_apply_waits_and_fails_naming_the_cause(gateway: LiveGateway, tmp_path: Path) -> None:
    path = fdl(tmp_path, {"okay": {"log_level": "CRITICAL"},
                          "badquote": worker("sh -c 'unbalanced"),
                          "badworker": worker("sh -c 'echo loading; echo no model >&2; "
                                              "exit 3'")})
    applied = cli(gateway, tmp_path, "apply", path)
    words = applied.stdout + applied.stderr
    assert applied.returncode == 1, words
    assert "okay: created" in applied.stdout and "okay: ready (" in applied.stdout, words
    assert "badquote: failed: the runtime of badquote exited with status 2 before " \
           "listening" in applied.stderr, words
    assert "invalid OSCAR_WORKER: No closing quotation" in applied.stderr, words
    assert "badworker: failed: worker 0 exited before it was ready" in applied.stderr, words
    assert "(exit status 3)" in applied.stderr and "no model" in applied.stderr, words
    assert "every user may read" not in applied.stderr  # no visibility hint for this one

    nowait = cli(gateway, tmp_path, "apply", path, "--no-wait")
    assert nowait.returncode == 0 and "ready" not in nowait.stdout, nowait.stdout
    assert nowait.stdout.splitlines() == ["okay: updated", "badquote: updated",
                                          "badworker: updated"]

    started = time.monotonic()
    ran = cli(gateway, tmp_path, "run", "badquote", "--text-input", "x")
    assert time.monotonic() - started < 10  # RUN_READY_WAIT is 30 s
    assert ran.returncode == 1 and "failed with 503" in ran.stderr, ran.stderr
    assert "service badquote is not ready: function badquote cannot start" in ran.stderr
    assert "No closing quotation" in ran.stderr and "next try in" in ran.stderr

    rows = {line.split()[0]: line for line in
            cli(gateway, tmp_path, "ls").stdout.splitlines()[1:]}
    assert rows["okay"].rstrip().endswith("Ready")
    assert "Failed: the runtime of badquote exited with status 2 before listening: " \
           "invalid OSCAR_WORKER: No closing quotation" in rows["badquote"]
    assert "Failed: worker 0 exited before it was ready" in rows["badworker"]
    assert "(exit status 3)" in rows["badworker"]


def test_a_failing_scripts_stderr_is_logged_at_critical(gateway: LiveGateway,
                                                        tmp_path: Path) -> None:
    path = fdl(tmp_path, {"critical": {"log_level": "CRITICAL"}})
    assert cli(gateway, tmp_path, "apply", path).returncode == 0
    ran = cli(gateway, tmp_path, "run", "critical", "--text-input", "x")
    assert ran.returncode == 1 and "failed with 500" in ran.stderr
    logs = cli(gateway, tmp_path, "logs", "critical").stdout
    assert "script: why it broke" in logs and "script: the answer" in logs, logs
    assert "exited with status 3" not in logs  # the runtime's own ERROR stays under CRITICAL
    got = requests.get(f"{gateway.url}/system/services/critical/deployment/logs",
                       auth=gateway.auth, timeout=10).json()
    assert got["available"] is True
    assert "INFO script: why it broke" in [e["message"] for e in got["entries"]]
    status = requests.get(f"{gateway.url}/system/services/critical/deployment",
                          auth=gateway.auth, timeout=10).json()
    assert (status["state"], status["active_instances"]) == ("ready", 1)
