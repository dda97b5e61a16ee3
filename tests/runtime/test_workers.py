"""Warm workers (``OSCAR_WORKER``, line protocol v1) through a real runtime process."""

from __future__ import annotations

import base64
import re
import shlex
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.supervisor.conftest import b64, make_env

from .conftest import RuntimeFactory, started_marks, wait_for

WORKER = f"{shlex.quote(sys.executable)} {shlex.quote(str(Path(__file__).with_name('worker_app.py')))}"
COPY_TO_OUTPUT = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/result.bin"\n'
SEVERAL_SCRIPT = ('printf one > "$TMP_OUTPUT_DIR/a.txt"\nmkdir -p "$TMP_OUTPUT_DIR/sub"\n'
                  'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/sub/c.bin"\n')


def worker_env(tmp_path: Path, script: str = COPY_TO_OUTPUT, **extra: str) -> dict[str, str]:
    return make_env(script, tmpdir=tmp_path / "tmp", OSCAR_WORKER=WORKER, **extra)


def test_worker_gives_the_same_answers_as_the_script(runtime: RuntimeFactory,
                                                     tmp_path: Path) -> None:
    bodies = [b64(b"\x00\x01 binary"), b'{"json": [1, 2]}', base64.encodebytes(b"x" * 500_000)]
    for script, extra in ((COPY_TO_OUTPUT, {}), (SEVERAL_SCRIPT, {"WORKER_MODE": "several"})):
        plain = runtime(make_env(script, tmpdir=tmp_path / "tmp"))
        warm = runtime(worker_env(tmp_path, script, **extra))
        for body in bodies:
            expected, got = plain.post(body), warm.post(body)
            assert (got.status_code, got.content) == (expected.status_code, expected.content)
            assert got.status_code == 200
    assert "worker 0: ready" in warm.log()


def test_invalid_input_is_a_400_before_the_worker(runtime: RuntimeFactory, tmp_path: Path) -> None:
    rt = runtime(worker_env(tmp_path))
    res = rt.post(b"not%base64")
    assert res.status_code == 400 and res.text.startswith("invalid base64 input")


def test_no_output_file_gives_an_empty_body(runtime: RuntimeFactory, tmp_path: Path) -> None:
    rt = runtime(worker_env(tmp_path))
    res = rt.post(b64("pid"))  # writes pid.txt: one output
    assert res.status_code == 200 and base64.b64decode(res.content).isdigit()


def test_handler_error_is_a_500_and_the_worker_goes_on(runtime: RuntimeFactory,
                                                       tmp_path: Path) -> None:
    rt = runtime(worker_env(tmp_path, max_inflight="1"))
    pid = rt.post(b64("pid")).content
    res = rt.post(b64("fail now"))
    assert res.status_code == 500
    assert res.text == "ValueError: bad input\n"
    assert rt.post(b64("pid")).content == pid  # the same process


def test_stdout_noise_does_not_corrupt_the_protocol(runtime: RuntimeFactory,
                                                    tmp_path: Path) -> None:
    rt = runtime(worker_env(tmp_path))
    body = b64("noise and data")
    res = rt.post(body)
    assert (res.status_code, res.content) == (200, body.encode() + b"\n")
    # the worker's output reaches the log through its own pipe, not always before the answer
    wait_for(lambda: "raw fd 1 noise" in rt.log(), "the worker's output in the log", 10)
    assert re.search(r"worker \d: lots of noise", rt.log()) and "raw fd 1 noise" in rt.log()
    assert "setup: loading the model" in rt.log()


@pytest.mark.parametrize("slots", ["1", "2"])
def test_crashed_worker_fails_the_call_and_is_replaced(runtime: RuntimeFactory,
                                                       tmp_path: Path, slots: str) -> None:
    rt = runtime(worker_env(tmp_path, max_inflight=slots))
    pid = rt.post(b64("pid")).content
    assert rt.post(b64("pid")).content == pid  # the last idle worker is taken first
    res = rt.post(b64("crash now"))  # that one crashes
    assert res.status_code == 500
    assert "exited during the call (exit status 3)" in res.text
    assert "about to crash" in res.text  # the tail of its output
    answers = [rt.post(b64("pid")) for _ in range(3)]
    assert [a.status_code for a in answers] == [200] * 3
    assert pid not in {a.content for a in answers}  # it was replaced
    rt.wait_ready()


def test_worker_exec_timeout_is_a_504_and_it_is_replaced(runtime: RuntimeFactory,
                                                         tmp_path: Path) -> None:
    rt = runtime(worker_env(tmp_path, exec_timeout="1s", max_inflight="1"))
    pid = rt.post(b64("pid")).content
    res = rt.post(b64("hang"))
    assert res.status_code == 504
    assert "exec_timeout (1s) reached" in res.text and "hanging now" in res.text
    after = rt.post(b64("pid"))
    assert after.status_code == 200 and after.content != pid


