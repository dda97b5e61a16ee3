"""Classic-watchdog semantics of /function/<name>, over real HTTP."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest
import requests

from .conftest import ProviderProcess, secrets_folder


def env_of(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def wait_dead(pid: int, within: float = 10.0) -> bool:
    """True once ``pid`` is gone (or a zombie): waits for the kill to be reaped."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_stdout_is_the_body(shared_provider: ProviderProcess, fn_name: str) -> None:
    shared_provider.deploy(fn_name, "cat")
    resp = shared_provider.invoke(fn_name, b"hello \x00\xff bytes")
    assert resp.status_code == 200
    assert resp.content == b"hello \x00\xff bytes"
    assert re.fullmatch(r"\d+\.\d{6}", resp.headers["X-Duration-Seconds"])
    uuid.UUID(resp.headers["X-Call-Id"])


def test_every_watchdog_method(shared_provider: ProviderProcess, fn_name: str,
                               script: Callable[[str, str], str]) -> None:
    shared_provider.deploy(fn_name, script("method", 'printf "%s" "$Http_Method"\n'))
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        resp = shared_provider.invoke(fn_name, method=method)
        assert resp.status_code == 200 and resp.text == method
    assert shared_provider.invoke(fn_name, method="OPTIONS").status_code == 405


def test_non_zero_exit_is_500(shared_provider: ProviderProcess, fn_name: str,
                              script: Callable[[str, str], str]) -> None:
    shared_provider.deploy(fn_name, script("fail", "echo partial output\nexit 3\n"))
    resp = shared_provider.invoke(fn_name, b"in")
    assert resp.status_code == 500
    assert resp.text == "exit status 3\npartial output\n"
    assert "X-Duration-Seconds" in resp.headers


def test_killed_by_signal_is_500(shared_provider: ProviderProcess, fn_name: str,
                                 script: Callable[[str, str], str]) -> None:
    shared_provider.deploy(fn_name, script("selfkill", "kill -9 $$\n"))
    resp = shared_provider.invoke(fn_name)
    assert resp.status_code == 500 and resp.text.startswith("signal: killed\n")


def test_missing_executable_is_500(shared_provider: ProviderProcess, fn_name: str) -> None:
    shared_provider.deploy(fn_name, "/nonexistent/bin/fn")
    resp = shared_provider.invoke(fn_name, b"x" * 100_000)
    assert resp.status_code == 500 and resp.text.startswith('exec: "/nonexistent/bin/fn"')
    assert shared_provider.request("GET", "/healthz").status_code == 200


@pytest.mark.parametrize("timeout", ["1", "1s", "800ms"])
def test_exec_timeout_kills_the_process_group(shared_provider: ProviderProcess, fn_name: str,
                                              script: Callable[[str, str], str],
                                              tmp_path: Path, timeout: str) -> None:
    pids = tmp_path / "pids"
    shared_provider.deploy(fn_name, script("slow", f"""
        echo $$ > {pids}
        sleep 60 &
        echo $! >> {pids}
        echo started
        wait
    """), envVars={"exec_timeout": timeout})
    resp = shared_provider.invoke(fn_name, b"")
    assert resp.status_code == 408
    assert resp.text == "Killed process.\n"
    shell, sleeper = (int(p) for p in pids.read_text().split())
    assert wait_dead(shell) and wait_dead(sleeper)


def test_fast_exit_within_timeout(shared_provider: ProviderProcess, fn_name: str) -> None:
    shared_provider.deploy(fn_name, "cat", envVars={"exec_timeout": "30s"})
    assert shared_provider.invoke(fn_name, b"quick").text == "quick"


def test_combine_output_default_true(shared_provider: ProviderProcess, fn_name: str,
                                     script: Callable[[str, str], str]) -> None:
    shared_provider.deploy(fn_name, script("both", "echo to-out\necho to-err >&2\n"))
    resp = shared_provider.invoke(fn_name)
    assert "to-out" in resp.text and "to-err" in resp.text


def test_combine_output_false_logs_stderr(shared_provider: ProviderProcess, fn_name: str,
                                          script: Callable[[str, str], str]) -> None:
    marker = f"err-{uuid.uuid4().hex}"
    shared_provider.deploy(fn_name, script("split", f"echo to-out\necho {marker} >&2\n"),
                           envVars={"combine_output": "false"})
    resp = shared_provider.invoke(fn_name)
    assert resp.text == "to-out\n"
    deadline = time.monotonic() + 10
    while marker not in shared_provider.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"{fn_name}: stderr: {marker}" in shared_provider.log()


