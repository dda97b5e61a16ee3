"""Per-call overhead of the function runtime for a script that does nothing, against a
process per call (what the classic watchdog does: fork ``python -m oscar_faas.supervisor``
with the body on stdin).

    .venv/bin/python bench/runtime_overhead.py [--calls 2000] [--baseline-calls 200]

Prints p50/p90/p99 (ms) of sequential keep-alive POSTs to ``oscar-faas runtime`` (script
``true``, and a warm worker whose handler does nothing), then of the baseline, and the ratio
of the p50s. A standalone helper until the runtime joins ``bench/run.sh``.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BODY = b"aGVsbG8="
NOOP_WORKER = "import oscar_worker\noscar_worker.serve(lambda *args: None)\n"


def stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99)}


def line(name: str, n: int, s: dict[str, float]) -> str:
    return f"{name:<44} n={n:<5} p50={s['p50']:7.2f} ms  p90={s['p90']:7.2f} ms  p99={s['p99']:7.2f} ms"


def runtime_calls(env: dict[str, str], calls: int, workdir: Path) -> list[float]:
    log = open(workdir / "runtime.log", "w+b")
    proc = subprocess.Popen([sys.executable, "-m", "oscar_faas.runtime", "--host", "127.0.0.1",
                             "--port", "0"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (match := re.search(rb"listening on http://[\d.]+:(\d+)",
                                      (workdir / "runtime.log").read_bytes())):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("the runtime did not start:\n" + (workdir / "runtime.log").read_text())
            time.sleep(0.01)
        conn = http.client.HTTPConnection("127.0.0.1", int(match.group(1)), timeout=60)
        while True:  # ready (warm workers loaded)?
            conn.request("GET", "/_/health")
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                break
            if time.monotonic() > deadline:
                raise SystemExit("the runtime never became ready")
            time.sleep(0.05)
        samples = []
        for i in range(calls + 20):
            start = time.perf_counter()
            conn.request("POST", "/", body=BODY, headers={"Content-Type": "text/plain"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise SystemExit(f"call {i}: HTTP {response.status}")
            if i >= 20:  # warm-up
                samples.append(time.perf_counter() - start)
        return samples
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        log.close()


def process_per_call(env: dict[str, str], calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "oscar_faas.supervisor"], input=BODY,
                              env=env, capture_output=True, check=True)
        samples.append(time.perf_counter() - start)
        assert done.returncode == 0
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--baseline-calls", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO),
               "SCRIPT": base64.b64encode(b"true").decode(), "LOG_LEVEL": "WARNING",
               "TMPDIR": tmp}
        script = stats(runtime_calls(env, args.calls, workdir))
        print(line("runtime, script `true`", args.calls, script), flush=True)
        (workdir / "noop_worker.py").write_text(NOOP_WORKER)
        warm_env = dict(env, OSCAR_WORKER=f"{sys.executable} {workdir / 'noop_worker.py'}")
        warm = stats(runtime_calls(warm_env, args.calls, workdir))
        print(line("runtime, warm worker doing nothing", args.calls, warm), flush=True)
        base = stats(process_per_call(env, args.baseline_calls))
        print(line("process per call (python -m oscar_faas.supervisor)", args.baseline_calls, base))
        print(f"p50 ratio, process per call / runtime script: {base['p50'] / script['p50']:.1f}x"
              f"  (target: p50 <= 3 ms and >= 20x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
