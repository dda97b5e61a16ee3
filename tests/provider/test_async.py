"""The embedded provider's ``/async-function/<name>``, against a callback receiver that records
exactly what it gets (pytest-httpserver): OpenFaaS's contract (202 + ``X-Call-Id``, the
callback's headers), a redelivered call run once, each function's own concurrency, and the
queue on disk across a restart."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Callable

import pytest

from .conftest import ProviderProcess

CALLBACK = re.compile(r"/cb/.*")


@pytest.fixture
def receiver(httpserver):
    httpserver.expect_request(CALLBACK).respond_with_data("", 204)
    return httpserver


def callbacks(receiver, count: int, timeout: float = 30, final: bool = True) -> list:
    """The callback requests once ``count`` of them (final answers only, unless not
    ``final``) have come."""
    deadline = time.monotonic() + timeout
    while True:
        got = [req for req, _ in receiver.log if req.path.startswith("/cb/")
               and (not final or "X-Function-Status" in req.headers)]
        if len(got) >= count or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def submit(p: ProviderProcess, receiver, name: str, call_id: str, data: bytes = b"",
           path: str = "") -> None:
    resp = p.request("POST", f"/async-function/{name}{path}", data=data, headers={
        "X-Call-Id": call_id, "X-Callback-Url": receiver.url_for(f"/cb/{call_id}")})
    assert resp.status_code == 202 and resp.content == b""
    assert resp.headers["X-Call-Id"] == call_id


def test_async_call_and_its_callback(make_provider, script, receiver) -> None:
    p = make_provider()
    p.deploy("echoer", script("echoer", 'printf "%s %s " "$Http_Path" "$Http_Query"; cat\n'),
             envVars={"combine_output": "false"})
    submit(p, receiver, "echoer", "call-1", b"hello", path="/sub?x=1")
    (done,) = callbacks(receiver, 1)
    assert done.path == "/cb/call-1" and done.get_data() == b"/sub x=1 hello"
    assert done.headers["X-Function-Status"] == "200"
    assert done.headers["X-Function-Name"] == "echoer"
    assert done.headers["X-Call-Id"] == "call-1"
    assert float(done.headers["X-Duration-Seconds"]) > 0
    # the start was announced first, with no body (the gateway shows the job Running)
    (started,) = [r for r in callbacks(receiver, 2, final=False)
                  if "X-Oscar-Faas-Job-Event" in r.headers]
    assert started.headers["X-Oscar-Faas-Job-Event"] == "started"
    assert started.get_data() == b""
    # without X-Call-Id one is made and answered; an unknown function fails in the callback
    resp = p.request("POST", "/async-function/echoer", data=b"x")
    assert resp.status_code == 202 and resp.headers["X-Call-Id"]
    submit(p, receiver, "ghost", "call-ghost")
    ghost = [r for r in callbacks(receiver, 2) if r.path == "/cb/call-ghost"]
    assert ghost and ghost[0].headers["X-Function-Status"] == "404"


def test_failing_function_reports_its_status_and_output(make_provider, script,
                                                        receiver) -> None:
    p = make_provider()
    p.deploy("failer", script("failer", 'echo "bad input" >&2\nexit 3\n'))
    submit(p, receiver, "failer", "fail-1", b"x")
    (done,) = callbacks(receiver, 1)
    assert done.headers["X-Function-Status"] == "500"
    assert b"bad input" in done.get_data()


def test_a_redelivered_call_runs_once(make_provider, script, receiver,
                                      tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    p = make_provider()
    p.deploy("counter", script("counter", f'echo run >> {runs}\nsleep 0.5\necho ok\n'))
    for _ in range(3):  # while it is queued or running
        submit(p, receiver, "counter", "same-call")
    callbacks(receiver, 1)
    submit(p, receiver, "counter", "same-call")  # after it is done
    time.sleep(1.0)
    assert runs.read_text() == "run\n"
    assert len(callbacks(receiver, 2, timeout=0)) == 1


def _max_overlap(log: Path) -> int:
    """Most runs at once, from ``start``/``end`` lines in the order they were written."""
    running = most = 0
    for line in log.read_text().split():
        running += 1 if line == "start" else -1
        most = max(most, running)
    return most


def test_each_function_has_its_own_concurrency(make_provider, script, receiver,
                                               tmp_path: Path) -> None:
    p = make_provider()
    slow_log, wide_log = tmp_path / "slow.log", tmp_path / "wide.log"
    p.deploy("slow", script("slow", f"echo start >> {slow_log}\nsleep 0.6\n"
                                    f"echo end >> {slow_log}\n"),
             envVars={"max_inflight": "1"})
    p.deploy("wide", script("wide", f"echo start >> {wide_log}\nsleep 0.6\n"
                                    f"echo end >> {wide_log}\n"),
             envVars={"max_inflight": "3"})
    for i in range(3):
        submit(p, receiver, "slow", f"slow-{i}")
    for i in range(3):
        submit(p, receiver, "wide", f"wide-{i}")
    done = callbacks(receiver, 6)
    assert {r.headers["X-Function-Status"] for r in done} == {"200"}
    assert _max_overlap(slow_log) == 1
    assert _max_overlap(wide_log) == 3  # not held behind slow's queue
    order = [r.path for r in done]
    assert order.index("/cb/wide-2") < order.index("/cb/slow-1")


def test_queued_jobs_survive_a_restart(make_provider: Callable[..., ProviderProcess], script,
                                       receiver, tmp_path: Path) -> None:
    """Queued jobs run after a restart; the one that was running is not run again (OSCAR's
    jobs have no retries) but reported failed; every job is called back once."""
    runs = tmp_path / "runs"
    p = make_provider()
    p.deploy("lengthy", script("lengthy", f'echo "$(cat)" >> {runs}\nsleep 1\necho ok\n'),
             envVars={"max_inflight": "1"})
    for i in range(3):
        submit(p, receiver, "lengthy", f"job-{i}", f"in-{i}".encode())
    deadline = time.monotonic() + 10
    while not (runs.exists() and runs.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    p.restart()
    done = {r.path: r for r in callbacks(receiver, 3)}
    assert set(done) == {"/cb/job-0", "/cb/job-1", "/cb/job-2"}
    assert done["/cb/job-0"].headers["X-Function-Status"] == "503"
    assert b"not run again" in done["/cb/job-0"].get_data()
    assert [done[f"/cb/job-{i}"].headers["X-Function-Status"] for i in (1, 2)] == ["200"] * 2
    assert runs.read_text().split() == ["in-0", "in-1", "in-2"]
    assert not [f for f in (p.data_dir / "async").iterdir() if f.name != "done"]


def test_a_bad_callback_url_is_refused_and_queued_calls_are_private(make_provider, script,
                                                                       receiver) -> None:
    p = make_provider()
    resp = p.request("POST", "/async-function/anything", data=b"x",
                     headers={"X-Callback-Url": "not a url"})
    assert resp.status_code == 400 and "X-Callback-Url" in resp.text
    p.deploy("holder", script("holder", "sleep 1\n"), envVars={"max_inflight": "1"})
    submit(p, receiver, "holder", "first")
    submit(p, receiver, "holder", "second", b"secret input")
    queued = [f for f in (p.data_dir / "async").iterdir() if f.is_file()]
    assert queued and all(f.stat().st_mode & 0o077 == 0 for f in queued)
    assert len(callbacks(receiver, 2)) == 2


def test_a_callback_the_gateway_cannot_take_yet_is_tried_again(make_provider, script,
                                                               httpserver) -> None:
    """A gateway restarting (503s) gets the answer once it is back; nothing runs twice."""
    from werkzeug import Response as WResponse
    answers_seen = []

    def gateway(request):  # 503 to the first two answers, as a gateway restarting
        if "X-Function-Status" not in request.headers:
            return WResponse("", 204)  # the start event
        answers_seen.append(request)
        return WResponse("restarting", 503) if len(answers_seen) <= 2 else WResponse("", 204)

    httpserver.expect_request("/cb/later", method="POST").respond_with_handler(gateway)
    p = make_provider()
    p.deploy("later", script("later", "echo done\n"))
    resp = p.request("POST", "/async-function/later", data=b"", headers={
        "X-Call-Id": "later", "X-Callback-Url": httpserver.url_for("/cb/later")})
    assert resp.status_code == 202
    deadline = time.monotonic() + 20
    while len(answers_seen) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert len(answers_seen) == 3
    assert {r.get_data() for r in answers_seen} == {b"done\n"}
    assert not [f for f in (p.data_dir / "async").iterdir() if f.name != "done"]


def test_done_call_ids_are_forgotten_after_a_day(tmp_path: Path) -> None:
    import os

    from oscar_faas.provider.async_calls import DONE_KEPT, AsyncQueue
    done = tmp_path / "async" / "done"
    done.mkdir(parents=True)
    old, recent = done / "old", done / "recent"
    old.touch()
    recent.touch()
    past = time.time() - DONE_KEPT - 60
    os.utime(old, (past, past))
    queue = AsyncQueue(tmp_path, lambda name: 1)
    queue.start("http://127.0.0.1:9")
    try:
        assert sorted(p.name for p in done.iterdir()) == ["recent"]
    finally:
        queue.close()