def test_cgi_and_function_env(make_provider: Callable[..., ProviderProcess], fn_name: str,
                              script: Callable[[str, str], str]) -> None:
    p = make_provider(auth=("admin", "provider-password"))
    p.deploy(fn_name, script("env", "env\n"), envVars={"MY_VAR": "my value"})
    resp = p.invoke(fn_name, b"abc", path="/some/sub/path?x=1&y=two",
                    headers={"X-Custom-Thing": "custom", "Content-Type": "text/csv",
                             "X-Call-Id": "call-123"})
    env = env_of(resp.text)
    assert env["Http_Method"] == "POST"
    assert env["Http_Path"] == "/some/sub/path"
    assert env["Http_Query"] == "x=1&y=two"
    assert env["Http_X_Custom_Thing"] == "custom"
    assert env["Http_Content_Type"] == "text/csv"
    assert env["Http_Content_Length"] == env["Http_ContentLength"] == "3"
    assert env["Http_X_Call_Id"] == "call-123"
    assert env["Http_Host"].startswith("127.0.0.1:")
    assert "Http_X_Start_Time" in env and env["Http_X_Forwarded_For"] == "127.0.0.1"
    assert env["MY_VAR"] == "my value"
    assert env["fprocess"].startswith("sh ") and env["PATH"]
    assert env["OSCAR_SECRETS_DIR"] == str(secrets_folder(p.data_dir, fn_name))
    # nothing of the provider's own secrets leaks into functions
    assert "provider-password" not in resp.text
    assert "OPENFAAS_PASSWORD" not in env
    assert "Http_Authorization" not in env  # none sent: the call was made as OpenFaaS does
    assert resp.headers["X-Call-Id"] == "call-123"

    bare = env_of(p.invoke(fn_name, method="GET").text)
    assert bare["Http_Path"] == "/" and "Http_Query" not in bare
    assert env_of(p.invoke(fn_name, path="/").text)["Http_Path"] == "/"


def test_content_type(shared_provider: ProviderProcess, fn_name: str) -> None:
    p = shared_provider
    p.deploy(fn_name, "cat")
    assert p.invoke(fn_name, b"{}", headers={"Content-Type": "application/json"}
                    ).headers["Content-Type"] == "application/json"
    assert p.invoke(fn_name, b"x").headers["Content-Type"] == "text/plain"
    forced = f"{fn_name}-forced"
    p.deploy(forced, "cat", envVars={"content_type": "image/png"})
    assert p.invoke(forced, b"x", headers={"Content-Type": "text/csv"}
                    ).headers["Content-Type"] == "image/png"


def test_chunked_request_body(shared_provider: ProviderProcess, fn_name: str,
                              script: Callable[[str, str], str]) -> None:
    shared_provider.deploy(fn_name, script("chunks", """
        cat
        echo
        echo "len=$Http_ContentLength te=$Http_Transfer_Encoding"
    """))

    def parts() -> Iterator[bytes]:
        yield b"first;"
        yield b"second;"
        yield b"x" * 70_000

    resp = shared_provider.invoke(fn_name, parts())
    assert resp.status_code == 200
    body, _, tail = resp.text.rpartition("\n" + "len=")
    assert body == "first;second;" + "x" * 70_000
    assert tail.strip() == "-1 te=chunked"
    # the keep-alive connection is still in sync afterwards
    assert shared_provider.request("GET", "/healthz").status_code == 200


def test_function_that_ignores_stdin(shared_provider: ProviderProcess, fn_name: str,
                                     script: Callable[[str, str], str]) -> None:
    """The rest of the body is drained, so the connection stays usable."""
    shared_provider.deploy(fn_name, script("nostdin", "echo ignored\n"))
    with requests.Session() as session:
        for _ in range(3):
            resp = session.post(f"{shared_provider.url}/function/{fn_name}",
                                data=b"y" * 2_000_000, timeout=60)
            assert resp.status_code == 200 and resp.text == "ignored\n"
            assert session.get(f"{shared_provider.url}/healthz", timeout=10).status_code == 200


def test_large_output(shared_provider: ProviderProcess, fn_name: str,
                      script: Callable[[str, str], str]) -> None:
    """Beyond the in-memory spool the output moves to a temporary file, intact."""
    shared_provider.deploy(fn_name, script("big", "head -c 9000000 /dev/zero\n"))
    resp = shared_provider.invoke(fn_name)
    assert resp.status_code == 200 and resp.content == b"\0" * 9_000_000


def test_stopping_the_provider_kills_running_functions(
        make_provider: Callable[..., ProviderProcess], script: Callable[[str, str], str],
        tmp_path: Path) -> None:
    import threading

    p = make_provider()
    pid_file = tmp_path / "running.pid"
    p.deploy("long-runner", script("long", f"sleep 60 &\necho $! > {pid_file}\nwait\n"))
    caller = threading.Thread(target=lambda: _ignore_errors(p.invoke, "long-runner"))
    caller.start()
    deadline = time.monotonic() + 20
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    p.stop()  # SIGTERM
    assert wait_dead(int(pid_file.read_text()))
    caller.join(30)


def _ignore_errors(fn: Callable[..., object], *args: object) -> None:
    try:
        fn(*args)
    except requests.RequestException:
        pass
