"""A runtime that cannot start, or keeps crashing, says why at once (issues 22.3, 23.7): the
function status's ``runtime`` field holds its state and cause, and a call to a runtime that
is waiting out its back-off gets a 503 naming the cause with ``Retry-After`` instead of a
silent wait; one crash of a runtime is restarted at once (the next call waits for it, no
502). Real provider, real runtimes, real HTTP."""

from __future__ import annotations

import os
import signal
import time

from oscar_faas.provider.runtimes.state import RESTART_STABLE

from .conftest import ProviderProcess
from .test_runtimes import PID_AND_VAR, deploy, pid_and_var, wait_ready
from .test_watchdog import wait_dead


def runtime_state(p: ProviderProcess, name: str) -> dict:
    return p.request("GET", f"/system/function/{name}").json().get("runtime") or {}


def wait_state(p: ProviderProcess, name: str, state: str, backoff: bool = False,
               timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        got = runtime_state(p, name)
        if got.get("state") == state and (not backoff or "retryIn" in got):
            return got
        assert time.monotonic() < deadline, (got, p.log()[-3000:])
        time.sleep(0.05)


def timed_call(p: ProviderProcess, name: str) -> tuple[float, object]:
    started = time.monotonic()
    resp = p.invoke(name, b"")
    return time.monotonic() - started, resp


def test_a_runtime_that_exits_at_start_answers_a_503_naming_why(
        shared_provider: ProviderProcess, fn_name: str) -> None:
    p = shared_provider
    deploy(p, fn_name, "echo unused\n", OSCAR_WORKER="sh -c 'unbalanced")
    state = wait_state(p, fn_name, "failed", backoff=True)
    assert "exited with status 2 before listening" in state["reason"]
    assert "invalid OSCAR_WORKER: No closing quotation" in state["reason"]
    assert state["running"] is False and state["retryIn"] >= 0
    took, resp = timed_call(p, fn_name)
    assert resp.status_code == 503
    assert took < 2, took  # at once, not after START_WAIT (30 s)
    assert f"function {fn_name} cannot start" in resp.text
    assert "invalid OSCAR_WORKER: No closing quotation" in resp.text  # the runtime's words
    assert "next try in" in resp.text and int(resp.headers["Retry-After"]) >= 1
    # the service's own log says it too
    logs = p.request("GET", "/system/logs", params={"name": fn_name}).text
    assert "not running: the runtime of" in logs and "No closing quotation" in logs


def test_warm_workers_that_cannot_start_make_the_function_failed(
        shared_provider: ProviderProcess, fn_name: str) -> None:
    p = shared_provider
    deploy(p, fn_name, "echo unused\n",
           OSCAR_WORKER="sh -c 'echo loading the model; echo no such model >&2; exit 3'")
    state = wait_state(p, fn_name, "failed")
    assert "worker 0 exited before it was ready (exit status 3)" in state["reason"]
    assert "no such model" in state["reason"]
    assert state["running"] is True and "retryIn" not in state
    resp = p.invoke(fn_name, b"")  # reaches the runtime, which answers with its worker's words
    assert resp.status_code == 503 and "no such model" in resp.text


def test_a_crashed_runtime_is_restarted_at_once_then_backs_off_with_503s(
        shared_provider: ProviderProcess, fn_name: str) -> None:
    """kill -9, then time the next call: the first crash costs a restart (a 200 within a
    couple of seconds, never a 502); crashes in a row get 503s at once naming the crash and
    the next try (1 s, then 2 s); a runtime ready for RESTART_STABLE s starts a new count."""
    p = shared_provider
    deploy(p, fn_name, PID_AND_VAR)
    wait_ready(p, fn_name)

    def kill_and_call() -> tuple[float, object]:
        pid, _ = pid_and_var(p, fn_name)
        os.kill(pid, signal.SIGKILL)
        assert wait_dead(pid)
        return timed_call(p, fn_name)

    took, resp = kill_and_call()  # failure 1: restarted at once, the call waits for it
    assert resp.status_code == 200, resp.text
    assert took < 5, took
    wait_ready(p, fn_name)
    took, resp = kill_and_call()  # failure 2 in a row: 1 s back-off, told at once
    assert resp.status_code == 503 and took < 1, (resp.status_code, took)
    assert "killed by signal 9" in resp.text and resp.headers["Retry-After"] == "1"
    assert "failure 2 in a row" in resp.text
    wait_ready(p, fn_name)
    took, resp = kill_and_call()  # failure 3: 2 s
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "2", resp.text
    wait_ready(p, fn_name)
    time.sleep(RESTART_STABLE + 0.5)  # healthy for long enough: a new count
    took, resp = kill_and_call()
    assert resp.status_code == 200 and took < 5, (resp.status_code, resp.text, took)
    assert runtime_state(p, fn_name)["restarts"] == 4


def test_an_exposed_server_that_starts_slowly_is_starting_not_failed(
        shared_provider: ProviderProcess, fn_name: str) -> None:
    """Its runtime's health 503 names what it waits for: the state says it, stays
    ``starting`` (so ``oscar-faas apply`` keeps waiting), then turns ready."""
    from oscar_faas.serve import free_port
    from tests.functionpython import function_python
    port = free_port()
    deploy(p := shared_provider, fn_name,
           f'sleep 2\nexec "{function_python()}" -m http.server -b 127.0.0.1 "$EXPOSED_PORT"\n',
           OSCAR_EXPOSE_PORT=str(port), OSCAR_EXPOSE_HEALTH_PATH="/",
           EXPOSED_PORT=str(port))
    seen = set()
    deadline = time.monotonic() + 30
    while (state := runtime_state(p, fn_name)).get("state") != "ready":
        seen.add((state.get("state"), state.get("reason", "")))
        assert time.monotonic() < deadline, (seen, p.log()[-3000:])
        time.sleep(0.1)
    assert {s for s, _ in seen} <= {"starting"}, seen
    assert any("does not answer GET /" in reason for _, reason in seen), seen
