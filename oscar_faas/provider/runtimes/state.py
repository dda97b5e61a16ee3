"""What a function's runtime is doing, and the restart policy: the facts behind ``/function``'s
503s, the function status's ``runtime`` field and OSCAR's ``/deployment`` route.

A runtime is in one of three states (:class:`RuntimeState`):

* ``starting``: being started or restarted, or started and not yet ready (image pull, runtime
  binary build, warm workers loading); calls wait for it (up to ``START_WAIT``);
* ``ready``: its ``/_/health`` answers 200;
* ``failed``: the last start failed or it crashed, and it is waiting out its back-off before the
  next try (``retry_at``); calls are answered at once with a 503 naming the cause and the time
  of the next try (``Retry-After``), instead of waiting silently. A runtime that runs but whose
  warm workers could not start is ``failed`` too (no ``retry_at``: its calls still reach it, and
  each call retries the workers).

Restart policy (:func:`restart_delay`): a failed start or a crash is one more failure in a
row; the first is retried at once (calls wait for the new runtime: a crash of a healthy runtime
costs the next call a restart, never a 502 or a back-off), the following ones after 1, 2, 4, 8,
16, then 30 s (calls get the 503 meanwhile). A runtime that had been ready for
:data:`RESTART_STABLE` seconds before it exits starts a new count.
"""

from __future__ import annotations

import http.client
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from ...launchers.launch import _RUNTIME_LINE

STARTING, READY, FAILED = "starting", "ready", "failed"

#: A runtime ready for this long before it exits counts as healthy: restarted at once.
RESTART_STABLE = 10.0
#: Back-off after the first failure in a row, doubled per further failure up to the longest.
RESTART_FIRST, RESTART_MAX = 1.0, 30.0
#: Timeout of one health or status request.
PROBE_TIMEOUT = 2.0
#: Lines of a crashed runtime's output quoted in its cause.
CAUSE_LINES = 20


def summary(reason: str) -> str:
    """One line of a cause: its first line, and when that only introduces the output that
    follows (``...:``), the output's last line too (where a runtime says what went wrong)."""
    lines = [line.strip() for line in reason.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    first = lines[0]
    if first.endswith(":") and len(lines) > 1:
        line = _RUNTIME_LINE.match(lines[-1])  # the runtime's own format: its message
        first += " " + (line.group(2) if line else lines[-1])
    return first


def restart_delay(failures: int) -> float:
    """Seconds before the next start after ``failures`` failures in a row: the first is
    retried at once, then 1, 2, 4, 8, 16 and 30 s."""
    if failures <= 1:
        return 0.0
    return min(RESTART_FIRST * 2 ** (failures - 2), RESTART_MAX)


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class RuntimeState:
    """One runtime's state, as the manager last set it (read without a lock: replaced whole)."""

    state: str = STARTING
    #: what it is doing (starting) or why it is not running (failed), whole
    reason: str = ""
    #: wall-clock time of the last change of ``state``
    since: float = field(default_factory=time.time)
    #: monotonic time of the next start (failed, in back-off); None otherwise
    retry_at: float | None = None
    #: failures in a row (failed starts and early crashes)
    failures: int = 0
    #: restarts since the function was deployed or updated
    restarts: int = 0

    def retry_in(self) -> float | None:
        if self.retry_at is None:
            return None
        return max(0.0, self.retry_at - time.monotonic())

    def to_dict(self) -> dict[str, Any]:
        """The function status's ``runtime`` field (an oscar-faas addition to OpenFaaS'
        shape; a Go client ignores it)."""
        out: dict[str, Any] = {"state": self.state, "reason": self.reason,
                               "since": rfc3339(self.since), "restarts": self.restarts}
        retry = self.retry_in()
        if retry is not None:
            out["retryIn"] = round(retry, 1)
        return out

    def retrying(self) -> RuntimeState:
        """The same failure while the next try is under way (calls wait for it)."""
        return RuntimeState(FAILED, self.reason, self.since, None, self.failures,
                            self.restarts)

    def not_ready_text(self, name: str) -> str:
        """The body of the 503 a call gets while the runtime is failed."""
        text = f"function {name} cannot start: {self.reason.strip()}"
        retry = self.retry_in()
        if retry is not None:
            text += f"\n(failure {self.failures} in a row; next try in {math.ceil(retry)} s)"
        return text


def exit_cause(handle: Any, ready_for: float | None) -> str:
    """Why a runtime that had started is gone: its exit status (host) and its last lines."""
    proc = getattr(handle, "proc", None)
    code = getattr(proc, "returncode", None)
    if code is None:
        what = "its runtime exited"
    elif code < 0:
        what = f"its runtime was killed by signal {-code}"
    else:
        what = f"its runtime exited with status {code}"
    if ready_for is None:
        what += " before it was ready"
    else:
        what += f" after {ready_for:.1f} s ready"
    try:
        tail = handle.output_tail().strip().splitlines()[-CAUSE_LINES:]
    except Exception:  # noqa: BLE001 - the cause is worth giving without its output
        tail = []
    text = "\n".join(tail)
    if "/tmp" in text and "temporary" in text.lower():  # the static runtime unpacks there
        what += " (the image needs a writable /tmp)"
    return what + (":\n" + text if text else "")


def probe(url: str, path: str) -> tuple[int, bytes]:
    """``GET {url}{path}``: status and body (raises OSError/HTTPException when unreachable)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port,
                                      timeout=PROBE_TIMEOUT)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()
