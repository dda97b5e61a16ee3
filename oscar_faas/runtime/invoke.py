"""One call, run in a thread: the OSCAR I/O contract around the script or a warm worker.

The pieces are the supervisor's (:mod:`oscar_faas.supervisor`), so the runtime gives the same
answers as ``python -m oscar_faas.supervisor`` under the classic watchdog:

1. the body is streamed into ``$TMP_INPUT_DIR/event-file-<uuid4>`` (base64 decoded, JSON as
   sent; :func:`~oscar_faas.supervisor.inputs.save_body`); invalid input answers 400;
2. the script runs (``/bin/sh <script>``, stdout+stderr merged into a file), or the request is
   handed to a free warm worker; both get the function env, the storage secret's
   ``environment``, the CGI variables (``Http_Method``...) and OSCAR's three paths;
3. outputs under ``$TMP_OUTPUT_DIR`` are uploaded (:mod:`~oscar_faas.supervisor.upload`), then
   the answer is streamed from disk: one file -> its base64, several -> a base64 zip, none ->
   the script's output (a worker's output is its log, so: empty).

Status codes: 200; 400 invalid input; 500 a failing script (``exit status N`` + its output,
the last 4 KB of it, and a line saying so when its ``TMPDIR`` is full), a worker that reports
an error or dies (+ the tail of its output), or a broken function config; 507 a ``TMPDIR``
without room for the call (its input, say), naming the folder;
408 ``Killed process.`` when a script exceeds ``exec_timeout`` (as the classic watchdog and the
embedded provider answer); 504 when a worker does; 500 a failed upload (as today); 503 a
worker that cannot start.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator, Mapping, Protocol

from ..contract import CGI_JOB_ANSWER, JOB_ANSWER_LOG
from ..supervisor.config import FunctionConfig, load_config, load_script
from ..supervisor.errors import FunctionConfigError, SupervisorError, UploadError
from ..supervisor.logs import SupervisorLog
from ..supervisor.outputs import list_output_files, write_output_tail, write_response
from ..supervisor.upload import resolve_targets, secret_environment, upload_outputs
from .children import wait_until
from .guardian import own_group
from .hints import isolation_hint
from .settings import RuntimeSettings
from .workers import WorkerError, WorkerPool

KILLED_BODY = b"Killed process.\n"
#: Free bytes under which a failing script's ``TMPDIR`` counts as full (its error says so).
LOW_SPACE = 64 * 1024
#: Bytes of a script's output copied to the service's log per call (the rest is counted).
SCRIPT_LOG_LIMIT = 16 << 10
_STDERR_LOCK = threading.Lock()


class Sink(Protocol):
    """Where the answer goes: a status first, then the body (see ``server.Answer``)."""

    def start(self, status: int) -> None: ...

    def write(self, data: bytes) -> int: ...

    def flush(self) -> None: ...


class Invoker:
    """Runs calls for one function; thread-safe (each call has its own workspace)."""

    def __init__(self, env: Mapping[str, str], settings: RuntimeSettings, log: SupervisorLog,
                 workdir: Path, pool: WorkerPool | None = None) -> None:
        self.env = dict(env)
        self.settings = settings
        self.log = log
        self.pool = pool
        self.config = FunctionConfig()
        #: a broken SCRIPT/FUNCTION_CONFIG: every call answers it (500), as the supervisor does
        self.config_error = ""
        self.script_path: Path | None = None
        self._local = threading.local()
        self._roots: list[Path] = []
        self._scripts: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        try:
            self.config = load_config(self.env)
            script = load_script(self.env)
        except FunctionConfigError as err:
            self.config_error = str(err)
            log.error("%s", err)
            return
        log.level = self.config.log_level
        if script is not None:
            self.script_path = workdir / "script.sh"
            self.script_path.write_bytes(script)

    def __call__(self, body: BinaryIO, cgi: Mapping[str, str], sink: Sink) -> None:
        """Answer one call into ``sink``; errors of the function become answers, not raises."""
        started = time.monotonic()
        call_id = uuid.uuid4().hex
        try:
            status = self._invoke(call_id, body, cgi, sink)
        except SupervisorError as err:
            status = _fail(sink, getattr(err, "status", 500), f"{err}\n".encode())
        except WorkerError as err:
            status = _fail(sink, err.status, str(err).encode("utf-8", "replace"))
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            message = self._no_space(err.strerror or str(err))
            self.log.error("%s", message)
            status = _fail(sink, 507, f"{message}\n".encode())
        self.log.info("call %s: %d in %.1f ms", call_id[:8], status,
                      (time.monotonic() - started) * 1000)

    def _invoke(self, call_id: str, body: BinaryIO, cgi: Mapping[str, str], sink: Sink) -> int:
        if self.config_error:
            raise FunctionConfigError(self.config_error)
        from ..supervisor.inputs import save_body  # pybase64 loads once, on the first call

        # seconds per phase, for the answer's Server-Timing header (when the sink has one)
        timings: dict[str, float] = getattr(sink, "timings", None)
        if timings is None:
            timings = {}
        mark = time.monotonic()

        def phase(name: str) -> None:
            nonlocal mark
            now = time.monotonic()
            timings[name] = now - mark
            mark = now

        targets = resolve_targets(self.config, self.env)  # fail fast on missing credentials
        with self._workspace() as root:
            input_dir, output_dir = root / "input", root / "output"
            input_path, _kind = save_body(body, input_dir)
            call_env = dict(cgi)
            call_env.update(INPUT_FILE_PATH=str(input_path), TMP_INPUT_DIR=str(input_dir),
                            TMP_OUTPUT_DIR=str(output_dir))
            if _kind == "json":  # a MinIO event or a stored job input (supervisor.events)
                from ..supervisor.events import resolve_input
                call_env.update(resolve_input(input_path, _kind, input_dir, self.config,
                                              self.env, self.log))
            script_output: Path | None = None
            phase("setup")
            if self.pool is not None:
                failure = self._call_worker(call_id, call_env)
                phase("script")
                if failure is not None:
                    return _fail(sink, 500, f"{failure}\n".encode("utf-8", "replace"))
            else:
                script_output = root / "script-output"
                code = self._run_script(call_env, script_output)
                phase("script")
                if code is None:
                    self.log.warning("exec_timeout (%gs) reached: the script was killed",
                                     self.settings.exec_timeout)
                    return _fail(sink, 408, KILLED_BODY)
                if code != 0:
                    self.log.error("the user script exited with status %d; outputs are not "
                                   "uploaded", code)
                    sink.start(500)
                    sink.write(f"exit status {code}\n".encode())
                    if 0 <= _free_bytes(root) < LOW_SPACE:  # say why, if that is the likely cause
                        sink.write(f"{self._no_space('the script failed')}\n".encode())
                    write_output_tail(sink, script_output)  # type: ignore[arg-type]
                    return 500
            files = list_output_files(output_dir)
            errors = upload_outputs(targets, output_dir, files, self.env, self.log)
            if errors:
                raise UploadError("\n".join(errors), status=500)  # 500 as today, not 502
            phase("upload")
            sink.start(200)
            if cgi.get(CGI_JOB_ANSWER) == JOB_ANSWER_LOG:  # a job: its log, not its outputs
                files = []
            if files or script_output is not None:
                write_response(sink, output_dir, files, script_output)  # type: ignore[arg-type]
            return 200

    def close(self) -> None:
        """Kill the scripts still running and remove the call threads' directories."""
        with self._lock:
            running = list(self._scripts)
        for proc in running:
            _kill_group(proc)
        for root in self._roots:
            shutil.rmtree(root, onerror=_force)
        self._roots.clear()

    @contextmanager
    def _workspace(self) -> Iterator[Path]:
        """This thread's private directory (under the env's ``TMPDIR``) with ``input`` and
        ``output`` inside, emptied after each call.

        A call thread runs one call at a time, so it keeps its directories: creating and
        removing three directories per call would cost more than the rest of the call.
        """
        root: Path | None = getattr(self._local, "root", None)
        if root is None or not (root / "input").is_dir() or not (root / "output").is_dir():
            base = self.env.get("TMPDIR")
            root = Path(tempfile.mkdtemp(prefix="oscar-runtime-",
                                         dir=base if base and os.path.isdir(base) else None))
            (root / "input").mkdir()
            (root / "output").mkdir()
            self._local.root = root
            with self._lock:
                self._roots.append(root)
        try:
            yield root
        finally:
            for folder in (root / "input", root / "output"):
                _empty(folder)

    def _no_space(self, what: str) -> str:
        """The answer for a full ``TMPDIR``: where, how full, and what it holds."""
        base = self.env.get("TMPDIR") or tempfile.gettempdir()
        free = _free_bytes(Path(base))
        return (f"no space left in TMPDIR {base} ({what}; {max(free, 0)} bytes free): a call's "
                f"input, outputs and script output are written there; free some space or give "
                f"the service a larger TMPDIR")

    def _call_worker(self, call_id: str, call_env: Mapping[str, str]) -> str | None:
        assert self.pool is not None
        worker = self.pool.acquire()
        try:
            if not worker.ready:
                raise WorkerError(503, worker.error + isolation_hint(self.env, worker.error)
                                  if worker.error
                                  else f"worker {worker.index} is not ready\n")
            return worker.call(call_id, call_env, self.settings.exec_timeout)
        finally:
            self.pool.release(worker)

    def _run_script(self, call_env: Mapping[str, str], output: Path) -> int | None:
        """Run the script; its exit code (128+N for signal N), or None on ``exec_timeout``."""
        if self.script_path is None:
            self.log.warning("No user script found!")
            output.touch()
            return 0
        env = dict(self.env)
        env.update(secret_environment(self.env))  # read per call: the secret may be updated
        env.update(call_env)
        with open(output, "wb") as sink:
            proc = subprocess.Popen(["/bin/sh", str(self.script_path)], stdin=subprocess.DEVNULL,
                                    stdout=sink, stderr=subprocess.STDOUT, env=env,
                                    **own_group())  # its tree: killpg, and the guardian
        with self._lock:
            self._scripts.add(proc)
        try:
            timeout = self.settings.exec_timeout
            if timeout > 0 and not wait_until(proc, time.monotonic() + timeout):
                _kill_group(proc)
                log_output(output)
                return None
            code = proc.wait()
        except BaseException:
            _kill_group(proc)
            raise
        finally:
            with self._lock:
                self._scripts.discard(proc)
        log_output(output)
        return code if code >= 0 else 128 - code


