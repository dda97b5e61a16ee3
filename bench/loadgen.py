"""Closed-loop load at a fixed concurrency for a fixed time: ``wrk`` when it is installed
(one thread, C keep-alive connections: it costs the machine far less CPU than any Python
client), else a thread-per-connection ``http.client`` loop.

Only loopback URLs are accepted.
"""

from __future__ import annotations

import http.client
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from benchlib import percentile

#: Hard bound on one run, whatever ``seconds`` says.
MAX_SECONDS = 60
#: Hard bound on requests per connection in the Python generator.
MAX_REQUESTS_PER_CONNECTION = 200_000


@dataclass
class LoadResult:
    tool: str
    concurrency: int
    seconds: float
    requests: int
    errors: int  # non-2xx answers plus socket errors
    rps: float
    p50: float  # seconds
    p99: float
    cpu_gateway_ms: float = float("nan")  # filled in by callers that measure it
    cpu_provider_ms: float = float("nan")

    def describe(self) -> str:
        text = f"{self.rps:,.0f}/s (p50 {self.p50 * 1000:.2f} ms, p99 {self.p99 * 1000:.2f} ms)"
        if self.errors:
            text += f" {self.errors} ERRORS"
        return text


def _check_loopback(url: str) -> tuple[str, int, str]:
    match = re.match(r"http://(127\.\d+\.\d+\.\d+|localhost):(\d+)(/.*)", url)
    if not match:
        raise ValueError(f"load only goes to loopback URLs, not {url}")
    return match.group(1), int(match.group(2)), match.group(3)


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def run_load(url: str, concurrency: int, seconds: float, method: str = "GET",
             body: bytes = b"", headers: Mapping[str, str] | None = None,
             use_wrk: bool | None = None) -> LoadResult:
    """Load ``url`` with ``concurrency`` connections for ``seconds`` (at most 60)."""
    _check_loopback(url)
    seconds = min(seconds, MAX_SECONDS)
    if use_wrk is None:
        use_wrk = have_wrk()
    if use_wrk:
        return _wrk(url, concurrency, seconds, method, body, dict(headers or {}))
    return _python(url, concurrency, seconds, method, body, dict(headers or {}))


# --- wrk -------------------------------------------------------------------------------------

def _lua_string(data: str) -> str:
    return "'" + data.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _duration(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m)", text)
    return float(match.group(1)) * _UNITS[match.group(2)] if match else float("nan")


def _wrk(url: str, concurrency: int, seconds: float, method: str, body: bytes,
         headers: dict[str, str]) -> LoadResult:
    lines = [f"wrk.method = {_lua_string(method)}"]
    if body:
        lines.append(f"wrk.body = {_lua_string(body.decode('latin-1'))}")
    lines.extend(f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items())
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write("\n".join(lines) + "\n")
    try:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency",
             "--timeout", "10s", "-s", script.name, url],
            capture_output=True, text=True, timeout=seconds + 30)
    finally:
        Path(script.name).unlink(missing_ok=True)
    text = out.stdout
    if out.returncode != 0 or "Requests/sec" not in text:
        raise RuntimeError(f"wrk failed ({out.returncode}): {text}\n{out.stderr}")
    total = int(re.search(r"(\d+) requests in ([\d.]+\w+)", text).group(1))
    elapsed = _duration(re.search(r"\d+ requests in ([\d.]+\w+)", text).group(1))
    errors = 0
    match = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if match:
        errors += int(match.group(1))
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if match:
        errors += sum(int(g) for g in match.groups())
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    return LoadResult("wrk", concurrency, elapsed, total, errors,
                      float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
                      _duration(p50.group(1)) if p50 else float("nan"),
                      _duration(p99.group(1)) if p99 else float("nan"))


# --- Python fallback -------------------------------------------------------------------------

def _python(url: str, concurrency: int, seconds: float, method: str, body: bytes,
            headers: dict[str, str]) -> LoadResult:
    host, port, path = _check_loopback(url)
    lock = threading.Lock()
    latencies: list[float] = []
    counts = {"ok": 0, "errors": 0}
    start_gate = threading.Barrier(concurrency + 1)
    deadline_box: list[float] = []

    def worker() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mine: list[float] = []
        ok = errors = 0
        start_gate.wait()
        deadline = deadline_box[0]
        for _ in range(MAX_REQUESTS_PER_CONNECTION):
            if time.monotonic() >= deadline:
                break
            t0 = time.perf_counter()
            try:
                conn.request(method, path, body=body or None, headers=headers)
                resp = conn.getresponse()
                resp.read()
                if 200 <= resp.status < 400:
                    ok += 1
                else:
                    errors += 1
                if resp.will_close:
                    conn.close()
                    conn = http.client.HTTPConnection(host, port, timeout=10)
            except OSError:
                errors += 1
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=10)
            mine.append(time.perf_counter() - t0)
        conn.close()
        with lock:
            latencies.extend(mine)
            counts["ok"] += ok
            counts["errors"] += errors

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    begin = time.monotonic()
    deadline_box.append(begin + seconds)
    start_gate.wait()
    for thread in threads:
        thread.join(seconds + 30)
    elapsed = time.monotonic() - begin
    total = counts["ok"] + counts["errors"]
    return LoadResult("python", concurrency, elapsed, total, counts["errors"],
                      total / elapsed if elapsed else 0.0, percentile(latencies, 50),
                      percentile(latencies, 99))
