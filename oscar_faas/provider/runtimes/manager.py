"""One long-lived runtime per function: started, watched, restarted, replaced, stopped.

The :class:`RuntimeManager` keeps, per function, one :class:`ManagedRuntime`: a keeper thread
that starts the runtime through a :class:`~oscar_faas.launchers.launch.Launcher`, polls
``GET {url}/_/health`` until it answers 200 (then the function counts as ready:
``availableReplicas`` 1), watches it and starts it again when it dies. What it is doing, and
why it is not running, is its :class:`~.state.RuntimeState` (the restart policy is described
there): calls wait for a runtime that is starting, and get a 503 naming the cause at once
while it is failed.

Life cycle, as the provider drives it:

* **deploy** and **provider start**: :meth:`RuntimeManager.ensure` starts a runtime in the
  background (a deploy of a classic function then waits a little for it to be ready, see
  :mod:`..backend`). At start, runtimes the launcher reports as still running (containers, by
  labels) are kept when their ``fingerprint`` is the spec's, stopped otherwise.
* **update** with a different spec: a new runtime becomes the function's at once, so every
  call after the update is answered by the new definition (as oscar-python's
  ``update_service`` then ``run_service`` expect); such calls wait for it to listen
  (:data:`START_WAIT`), then queue inside it until it is ready. The old runtime finishes its
  calls (at most :data:`DRAIN_LIMIT` s) and is stopped. A new one that never gets ready
  answers calls itself (a worker's error, 503): a broken update shows as a broken deploy
  does. The price: a warm model is reloaded before the first call after an update.
* **delete** and **provider close**: stopped (SIGTERM, then SIGKILL after a few seconds).
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from typing import Iterable

from ...contract import RUNTIME_CONNECT_TIMEOUT
from ...launchers.launch import Launcher, LaunchError, RuntimeHandle, RuntimeSpec, function_logger
from ...upstream import Upstream
from .state import (FAILED, READY, RESTART_STABLE, STARTING, RuntimeState,
                            exit_cause, probe, restart_delay, summary)

log = logging.getLogger("oscar_faas.provider.runtimes.manager")

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
#: A runtime's ``/_/health`` 503 body while it is merely loading, and the start of one that
#: names why it cannot get ready by itself (warm workers that fail at start).
LOADING, FAILED_MARK = "not ready", "failed: "


class ManagedRuntime:
    """One function's runtime for one spec (an update makes a new one)."""

    def __init__(self, spec: RuntimeSpec, launcher: Launcher,
                 adopted: RuntimeHandle | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.launcher = launcher
        self.handle: RuntimeHandle | None = None
        self.pool: Upstream | None = None  # the proxy's connections to it, closed with it
        self.inflight = 0
        #: what it is doing or why it is not running (replaced whole, read without a lock)
        self.state = RuntimeState(reason=self._starting_text())
        self._adopted = adopted
        self._stopping = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._keep, name=f"runtime-{spec.name}",
                                        daemon=True)

    def __repr__(self) -> str:
        return f"<ManagedRuntime {self.name} {self.handle!r} {self.state.state}>"

    def start(self) -> ManagedRuntime:
        self._thread.start()
        return self

    @property
    def ready(self) -> bool:
        return self.state.state == READY

    # --- what calls use ------------------------------------------------------------------------

    def acquire(self, wait: float = START_WAIT) -> tuple[RuntimeHandle, Upstream] | None:
        """The running runtime for one call (waiting up to ``wait`` s for it to listen), or
        None: stopped, still not running after ``wait``, or failed and waiting out its
        back-off (then at once: :attr:`state` says why and when it tries again); the caller
        must :meth:`release` after a non-None answer."""
        deadline = time.monotonic() + wait
        with self._cond:
            while True:
                if self._stopping:
                    return None
                if self.handle is not None and self.pool is not None:
                    self.inflight += 1
                    return self.handle, self.pool
                if self.state.retry_at is not None:
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for it to be ready (False at once if it fails or stops)."""
        with self._cond:
            self._cond.wait_for(lambda: self._stopping or self.state.state in (READY, FAILED),
                                timeout)
            return self.state.state == READY and not self._stopping

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
            code, body = probe(handle.url, "/_/status")
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
        self.handle = None
        if self.state.state == READY:
            self._set(STARTING, "its runtime exited; it is being restarted")
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def _set(self, state: str, reason: str, retry_at: float | None = None,
             failures: int | None = None, restarted: bool = False) -> None:
        """Replace :attr:`state` (its time kept when ``state`` stays); wake waiting calls."""
        with self._cond:
            old = self.state
            self.state = RuntimeState(
                state=state, reason=reason,
                since=old.since if state == old.state else time.time(), retry_at=retry_at,
                failures=old.failures if failures is None else failures,
                restarts=old.restarts + (1 if restarted else 0))
            self._cond.notify_all()

    def _starting_text(self) -> str:
        if self.launcher.kind == "container":
            return (f"starting its container (image {self.spec.image}, pulled first when it "
                    f"is not on this machine)")
        return "starting its runtime"

    # --- the keeper thread -------------------------------------------------------------------

    def _keep(self) -> None:
        failures, note = 0, ""
        while not self._stopping:
            if failures >= 2:  # back from a back-off: still failed, trying again
                with self._cond:
                    self.state = self.state.retrying()
            else:
                self._set(STARTING, self._starting_text() + note, failures=failures)
            handle, cause = self._launch()
            restarted = handle is not None
            if handle is None:
                if self._stopping:
                    return
            else:
                ready_at = self._wait_ready(handle)
                self._watch(handle)
                with self._cond:
                    if self._stopping:
                        break
                    if self.handle is handle:
                        self._forget()
                ready_for = None if ready_at is None else time.monotonic() - ready_at
                handle.stop(STOP_TIMEOUT)  # clean up what it left (process group, container)
                cause = exit_cause(handle, ready_for)
                if ready_for is not None and ready_for >= RESTART_STABLE:
                    failures = 0  # it was healthy: this is a first failure again
            failures += 1
            if restart_delay(failures) == 0:  # a first failure: try again at once
                note = f" again ({summary(cause)})"
                self._set(STARTING, self._starting_text() + note, failures=failures,
                          restarted=restarted)
                log.warning("function %s: %s; restarting it at once", self.name,
                            cause.replace("\n", " | "))
                continue
            if self._back_off(failures, cause, restarted):
                return

    def _back_off(self, failures: int, cause: str, restarted: bool = False) -> bool:
        """Failed: tell calls why and when the next try is, wait for it; True: stopping."""
        delay = restart_delay(failures)
        self._set(FAILED, cause, retry_at=time.monotonic() + delay, failures=failures,
                  restarted=restarted)
        first = summary(cause) or "failed"
        log.warning("function %s: %s; next try in %gs (failure %d in a row)", self.name,
                    cause.replace("\n", " | "), delay, failures)
        function_logger(self.name).error("not running: %s; next try in %g s", first, delay)
        return self._pause(delay)

    def _launch(self) -> tuple[RuntimeHandle | None, str]:
        """Start (or adopt) a runtime: ``(handle, "")`` or ``(None, why not)``."""
        handle, self._adopted = self._adopted, None
        if handle is None:
            try:
                handle = self.launcher.start(self.spec)
            except LaunchError as err:
                log.error("function %s: %s", self.name, err)
                return None, str(err)
            except Exception as err:  # noqa: BLE001 - a launcher bug must not end the keeper
                log.exception("function %s: the runtime could not be started", self.name)
                return None, f"its runtime could not be started: {err!r}"
        with self._cond:
            if self._stopping:
                stale = handle
            else:
                stale = None
                self.handle, self.pool = handle, Upstream.for_url(handle.url,
                                                                  RUNTIME_CONNECT_TIMEOUT)
                if self.state.state != FAILED:  # a failure stays the news until it is ready
                    self._set(STARTING, f"its runtime listens on {handle.url}; waiting for it to "
                              "be ready (warm workers load first)")
        if stale is not None:
            stale.stop(STOP_TIMEOUT)
            return None, "stopped"
        return handle, ""

    def _wait_ready(self, handle: RuntimeHandle) -> float | None:
        """Poll ``/_/health`` until 200 (the monotonic time then); None when it died or we
        stop first. A 503 that names a cause (warm workers that cannot start) makes the state
        failed meanwhile; calls still reach the runtime, which retries them."""
        pause = HEALTH_FIRST
        while not self._stopping and self.handle is handle:
            try:
                code, body = probe(handle.url, "/_/health")
            except (OSError, http.client.HTTPException):
                code, body = 0, b""
            if code == 200:
                with self._cond:
                    if self.handle is handle:
                        self._set(READY, "its runtime is ready")
                log.info("function %s: runtime ready on %s", self.name, handle.url)
                return time.monotonic()
            text = body.decode("utf-8", "replace").strip()
            if code == 503 and text.startswith(FAILED_MARK):
                if self.state.reason != text[len(FAILED_MARK):]:
                    self._set(FAILED, text[len(FAILED_MARK):])
                    log.warning("function %s: not ready: %s", self.name,
                                text.replace("\n", " | "))
            elif code == 503 and text and text != LOADING and self.state.state != FAILED:
                self._set(STARTING, text)  # what it waits for (an exposed service's server)
            if not handle.alive():
                return None
            with self._cond:
                self._cond.wait(pause)
            pause = min(pause * HEALTH_GROWTH, HEALTH_MAX)
        return None

    def _watch(self, handle: RuntimeHandle) -> None:
        """Return when ``handle`` died, is no longer ours, or we stop. A handle that can be
        waited on (a host process) is noticed the moment it exits, so a call that comes
        right after a crash waits for the restart instead of hitting a dead pooled
        connection; a container is polled every :data:`WATCH_PERIOD`."""
        wait = getattr(handle, "wait", None)
        while not self._stopping and self.handle is handle and handle.alive():
            if wait is not None:
                wait(WATCH_PERIOD)
            else:
                with self._cond:
                    self._cond.wait(WATCH_PERIOD)

    def _pause(self, seconds: float) -> bool:
        """Sleep unless stopped first; True when stopping."""
        deadline = time.monotonic() + seconds
        with self._cond:
            while not self._stopping and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            return self._stopping


class RuntimeManager:
    """Every function's runtime; classic ones' by ``host_launcher`` (on the host). Thread-safe."""

    def __init__(self, launcher: Launcher, host_launcher: Launcher | None = None) -> None:
        self.launcher = launcher
        self.host_launcher = host_launcher or launcher
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
            launcher = self.host_launcher if spec.classic else self.launcher
            self._runtimes[spec.name] = ManagedRuntime(spec, launcher, adopted).start()
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
