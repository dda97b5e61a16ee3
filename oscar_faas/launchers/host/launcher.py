"""The host launcher: each function's runtime as a child process of the provider.

The runtime listens on a loopback port it picks itself (``--port 0``; the port is read from
its ``listening on`` line, so there is no window in which another process could take it), runs
as the function's own user when the provider is root (:mod:`.isolation`), and inherits only
:data:`INHERITED_ENV` of the provider's environment. Its output goes to the function's log.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Mapping

from ...contract import ENV_RUNTIME_LIFELINE, ENV_SECRETS_DIR
from ...errors import OscarFaasError
from ...runtime.children import kill_tree
from ..launch import (_RUNTIME_LINE, TAIL_LINES, LaunchError, RuntimeHandle, RuntimeSpec,
                      function_logger)
from .isolation import Isolation

log = logging.getLogger("oscar_faas.launchers.host.launcher")

#: How long :meth:`HostLauncher.start` waits for the runtime to say where it listens.
LISTEN_TIMEOUT = 60.0
#: Longest output line passed on to the function log (longer ones are cut).
MAX_LINE = 64 << 10
#: The runtime's first log line: ``... listening on http://127.0.0.1:PORT (...)``.
_LISTENING = re.compile(rb"listening on http://(\[[^\]]+\]|[^\s:/]+):(\d+)")

#: Host variables a function inherits (a container would have its image's own). Everything
#: else, notably the provider's OPENFAAS_PASSWORD, stays out of functions.
INHERITED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR",
                 "TERM", "PYTHONPATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "SSL_CERT_FILE",
                 "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CUDA_VISIBLE_DEVICES", "HTTP_PROXY",
                 "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


def inherited_env(env: Mapping[str, str]) -> dict[str, str]:
    """The part of the provider's environment handed to every function."""
    picked = {k: env[k] for k in INHERITED_ENV if k in env}
    picked.update({k: v for k, v in env.items() if k.startswith("LC_")})
    return picked