def log_output(output: Path, limit: int = SCRIPT_LOG_LIMIT) -> None:
    """Copy the head of a script's output (stdout and stderr), a ``script: `` before each
    line (as ``worker N: `` before a worker's), to our stderr, the service's log, at any
    ``log_level``: ``log_level`` governs the runtime's own lines, never the
    script's, so a user who sets CRITICAL still sees why their script failed. Never the
    answer's body either (that is the output files, or this output as data)."""
    try:
        with open(output, "rb") as text:
            head = text.read(limit + 1)
            size = os.fstat(text.fileno()).st_size
    except OSError:
        return
    if not head:
        return
    lines = head[:limit].splitlines()
    if size > limit:
        lines.append(f"... ({size - limit} more bytes of output not logged)".encode())
    data = b"".join(b"script: " + line + b"\n" for line in lines)
    with _STDERR_LOCK:  # one call's lines together
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(2, view):]
        except OSError:
            pass


def _empty(folder: Path) -> None:
    """Remove everything in ``folder`` (a script may leave read-only trees behind)."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:  # the runtime is closing; the next call makes a new root
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, onerror=_force)
        else:
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                pass


def _force(func, path, _exc_info):  # type: ignore[no-untyped-def]
    """rmtree's error hook: make the parent (and the path) writable, then retry once."""
    try:
        for target in (os.path.dirname(path), path):
            if os.path.isdir(target) and not os.path.islink(target):
                os.chmod(target, 0o700)
        func(path)
    except OSError:
        pass


def _fail(sink: Sink, status: int, body: bytes) -> int:
    sink.start(status)
    sink.write(body)
    return status


def _free_bytes(path: Path) -> int:
    """Bytes an unprivileged user may still write on ``path``'s filesystem (-1: unknown)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return -1
    if st.f_files and not st.f_favail:  # no inode left (filesystems without a count say 0)
        return 0
    return st.f_bavail * st.f_frsize


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
