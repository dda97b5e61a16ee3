"""Expose mode's server keeper: starts the exposed service's server once, probes its health,
restarts it with a growing delay when it exits, and stops it with the runtime.

Exists so keeping the server alive (processes, probes, back-off) reads apart from proxying
requests to it (:mod:`.expose`).
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Mapping

from ..contract import ENV_EXPOSE_COMMAND
from ..supervisor.config import load_script
from ..supervisor.logs import SupervisorLog
from ..supervisor.upload import secret_environment
from .expose_settings import ExposeSettings
from .guardian import own_group
from .worker_io import Tail

#: Seconds between health probes.
PROBE_INTERVAL = 0.5
#: Seconds a probe may take.
PROBE_TIMEOUT = 2.0
#: Restart delays: the first, and the cap of the doubling.
RESTART_DELAY, RESTART_DELAY_MAX = 1.0, 30.0
#: Seconds the server gets to stop after SIGTERM before SIGKILL.
STOP_GRACE = 3.0


def _die_with_parent():
    """A ``preexec_fn`` that makes the server get SIGKILL when the runtime dies (Linux
    ``PR_SET_PDEATHSIG``): the server runs in a process group of its own, so a launcher killing
    the runtime's process group would otherwise leave it holding the port until the guardian
    (:mod:`.guardian`) sweeps the session. ``None`` elsewhere."""
    try:
        import ctypes
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before the fork
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


class ServerKeeper:
    """Starts the server, probes it, restarts it when it exits; one thread does it all."""

    def __init__(self, settings: ExposeSettings, env: Mapping[str, str], log: SupervisorLog,
                 workdir: Path) -> None:
        self.settings = settings
        self.env = dict(env)
        self.log = log
        self.workdir = workdir
        self.healthy = False
        self.restarts = 0
        #: why it is not healthy (for 503 answers)
        self.problem = "it is starting"
        self._proc: subprocess.Popen[bytes] | None = None
        self._tail: Tail | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="expose", daemon=True)

    # --- public --------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(PROBE_TIMEOUT + STOP_GRACE + 2)
        self._kill()

    def tail(self) -> str:
        return self._tail.text() if self._tail is not None else ""

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # --- the thread ----------------------------------------------------------------------

    def _argv(self) -> list[str]:
        """:raises ValueError: nothing to run (the message says what is missing)."""
        if self.settings.default_command:
            if not self.settings.command:
                raise ValueError(
                    f"default_command is true but {ENV_EXPOSE_COMMAND} is not set: the runtime "
                    f"cannot know the image's own command (set {ENV_EXPOSE_COMMAND} to it in "
                    f"the service's environment variables, or use default_command: false and "
                    f"start the server from the script)")
            return list(self.settings.command)
        script = load_script(self.env)
        if not script:
            raise ValueError("the service has no script to start its server with")
        path = self.workdir / "expose-script.sh"
        path.write_bytes(script)
        return ["/bin/sh", str(path)]

    def _spawn(self) -> None:
        argv = self._argv()
        env = dict(self.env)
        try:
            env.update(secret_environment(self.env))
        except Exception as err:  # noqa: BLE001 - the server may not need them; say why
            self.log.error("%s", err)
        log_r, log_w = os.pipe()
        try:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_w,
                                          stderr=subprocess.STDOUT, env=env,
                                          **own_group(_die_with_parent()))
        except OSError as err:
            os.close(log_r)
            raise ValueError(f"cannot start {argv[0]!r}: {err.strerror or err}") from None
        finally:
            os.close(log_w)
        self._tail = Tail(log_r, "server: ")
        self.log.info("%s: server started (pid %d): %s", self.settings.name, self._proc.pid,
                      " ".join(argv))

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        except (ProcessLookupError, PermissionError):
            proc.wait()

    def _run(self) -> None:
        try:
            self._keep()
        finally:  # from this thread: the server's death signal is tied to it
            self._kill()

    def _keep(self) -> None:
        delay = RESTART_DELAY
        while not self._stop.is_set():
            try:
                self._spawn()
            except ValueError as err:
                self.problem = str(err)
                self.log.error("%s: %s", self.settings.name, err)
                self._stop.wait(delay)
                delay = min(delay * 2, RESTART_DELAY_MAX)
                continue
            self.problem = f"its server does not answer {self.settings.check} yet"
            was_healthy = False
            while not self._stop.is_set():
                proc = self._proc
                code = proc.poll() if proc is not None else -1
                if code is not None:
                    self.healthy = False
                    try:  # what it left behind (a backgrounded server) goes with it
                        if proc is not None:
                            os.killpg(proc.pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                    self.problem = (f"its server exited with status {code}"
                                    f"{' and is being restarted' if not self._stop.is_set() else ''}")
                    self.log.error("%s: the server exited with status %s; restarting it in "
                                   "%gs", self.settings.name, code, delay)
                    break
                ok = self._probe()
                if ok != self.healthy:
                    self.log.info("%s: the server is %s", self.settings.name,
                                  "healthy" if ok else f"not healthy ({self.problem})")
                self.healthy = ok
                if ok:
                    was_healthy = True
                    delay = RESTART_DELAY
                self._stop.wait(PROBE_INTERVAL)
            self._proc = None if self._proc is not None and self._proc.poll() is not None \
                else self._proc
            if self._stop.is_set():
                return
            if was_healthy:
                delay = RESTART_DELAY
            self.restarts += 1
            self._stop.wait(delay)
            delay = min(delay * 2, RESTART_DELAY_MAX)

    def _probe(self) -> bool:
        port = self.settings.port
        if not self.settings.health_path:
            try:
                socket.create_connection(("127.0.0.1", port), PROBE_TIMEOUT).close()
            except OSError as err:
                self.problem = (f"its server does not accept connections on port {port} "
                                f"({err.strerror or err})")
                return False
            return True
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_TIMEOUT)
        try:
            conn.request("GET", self.settings.health_path, headers={"User-Agent": "oscar-probe"})
            status = conn.getresponse().status
        except (OSError, http.client.HTTPException) as err:
            self.problem = (f"its server does not answer GET {self.settings.health_path} on "
                            f"port {port} ({getattr(err, 'strerror', None) or err})")
            return False
        finally:
            conn.close()
        if not 200 <= status < 400:
            self.problem = (f"its server answers GET {self.settings.health_path} on port "
                            f"{port} with {status}")
            return False
        return True
