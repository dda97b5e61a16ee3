"""OSCAR functions (envProcess = the oscar supervisor) on the embedded provider: served by
their own long-lived runtime, with the answers the supervisor gives."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Callable


from oscar_faas.contract import SUPERVISOR_MODULE as IN_PROCESS_SUPERVISOR

from .conftest import ProviderProcess
from .test_watchdog import wait_dead


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def deploy_script(p: ProviderProcess, name: str, script: str,
                  process: str = IN_PROCESS_SUPERVISOR, **env: str) -> None:
    p.deploy(name, process, envVars={
        "SCRIPT": b64(script), "FUNCTION_CONFIG": b64(f"name: {name}\nlog_level: INFO\n"),
        "LOG_LEVEL": "INFO", "combine_output": "false", **env})


def test_supervised_script_answers(shared_provider: ProviderProcess, fn_name: str) -> None:
    deploy_script(shared_provider, fn_name, 'cat "$INPUT_FILE_PATH"; echo; echo done\n')
    resp = shared_provider.invoke(fn_name, b64("hello"))
    assert resp.status_code == 200, resp.text
    assert resp.text == "hello\ndone\n"


def test_runs_in_the_functions_runtime(shared_provider: ProviderProcess, fn_name: str) -> None:
    """No interpreter per call: the script's parent is the function's runtime."""
    deploy_script(shared_provider, fn_name, 'tr "\\0" " " < /proc/$PPID/cmdline\n')
    text = shared_provider.invoke(fn_name, b"").text
    assert "oscar_faas.runtime" in text and "oscar_faas.supervisor" not in text


def test_image_path_form_has_a_runtime_too(shared_provider: ProviderProcess,
                                           fn_name: str) -> None:
    deploy_script(shared_provider, fn_name, 'tr "\\0" " " < /proc/$PPID/cmdline\n',
                  process="/oscar/bin/supervisor")
    assert "oscar_faas.runtime" in shared_provider.invoke(fn_name, b"").text


def test_failing_script_is_500(shared_provider: ProviderProcess, fn_name: str) -> None:
    deploy_script(shared_provider, fn_name, "echo broken\nexit 4\n")
    resp = shared_provider.invoke(fn_name, b"")
    assert resp.status_code == 500
    assert resp.text.startswith("exit status 4\n") and "broken" in resp.text


def test_bad_input_is_400_with_message(shared_provider: ProviderProcess, fn_name: str) -> None:
    """The runtime answers invalid input with a 4xx (the forked supervisor said 500)."""
    deploy_script(shared_provider, fn_name, "echo never\n")
    resp = shared_provider.invoke(fn_name, b"not base64 !!!")
    assert resp.status_code == 400 and resp.text
    assert "never" not in resp.text


def test_exec_timeout_kills_the_script(shared_provider: ProviderProcess, fn_name: str,
                                       tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    deploy_script(shared_provider, fn_name, f"echo $$ > {pid_file}\nsleep 60\n",
                  exec_timeout="1s")
    resp = shared_provider.invoke(fn_name, b"")
    assert resp.status_code == 408 and resp.text == "Killed process.\n"
    deadline = time.monotonic() + 10
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert wait_dead(int(pid_file.read_text()))
    # the function still works afterwards
    deploy_again = shared_provider.request("PUT", "/system/functions", json={
        "service": fn_name, "image": "x", "envProcess": IN_PROCESS_SUPERVISOR,
        "envVars": {"SCRIPT": b64("echo ok\n"), "exec_timeout": "10s",
                    "combine_output": "false"}})
    assert deploy_again.status_code == 202
    assert shared_provider.invoke(fn_name, b"").text == "ok\n"


def test_stopping_the_provider_kills_supervised_scripts(
        make_provider: Callable[..., ProviderProcess], tmp_path: Path) -> None:
    import threading

    from .test_watchdog import _ignore_errors

    p = make_provider()
    pid_file = tmp_path / "pid"
    deploy_script(p, "long-script", f"sleep 60 &\necho $! > {pid_file}\nwait\n")
    caller = threading.Thread(target=lambda: _ignore_errors(p.invoke, "long-script", b""))
    caller.start()
    deadline = time.monotonic() + 20
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    p.stop()
    assert wait_dead(int(pid_file.read_text()))
    caller.join(30)