class HostProcess:
    """A runtime running as a child process of the provider (a :class:`RuntimeHandle`).

    Its stdout and stderr (one pipe) are copied line by line into the function's logger
    (:func:`~..logs.function_logger`), so ``/system/logs`` shows the runtime's lines and the
    output of scripts and workers; the last :data:`TAIL_LINES` are kept for errors. A classic
    function's log is only its processes' stderr, as under a classic watchdog: with
    ``classic``, the runtime's own lines go to the provider's log instead.
    """

    def __init__(self, name: str, proc: subprocess.Popen[bytes], fingerprint: str = "",
                 classic: bool = False) -> None:
        self.name = name
        self.fingerprint = fingerprint
        self.classic = classic
        self.proc = proc
        self.pid = proc.pid
        self.url = ""
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._tail_lock = threading.Lock()
        self._listening = threading.Event()
        self._logger = function_logger(name)
        self._stop_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name=f"runtime-log-{name}",
                                        daemon=True)
        self._reader.start()
        # One thread reaps it. ``Popen.poll`` from several threads is not reliable: a call
        # that finds another thread in ``waitpid`` answers "running".
        self._exited = threading.Event()
        self._waiter = threading.Thread(target=self._wait, name=f"runtime-wait-{name}",
                                        daemon=True)
        self._waiter.start()

    def __repr__(self) -> str:
        return f"<HostProcess {self.name} pid={self.pid} {self.url or '(starting)'}>"

    # --- RuntimeHandle ----------------------------------------------------------------------

    def alive(self) -> bool:
        return not self._exited.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until it exited (True) or ``timeout`` passed (False)."""
        return self._exited.wait(timeout)

    def _wait(self) -> None:
        self.proc.wait()
        self._exited.set()

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM its process group (the runtime stops its workers and scripts), SIGKILL
        whatever is left after ``timeout`` seconds."""
        with self._stop_lock:
            if self.alive():
                try:
                    os.killpg(self.pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass
                if not self._exited.wait(timeout):
                    log.warning("%s: runtime pid %d did not stop within %gs; killing it",
                                self.name, self.pid, timeout)
                    kill_tree(self.pid)
                    self._exited.wait()
            # scripts or workers that outlived it, in its process group
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        self._reader.join(timeout)

    def output_tail(self) -> str:
        with self._tail_lock:
            return "\n".join(self._tail)

    # --- start-up -----------------------------------------------------------------------------

    def wait_listening(self, timeout: float) -> bool:
        """Wait until the runtime said where it listens (True) or exited (False)."""
        deadline = time.monotonic() + timeout
        while not self._listening.wait(min(0.5, max(0.0, deadline - time.monotonic()))):
            if not self._reader.is_alive() or time.monotonic() >= deadline:
                return self._listening.is_set()
        return True

    def _read(self) -> None:
        assert self.proc.stdout is not None
        stream = self.proc.stdout
        try:
            for raw in iter(lambda: stream.readline(MAX_LINE), b""):
                if not self._listening.is_set():
                    match = _LISTENING.search(raw)
                    if match is not None:
                        host = match.group(1).decode()
                        self.url = f"http://{host}:{int(match.group(2))}"
                        self._listening.set()
                self._line(raw.decode("utf-8", "replace").rstrip("\r\n"))
        except (OSError, ValueError):
            pass
        finally:
            stream.close()

    def _line(self, text: str) -> None:
        with self._tail_lock:
            self._tail.append(text)
        match = _RUNTIME_LINE.match(text)
        if match is not None and self.classic:
            log.log(logging.getLevelName(match.group(1)), "%s: %s", self.name, match.group(2))
        elif match is not None:
            self._logger.log(logging.getLevelName(match.group(1)), "%s", match.group(2))
        else:
            self._logger.info("%s", text)


class HostLauncher:
    """Runs each runtime as ``sys.executable -m oscar_faas.runtime --host 127.0.0.1 --port 0``
    in its own process group, with the provider's inherited host env (:data:`INHERITED_ENV`)
    + the function's env + ``OSCAR_SECRETS_DIR=<secrets dir>``; never the provider's own
    credentials. ``image``, ``memory``, ``cpu`` and ``gpu`` are ignored (logged once).

    With ``isolation`` (a provider running as root, :mod:`.isolation`) the runtime runs as
    the function's own unprivileged user, with no supplementary groups, umask 077, and its
    private folder as ``HOME``, ``TMPDIR`` and working directory."""

    kind = "host"

    def __init__(self, env: Mapping[str, str] | None = None, host: str = "127.0.0.1",
                 python: str | None = None, listen_timeout: float = LISTEN_TIMEOUT,
                 isolation: Isolation | None = None) -> None:
        self.base_env = inherited_env(os.environ if env is None else env)
        self.host = host
        self.python = python or sys.executable
        self.listen_timeout = listen_timeout
        self.isolation = isolation

    def command(self) -> list[str]:
        python = self.isolation.runtime_python()[0] if self.isolation is not None \
            else self.python
        return [python, "-m", "oscar_faas.runtime", "--host", self.host, "--port", "0"]

    def environment(self, spec: RuntimeSpec) -> dict[str, str]:
        env = dict(self.base_env)
        env.update(spec.env)
        env[ENV_SECRETS_DIR] = str(spec.secrets_dir)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env[ENV_RUNTIME_LIFELINE] = "stdin"
        if self.isolation is not None:
            env.update(self.isolation.user(spec.name).env(spec.name))
            pythonpath = self.isolation.runtime_python()[1]
            if pythonpath is not None:
                env["PYTHONPATH"] = pythonpath
        return env

    def start(self, spec: RuntimeSpec) -> HostProcess:
        """:raises LaunchError: it cannot be started, or exits before listening."""
        try:
            env = self.environment(spec)
        except OscarFaasError as err:  # no Python its user can run
            raise LaunchError(f"cannot start the runtime of {spec.name}: {err}") from None
        argv, extra = self.command(), {}
        uid = None
        if self.isolation is not None:
            user = self.isolation.user(spec.name)
            argv, extra = self.isolation.popen_args(user, argv)
            uid = user.uid
        try:
            # stdin is a lifeline: if the provider dies, even by SIGKILL, the pipe closes and
            # the runtime stops itself (OSCAR_RUNTIME_LIFELINE)
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True,
                                    **extra)  # type: ignore[call-overload]
        except (OSError, subprocess.SubprocessError) as err:
            raise LaunchError(f"cannot start the runtime of {spec.name}: {err}") from None
        handle = HostProcess(spec.name, proc, spec.fingerprint, spec.classic)
        if not handle.wait_listening(self.listen_timeout):
            handle.stop(1.0)
            code = proc.returncode
            raise LaunchError(f"the runtime of {spec.name} "
                              + (f"exited with status {code}" if code is not None
                                 else f"did not listen within {self.listen_timeout:g}s")
                              + f" before listening:\n{handle.output_tail()}")
        log.info("%s: runtime pid %d listening on %s%s", spec.name, handle.pid, handle.url,
                 f" as uid {uid}" if uid is not None else "")
        return handle

    def adopt(self) -> dict[str, RuntimeHandle]:
        """Nothing: a host runtime is a child of the provider that started it, which stops
        it on close; a new provider starts its own."""
        return {}

    def close(self) -> None:
        """Nothing of its own to release."""
