"""The frozen static runtime started as the ``oscar`` template's image starts it (issue 13):
the argv of the template Dockerfile's ENTRYPOINT, read from the Dockerfile, with the function
environment contract (``SCRIPT`` base64, ``FUNCTION_CONFIG`` base64 YAML) and the image's
ENV defaults. On this machine first (only ``/oscar/runtime`` is replaced by the built binary,
and the port by a free one because 8080 may be taken here), then, when a container engine
answers, inside the offline busybox-only image, the argv unchanged (port 8080 in the
container, published on a free host port). No Docker build is possible here (no registry):
the image is the busybox test image with the binary mounted at /oscar, as the template's
final stage copies it there.

The binary is the one the container launcher uses (``runtime_build``: built once with
``build-runtime.sh`` and cached, or ``OSCAR_FAAS_RUNTIME_BINARY``)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

import pytest
import requests

from oscar_faas.netutil import free_port

from .conftest import ROOT, b64

TEMPLATE_DOCKERFILE = ROOT / "function-templates" / "oscar" / "Dockerfile"
SCRIPT = 'echo "script log line"\ncat "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/out.txt"\n' \
         'echo " answered" >> "$TMP_OUTPUT_DIR/out.txt"\n'
READY_WITHIN = 60.0

pytestmark = pytest.mark.timeout(180)


def final_stage() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile's last stage, continuations joined."""
    lines = [line for line in TEMPLATE_DOCKERFILE.read_text().splitlines()
             if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    pairs = []
    for line in text.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    last_from = max(i for i, (keyword, _) in enumerate(pairs) if keyword == "FROM")
    return pairs[last_from:]


def entrypoint() -> list[str]:
    keyword, rest = final_stage()[-1]
    assert keyword == "ENTRYPOINT"
    argv = json.loads(rest)
    assert argv[0] == "/oscar/runtime" and argv[argv.index("--port") + 1] == "8080", argv
    return argv


def image_env() -> dict[str, str]:
    """The ENV defaults of the final stage (``ENV a=b c=d`` form)."""
    env: dict[str, str] = {}
    for keyword, rest in final_stage():
        if keyword == "ENV":
            for item in rest.split():
                key, _, value = item.partition("=")
                env[key] = value
    assert env, "the template sets the watchdog defaults"
    return env


def function_env() -> dict[str, str]:
    """What the gateway deploys: the image defaults, then the function's own variables."""
    env = image_env()
    env.update(SCRIPT=b64(SCRIPT), FUNCTION_CONFIG=b64("name: tpl\nmemory: 256Mi\n"),
               LOG_LEVEL="INFO")
    return env


def wait_ready(url: str, alive: Any, output: Any) -> None:
    deadline = time.monotonic() + READY_WITHIN
    while True:
        try:
            if requests.get(url + "/_/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        assert alive(), f"the runtime exited before it was ready:\n{output()}"
        assert time.monotonic() < deadline, f"not ready in {READY_WITHIN} s:\n{output()}"
        time.sleep(0.2)


def check_oscar_answers(url: str) -> None:
    health = requests.get(url + "/_/health", timeout=10)
    assert health.status_code == 200, health.text
    answer = requests.post(url + "/", data=b64("hello"), timeout=60)
    assert answer.status_code == 200, answer.text
    assert "X-Duration-Seconds" in answer.headers
    assert "script;dur=" in answer.headers.get("Server-Timing", ""), answer.headers
    # One output file: its content, base64-encoded; the script's stdout is not the body.
    import base64

    assert base64.b64decode(answer.content) == b"hello answered\n", answer.content
    assert b"script log line" not in answer.content
    # Any path is the function (the watchdog contract), as OSCAR's gateway calls it.
    again = requests.post(url + "/function/tpl", data=b64("twice"), timeout=60)
    assert again.status_code == 200 and base64.b64decode(again.content) == b"twice answered\n"


def test_frozen_runtime_started_as_the_template_starts_it(
        runtime_build: dict[str, Any], tmp_path: Path) -> None:
    argv = entrypoint()
    argv[0] = str(runtime_build["binary"])
    port = free_port()  # 8080 may be in use on this machine (the gateway's default)
    argv[argv.index("--port") + 1] = str(port)
    env: Mapping[str, str] = dict(function_env(), PATH=os.environ.get("PATH", "/usr/bin:/bin"),
                                  TMPDIR=str(tmp_path), OSCAR_SECRETS_DIR=str(tmp_path / "s"))
    log_path = tmp_path / "runtime.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                cwd=tmp_path, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, lambda: proc.poll() is None, log_path.read_text)
        check_oscar_answers(url)
        # The image's HEALTHCHECK command, as written, against this runtime.
        healthcheck = next(rest for keyword, rest in final_stage() if keyword == "HEALTHCHECK")
        check = json.loads(healthcheck.split("CMD", 1)[1])
        assert check[0] == "/oscar/runtime"
        check[0] = str(runtime_build["binary"])
        probe = subprocess.run([*check, url + "/_/health"], env=env, capture_output=True,
                               text=True, timeout=60)
        assert probe.returncode == 0, probe.stderr
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    assert "listening on" in log_path.read_text(), "log lines go to the runtime's stderr"
    # After it stopped, the HEALTHCHECK fails.
    probe = subprocess.run([str(runtime_build["binary"]), "--check", url + "/_/health"],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 1 and "oscar runtime check" in probe.stderr


def test_supervisor_path_still_answers(runtime_build: dict[str, Any], tmp_path: Path) -> None:
    """/oscar/bin/supervisor (OSCAR's envProcess) is the template's wrapper: the same binary's
    one-shot supervisor, body on stdin, answer on stdout, as a classic watchdog runs it."""
    run = next(rest for keyword, rest in final_stage() if keyword == "RUN")
    match = re.search(r"printf '(#!/bin/sh\\n[^']*)' >/oscar/bin/supervisor", run)
    assert match, run
    wrapper = tmp_path / "supervisor"
    wrapper.write_text(match.group(1).replace("\\n", "\n")
                       .replace("/oscar/runtime", str(runtime_build["binary"])))
    wrapper.chmod(0o755)
    env = dict(function_env(), PATH=os.environ.get("PATH", "/usr/bin:/bin"),
               TMPDIR=str(tmp_path))
    result = subprocess.run([str(wrapper)], input=b64("hello").encode(), env=env,
                            capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    import base64

    assert base64.b64decode(result.stdout) == b"hello answered\n", result.stdout


def test_template_entrypoint_inside_the_busybox_image(
        docker_client: Any, runtime_build: dict[str, Any], busybox_image: str) -> None:
    """The ENTRYPOINT unchanged, in an image with no libc, no curl, no Python, as the
    template's unprivileged user; port 8080 in the container, published on a free port."""
    host_port = free_port()
    container = docker_client.containers.run(
        busybox_image, detach=True, entrypoint=entrypoint(), command=[],
        environment=function_env(), user="10001:10001",
        volumes={str(runtime_build["dir"]): {"bind": "/oscar", "mode": "ro"}},
        ports={"8080/tcp": ("127.0.0.1", host_port)})
    try:
        def alive() -> bool:
            container.reload()
            return container.status in ("created", "running")

        def output() -> str:
            return container.logs().decode(errors="replace")[-4000:]

        url = f"http://127.0.0.1:{host_port}"
        wait_ready(url, alive, output)
        check_oscar_answers(url)
        # The HEALTHCHECK command as the engine would run it, inside the container.
        healthcheck = next(rest for keyword, rest in final_stage() if keyword == "HEALTHCHECK")
        code, out = container.exec_run(json.loads(healthcheck.split("CMD", 1)[1]))
        assert code == 0, out
    finally:
        container.remove(force=True)
