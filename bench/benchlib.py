"""Shared pieces of the benchmark: statistics, tables, /proc memory readings, a keep-alive
HTTP client, live ``oscar-faas serve`` and provider processes, and the benchmark services.

Everything here is bounded: every wait has a deadline and every loop a count.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from oscar_faas.serve import free_port

REPO = Path(__file__).resolve().parent.parent

#: The cheapest script a service can have (OSCAR requires one).
NOOP_SCRIPT = "#!/bin/sh\ntrue\n"
#: Section 1's script: the input back as the only output file (answer: its base64).
COPY_SCRIPT = '#!/bin/sh\ncp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/out"\n'
#: The streaming test's script: prints the decoded input size (no output file: stdout is
#: the answer).
COUNT_SCRIPT = '#!/bin/sh\nwc -c < "$INPUT_FILE_PATH"\n'


# --- statistics ------------------------------------------------------------------------------

def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (numpy's default), ``nan`` for no values."""
    if not values:
        return math.nan
    data = sorted(values)
    rank = (len(data) - 1) * pct / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (rank - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    return {"n": len(values), "p50": percentile(values, 50), "p90": percentile(values, 90),
            "p99": percentile(values, 99), "min": min(values) if values else math.nan,
            "max": max(values) if values else math.nan}


def ms(seconds: float) -> str:
    """A duration in milliseconds, with precision that suits its size."""
    if seconds is None or math.isnan(seconds):
        return "n/a"
    value = seconds * 1000.0
    if abs(value) >= 100:
        return f"{value:.0f} ms"
    if abs(value) >= 10:
        return f"{value:.1f} ms"
    return f"{value:.2f} ms"


def mib(kib: float | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.1f} MiB"


# --- tables ----------------------------------------------------------------------------------

COLUMNS = ("metric", "oscar-faas", "baseline", "target", "verdict")


@dataclass
class Table:
    """One section's figures, printed as an aligned ``|`` table (also valid Markdown)."""

    title: str
    rows: list[tuple[str, ...]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, metric: str, ours: str, baseline: str = "", target: str = "",
            verdict: str = "") -> None:
        self.rows.append((metric, ours, baseline, target, verdict))

    def render(self) -> str:
        widths = [max(len(str(r[i])) for r in (COLUMNS, *self.rows)) for i in range(len(COLUMNS))]

        def line(cells: Iterable[str]) -> str:
            return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

        out = [f"\n## {self.title}\n", line(COLUMNS),
               "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        out.extend(line(r) for r in self.rows)
        if self.notes:
            out.append("")
            out.extend(f"* {n}" for n in self.notes)
        return "\n".join(out)


def verdict(ok: bool | None) -> str:
    if ok is None:
        return "n/a"
    return "PASS" if ok else "MISS"


# --- machine ---------------------------------------------------------------------------------

def machine() -> dict[str, str]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"cpus": str(os.cpu_count()), "cpu_model": model or platform.processor(),
            "commit": commit or "unknown",
            "memory": mem, "python": platform.python_version(),
            "python_path": sys.executable, "kernel": platform.release(),
            "load_1m": f"{os.getloadavg()[0]:.2f}"}


# --- /proc -----------------------------------------------------------------------------------

def proc_status(pid: int) -> dict[str, int]:
    """``VmRSS``/``VmHWM`` (kB) of a process, empty when it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0])
    return out


def proc_pss(pid: int) -> int:
    """Proportional set size (kB): shared pages divided among the processes sharing them,
    so forked workers are not counted several times. 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


#: pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst): page present, frame number.
_PRESENT = 1 << 63
_FRAME = (1 << 55) - 1


def group_resident(pids: Iterable[int]) -> int | None:
    """The memory a group of processes holds (kB): every page resident in any of them,
    counted once, as the kernel's page frames tell. Unlike a sum of PSS it does not depend on
    who else maps the same files: PSS gives each process sharing a library page a slice of
    it, so a service measured beside another one that loads the same libraries (or beside
    this process) is charged less, and by how many processes the other one has. This is the
    service's PSS as if it ran alone. ``None`` without the right to read frame numbers
    (``CAP_SYS_ADMIN``: the kernel then gives zeros)."""
    page = os.sysconf("SC_PAGE_SIZE")
    frames: set[int] = set()
    for pid in pids:
        try:
            ranges = _resident_ranges(Path(f"/proc/{pid}/smaps").read_text())
            handle = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
        except OSError:  # gone meanwhile
            continue
        try:
            for start, end in ranges:
                data = os.pread(handle, (end - start) // page * 8, start // page * 8)
                for offset in range(0, len(data), 8):
                    entry = int.from_bytes(data[offset:offset + 8], "little")
                    if entry & _PRESENT:
                        if not entry & _FRAME:
                            return None
                        frames.add(entry & _FRAME)
        finally:
            os.close(handle)
    return len(frames) * page // 1024


def _resident_ranges(smaps: str) -> list[tuple[int, int]]:
    """The address ranges of ``/proc/<pid>/smaps`` with resident pages (``Rss`` above 0),
    but the kernel's ``[vsyscall]`` page, which has no entry in ``pagemap``."""
    ranges: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    for line in smaps.splitlines():
        head = line.split(" ", 1)[0]
        if "-" in head and not head.endswith(":"):
            start, end = head.split("-")
            current = None if line.endswith("[vsyscall]") else (int(start, 16), int(end, 16))
        elif head == "Rss:" and current and int(line.split()[1]) > 0:
            ranges.append(current)
    return ranges


def cpu_seconds(pids: Iterable[int], reaped: bool = False) -> float:
    """User + system CPU time of ``pids`` (plus, with ``reaped``, of the children they have
    waited for, such as the scripts a supervisor ran)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
        if reaped:
            total += int(fields[13]) + int(fields[14])
    return total / os.sysconf("SC_CLK_TCK")


def steal_ticks() -> tuple[int, int]:
    """``(steal, total)`` jiffies of all CPUs since boot, from /proc/stat."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return (values[7] if len(values) > 7 else 0), sum(values[:8])


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (all threads), as the provider finds them."""
    from oscar_faas.runtime.children import child_pids

    return child_pids(pid)


def descendants(pid: int, limit: int = 1000) -> list[int]:
    found, todo = [], [pid]
    while todo and len(found) < limit:
        for kid in children(todo.pop()):
            found.append(kid)
            todo.append(kid)
    return found


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


class RssSampler:
    """Samples the VmRSS of process groups every ``interval`` s in a thread; keeps peaks.

    ``groups`` maps a label to a callable returning the pids of that group right now.
    """

    def __init__(self, groups: Mapping[str, Any], interval: float = 0.05,
                 max_seconds: float = 900) -> None:
        self.groups = dict(groups)
        self.interval = interval
        self.max_seconds = max_seconds
        self.peak_rss: dict[str, int] = {k: 0 for k in self.groups}
        self.peak_hwm: dict[str, int] = {k: 0 for k in self.groups}
        self.peak_pss: dict[str, int] = {k: 0 for k in self.groups}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for label, pids in self.groups.items():
            rss = hwm = pss = 0
            for pid in pids():
                status = proc_status(pid)
                rss += status.get("VmRSS", 0)
                hwm += status.get("VmHWM", 0)
                pss += proc_pss(pid)
            self.peak_rss[label] = max(self.peak_rss[label], rss)
            self.peak_hwm[label] = max(self.peak_hwm[label], hwm)
            self.peak_pss[label] = max(self.peak_pss[label], pss)
        self.samples += 1

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()


# --- HTTP ------------------------------------------------------------------------------------

class KeepAlive:
    """One persistent HTTP/1.1 connection (``http.client``, TCP_NODELAY), timed calls."""

    def __init__(self, url: str, timeout: float = 60) -> None:
        match = re.match(r"http://([^:/]+):(\d+)", url)
        if not match:
            raise ValueError(url)
        self.host, self.port = match.group(1), int(match.group(2))
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None
        #: the headers of the last answer
        self.last_headers: list[tuple[str, str]] = []

    def _connect(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self.conn.connect()
            self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.conn

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: Mapping[str, str] | None = None) -> tuple[float, int, bytes]:
        """``(seconds, status, body)`` of one request, connection reused."""
        conn = self._connect()
        start = time.perf_counter()
        conn.request(method, path, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        data = resp.read()
        elapsed = time.perf_counter() - start
        self.last_headers = resp.getheaders()
        if resp.will_close:
            self.close()
        return elapsed, resp.status, data

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def http_json(method: str, url: str, body: Any = None, auth: tuple[str, str] | None = None,
              timeout: float = 30) -> tuple[int, Any]:
    """A one-off JSON call with ``requests`` (management calls only, never timed)."""
    import requests
    resp = requests.request(method, url, json=body, auth=auth, timeout=timeout)
    try:
        data = resp.json()
    except ValueError:
        data = resp.text
    return resp.status_code, data


def wait_http(url: str, seconds: float, proc: subprocess.Popen | None = None,
              log: Path | None = None) -> None:
    """Poll ``url`` until it answers 200, at most ``seconds``."""
    import requests
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}:\n{_tail(log)}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {seconds:g} s:\n{_tail(log)}")


def _tail(path: Path | None, size: int = 4000) -> str:
    if path is None or not path.exists():
        return ""
    return path.read_text(errors="replace")[-size:]


# --- services --------------------------------------------------------------------------------

def service_body(name: str, script: str, variables: Mapping[str, str] | None = None,
                 resources: Mapping[str, str] | None = None) -> dict:
    """An OSCAR service definition (``POST /system/services`` JSON); ``resources`` replaces
    its ``cpu``/``memory``."""
    return {"name": name, "image": "alpine", "cpu": "0.5", "memory": "256Mi",
            "log_level": "CRITICAL", "script": script,
            "environment": {"variables": dict(variables or {})}, **dict(resources or {})}


def deployment(name: str, script: str, variables: Mapping[str, str] | None = None,
               resources: Mapping[str, str] | None = None) -> dict:
    """The OpenFaaS FunctionDeployment the gateway would send for :func:`service_body`,
    built by the gateway's own translation code, as an *open* function: without the
    service's secret, whose only content here would be the token its runtime checks callers
    against (issue 21). Sections that start a runtime or the supervisor themselves, or deploy
    on the provider directly, measure the function alone; the token check (a ``stat`` and a
    constant-time compare per call) is measured where calls go through the gateway."""
    from oscar_faas.config import Settings
    from oscar_faas.contract import ENV_STORAGE_SECRET
    from oscar_faas.model import Service
    from oscar_faas.plan import plan_deployment, prepare_service
    settings = Settings.from_env({})
    body = service_body(name, script, variables, resources)
    service = prepare_service(Service.from_dict(body), settings)
    fd = plan_deployment(service, settings).deployment
    fd.pop("secrets", None)
    fd["envVars"].pop(ENV_STORAGE_SECRET, None)
    return fd


# --- live processes --------------------------------------------------------------------------

def _stop_group(proc: subprocess.Popen, grace: float = 15) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _clean_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENFAAS_", "MINIO_"))}
    env.update(extra or {})
    return env


class _ChildServer:
    """A server process in its own session, logging to a file, stopped with its group."""

    workdir: Path
    log_path: Path
    proc: subprocess.Popen | None = None

    def _spawn(self, argv: list[str], env: dict[str, str], health_url: str,
               seconds: float = 30) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        try:
            wait_http(health_url, seconds, self.proc, self.log_path)
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            _stop_group(self.proc)


class Provider(_ChildServer):
    """``python -m oscar_faas.provider`` alone, on a free port, with basic auth."""

    user = "admin"

    def __init__(self, workdir: Path, python: str = sys.executable) -> None:
        self.workdir = workdir
        self.python = python
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.password = os.urandom(12).hex()
        self.log_path = workdir / "provider.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Provider":
        self._spawn([self.python, "-m", "oscar_faas.provider", "--port", str(self.port),
                     "--data-dir", str(self.workdir / "provider-data"), "--log-level",
                     "WARNING"],
                    _clean_env({"OPENFAAS_USERNAME": self.user,
                                "OPENFAAS_PASSWORD": self.password}),
                    self.url + "/healthz")
        return self

    def deploy(self, fd: dict) -> None:
        status, data = http_json("POST", self.url + "/system/functions", fd,
                                 auth=(self.user, self.password))
        if status not in (200, 202):
            raise RuntimeError(f"deploy {fd['service']}: {status} {data}")


class InstantOpenFaaS(_ChildServer):
    """``bench/instant_openfaas.py``: an OpenFaaS whose one function answers at once."""

    def __init__(self, workdir: Path, name: str, token: str,
                 python: str = sys.executable) -> None:
        self.workdir = workdir
        self.python = python
        self.name = name
        self.token = token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "instant-openfaas.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "InstantOpenFaaS":
        script = Path(__file__).with_name("instant_openfaas.py")
        self._spawn([self.python, str(script), "--port", str(self.port), "--name", self.name,
                     "--token", self.token], _clean_env(None), self.url + "/healthz")
        return self

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc else []


class Serve(_ChildServer):
    """A real ``oscar-faas serve`` (gunicorn + embedded provider), as tests/livegateway.py
    starts it, with the provider URL read from its banner. ``workers=None`` keeps serve's
    own default (the figures are for the gateway as shipped)."""

    user = "oscar"

    def __init__(self, workdir: Path, python: str = sys.executable,
                 env: Mapping[str, str] | None = None, workers: int | None = None) -> None:
        self.workdir = workdir
        self.python = python
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.password = os.urandom(12).hex()
        self.log_path = workdir / "serve.log"
        self.extra_env = dict(env or {})
        self.workers = workers
        self.proc: subprocess.Popen | None = None
        self.provider_url = ""

    def __enter__(self) -> "Serve":
        workers = ["--workers", str(self.workers)] if self.workers else []
        self._spawn([self.python, "-m", "oscar_faas.cli", "serve", "--port", str(self.port),
                     "--data-dir", str(self.workdir / "data"), *workers],
                    _clean_env({"OSCAR_USERNAME": self.user, "OSCAR_PASSWORD": self.password,
                                **self.extra_env}),
                    self.url + "/health", seconds=60)
        if self.extra_env.get("OPENFAAS_URL"):  # a given OpenFaaS, not the embedded one
            self.provider_url = self.extra_env["OPENFAAS_URL"]
            return self
        match = re.search(r"embedded local provider at (http://[^\s,]+)",
                          self.log_path.read_text(errors="replace"))
        if not match:
            self.__exit__()
            raise RuntimeError(f"no provider URL in the banner:\n{_tail(self.log_path)}")
        self.provider_url = match.group(1)
        return self

    @property
    def auth(self) -> tuple[str, str]:
        return (self.user, self.password)

    def create(self, name: str, script: str, variables: Mapping[str, str] | None = None) -> str:
        """Create a service through the OSCAR API; return its token."""
        status, data = http_json("POST", self.url + "/system/services",
                                 service_body(name, script, variables), auth=self.auth)
        if status != 201:
            raise RuntimeError(f"create {name}: {status} {data}")
        return self.token(name)

    def token(self, name: str) -> str:
        status, data = http_json("GET", f"{self.url}/system/services/{name}", auth=self.auth)
        if status != 200:
            raise RuntimeError(f"get {name}: {status} {data}")
        return data["token"]

    # process groups for memory readings
    def gunicorn_pids(self) -> list[int]:
        """The gunicorn master (the serve process) and its workers."""
        assert self.proc is not None
        return [self.proc.pid] + [p for p in children(self.proc.pid)
                                  if "oscar_faas.provider" not in cmdline(p)]

    def provider_pid(self) -> int | None:
        assert self.proc is not None
        for pid in children(self.proc.pid):
            if "oscar_faas.provider" in cmdline(pid):
                return pid
        return None

    def provider_pids(self) -> list[int]:
        pid = self.provider_pid()
        return [pid] if pid else []

    def function_pids(self) -> list[int]:
        """Processes the provider started (the supervisor's scripts)."""
        pid = self.provider_pid()
        return descendants(pid) if pid else []


def dump_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str))
