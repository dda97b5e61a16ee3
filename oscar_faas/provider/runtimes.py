"""One long-lived runtime per OSCAR function: started, watched, restarted, replaced, stopped.

The :class:`RuntimeManager` keeps, per function, one :class:`ManagedRuntime`: a keeper thread
that starts the runtime through a :class:`~.launch.Launcher`, polls ``GET {url}/_/health``
until it answers 200 (then the function counts as ready: ``availableReplicas`` 1), watches it
and starts it again when it dies (with a back-off, and a log line carrying the tail of its
output).

Life cycle, as the provider drives it:

* **deploy** and **provider start**: :meth:`RuntimeManager.ensure` starts a runtime in the
  background (the REST call does not wait for it). At start, runtimes the launcher reports as
  still running (:meth:`~.launch.Launcher.adopt`; containers, by labels) are kept when their
  ``fingerprint`` is the spec's, stopped otherwise.
* **update** with a different spec: a new runtime is started and becomes the function's at
  once, so every call that arrives after the update is answered by the new definition (as
  before runtimes, and as oscar-python's ``update_service`` then ``run_service`` expect); such
  calls wait for it to listen (:data:`START_WAIT`) and then queue inside it until it is ready.
  The old runtime gets no new calls, finishes the ones it has (at most :data:`DRAIN_LIMIT`
  seconds) and is stopped. If the new one never gets ready, calls get its own answers (a
  worker's error with its output, 503) instead of being served silently by the old
  definition: a broken update shows itself exactly as a broken deploy does. The price: a warm
  model is reloaded before the first call after an update is answered.
* **delete** and **provider close**: stopped (SIGTERM, the runtime finishes what it can for a
  few seconds, then SIGKILL).
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from typing import Iterable
from urllib.parse import urlsplit

from .launch import Launcher, LaunchError, RuntimeHandle, RuntimeSpec
from .proxy import ConnectionPool

log = logging.getLogger("oscar_faas.provider.runtimes")

#: Longest wait of a call for its function's runtime to listen (started, restarted).
START_WAIT = 30.0
#: Longest wait of a retired runtime (after an update) for its calls to end.
DRAIN_LIMIT = 600.0
#: Seconds a runtime is given to stop after SIGTERM before it is killed.
STOP_TIMEOUT = 5.0
#: How often a runtime is checked for being alive (a failed proxy call checks at once).
WATCH_PERIOD = 0.5
#: Health polling: first pause, growth and longest pause.
HEALTH_FIRST, HEALTH_GROWTH, HEALTH_MAX = 0.005, 1.5, 0.5
#: Restart back-off: first pause, longest pause; a runtime that lived this long resets it.
RESTART_FIRST, RESTART_MAX, RESTART_STABLE = 0.5, 30.0, 30.0
#: Timeout of one health or status request.
PROBE_TIMEOUT = 2.0


class ManagedRuntime:
    """One function's runtime for one spec (an update makes a new one)."""

    def __init__(self, spec: RuntimeSpec, launcher: Launcher,
                 adopted: RuntimeHandle | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.launcher = launcher
        self.handle: RuntimeHandle | None = None
        self.pool: ConnectionPool | None = None
        self.ready = False
        self.inflight = 0
        self.last_error = ""
        self.restarts = 0
        self._adopted = adopted
        self._stopping = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._keep, name=f"runtime-{spec.name}",
                                        daemon=True)

    def __repr__(self) -> str:
        return f"<ManagedRuntime {self.name} {self.handle!r} ready={self.ready}>"

    def start(self) -> ManagedRuntime:
        self._thread.start()
        return self

    # --- what calls use ------------------------------------------------------------------------

    def acquire(self, wait: float = START_WAIT) -> tuple[RuntimeHandle, ConnectionPool] | None:
        """The running runtime for one call (waiting up to ``wait`` s for it to listen), or
        None; the caller must :meth:`release` after a non-None answer."""
        deadline = time.monotonic() + wait
        with self._cond:
            while True:
                if self._stopping:
                    return None
                if self.handle is not None and self.pool is not None:
                    self.inflight += 1
                    return self.handle, self.pool
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def release(self) -> None:
        with self._cond:
            self.inflight -= 1
            self._cond.notify_all()

    def suspect(self, handle: RuntimeHandle) -> bool:
        """A call could not reach ``handle``: True (and the keeper told) when it is dead, so
        the call may wait for the restarted one."""
        if handle.alive():
            return False
        with self._cond:
            if self.handle is handle:
                self._forget()
            self._cond.notify_all()
        return True

    def status(self) -> dict[str, int] | None:
        """The runtime's ``GET /_/status`` (``running``, ``queued``...), None if unreachable."""
        handle = self.handle
        if handle is None:
            return None
        try:
            code, body = _get(handle.url, "/_/status")
            return json.loads(body) if code == 200 else None
        except (OSError, ValueError, http.client.HTTPException):
            return None

    # --- stopping ------------------------------------------------------------------------------

    def stop(self, drain: float = 0.0) -> None:
        """Stop for good (no restart); first wait up to ``drain`` s for calls in flight."""
        deadline = time.monotonic() + drain
        with self._cond:
            while self.inflight > 0 and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            self._stopping = True
            handle = self.handle
            self._forget()
            self._cond.notify_all()
        if handle is not None:
            handle.stop(STOP_TIMEOUT)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(STOP_TIMEOUT + 1)

    def _forget(self) -> None:
        """Under the lock: the current handle is gone."""
        self.handle, self.ready = None, False
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    # --- the keeper thread -------------------------------------------------------------------

    def _keep(self) -> None:
        delay = RESTART_FIRST
        while not self._stopping:
            handle = self._launch()
            if handle is None:
                if self._pause(delay):
                    return
                delay = min(delay * 2, RESTART_MAX)
                continue
            born = time.monotonic()
            self._wait_ready(handle)
            self._watch(handle)
            with self._cond:
                if self._stopping:
                    break
                if self.handle is handle:
                    self._forget()
            if time.monotonic() - born >= RESTART_STABLE:
                delay = RESTART_FIRST
            self.restarts += 1
            tail = handle.output_tail().strip().splitlines()[-5:]
            log.warning("function %s: its runtime exited; restarting it in %gs%s", self.name,
                        delay, (": " + " | ".join(tail)) if tail else "")
            handle.stop(STOP_TIMEOUT)  # clean up what it left (its process group, container)
            if self._pause(delay):
                return
            delay = min(delay * 2, RESTART_MAX)

    def _launch(self) -> RuntimeHandle | None:
        handle, self._adopted = self._adopted, None
        if handle is None:
            try:
                handle = self.launcher.start(self.spec)
            except LaunchError as err:
                self.last_error = str(err)
                log.error("function %s: %s", self.name, err)
                return None
            except Exception:  # noqa: BLE001 - a launcher bug must not end the keeper
                log.exception("function %s: the runtime could not be started", self.name)
                return None
        with self._cond:
            if self._stopping:
                stale = handle
            else:
                stale = None
                self.handle, self.pool, self.ready = handle, ConnectionPool(handle.url), False
                self._cond.notify_all()
        if stale is not None:
            stale.stop(STOP_TIMEOUT)
            return None
        return handle

    def _wait_ready(self, handle: RuntimeHandle) -> None:
        """Poll ``/_/health`` until 200; give up when it dies or we stop."""
        pause = HEALTH_FIRST
        while not self._stopping and self.handle is handle:
            try:
                code, _ = _get(handle.url, "/_/health")
            except (OSError, http.client.HTTPException):
                code = 0
            if code == 200:
                with self._cond:
                    if self.handle is handle:
                        self.ready = True
                        self._cond.notify_all()
                log.info("function %s: runtime ready on %s", self.name, handle.url)
                return
            if not handle.alive():
                return
            with self._cond:
                self._cond.wait(pause)
            pause = min(pause * HEALTH_GROWTH, HEALTH_MAX)

    def _watch(self, handle: RuntimeHandle) -> None:
        """Return when ``handle`` died, is no longer ours, or we stop."""
        with self._cond:
            while not self._stopping and self.handle is handle and handle.alive():
                self._cond.wait(WATCH_PERIOD)

    def _pause(self, seconds: float) -> bool:
        """Sleep unless stopped first; True when stopping."""
        deadline = time.monotonic() + seconds
        with self._cond:
            while not self._stopping and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            return self._stopping


