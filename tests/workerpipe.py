"""A warm worker (line protocol v1) started as a real subprocess, with real pipes, the way the
function runtime starts it; the test plays the runtime's side of the protocol.

    with WorkerPipe([sys.executable, "worker.py"], tmp_path) as worker:
        assert worker.read_line() == {"ready": True}
        worker.send({"id": "1", "env": {...}})
        answer = worker.read_line()
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

REPO = Path(__file__).resolve().parents[1]
HELPER = REPO / "oscar_faas" / "runtime" / "oscar_worker.py"


class WorkerPipe:
    """``argv`` with ``OSCAR_WORKER_IN_FD``/``OSCAR_WORKER_OUT_FD`` pipes; stdout and stderr
    go to files in ``workdir``. With ``helper_path``, a folder holding only a copy of
    ``oscar_worker.py`` comes first on ``PYTHONPATH``, as the runtime does."""

    def __init__(self, argv: Sequence[str], workdir: Path,
                 env: Mapping[str, str] | None = None, helper_path: bool = True) -> None:
        self.argv = list(argv)
        self.workdir = workdir
        self.env = dict(os.environ if env is None else env)
        if helper_path:
            folder = workdir / "pythonpath"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / HELPER.name).write_bytes(HELPER.read_bytes())
            self.env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(folder), self.env.get("PYTHONPATH", "")) if p)
        self.stdout_path = workdir / "worker.stdout"
        self.stderr_path = workdir / "worker.stderr"
        self.proc: subprocess.Popen | None = None
        self._to_worker = -1
        self._from_worker = -1
        self._buffer = b""

    def __enter__(self) -> "WorkerPipe":
        request_r, request_w = os.pipe()
        answer_r, answer_w = os.pipe()
        env = dict(self.env, OSCAR_WORKER_IN_FD=str(request_r),
                   OSCAR_WORKER_OUT_FD=str(answer_w))
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.argv, env=env, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err, pass_fds=(request_r, answer_w),
                                         start_new_session=True)
        os.close(request_r)
        os.close(answer_w)
        self._to_worker, self._from_worker = request_w, answer_r
        return self

    def send(self, message: Mapping[str, Any] | bytes) -> None:
        data = message if isinstance(message, bytes) else (json.dumps(message) + "\n").encode()
        while data:
            data = data[os.write(self._to_worker, data):]

    def call(self, call_id: str, input_path: Path, output_dir: Path, timeout: float = 60,
             **extra_env: str) -> dict[str, Any]:
        """One request with the OSCAR per-call variables; the answer line."""
        self.send({"id": call_id, "env": {"INPUT_FILE_PATH": str(input_path),
                                          "TMP_INPUT_DIR": str(input_path.parent),
                                          "TMP_OUTPUT_DIR": str(output_dir), **extra_env}})
        answer = self.read_line(timeout)
        assert answer is not None, f"worker ended without an answer:\n{self.stderr()}"
        return answer

    def read_line(self, timeout: float = 60) -> dict[str, Any] | None:
        """The next answer line as JSON, or None at end of file; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self._from_worker, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise AssertionError(f"no answer line within {timeout:g} s:\n{self.stderr()}")
                chunk = os.read(self._from_worker, 65536)
                if not chunk:
                    assert not self._buffer, f"partial line at end of file: {self._buffer!r}"
                    return None
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def close_requests(self) -> None:
        """Close the request pipe, as the runtime does to stop a worker."""
        if self._to_worker >= 0:
            os.close(self._to_worker)
            self._to_worker = -1

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def __exit__(self, *exc: object) -> None:
        self.close_requests()
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._from_worker >= 0:
            os.close(self._from_worker)
            self._from_worker = -1
