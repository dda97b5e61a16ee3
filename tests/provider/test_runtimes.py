"""The provider's lifecycle of runtimes: one long-lived ``oscar_faas.runtime`` process per OSCAR
function, started at deploy, replaced on update, stopped on delete, restarted when it dies and
brought back by a provider restart. Real provider, real runtimes, real HTTP.

The runtime's pid is read from the function itself: a script's ``$PPID`` is its runtime.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import pytest

from oscar_faas.contract import SUPERVISOR_PROCESS

from tests.functionpython import function_python

from .conftest import ProviderProcess
from .test_watchdog import wait_dead

WAIT = 30.0


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def fields(script: str, **env: str) -> dict:
    return {"envVars": {"SCRIPT": b64(script), "LOG_LEVEL": "INFO", **env}}


def deploy(p: ProviderProcess, name: str, script: str, **env: str) -> None:
    p.deploy(name, SUPERVISOR_PROCESS, **fields(script, **env))


def update(p: ProviderProcess, name: str, script: str, **env: str) -> None:
    body = {"service": name, "image": "ignored:2", "envProcess": SUPERVISOR_PROCESS,
            **fields(script, **env)}
    resp = p.request("PUT", "/system/functions", json=body)
    assert resp.status_code == 202, resp.text


def wait_ready(p: ProviderProcess, name: str) -> dict:
    """Poll the function's status until its runtime is ready (availableReplicas 1)."""
    deadline = time.monotonic() + WAIT
    while True:
        status = p.request("GET", f"/system/function/{name}").json()
        if status.get("availableReplicas") == 1:
            return status
        assert time.monotonic() < deadline, f"{name} never got ready:\n{p.log()[-3000:]}"
        time.sleep(0.02)


def alive(pid: int) -> bool:
    return not wait_dead(pid, within=0)


#: prints the runtime's pid (the script's parent) and a variable
PID_AND_VAR = 'echo "$PPID ${MY_VAR:-none}"\n'


def pid_and_var(p: ProviderProcess, name: str) -> tuple[int, str]:
    resp = p.invoke(name, b"")
    assert resp.status_code == 200, f"{resp.status_code} {resp.text}\n{p.log()[-4000:]}"
    pid, var = resp.text.split()
    return int(pid), var


def test_deploy_starts_a_runtime_that_gets_ready_and_answers(
        shared_provider: ProviderProcess, fn_name: str) -> None:
    p = shared_provider
    deploy(p, fn_name, PID_AND_VAR, MY_VAR="one")
    assert wait_ready(p, fn_name)["replicas"] == 1
    pid, var = pid_and_var(p, fn_name)
    assert var == "one" and alive(pid)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"oscar_faas.runtime" in cmdline
    # one runtime serves every call: the same process answers again
    assert pid_and_var(p, fn_name)[0] == pid
    # its answers carry the watchdog's headers and the runtime's phases
    resp = p.invoke(fn_name, b"")
    assert float(resp.headers["X-Duration-Seconds"]) >= 0
    phases = [part.split(";")[0].strip() for part in resp.headers["Server-Timing"].split(",")]
    assert phases == ["queue", "setup", "script", "upload"]


def test_update_replaces_the_runtime(shared_provider: ProviderProcess, fn_name: str) -> None:
    p = shared_provider
    deploy(p, fn_name, PID_AND_VAR, MY_VAR="one")
    old_pid, var = pid_and_var(p, fn_name)
    assert var == "one"
    update(p, fn_name, PID_AND_VAR, MY_VAR="two")
    # the first call after the update is answered by the new definition
    new_pid, var = pid_and_var(p, fn_name)
    assert var == "two" and new_pid != old_pid
    assert wait_dead(old_pid, within=WAIT), "the old runtime was not stopped"
    # an update that changes nothing keeps the runtime
    update(p, fn_name, PID_AND_VAR, MY_VAR="two")
    assert pid_and_var(p, fn_name)[0] == new_pid


def test_delete_stops_the_runtime(shared_provider: ProviderProcess, fn_name: str) -> None:
    p = shared_provider
    deploy(p, fn_name, PID_AND_VAR)
    pid, _ = pid_and_var(p, fn_name)
    resp = p.request("DELETE", "/system/functions", json={"functionName": fn_name})
    assert resp.status_code == 202
    assert wait_dead(pid, within=WAIT)
    assert p.invoke(fn_name, b"").status_code == 404


def test_a_killed_runtime_is_restarted(shared_provider: ProviderProcess, fn_name: str) -> None:
    p = shared_provider
    deploy(p, fn_name, PID_AND_VAR)
    pid, _ = pid_and_var(p, fn_name)
    os.kill(pid, signal.SIGKILL)
    assert wait_dead(pid)
    # the very next call works: it waits for the restarted runtime
    new_pid, _ = pid_and_var(p, fn_name)
    assert new_pid != pid
    wait_ready(p, fn_name)
    log = p.log()
    assert f"function {fn_name}: its runtime was killed by signal 9" in log, log[-4000:]
    assert "restarting it at once" in log


def test_switching_to_a_plain_fprocess_stops_the_runtime(shared_provider: ProviderProcess,
                                                        fn_name: str) -> None:
    p = shared_provider
    deploy(p, fn_name, PID_AND_VAR)
    pid, _ = pid_and_var(p, fn_name)
    p.request("PUT", "/system/functions", json={"service": fn_name, "image": "x",
                                                "envProcess": "cat"})
    assert wait_dead(pid, within=WAIT)
    assert p.invoke(fn_name, b"plain").text == "plain"


