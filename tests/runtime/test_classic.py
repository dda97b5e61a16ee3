"""The runtime's classic-watchdog mode (``OSCAR_RUNTIME_CLASSIC`` + ``fprocess``), through a
real runtime process over real HTTP: what the embedded provider proxies a faas-cli function
to."""

from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import requests

from tests.provider.test_watchdog import env_of, wait_dead

from .conftest import RuntimeFactory, wait_for


def classic(fprocess: str, **env: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OSCAR_RUNTIME_CLASSIC": "true",
            "fprocess": fprocess, **env}


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / f"fn-{uuid.uuid4().hex[:8]}.sh"
    path.write_text(body)
    return f"sh {path}"


def test_stdout_is_the_answer_with_cgi_variables(runtime: RuntimeFactory,
                                                  tmp_path: Path) -> None:
    rt = runtime(classic(script(tmp_path, "env\necho ---\ncat\n"), MY_VAR="mine"))
    resp = rt.post(b"the body", path="/sub/path?x=1",
                   headers={"Content-Type": "text/csv", "X-Custom": "c"})
    assert resp.status_code == 200
    head, _, body = resp.text.partition("---\n")
    assert body == "the body"
    env = env_of(head)
    assert env["Http_Method"] == "POST" and env["Http_Path"] == "/sub/path"
    assert env["Http_Query"] == "x=1" and env["Http_X_Custom"] == "c"
    assert env["Http_Content_Length"] == env["Http_ContentLength"] == "8"
    assert env["MY_VAR"] == "mine" and env["fprocess"].startswith("sh ")
    assert "OSCAR_RUNTIME_CLASSIC" not in env  # the runtime's switch, not the function's
    assert resp.headers["Content-Type"] == "text/csv"
    assert int(resp.headers["Content-Length"]) == len(resp.content)
    timing = resp.headers["Server-Timing"]
    assert "queue;dur=" in timing and "script;dur=" in timing
    assert "classic watchdog: sh " in rt.log()


def test_content_type_rule(runtime: RuntimeFactory) -> None:
    plain = runtime(classic("cat"))
    assert plain.post(b"x").headers["Content-Type"] == "text/plain"
    forced = runtime(classic("cat", content_type="image/png"))
    assert forced.post(b"x", headers={"Content-Type": "text/csv"}
                       ).headers["Content-Type"] == "image/png"


def test_failures_keep_the_watchdog_answers(runtime: RuntimeFactory, tmp_path: Path) -> None:
    failing = runtime(classic(script(tmp_path, "echo partial output\nexit 3\n")))
    resp = failing.post(b"in")
    assert resp.status_code == 500 and resp.text == "exit status 3\npartial output\n"
    killed = runtime(classic(script(tmp_path, "kill -9 $$\n")))
    resp = killed.post(b"")
    assert resp.status_code == 500 and resp.text.startswith("signal: killed\n")
    bad_input = runtime(classic(script(tmp_path, "echo not base64\nexit 65\n")))
    resp = bad_input.post(b"")
    assert resp.status_code == 400 and resp.text == "not base64\n"
    missing = runtime(classic("/nonexistent/bin/fn"))
    resp = missing.post(b"x" * 100_000)
    assert resp.status_code == 500 and resp.text.startswith('exec: "/nonexistent/bin/fn"')
    assert missing.post(b"again").status_code == 500  # and the connection goes on


def test_exec_timeout_kills_the_process_tree(runtime: RuntimeFactory, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    rt = runtime(classic(script(tmp_path, f"echo $$ > {pids}\nsleep 60 &\necho $! >> {pids}\n"
                                          "wait\n"), exec_timeout="800ms"))
    resp = rt.post(b"")
    assert resp.status_code == 408 and resp.text == "Killed process.\n"
    shell, sleeper = (int(p) for p in pids.read_text().split())
    assert wait_dead(shell) and wait_dead(sleeper)


def test_full_queue_is_the_watchdog_429(runtime: RuntimeFactory, tmp_path: Path) -> None:
    started, go = tmp_path / "started", tmp_path / "go"
    rt = runtime(classic(script(tmp_path, f"touch {started}\n"
                                          f"while [ ! -f {go} ]; do sleep 0.02; done\n"
                                          "echo done\n"), max_inflight="1", max_queue="0"))
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(requests.post, rt.url + "/", data=b"", timeout=60)
        wait_for(started.exists, "the first call to start")
        rejected = requests.post(rt.url + "/", data=b"", timeout=60)
        assert rejected.status_code == 429
        assert rejected.text == ("Concurrent request limit exceeded. Max concurrent requests: "
                                 "1\n")
        go.touch()
        assert first.result().status_code == 200
    assert rt.status()["slots"] == 1


def test_combine_output_false_logs_stderr(runtime: RuntimeFactory, tmp_path: Path) -> None:
    marker = f"err-{uuid.uuid4().hex}"
    rt = runtime(classic(script(tmp_path, f"echo to-out\necho {marker} >&2\n"),
                         combine_output="false"))
    assert rt.post(b"").text == "to-out\n"
    wait_for(lambda: f"stderr: {marker}" in rt.log(), "the stderr line in the log")


def test_chunked_body_and_large_output(runtime: RuntimeFactory, tmp_path: Path) -> None:
    """A chunked body streams to stdin; an output beyond the memory spool comes back whole,
    with its length."""
    rt = runtime(classic(script(tmp_path, 'cat\nhead -c 6000000 /dev/zero\n'
                                          'echo "len=$Http_ContentLength"\n')))

    def parts() -> Iterator[bytes]:
        yield b"first;"
        yield b"y" * 70_000

    resp = rt.post(parts())  # type: ignore[arg-type]
    assert resp.status_code == 200
    assert int(resp.headers["Content-Length"]) == len(resp.content)
    assert resp.content == b"first;" + b"y" * 70_000 + b"\0" * 6_000_000 + b"len=-1\n"


def test_stopping_the_runtime_kills_running_calls(runtime: RuntimeFactory,
                                                  tmp_path: Path) -> None:
    pid_file = tmp_path / "running.pid"
    rt = runtime(classic(script(tmp_path, f"sleep 60 &\necho $! > {pid_file}\nwait\n")))
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(lambda: _ignore_errors(rt.post, b""))
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), "the call")
        started = time.monotonic()
        rt.stop()
        assert wait_dead(int(pid_file.read_text()))
        assert time.monotonic() - started < 30
        call.result(60)


def _ignore_errors(fn, *args):  # type: ignore[no-untyped-def]
    try:
        return fn(*args)
    except requests.RequestException:
        return None
