"""Section 6: asynchronous invocations (issue 25) beside synchronous ones, in the same run.

One real ``oscar-faas serve`` (embedded provider, host runtime) and one no-op service
(``true``, default ``max_inflight``):

(a) ``POST /job`` from 32 threads, each on its own keep-alive connection: the submit latency
    (record + hand-off to the provider's queue on disk + 201), and jobs per second from the
    first submit to the last job ``Succeeded``;
(b) the queue wait of those jobs (start - creation, from the final records the gateway
    keeps in ``<data-dir>/jobs/<svc>/<job>.done``, whose times are not rounded) and their
    run time (finish - start: the call through the runtime plus the callback);
(c) ``POST /run`` of the same service from 32 threads: calls per second, for comparison.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path

from benchlib import NOOP_SCRIPT, KeepAlive, Serve, Table, ms, summary

CONCURRENCY = 32
BODY = base64.b64encode(b"hello from the oscar-faas benchmark\n")


def _fan_out(serve: Serve, path: str, headers: dict[str, str], total: int,
             ok: int) -> tuple[list[float], float]:
    """``total`` POSTs of :data:`BODY` to ``path`` from :data:`CONCURRENCY` threads; their
    latencies and the wall time."""
    latencies: list[float] = []
    lock = threading.Lock()
    left = [total]
    errors: list[str] = []

    def worker() -> None:
        client = KeepAlive(serve.url, timeout=120)
        try:
            while True:
                with lock:
                    if left[0] <= 0 or errors:
                        return
                    left[0] -= 1
                seconds, status, data = client.call("POST", path, BODY, headers)
                if status != ok:
                    with lock:
                        errors.append(f"{path}: {status} {data[:300]!r}")
                    return
                with lock:
                    latencies.append(seconds)
        finally:
            client.close()

    threads = [threading.Thread(target=worker) for _ in range(CONCURRENCY)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(errors[0])
    return latencies, time.perf_counter() - start


def _records(folder: Path) -> list[dict]:
    """The final records of the finished jobs (``<job>.done``, see oscar_faas.jobstore)."""
    out = []
    for path in folder.glob("*.done"):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            pass  # being replaced right now: read again on the next look
    return out


def run(counts: dict[str, int], workdir: Path) -> tuple[Table, dict]:
    total = counts.get("async", 300)
    table = Table("6. Asynchronous invocations (POST /job) beside POST /run, no-op script, "
                  f"c={CONCURRENCY}")
    results: dict = {"jobs": total, "concurrency": CONCURRENCY}
    with Serve(workdir / "async") as serve:
        token = serve.create("bench-async", NOOP_SCRIPT)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "text/plain"}
        _fan_out(serve, "/run/bench-async", headers, CONCURRENCY, 200)  # warm-up
        folder = workdir / "async" / "data" / "jobs" / "bench-async"

        start = time.perf_counter()
        submits, _ = _fan_out(serve, "/job/bench-async", headers, total, 201)
        deadline = time.monotonic() + 300
        while True:
            records = _records(folder)
            done = [r for r in records if r["status"] in ("Succeeded", "Failed")]
            if len(done) >= total or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        failed = [r for r in done if r["status"] != "Succeeded"]
        if len(done) < total or failed:
            raise RuntimeError(f"{len(done)} of {total} jobs finished, {len(failed)} failed")
        waits = [r["start_time"] - r["creation_time"] for r in done]
        runs = [r["finish_time"] - r["start_time"] for r in done]
        sync, sync_wall = _fan_out(serve, "/run/bench-async", headers, total, 200)

    results["a_submit"] = summary(submits)
    results["a_jobs_per_second"] = total / elapsed
    results["b_queue_wait"] = summary(waits)
    results["b_run"] = summary(runs)
    results["c_run_latency"] = summary(sync)
    results["c_calls_per_second"] = total / sync_wall
    table.add(f"(a) submit latency p50 (p99), n={total}",
              f"{ms(results['a_submit']['p50'])} ({ms(results['a_submit']['p99'])})")
    table.add("(a) jobs per second, first submit to last Succeeded",
              f"{results['a_jobs_per_second']:.0f}/s")
    table.add("(b) queue wait p50 (p99)",
              f"{ms(results['b_queue_wait']['p50'])} ({ms(results['b_queue_wait']['p99'])})")
    table.add("(b) run + callback p50 (p99)",
              f"{ms(results['b_run']['p50'])} ({ms(results['b_run']['p99'])})")
    table.add("(c) POST /run calls per second, same service and concurrency",
              f"{results['c_calls_per_second']:.0f}/s (p50 {ms(results['c_run_latency']['p50'])})")
    return table, results
