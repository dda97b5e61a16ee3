"""What a runtime started dies with it: kill -9 of a runtime while a script runs (``sh`` and
the ``sleep`` it started), or while an exposed service's server has a child, leaves nothing
alive under the function's uid (issue 23.2). Real provider, real runtimes, real processes."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import requests

from oscar_faas.serve import free_port
from tests.functionpython import function_python

from .conftest import REPO, ProviderProcess
from .test_runtimes import deploy, wait_ready
from .test_watchdog import wait_dead

#: How long the dead runtime's processes may outlive it.
GRACE = 3.0


def _stat(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after ``(comm)``: state, ppid, pgrp, session, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _find(marker: str, timeout: float = 30.0) -> int:
    """The pid of the live process whose command line contains ``marker``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != os.getpid():
                try:
                    cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
                    if marker.encode() in cmdline and _stat(int(entry))[0] not in "ZX":
                        return int(entry)
                except (OSError, IndexError):
                    pass
        time.sleep(0.05)
    raise AssertionError(f"no process with {marker!r} in its command line")


def _runtime_of(pid: int) -> int:
    """The runtime above ``pid``: the nearest ancestor running ``oscar_faas.runtime``."""
    current = pid
    while current > 1:
        current = int(_stat(current)[1])
        if b"oscar_faas.runtime" in Path(f"/proc/{current}/cmdline").read_bytes():
            return current
    raise AssertionError(f"process {pid} has no runtime above it")


def _session(session: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            fields = _stat(int(entry)) if entry.isdigit() else []
        except (OSError, IndexError):
            continue
        if len(fields) > 3 and int(fields[3]) == session and fields[0] not in "ZX":
            found.append(int(entry))
    return found


def _kill_and_check(p: ProviderProcess, name: str, victims: list[int], runtime: int) -> None:
    assert all(not wait_dead(pid, within=0) for pid in victims)
    os.kill(runtime, signal.SIGKILL)
    gone = {pid: wait_dead(pid, within=GRACE) for pid in victims}
    assert all(gone.values()), f"still alive {GRACE:g} s after their runtime: {gone}"
    deadline = time.monotonic() + GRACE
    while _session(runtime) and time.monotonic() < deadline:  # the guardian too
        time.sleep(0.05)
    assert _session(runtime) == []
    wait_ready(p, name)  # and the provider has started a new runtime


def test_a_running_script_dies_with_its_runtime(shared_provider: ProviderProcess,
                                                fn_name: str) -> None:
    p = shared_provider
    marker = f"{random.randint(10**6, 10**7)}.5"  # sleep's argument, unique to this test
    deploy(p, fn_name, f"sleep {marker}\necho done\n")
    wait_ready(p, fn_name)
    answers: list[object] = []

    def call() -> None:
        try:
            answers.append(p.invoke(fn_name, b"", timeout=120).status_code)
        except requests.RequestException as err:
            answers.append(err)
    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    sleeper = _find(f"sleep {marker}")
    shell = int(_stat(sleeper)[1])
    runtime = _runtime_of(sleeper)
    assert b"/bin/sh" in Path(f"/proc/{shell}/cmdline").read_bytes()
    # the script leads a group of its own inside the runtime's session
    assert int(_stat(shell)[2]) == shell and int(_stat(shell)[3]) == runtime
    _kill_and_check(p, fn_name, [shell, sleeper], runtime)
    caller.join(60)
    assert answers and answers[0] != 200  # the call did not pretend to succeed


def test_an_exposed_servers_children_die_with_its_runtime(shared_provider: ProviderProcess,
                                                          fn_name: str) -> None:
    p = shared_provider
    port = free_port()
    marker = f"{random.randint(10**6, 10**7)}.25"
    script = (f"sleep {marker} &\n"
              f'exec "{function_python()}" -m tests.exposed_app {port}\n')
    deploy(p, fn_name, script, OSCAR_EXPOSE_PORT=str(port), OSCAR_EXPOSE_HEALTH_PATH="/health",
           PYTHONPATH=str(REPO))
    wait_ready(p, fn_name)
    sleeper = _find(f"sleep {marker}")
    server = _find(f"tests.exposed_app {port}")
    _kill_and_check(p, fn_name, [server, sleeper], _runtime_of(server))


def test_a_stopped_runtime_leaves_no_guardian(shared_provider: ProviderProcess,
                                              fn_name: str) -> None:
    p = shared_provider
    deploy(p, fn_name, 'echo "$PPID"\n')
    wait_ready(p, fn_name)
    resp = p.invoke(fn_name, b"")
    assert resp.status_code == 200
    runtime = int(resp.text)
    guardians = [pid for pid in _session(runtime) if pid != runtime]
    assert len(guardians) == 1 and int(_stat(guardians[0])[1]) == runtime
    assert p.request("DELETE", "/system/functions",
                     json={"functionName": fn_name}).status_code == 202
    assert wait_dead(runtime, within=30) and wait_dead(guardians[0], within=GRACE)
    assert _session(runtime) == []


WARM = '''\
import oscar_worker

def handler(input_path, output_dir, env, state):
    open(f"{output_dir}/out.txt", "w").write("ok")

oscar_worker.serve(handler, lambda: None)
'''


def test_warm_workers_die_with_their_runtime(shared_provider: ProviderProcess, fn_name: str,
                                             tmp_path: Path) -> None:
    """The template that ran setup() and the workers it forked are in the runtime's
    session (a process group each), so the guardian takes them too."""
    p = shared_provider
    worker = tmp_path / f"warm_{random.randint(10**6, 10**7)}.py"
    worker.write_text(WARM)
    tmp_path.chmod(0o755)
    worker.chmod(0o644)
    deploy(p, fn_name, "true\n", OSCAR_WORKER=f"{function_python()} {worker}",
           max_inflight="2")
    wait_ready(p, fn_name)
    deadline = time.monotonic() + 30
    while True:  # the template and its two forked workers
        procs = [int(e) for e in os.listdir("/proc") if e.isdigit()
                 and _cmdline_has(int(e), worker.name)]
        if len(procs) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(procs) >= 3, procs
    runtime = _runtime_of(procs[0])
    assert all(int(_stat(pid)[3]) == runtime for pid in procs)  # one session: the runtime's
    _kill_and_check(p, fn_name, procs, runtime)


def _cmdline_has(pid: int, text: str) -> bool:
    try:
        return (text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
                and _stat(pid)[0] not in "ZX")
    except (OSError, IndexError):
        return False
