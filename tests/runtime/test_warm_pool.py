"""Warm workers sized to the machine, forked from one setup(), replaced when they misbehave or
outgrow the service's memory: through a real runtime process over real HTTP."""

from __future__ import annotations

import base64
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from oscar_faas.runtime.sizing import cores
from oscar_faas.runtime.worker_io import LINE_DEADLINE
from tests.supervisor.conftest import b64, make_env

from .conftest import RuntimeFactory
from .test_workers import COPY_TO_OUTPUT, WORKER, worker_env

RAW_WORKER = f"{shlex.quote(sys.executable)} " \
             f"{shlex.quote(str(Path(__file__).with_name('raw_worker.py')))}"


def pid_of(res: requests.Response) -> int:
    assert res.status_code == 200, res.text
    return int(base64.b64decode(res.content))


@pytest.mark.skipif(cores() < 2, reason="needs 2 CPUs")
def test_default_workers_follow_the_cpus_and_share_one_setup(runtime: RuntimeFactory,
                                                             tmp_path: Path) -> None:
    """No max_inflight: one worker per CPU (2 here), serving 2 calls at once, and setup()
    ran once for both."""
    marks, setups = tmp_path / "marks", tmp_path / "setups"
    marks.mkdir()
    setups.mkdir()
    rt = runtime(worker_env(tmp_path, MARKS=str(marks), WORKER_SETUP_MARKS=str(setups)))
    assert rt.status()["slots"] >= 2
    with ThreadPoolExecutor(2) as pool:  # "barrier" waits until two calls have started
        answers = list(pool.map(lambda _: requests.post(rt.url, data=b64("barrier"),
                                                        timeout=120), range(2)))
    assert [a.status_code for a in answers] == [200, 200]
    assert len(list(marks.glob("started-*"))) == 2  # two processes, each waited for the other
    assert len(list(setups.iterdir())) == 1  # setup() ran once, in the template
    assert "worker template: " in rt.log() or "forks the workers" in rt.log()


def test_fdl_cpu_caps_the_default(runtime: RuntimeFactory, tmp_path: Path) -> None:
    env = make_env(COPY_TO_OUTPUT, {"cpu": "0.5", "memory": "1Gi"}, tmp_path / "tmp",
                   OSCAR_WORKER=WORKER)
    assert runtime(env).status()["slots"] == 1
    env = make_env(COPY_TO_OUTPUT, {"cpu": "4", "memory": "1Gi"}, tmp_path / "tmp",
                   OSCAR_WORKER=WORKER, max_inflight="3")
    assert runtime(env).status()["slots"] == 3  # max_inflight still decides


def test_a_worker_that_writes_between_calls_is_replaced_without_failing_a_call(
        runtime: RuntimeFactory, tmp_path: Path) -> None:
    rt = runtime(make_env(COPY_TO_OUTPUT, tmpdir=tmp_path / "tmp", OSCAR_WORKER=RAW_WORKER,
                          max_inflight="1"))
    first = pid_of(rt.post(b64("stray")))  # answers, then garbage on its answer pipe
    second = rt.post(b64("pid"))
    assert pid_of(second) != first  # the next call got a fresh worker, and its answer
    assert "between calls: replacing it" in rt.log()
    assert pid_of(rt.post(b64("pid"))) == pid_of(second)


def test_output_before_the_answer_on_its_line_does_not_fail_the_call(
        runtime: RuntimeFactory, tmp_path: Path) -> None:
    rt = runtime(make_env(COPY_TO_OUTPUT, tmpdir=tmp_path / "tmp", OSCAR_WORKER=RAW_WORKER,
                          max_inflight="1"))
    first = pid_of(rt.post(b64("prefix")))  # its answer is still found, then it is replaced
    assert pid_of(rt.post(b64("pid"))) != first
    assert "stray output before its answer" in rt.log()


def test_a_worker_that_exits_between_calls_does_not_fail_the_next_call(
        runtime: RuntimeFactory, tmp_path: Path) -> None:
    rt = runtime(make_env(COPY_TO_OUTPUT, tmpdir=tmp_path / "tmp", OSCAR_WORKER=RAW_WORKER,
                          max_inflight="1"))
    first = pid_of(rt.post(b64("exit")))
    deadline = time.monotonic() + 30
    while Path(f"/proc/{first}/cmdline").exists() and time.monotonic() < deadline:
        if not Path(f"/proc/{first}/cmdline").read_bytes():  # a zombie: it has exited
            break
        time.sleep(0.01)
    assert pid_of(rt.post(b64("pid"))) != first  # a fresh worker, not a 500
    assert "exited between calls: replacing it" in rt.log()


def test_an_answer_without_newline_does_not_hang_the_call(runtime: RuntimeFactory,
                                                          tmp_path: Path) -> None:
    rt = runtime(make_env(COPY_TO_OUTPUT, tmpdir=tmp_path / "tmp", OSCAR_WORKER=RAW_WORKER,
                          max_inflight="1"))  # and no exec_timeout: no limit
    first = pid_of(rt.post(b64("pid")))
    started = time.monotonic()
    res = rt.post(b64("nonewline"))
    assert time.monotonic() - started < 60  # bounded (LINE_DEADLINE), not forever
    assert res.status_code == 500
    assert "broke the protocol: no end of line" in res.text
    assert f"{LINE_DEADLINE:g}s" in res.text
    assert pid_of(rt.post(b64("pid"))) != first  # replaced


@pytest.mark.parametrize("slots", ["1", "2"])
def test_a_leaking_worker_is_held_to_the_service_memory_and_recycled(
        runtime: RuntimeFactory, tmp_path: Path, slots: str) -> None:
    env = make_env(COPY_TO_OUTPUT, {"memory": "200Mi"}, tmp_path / "tmp", OSCAR_WORKER=WORKER,
                   max_inflight=slots)
    rt = runtime(env)
    statuses = []
    for _ in range(12):  # 48 MiB more kept per call: a worker reaches 200 MiB by its 4th
        res = rt.post(b64("leak"))
        statuses.append(res.status_code)
        if res.status_code != 200:
            break
    assert statuses[-1] == 500 and statuses[:-1] == [200] * (len(statuses) - 1)
    assert "ran out of memory: each worker may use 200 MiB (the service's memory)" in res.text
    assert "MemoryError" in res.text
    assert 3 <= len(statuses) <= 4 * int(slots) + 1
    assert rt.post(b64("pid")).status_code == 200  # a fresh worker serves the next call
    rt.wait_ready()  # the replacement is up


def test_a_crashed_forked_worker_is_forked_again_without_a_new_setup(runtime: RuntimeFactory,
                                                                     tmp_path: Path) -> None:
    setups = tmp_path / "setups"
    setups.mkdir()
    rt = runtime(worker_env(tmp_path, max_inflight="2", WORKER_SETUP_MARKS=str(setups)))
    assert rt.post(b64("crash now")).status_code == 500
    assert {rt.post(b64("pid")).status_code for _ in range(4)} == {200}
    assert len(list(setups.iterdir())) == 1
    assert rt.log().count("started by the template") == 3  # two, then the replacement


def test_fork_can_be_turned_off(runtime: RuntimeFactory, tmp_path: Path) -> None:
    setups = tmp_path / "setups"
    setups.mkdir()
    rt = runtime(worker_env(tmp_path, max_inflight="2", WORKER_SETUP_MARKS=str(setups),
                            OSCAR_WORKER_FORK="false"))
    assert pid_of(rt.post(b64("pid")))
    assert len(list(setups.iterdir())) == 2  # each worker ran its own setup()
    assert "worker template" not in rt.log()
