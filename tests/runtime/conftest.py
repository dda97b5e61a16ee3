"""The runtime as a real process over real HTTP: ``python -m oscar_faas.runtime``.

``runtime(env)`` starts one on a port the OS picks (read back from its ``listening on`` log
line), logging to a file; every runtime is stopped with SIGTERM at teardown. Envs are built
with the supervisor tests' ``make_env`` (SCRIPT, FUNCTION_CONFIG, TMPDIR, user variables).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Mapping

import pytest
import requests

from tests.supervisor.conftest import REPO

_LISTENING = re.compile(r"listening on http://([\d.]+):(\d+)")
#: Generous: the machine may be busy; the tests never assert on durations.
STARTUP_TIMEOUT = 60.0


def wait_for(condition: Callable[[], object], what: str, timeout: float = 60.0) -> object:
    """Poll ``condition`` until it is truthy (a state, never a duration, is what we wait for).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Runtime:
    """A running ``python -m oscar_faas.runtime``: ``url``, ``post()``, ``health()``, ``log()``.
    """

    def __init__(self, env: Mapping[str, str], log_path: Path,
                 command: list[str] | None = None) -> None:
        self.log_path = log_path
        full = dict(env)
        full["PYTHONPATH"] = str(REPO)
        self._log_file = open(log_path, "wb")
        self.proc = subprocess.Popen(
            (command or [sys.executable, "-m", "oscar_faas.runtime"])
            + ["--host", "127.0.0.1", "--port", "0"],
            env=full, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT)
        match = wait_for(self._listening, "the runtime's listening line", STARTUP_TIMEOUT)
        self.url = f"http://{match.group(1)}:{match.group(2)}"  # type: ignore[union-attr]
        self.session = requests.Session()

    def _listening(self) -> re.Match[str] | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"the runtime exited ({self.proc.returncode}):\n{self.log()}")
        return _LISTENING.search(self.log())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def post(self, body: bytes | str, path: str = "/", **kwargs: object) -> requests.Response:
        data = body.encode() if isinstance(body, str) else body
        return self.session.post(self.url + path, data=data, timeout=120, **kwargs)  # type: ignore[arg-type]

    def health(self) -> int:
        return requests.get(self.url + "/_/health", timeout=30).status_code

    def status(self) -> dict:
        return requests.get(self.url + "/_/status", timeout=30).json()

    def wait_ready(self) -> None:
        wait_for(lambda: self.health() == 200, "the runtime to be ready")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.session.close()
        self._log_file.close()
        return self.proc.returncode


RuntimeFactory = Callable[..., Runtime]


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[RuntimeFactory]:
    """Start runtimes with ``runtime(env)`` (``command=`` replaces ``python -m
    oscar_faas.runtime``); all are stopped at teardown."""
    started: list[Runtime] = []

    def start(env: Mapping[str, str], *, ready: bool = True,
              command: list[str] | None = None) -> Runtime:
        rt = Runtime(env, tmp_path / f"runtime-{len(started)}.log", command)
        started.append(rt)
        if ready:
            rt.wait_ready()
        return rt

    yield start
    for rt in started:
        rt.stop()


def gate_script(body: str = "") -> str:
    """A script that says it started (a file in $MARKS) and waits for $GATE to exist."""
    return ('touch "$MARKS/started-$$"\n'
            'while [ ! -e "$GATE" ]; do sleep 0.01; done\n' + body)


def started_marks(marks: Path) -> int:
    return len(list(marks.glob("started-*")))


@pytest.fixture
def gate(tmp_path: Path) -> dict[str, str]:
    """Env for :func:`gate_script`: a marks folder and a gate file (created to open it)."""
    marks = tmp_path / "marks"
    marks.mkdir()
    return {"MARKS": str(marks), "GATE": str(tmp_path / "gate")}