def _get(url: str, path: str) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port,
                                      timeout=PROBE_TIMEOUT)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class RuntimeManager:
    """The runtimes of every OSCAR function of the provider. Thread-safe."""

    def __init__(self, launcher: Launcher) -> None:
        self.launcher = launcher
        self._runtimes: dict[str, ManagedRuntime] = {}
        self._lock = threading.Lock()
        self._closed = False

    def start_all(self, specs: Iterable[RuntimeSpec]) -> None:
        """At provider start: adopt what the launcher reports (same fingerprint), stop the
        rest of it, start the others."""
        try:
            adopted = dict(self.launcher.adopt())
        except Exception:  # noqa: BLE001 - a failed look-up must not stop the provider
            log.exception("could not list the runtimes left by a previous provider")
            adopted = {}
        for spec in specs:
            handle = adopted.pop(spec.name, None)
            if handle is not None and (getattr(handle, "fingerprint", None) != spec.fingerprint
                                       or not handle.alive()):
                log.info("function %s: the runtime left running is outdated; replacing it",
                         spec.name)
                handle.stop(STOP_TIMEOUT)
                handle = None
            elif handle is not None:
                log.info("function %s: adopted its running runtime on %s", spec.name,
                         handle.url)
            self._install(spec, handle)
        for name, handle in adopted.items():
            log.info("stopping the runtime of %s, which is no longer deployed", name)
            handle.stop(STOP_TIMEOUT)

    def ensure(self, spec: RuntimeSpec) -> None:
        """Deploy or update: start a runtime unless the current one has this spec."""
        self._install(spec, None)

    def _install(self, spec: RuntimeSpec, adopted: RuntimeHandle | None) -> None:
        with self._lock:
            if self._closed:
                return
            old = self._runtimes.get(spec.name)
            if old is not None and old.spec.fingerprint == spec.fingerprint:
                return
            self._runtimes[spec.name] = ManagedRuntime(spec, self.launcher, adopted).start()
        if old is not None:
            log.info("function %s updated: the previous runtime stops once its calls end",
                     spec.name)
            threading.Thread(target=old.stop, args=(DRAIN_LIMIT,), daemon=True,
                             name=f"retire-{spec.name}").start()

    def remove(self, name: str) -> None:
        """Delete: stop the function's runtime (waits for it to be gone)."""
        with self._lock:
            runtime = self._runtimes.pop(name, None)
        if runtime is not None:
            runtime.stop()

    def get(self, name: str) -> ManagedRuntime | None:
        return self._runtimes.get(name)

    def ready(self, name: str) -> bool:
        runtime = self._runtimes.get(name)
        return runtime is not None and runtime.ready

    def close(self) -> None:
        """Provider shutdown: stop every runtime (in parallel), then the launcher."""
        with self._lock:
            self._closed = True
            runtimes = list(self._runtimes.values())
            self._runtimes.clear()
        threads = [threading.Thread(target=r.stop, daemon=True) for r in runtimes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(STOP_TIMEOUT + 2)
        try:
            self.launcher.close()
        except Exception:  # noqa: BLE001
            log.exception("closing the %s launcher failed", self.launcher.kind)
