"""Whether services are ready, for ``oscar-faas apply`` (wait) and ``oscar-faas ls`` (state).

Both read OSCAR's ``GET /system/services/<name>/deployment`` (``state``: ``ready``,
``pending``, ``failed``... and its ``reason``). While ``apply`` waits it shows what the
platform is doing: each change of the reason, and, once a wait passes :data:`QUIET` seconds
(an image pull, the container runtime's first build, a warm worker loading its model), the
service's new log lines as they come.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from typing import IO, Any, Iterable

from .client import ClientError, OscarClient
from .provider.runtimes.state import summary

#: Seconds between two looks at a service.
POLL = 0.5
#: A wait longer than this shows the service's log lines (quick starts stay quiet).
QUIET = 2.0
#: OSCAR's deployment states that end a wait.
DONE = ("ready", "failed", "stopped", "unavailable")


def deployment(client: OscarClient, name: str) -> dict[str, Any] | None:
    """The service's deployment status, None when the endpoint has no such route (an OSCAR
    without it)."""
    resp = client._call("GET", f"/system/services/{name}/deployment", ok=(200, 404, 501))
    if resp.status_code != 200:
        return None
    data = resp.json()
    return data if isinstance(data, dict) else None


def state_text(status: dict[str, Any] | None) -> str:
    """``Ready``, ``Starting: <what>``, ``Failed: <cause>`` (first line), as ``ls`` shows."""
    if status is None:
        return "unknown"
    state = str(status.get("state", "unknown"))
    reason = summary(str(status.get("reason") or ""))
    label = {"ready": "Ready", "pending": "Starting", "failed": "Failed"}.get(
        state, state.capitalize())
    if state == "ready" or not reason:
        return label
    return f"{label}: {reason}"


def wait_ready(client: OscarClient, names: Iterable[str], timeout: float,
               out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> bool:
    """Wait until every service in ``names`` is ready; False (after saying why on ``err``)
    when one failed or is still not ready after ``timeout`` seconds."""
    ok = True
    for name in names:
        ok = _wait_one(client, name, timeout, out, err) and ok
    return ok


def _wait_one(client: OscarClient, name: str, timeout: float, out: IO[str],
              err: IO[str]) -> bool:
    started = time.monotonic()
    since = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    shown_reason, shown_lines = "", 0
    while True:
        status = deployment(client, name)
        waited = time.monotonic() - started
        if status is None:
            print(f"{name}: this endpoint does not report deployments; not waiting", file=out)
            return True
        state = str(status.get("state"))
        reason = str(status.get("reason") or "").strip()
        if waited >= QUIET or (state in DONE and state != "ready"):
            shown_lines = _show_logs(client, name, since, shown_lines, out)
        if state == "ready":
            print(f"{name}: ready ({waited:.1f} s)", file=out, flush=True)
            return True
        if state in DONE:
            print(f"{name}: {state}: {reason}", file=err, flush=True)
            return False
        if reason and reason != shown_reason and waited >= QUIET:
            print(f"{name}: {reason}", file=out, flush=True)
            shown_reason = reason
        if waited >= timeout:
            print(f"{name}: not ready after {timeout:g} s: {reason or state} (apply "
                  f"--timeout to wait longer, oscar-faas logs {name} to see more)", file=err,
                  flush=True)
            return False
        time.sleep(POLL)


def _show_logs(client: OscarClient, name: str, since: str, shown: int, out: IO[str]) -> int:
    """Print the service's log lines since the wait began that were not printed yet."""
    try:
        lines = [m.get("text", "") for m in client.logs(name, since=since)]
    except (ClientError, ValueError):
        return shown
    for text in lines[shown:]:
        print(f"  {name} | {text}", file=out, flush=True)
    return max(shown, len(lines))