def test_readiness_waits_for_the_workers(runtime: RuntimeFactory, tmp_path: Path) -> None:
    gate = tmp_path / "model-loaded"
    rt = runtime(worker_env(tmp_path, WORKER_SETUP_GATE=str(gate), max_inflight="2"),
                 ready=False)
    wait_for(lambda: rt.log().count(": started [") == 1,
             "the worker that runs setup() to start")
    assert rt.health() == 503
    assert rt.status()["ready"] is False
    with ThreadPoolExecutor(1) as pool:
        early = pool.submit(requests.post, rt.url, data=b64("early"), timeout=120)
        gate.touch()
        rt.wait_ready()
        assert early.result().status_code == 200  # a call before ready waits for a worker
    assert rt.log().count("ready") >= 2


def test_one_worker_per_slot_serving_in_parallel(runtime: RuntimeFactory, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    rt = runtime(worker_env(tmp_path, max_inflight="2", MARKS=str(marks)))
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: requests.post(rt.url, data=b64("barrier"), timeout=120),
                                range(2)))
    assert [a.status_code for a in answers] == [200, 200]
    assert started_marks(marks) == 2  # two processes, each waited for the other


def test_worker_that_exits_in_setup_is_never_ready(runtime: RuntimeFactory,
                                                   tmp_path: Path) -> None:
    rt = runtime(worker_env(tmp_path, WORKER_EXIT_IN_SETUP="1"), ready=False)
    wait_for(lambda: "could not start" in rt.log(), "the worker to fail")
    assert rt.health() == 503
    res = rt.post(b64("x"))
    assert res.status_code == 503
    assert "exited before it was ready" in res.text and "the model file is missing" in res.text


def test_worker_command_that_does_not_exist(runtime: RuntimeFactory, tmp_path: Path) -> None:
    env = make_env("true", tmpdir=tmp_path / "tmp", OSCAR_WORKER="/nonexistent/worker --flag")
    rt = runtime(env, ready=False)
    wait_for(lambda: "could not start" in rt.log(), "the worker to fail")
    res = rt.post(b64("x"))
    assert res.status_code == 503 and "cannot start worker '/nonexistent/worker'" in res.text


def test_worker_in_another_language(runtime: RuntimeFactory, tmp_path: Path) -> None:
    bash_worker = Path(__file__).with_name("bash_worker.sh")
    env = make_env(COPY_TO_OUTPUT, tmpdir=tmp_path / "tmp",
                   OSCAR_WORKER=f"/bin/bash {shlex.quote(str(bash_worker))}")
    rt = runtime(env)
    for body, expected in ((b64(b"\x00\x01 binary"), b"\x00\x01 binary"),
                           ('{"json": true}', b'{"json": true}')):
        res = rt.post(body)
        assert res.status_code == 200
        assert base64.b64decode(res.content[:-1], validate=True) == expected
    wait_for(lambda: "bash worker: call" in rt.log(), "the worker's output in the log", 10)
    assert re.search(r"worker \d: bash worker: call", rt.log())


#: The runtime on a kernel without pidfd (Linux < 5.3): ``os.pidfd_open`` removed before start.
NO_PIDFD = [sys.executable, "-c",
            "import os, runpy, sys; del os.pidfd_open; sys.argv[0] = 'runtime'; "
            "runpy.run_module('oscar_faas.runtime', run_name='__main__')"]


def test_without_pidfd_crash_and_timeouts_still_work(runtime: RuntimeFactory,
                                                     tmp_path: Path) -> None:
    rt = runtime(worker_env(tmp_path, exec_timeout="1s"), command=NO_PIDFD)
    assert rt.post(b64("crash now")).status_code == 500
    assert rt.post(b64("hang")).status_code == 504
    assert rt.post(b64("pid")).status_code == 200
    script = runtime(make_env("exec sleep 600", tmpdir=tmp_path / "tmp2", exec_timeout="1s"),
                     command=NO_PIDFD)
    assert script.post(b64("x")).status_code == 408


def test_a_warm_worker_keeps_its_heap_between_calls(runtime: RuntimeFactory,
                                                    tmp_path: Path) -> None:
    """A model's per-call buffers are not given back and faulted in again at every call
    (glibc's defaults trim the heap after each: thousands of page faults per call); a
    service that sets glibc's malloc itself keeps its own settings."""
    import json

    from oscar_faas.runtime.worker_process import WARM_HEAP

    rt = runtime(worker_env(tmp_path, max_inflight="1"))
    answers = [json.loads(base64.b64decode(rt.post(b64("heap")).content)) for _ in range(3)]
    assert answers[-1]["malloc"] == WARM_HEAP
    assert answers[-1]["faults"] < 500, answers  # 16 MiB written: 4,096 pages if faulted in

    own = runtime(worker_env(tmp_path, max_inflight="1", MALLOC_ARENA_MAX="2"))
    answer = json.loads(base64.b64decode(own.post(b64("heap")).content))
    assert answer["malloc"] == {"MALLOC_ARENA_MAX": "2"}
