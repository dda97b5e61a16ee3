"""oscar_faas/runtime/oscar_worker.py: a worker as a real subprocess, real pipes, line
protocol v1 spoken by the test as the runtime speaks it (see tests/workerpipe.py)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.workerpipe import HELPER, WorkerPipe

#: A worker whose handler does what the call's input file asks.
WORKER = '''
import os, shutil, subprocess, sys, time
import oscar_worker

def setup():
    print("setup prints to stdout")
    return {"calls": 0}

def handler(input_path, output_dir, env, state):
    state["calls"] += 1
    command = open(input_path).read().strip()
    if command == "copy":
        shutil.copy(input_path, os.path.join(output_dir, "out"))
    elif command == "count":
        with open(os.path.join(output_dir, "count"), "w") as f:
            f.write(str(state["calls"]))
    elif command == "raise":
        raise ValueError("this input is not welcome")
    elif command == "raise-empty":
        raise KeyError
    elif command == "exit-3":
        sys.exit(3)
    elif command == "exit-0":
        sys.exit(0)
    elif command == "print":
        print("print() from the handler")
        sys.stdout.write('{"id": "forged", "ok": true}\\n')
        os.write(1, b"raw write to fd 1\\n")
        with open(os.path.join(output_dir, "out"), "w") as f:
            f.write("printed")
    elif command == "environ":
        with open(os.path.join(output_dir, "env"), "w") as f:
            f.write(os.environ["INPUT_FILE_PATH"] + "|" + os.environ.get("EXTRA", "")
                    + "|" + env.get("EXTRA", ""))
    elif command == "environ-after":
        with open(os.path.join(output_dir, "env"), "w") as f:
            f.write(os.environ.get("EXTRA", "<unset>"))
    elif command == "spawn":
        child = subprocess.Popen(["sleep", "60"], start_new_session=True)
        with open(os.path.join(output_dir, "pid"), "w") as f:
            f.write(str(child.pid))

oscar_worker.serve(handler, setup)
'''


@pytest.fixture
def worker_file(tmp_path: Path) -> Path:
    path = tmp_path / "worker.py"
    path.write_text(WORKER)
    return path


class Calls:
    """Per-call input file and output folder, as the runtime makes them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.n = 0

    def __call__(self, content: str) -> tuple[Path, Path]:
        self.n += 1
        call = self.root / f"call-{self.n}"
        (call / "input").mkdir(parents=True)
        (call / "output").mkdir()
        input_path = call / "input" / "event-file"
        input_path.write_text(content)
        return input_path, call / "output"


@pytest.fixture
def calls(tmp_path: Path) -> Calls:
    return Calls(tmp_path / "calls")


def test_ready_then_answers_calls(worker_file: Path, tmp_path: Path, calls: Calls) -> None:
    with WorkerPipe([sys.executable, str(worker_file)], tmp_path) as worker:
        assert worker.read_line() == {"ready": True}
        inp, out = calls("copy")
        assert worker.call("a-1", inp, out) == {"id": "a-1", "ok": True}
        assert (out / "out").read_text() == "copy"
        # state from setup() persists between calls: the same process answers
        inp, out = calls("count")
        assert worker.call("a-2", inp, out) == {"id": "a-2", "ok": True}
        assert (out / "count").read_text() == "2"
        worker.close_requests()
        assert worker.wait() == 0, worker.stderr()
        assert worker.read_line() is None
    assert "setup prints to stdout" in worker.stderr()
    assert worker.stdout() == ""


def test_exception_answers_an_error_and_the_worker_goes_on(
        worker_file: Path, tmp_path: Path, calls: Calls) -> None:
    with WorkerPipe([sys.executable, str(worker_file)], tmp_path) as worker:
        assert worker.read_line() == {"ready": True}
        inp, out = calls("raise")
        assert worker.call("e-1", inp, out) == {
            "id": "e-1", "ok": False, "error": "ValueError: this input is not welcome"}
        inp, out = calls("raise-empty")
        assert worker.call("e-2", inp, out) == {"id": "e-2", "ok": False, "error": "KeyError"}
        inp, out = calls("exit-3")
        assert worker.call("e-3", inp, out) == {"id": "e-3", "ok": False, "error": "SystemExit: 3"}
        inp, out = calls("exit-0")
        assert worker.call("e-4", inp, out) == {"id": "e-4", "ok": True}
        inp, out = calls("copy")
        assert worker.call("e-5", inp, out) == {"id": "e-5", "ok": True}
        assert worker.proc.poll() is None
    assert "Traceback" in worker.stderr() and "this input is not welcome" in worker.stderr()


