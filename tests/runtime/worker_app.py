"""A warm worker for the tests, run as ``python worker_app.py`` (``OSCAR_WORKER``).

It does what ``COPY_TO_OUTPUT`` does (copy the input into ``result.bin``), or, with
``WORKER_MODE=several``, what ``SEVERAL_SCRIPT`` does; inputs with a magic first word make it
misbehave: ``crash`` (exit mid-call), ``fail`` (raise), ``noise`` (print, even fake protocol
lines, to stdout), ``hang`` (never answer), ``barrier`` (wait until two calls have started),
``pid`` (answer with its pid), ``heap`` (allocate, write and free 16 MiB; answer
the page faults that took and the worker's ``MALLOC_*`` env), ``leak`` (keep 48 MiB more after each call).
``WORKER_SETUP_GATE`` makes setup wait for a file; ``WORKER_EXIT_IN_SETUP`` makes it exit
instead; ``WORKER_SETUP_MARKS`` is a folder where each run of setup leaves a file.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import oscar_worker


def setup() -> dict:
    print("setup: loading the model (stdout during setup)")
    if os.environ.get("WORKER_EXIT_IN_SETUP"):
        print("setup: the model file is missing", file=sys.stderr)
        sys.exit(4)
    marks = os.environ.get("WORKER_SETUP_MARKS")
    if marks:
        Path(marks, f"setup-{os.getpid()}").touch()
    gate = os.environ.get("WORKER_SETUP_GATE")
    while gate and not os.path.exists(gate):
        time.sleep(0.01)
    return {"loaded": True, "leak": []}


def handler(input_path: str, output_dir: str, env: dict, state: dict) -> None:
    assert state["loaded"] is True
    assert os.environ["INPUT_FILE_PATH"] == input_path == env["INPUT_FILE_PATH"]
    data = Path(input_path).read_bytes()
    word = data.split(b" ")[0]
    if word == b"crash":
        print("about to crash", file=sys.stderr, flush=True)
        os._exit(3)
    if word == b"fail":
        raise ValueError("bad input")
    if word == b"noise":
        print('{"id": "' + env.get("Http_X_Fake_Id", "") + '", "ok": false, "error": "fake"}')
        print("lots of noise\n" * 1000)
        sys.stdout.flush()
        os.write(1, b"raw fd 1 noise\n")
    if word == b"hang":
        print("hanging now", file=sys.stderr, flush=True)
        while True:
            time.sleep(1)
    if word == b"barrier":
        marks = Path(os.environ["MARKS"])
        (marks / f"started-{os.getpid()}").touch()
        while len(list(marks.iterdir())) < 2:
            time.sleep(0.01)
    if word == b"leak":
        state["leak"].append(b"x" * (48 << 20))
    if word == b"pid":
        Path(output_dir, "pid.txt").write_text(str(os.getpid()))
        return
    if word == b"heap":  # a model's per-call buffers: 8 x 2 MiB, written, then freed
        import json
        import resource
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        buffers = [bytearray(2 << 20) for _ in range(8)]
        del buffers
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        malloc = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
        Path(output_dir, "heap.json").write_text(json.dumps({"faults": faults,
                                                             "malloc": malloc}))
        return
    if os.environ.get("WORKER_MODE") == "several":
        Path(output_dir, "a.txt").write_text("one")
        Path(output_dir, "sub").mkdir()
        shutil.copy(input_path, Path(output_dir, "sub", "c.bin"))
        return
    shutil.copy(input_path, Path(output_dir, "result.bin"))


if __name__ == "__main__":
    oscar_worker.serve(handler, setup)