def test_provider_restart_brings_runtimes_back(make_provider: Callable[..., ProviderProcess],
                                              tmp_path: Path) -> None:
    p = make_provider()
    deploy(p, "kept-a", PID_AND_VAR, MY_VAR="a")
    deploy(p, "kept-b", PID_AND_VAR, MY_VAR="b")
    pid_a, _ = pid_and_var(p, "kept-a")
    pid_b, _ = pid_and_var(p, "kept-b")
    p.stop()
    # stopping the provider stops its runtimes
    assert wait_dead(pid_a) and wait_dead(pid_b)
    p.start()
    # started again for every stored function, before any call
    wait_ready(p, "kept-a")
    wait_ready(p, "kept-b")
    new_a, var_a = pid_and_var(p, "kept-a")
    assert var_a == "a" and new_a != pid_a
    assert pid_and_var(p, "kept-b")[1] == "b"


def test_a_full_queue_is_429_from_the_runtime(shared_provider: ProviderProcess, fn_name: str,
                                              tmp_path: Path) -> None:
    p = shared_provider
    started, go = tmp_path / "started", tmp_path / "go"
    deploy(p, fn_name, f"touch {started}\nwhile [ ! -f {go} ]; do sleep 0.02; done\necho done\n",
           max_inflight="1", max_queue="0")
    wait_ready(p, fn_name)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(p.invoke, fn_name, b"")
        deadline = time.monotonic() + WAIT
        while not started.exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        rejected = p.invoke(fn_name, b"")
        assert rejected.status_code == 429 and "too many requests" in rejected.text
        go.touch()
        assert first.result().status_code == 200
    assert p.invoke(fn_name, b"").status_code == 200


WORKER = '''\
import os
from oscar_worker import serve


def setup():
    return os.getpid()


def handle(input_path, output_dir, env, pid):
    with open(input_path) as src:
        text = src.read()
    with open(os.path.join(output_dir, "out.txt"), "w") as out:
        out.write(f"{pid} {text.upper()}")


serve(handle, setup)
'''


@pytest.mark.timeout(120)
def test_a_warm_worker_stays_loaded_between_calls(shared_provider: ProviderProcess,
                                                   fn_name: str, tmp_path: Path) -> None:
    """OSCAR_WORKER through the provider: the same worker process answers both calls."""
    p = shared_provider
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    deploy(p, fn_name, "echo the script is not used\n",
           OSCAR_WORKER=f"{function_python()} {worker}")
    wait_ready(p, fn_name)
    answers = []
    for text in ("first", "second"):
        resp = p.invoke(fn_name, b64(text))
        assert resp.status_code == 200, resp.text
        answers.append(base64.b64decode(resp.text).decode().split())
    (pid1, out1), (pid2, out2) = answers
    assert (out1, out2) == ("FIRST", "SECOND")
    assert pid1 == pid2 and alive(int(pid1))


def test_runtimes_stop_when_the_provider_is_killed(make_provider: Callable[..., ProviderProcess]
                                                   ) -> None:
    """Even a SIGKILLed provider leaves no runtime behind: their stdin closes (lifeline)."""
    p = make_provider()
    deploy(p, "orphan-check", PID_AND_VAR)
    pid, _ = pid_and_var(p, "orphan-check")
    assert p.proc is not None
    p.proc.kill()
    p.proc.wait()
    assert wait_dead(pid, within=WAIT)


def test_a_runtime_started_while_the_provider_stops_does_not_ignore_sigterm() -> None:
    """After its first SIGTERM the provider ignores more of them, but the processes it still
    starts meanwhile (a runtime being started) must not inherit that: an ignored signal
    stays ignored across exec, and a runtime's lifeline stops it with SIGTERM."""
    code = (
        "import signal, subprocess, sys\n"
        "from oscar_faas.provider.__main__ import _stop\n"
        "try:\n"
        "    _stop(signal.SIGTERM, None)\n"
        "except KeyboardInterrupt:\n"
        "    pass\n"
        "assert signal.getsignal(signal.SIGTERM) != signal.SIG_DFL\n"
        "child = 'import signal; print(signal.getsignal(signal.SIGTERM) == signal.SIG_IGN)'\n"
        "print(subprocess.run([sys.executable, '-c', child], capture_output=True,\n"
        "                     text=True).stdout.strip())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_large_bodies_stream_both_ways_through_the_proxy(shared_provider: ProviderProcess,
                                                         fn_name: str) -> None:
    """Bodies above the proxy's inline size, sized and chunked, reach the script whole, and a
    large answer comes back whole (one output file: its base64)."""
    p = shared_provider
    deploy(p, fn_name, 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/echo.bin"\n')
    raw = os.urandom(3 * 1024 * 1024 + 7)
    encoded = base64.b64encode(raw)

    def chunked():
        for i in range(0, len(encoded), 100_000):
            yield encoded[i:i + 100_000]

    for body in (encoded, chunked()):
        resp = p.invoke(fn_name, body)
        assert resp.status_code == 200, resp.text[:500]
        assert base64.b64decode(resp.content) == raw


def test_an_early_answer_to_a_large_body_comes_back(shared_provider: ProviderProcess,
                                                    fn_name: str, tmp_path: Path) -> None:
    """The runtime answers 429 without reading the body: the proxy passes it on at once
    instead of pushing megabytes the runtime will never read."""
    p = shared_provider
    started, go = tmp_path / "started", tmp_path / "go"
    deploy(p, fn_name, f"touch {started}\nwhile [ ! -f {go} ]; do sleep 0.02; done\n",
           max_inflight="1", max_queue="0")
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(p.invoke, fn_name, b"")
        deadline = time.monotonic() + WAIT
        while not started.exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        rejected = p.invoke(fn_name, b"A" * (32 * 1024 * 1024))
        assert rejected.status_code == 429
        go.touch()
        assert first.result().status_code == 200
    assert p.invoke(fn_name, b"").status_code == 200