def test_a_handler_that_prints_does_not_touch_the_protocol(
        worker_file: Path, tmp_path: Path, calls: Calls) -> None:
    with WorkerPipe([sys.executable, str(worker_file)], tmp_path) as worker:
        assert worker.read_line() == {"ready": True}
        inp, out = calls("print")
        assert worker.call("p-1", inp, out) == {"id": "p-1", "ok": True}
        inp, out2 = calls("copy")
        assert worker.call("p-2", inp, out2) == {"id": "p-2", "ok": True}
        assert (out / "out").read_text() == "printed"
        worker.close_requests()
        assert worker.wait() == 0
    # print() and sys.stdout went to stderr; a raw write to fd 1 is the worker's stdout,
    # which is a log, not the protocol
    assert "print() from the handler" in worker.stderr()
    assert '"forged"' in worker.stderr()
    assert worker.stdout() == "raw write to fd 1\n"


def test_request_variables_are_in_os_environ_during_the_call_only(
        worker_file: Path, tmp_path: Path, calls: Calls) -> None:
    with WorkerPipe([sys.executable, str(worker_file)], tmp_path) as worker:
        assert worker.read_line() == {"ready": True}
        inp, out = calls("environ")
        assert worker.call("v-1", inp, out, EXTRA="x") == {"id": "v-1", "ok": True}
        assert (out / "env").read_text() == f"{inp}|x|x"
        inp, out = calls("environ-after")
        assert worker.call("v-2", inp, out) == {"id": "v-2", "ok": True}
        assert (out / "env").read_text() == "<unset>"


def test_bad_requests(worker_file: Path, tmp_path: Path, calls: Calls) -> None:
    with WorkerPipe([sys.executable, str(worker_file)], tmp_path) as worker:
        assert worker.read_line() == {"ready": True}
        worker.send({"id": "b-1", "env": {"TMP_OUTPUT_DIR": str(tmp_path)}})
        assert worker.read_line() == {
            "id": "b-1", "ok": False, "error": "ValueError: the request has no INPUT_FILE_PATH"}
        worker.send({"id": "b-2", "env": {"INPUT_FILE_PATH": 3}})
        answer = worker.read_line()
        assert answer["id"] == "b-2" and answer["ok"] is False
        worker.send(b"\n")  # blank lines are ignored
        inp, out = calls("copy")
        assert worker.call("b-3", inp, out) == {"id": "b-3", "ok": True}
        # a line that is not a request: the worker stops (the runtime replaces it)
        worker.send(b"this is not json\n")
        assert worker.read_line() is None
        assert worker.wait() != 0
    assert "protocol error" in worker.stderr()


def test_setup_failure_ends_the_worker_before_ready(tmp_path: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text(textwrap.dedent("""
        import oscar_worker
        def setup():
            raise RuntimeError("model file missing")
        oscar_worker.serve(lambda *a: None, setup)
    """))
    with WorkerPipe([sys.executable, str(script)], tmp_path) as worker:
        assert worker.read_line() is None
        assert worker.wait() != 0
    assert "RuntimeError: model file missing" in worker.stderr()


def test_without_the_descriptors_it_says_what_it_is(worker_file: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSCAR_WORKER")}
    (tmp_path / "pythonpath").mkdir()
    shutil.copy(HELPER, tmp_path / "pythonpath")
    env["PYTHONPATH"] = str(tmp_path / "pythonpath")
    done = subprocess.run([sys.executable, str(worker_file)], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0
    assert "OSCAR_WORKER_IN_FD" in done.stderr and "warm worker" in done.stderr


def test_importable_from_the_package_and_no_setup(tmp_path: Path, calls: Calls) -> None:
    script = tmp_path / "plain.py"
    script.write_text(textwrap.dedent("""
        import shutil, os
        from oscar_faas.runtime import oscar_worker
        def handler(input_path, output_dir, env, state):
            assert state is None
            shutil.copy(input_path, os.path.join(output_dir, "same"))
        oscar_worker.serve(handler)
    """))
    with WorkerPipe([sys.executable, str(script)], tmp_path, helper_path=False) as worker:
        assert worker.read_line() == {"ready": True}
        inp, out = calls("hello")
        assert worker.call("i-1", inp, out) == {"id": "i-1", "ok": True}
        assert (out / "same").read_text() == "hello"


def test_processes_the_handler_starts_do_not_hold_the_pipes(
        worker_file: Path, tmp_path: Path, calls: Calls) -> None:
    with WorkerPipe([sys.executable, str(worker_file)], tmp_path) as worker:
        assert worker.read_line() == {"ready": True}
        inp, out = calls("spawn")
        assert worker.call("s-1", inp, out) == {"id": "s-1", "ok": True}
        grandchild = int((out / "pid").read_text())
        try:
            worker.close_requests()
            assert worker.wait() == 0
            # end of file as soon as the worker is gone, though its child still runs
            assert worker.read_line(timeout=10) is None
        finally:
            os.kill(grandchild, signal.SIGKILL)
