"""Fixtures for the supervisor tests: run it in-process and as a real subprocess.

``run`` is parametrised over both modes, so every core case is checked through
``supervise()`` (as the embedded provider calls it) and through ``python -m
oscar_faas.supervisor`` (as the classic watchdog runs it).
"""

from __future__ import annotations

import base64
import io
import logging
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import pytest
import yaml

from oscar_faas.supervisor import supervise
from tests.s3server import S3Server

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    """What one invocation produced: exit code, response bytes, log text."""

    rc: int
    stdout: bytes
    stderr: str


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def make_env(
    script: str | None,
    config: Mapping[str, Any] | None = None,
    tmpdir: Path | None = None,
    **extra: str,
) -> dict[str, str]:
    """A function env as the gateway builds it: SCRIPT, FUNCTION_CONFIG, user variables."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if script is not None:
        env["SCRIPT"] = b64(script)
    if config is not None:
        env["FUNCTION_CONFIG"] = b64(yaml.safe_dump(dict(config)))
    if tmpdir is not None:
        tmpdir.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmpdir)
    env.update(extra)
    return env


def run_inprocess(body: bytes | str, env: Mapping[str, str]) -> Result:
    """Call ``supervise`` with a private logger whose handler captures every record."""
    body = body.encode() if isinstance(body, str) else body
    stream = io.StringIO()
    logger = logging.Logger(f"test-{uuid.uuid4().hex}")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    out = io.BytesIO()
    rc = supervise(io.BytesIO(body), out, env, logger)
    return Result(rc, out.getvalue(), stream.getvalue())


def run_subprocess(body: bytes | str, env: Mapping[str, str]) -> Result:
    """Run ``python -m oscar_faas.supervisor`` with ``body`` on stdin, as the watchdog does."""
    body = body.encode() if isinstance(body, str) else body
    full = dict(env)
    full["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "oscar_faas.supervisor"],
        input=body,
        env=full,
        capture_output=True,
        timeout=120,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace"))


Runner = Callable[[bytes | str, Mapping[str, str]], Result]


@pytest.fixture(params=["inprocess", "subprocess"])
def run(request: pytest.FixtureRequest) -> Runner:
    """Run the supervisor one way or the other (the test runs once per mode)."""
    return run_inprocess if request.param == "inprocess" else run_subprocess


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """One moto S3 server (with real signature checks) for the whole session."""
    with S3Server() as server:
        yield server


@pytest.fixture
def bucket(s3: S3Server) -> str:
    """A fresh, empty bucket."""
    name = f"out-{uuid.uuid4().hex[:12]}"
    s3.client().make_bucket(name)
    return name
