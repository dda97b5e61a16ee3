"""Section 2: what the gateway adds (issue 5), on a real ``oscar-faas serve``.

* latency: ``/run/<svc>`` (Bearer token) against the provider's ``/function/<svc>`` for the
  same no-op service, sequential keep-alive calls, interleaved pair by pair;
* throughput at concurrency 1, 8 and 32: ``/run``, the direct provider path, and the
  gateway's trivial ``/health`` route;
* the same latency and throughput with a second gateway in front of an OpenFaaS whose no-op
  function answers at once (``instant_openfaas.py``): what the gateway itself can carry, as
  on a cluster where functions run elsewhere; and the cost of the process the embedded
  provider starts per call, which caps the first measurement whatever the gateway does;
* a large body streamed through ``/run`` to a service that counts bytes: throughput and the
  memory of the gateway (gunicorn master + workers), the provider and the script.
"""

from __future__ import annotations

import base64
import http.client
import os
import secrets
import socket
import time
from pathlib import Path

from benchlib import (COUNT_SCRIPT, NOOP_SCRIPT, InstantOpenFaaS, KeepAlive, RssSampler,
                      Serve, Table,
                      cmdline, cpu_seconds, mib, ms, proc_pss, proc_status, summary, verdict)
from loadgen import have_wrk, run_load

NOOP = "bench-noop"
COUNT = "bench-count"
#: The no-op service may run this many calls at once, so that the function's own limiter
#: (WATCHDOG_MAX_INFLIGHT, default 1) does not cap what the gateway is measured at.
NOOP_VARIABLES = {"max_inflight": "64"}
BODY = base64.b64encode(b"hello")

P50_TARGET = 0.001
P99_TARGET = 0.005
RPS_TARGET = 1500
RSS_TARGET_KIB = 100 * 1024
STREAM_TARGET = 300e6  # bytes/s

#: 48 KiB of raw bytes -> 64 KiB of base64 with no padding: repeating it stays valid base64.
_RAW_BLOCK = os.urandom(48 * 1024)
_B64_BLOCK = base64.b64encode(_RAW_BLOCK) * 16  # 1 MiB per send
assert len(_B64_BLOCK) == 1 << 20


def latency(serve: Serve, token: str, pairs: int,
            upstream_pids: list[int] | None = None) -> dict:
    gw = KeepAlive(serve.url)
    direct = KeepAlive(serve.provider_url)
    health = KeepAlive(serve.url)
    run_headers = {"Authorization": f"Bearer {token}", "Content-Type": "text/plain"}
    # the provider hop is open (issue 21); the function checks the service token itself
    plain = {"Content-Type": "text/plain", "Authorization": f"Bearer {token}"}

    def one_run() -> float:
        t, status, data = gw.call("POST", f"/run/{NOOP}", BODY, run_headers)
        if status != 200:
            raise RuntimeError(f"/run/{NOOP}: {status} {data[:300]!r}")
        return t

    def one_direct() -> float:
        t, status, data = direct.call("POST", f"/function/{NOOP}", BODY, plain)
        if status != 200:
            raise RuntimeError(f"/function/{NOOP}: {status} {data[:300]!r}")
        return t

    for _ in range(20):  # warm-up: connection pools, service cache, page cache
        one_run()
        one_direct()
    runs, directs, diffs = [], [], []
    gw_pids = serve.gunicorn_pids()
    prov_pids = serve.provider_pids() if upstream_pids is None else upstream_pids
    # CPU per /run call: a run of /run calls alone, then of direct calls alone
    cpu = {}
    def one_health() -> float:
        t, status, _ = health.call("GET", "/health")
        if status != 200:
            raise RuntimeError(f"/health: {status}")
        return t

    for label, fn in (("run", one_run), ("direct", one_direct), ("health", one_health)):
        g0, p0, s0 = (cpu_seconds(gw_pids), cpu_seconds(prov_pids),
                      cpu_seconds(prov_pids, reaped=True))
        n = 0
        deadline = time.monotonic() + 60
        for _ in range(max(100, pairs // 2)):
            if time.monotonic() > deadline:
                break
            fn()
            n += 1
        g1, p1, s1 = (cpu_seconds(gw_pids), cpu_seconds(prov_pids),
                      cpu_seconds(prov_pids, reaped=True))
        cpu[label] = {"calls": n, "gateway": (g1 - g0) / n, "provider": (p1 - p0) / n,
                      "scripts": ((s1 - s0) - (p1 - p0)) / n}
    deadline = time.monotonic() + 300
    for i in range(pairs):
        if time.monotonic() > deadline:
            break
        if i % 2:  # alternate the order so neither path always goes first
            d = one_direct()
            r = one_run()
        else:
            r = one_run()
            d = one_direct()
        runs.append(r)
        directs.append(d)
        diffs.append(r - d)
    health_times = [one_health() for _ in range(min(pairs, 300))]
    for client in (gw, direct, health):
        client.close()
    return {"run": summary(runs), "direct": summary(directs), "diff": summary(diffs),
            "health": summary(health_times), "cpu": cpu}


def throughput(serve: Serve, token: str, seconds: float, health: bool = True,
               upstream_pids: list[int] | None = None) -> dict:
    out: dict[str, dict] = {}
    run_headers = {"Authorization": f"Bearer {token}", "Content-Type": "text/plain"}
    plain = run_headers  # the provider hop is open; the function checks the token (issue 21)
    gw_pids = serve.gunicorn_pids()
    prov_pids = serve.provider_pids() if upstream_pids is None else upstream_pids

    def measured(*args, **kwargs):
        g0, p0 = cpu_seconds(gw_pids), cpu_seconds(prov_pids, reaped=True)
        result = run_load(*args, **kwargs)
        g1, p1 = cpu_seconds(gw_pids), cpu_seconds(prov_pids, reaped=True)
        calls = max(result.requests, 1)
        result.cpu_gateway_ms = (g1 - g0) / calls * 1000
        result.cpu_provider_ms = (p1 - p0) / calls * 1000
        return result

    for conc in (1, 8, 32):
        out[f"run_c{conc}"] = measured(f"{serve.url}/run/{NOOP}", conc, seconds, "POST", BODY,
                                       run_headers)
        out[f"direct_c{conc}"] = measured(f"{serve.provider_url}/function/{NOOP}", conc,
                                          seconds, "POST", BODY, plain)
        if health:
            out[f"health_c{conc}"] = measured(f"{serve.url}/health", conc, seconds)
    return out


def spawn_floor(count: int) -> dict:
    """CPU of starting one ``/bin/sh -c true`` the cheapest way Python can (posix_spawn,
    then wait): the least a call costs when each call runs a script in a new process."""
    count = max(count, 200)
    t0, c0 = time.perf_counter(), os.times()
    for _ in range(count):
        pid = os.posix_spawn("/bin/sh", ["/bin/sh", "-c", "true"], {})
        os.waitpid(pid, 0)
    t1, c1 = time.perf_counter(), os.times()
    parent = (c1.user + c1.system - c0.user - c0.system) / count
    child = (c1.children_user + c1.children_system
             - c0.children_user - c0.children_system) / count
    return {"count": count, "cpu": parent + child, "parent": parent, "child": child,
            "sequential_rate": count / (t1 - t0)}


def gateway_alone(workdir: Path, python: str, pairs: int, seconds: float) -> dict:
    """Latency and throughput of a gateway in front of an instant no-op function."""
    token = secrets.token_hex(32)
    with InstantOpenFaaS(workdir / "instant", NOOP, token, python=python) as upstream, \
            Serve(workdir / "gateway-instant", python=python,
                  env={"OPENFAAS_URL": upstream.url}) as serve:
        pids = upstream.pids()
        return {"latency": latency(serve, token, pairs, upstream_pids=pids),
                "throughput": throughput(serve, token, seconds, health=False,
                                         upstream_pids=pids)}


def stream(url: str, path: str, headers: dict[str, str], size: int) -> tuple[float, int, bytes]:
    """POST ``size`` bytes of valid base64 generated on the fly; ``(seconds, status, body)``."""
    match = url.split("//", 1)[1]
    host, port = match.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    start = time.perf_counter()
    conn.putrequest("POST", path)
    for key, value in {**headers, "Content-Length": str(size)}.items():
        conn.putheader(key, value)
    conn.endheaders()
    sent = 0
    view = memoryview(_B64_BLOCK)
    for _ in range(size // len(_B64_BLOCK) + 1):  # bounded by the size
        if sent >= size:
            break
        piece = view[:min(len(_B64_BLOCK), size - sent)]
        try:
            conn.sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            break  # the server answered early (an error): read it below
        sent += len(piece)
    resp = conn.getresponse()
    data = resp.read()
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed, resp.status, data


#: Uploads per path; the median is reported (single uploads varied 300-700 MB/s here).
STREAM_REPEATS = 3


def streaming(serve: Serve, token: str, size: int) -> dict:
    size -= size % 4  # whole base64 quanta
    expected = str(size // 4 * 3).encode()
    groups = {"gateway": serve.gunicorn_pids, "provider": serve.provider_pids,
              "functions": serve.function_pids}
    idle = {label: sum(proc_status(p).get("VmRSS", 0) for p in pids())
            for label, pids in groups.items()}
    per_process = {f"{p} {cmdline(p)[:60]}": proc_status(p).get("VmRSS", 0)
                   for p in serve.gunicorn_pids() + serve.provider_pids()}
    idle_pss = {label: sum(proc_pss(p) for p in pids()) for label, pids in groups.items()}
    runs, directs = [], []
    with RssSampler(groups) as sampler:
        for _ in range(STREAM_REPEATS):
            seconds, status, data = stream(serve.url, f"/run/{COUNT}",
                                           {"Authorization": f"Bearer {token}",
                                            "Content-Type": "text/plain"}, size)
            if status != 200 or data.strip() != expected:
                raise RuntimeError(f"/run/{COUNT} with {size} bytes: {status} "
                                   f"{data[:300]!r} (expected {expected!r})")
            runs.append(seconds)
    for _ in range(STREAM_REPEATS):
        direct_seconds, status, data = stream(serve.provider_url, f"/function/{COUNT}",
                                              {"Authorization": f"Bearer {token}",
                                               "Content-Type": "text/plain"}, size)
        if status != 200 or data.strip() != expected:
            raise RuntimeError(f"/function/{COUNT}: {status} {data[:300]!r}")
        directs.append(direct_seconds)
    seconds, direct_seconds = sorted(runs)[len(runs) // 2], sorted(directs)[len(directs) // 2]
    return {"size": size, "seconds": seconds, "rate": size / seconds,
            "rates": [size / t for t in runs], "direct_rates": [size / t for t in directs],
            "direct_seconds": direct_seconds, "direct_rate": size / direct_seconds,
            "idle_rss": idle, "idle_pss": idle_pss, "peak_rss": sampler.peak_rss,
            "peak_pss": sampler.peak_pss, "peak_hwm": sampler.peak_hwm,
            "samples": sampler.samples, "gateway_pids": len(serve.gunicorn_pids()),
            "idle_rss_per_process": per_process}


def run(counts: dict[str, int], workdir: Path, body_size: int, load_seconds: float,
        python: str) -> tuple[Table, dict]:
    table = Table("2. Gateway: latency, throughput and memory (issue 5)")
    results: dict = {"load_tool": "wrk" if have_wrk() else "python"}
    with Serve(workdir / "gateway", python=python) as serve:
        noop_token = serve.create(NOOP, NOOP_SCRIPT, NOOP_VARIABLES)
        count_token = serve.create(COUNT, COUNT_SCRIPT)

        lat = results["latency"] = latency(serve, noop_token, counts["pairs"])
        run_, direct, diff = lat["run"], lat["direct"], lat["diff"]
        overhead50 = run_["p50"] - direct["p50"]
        overhead99 = run_["p99"] - direct["p99"]
        table.add(f"/run p50 / p99 (sequential keep-alive, n={run_['n']})",
                  f"{ms(run_['p50'])} / {ms(run_['p99'])}",
                  f"{ms(direct['p50'])} / {ms(direct['p99'])} direct /function")
        table.add("gateway overhead p50 (per pair: /run - direct)", ms(diff["p50"]), "",
                  f"<= {ms(P50_TARGET)}", verdict(diff["p50"] <= P50_TARGET))
        table.add("gateway overhead p99 (per pair: /run - direct)", ms(diff["p99"]), "",
                  f"<= {ms(P99_TARGET)}", verdict(diff["p99"] <= P99_TARGET))
        table.add("difference of the percentiles, p50 / p99",
                  f"{ms(overhead50)} / {ms(overhead99)}")
        table.add("GET /health p50 / p99 (gateway alone)",
                  f"{ms(lat['health']['p50'])} / {ms(lat['health']['p99'])}")
        cpu = lat["cpu"]
        table.add("CPU per call: gateway (master + workers)", ms(cpu["run"]["gateway"]),
                  f"{ms(cpu['health']['gateway'])} for GET /health")
        table.add("CPU per call: provider (incl. in-process supervisor)",
                  ms(cpu["run"]["provider"]), ms(cpu["direct"]["provider"]) + " direct")
        table.add("CPU per call: the script's /bin/sh", ms(cpu["run"]["scripts"]),
                  ms(cpu["direct"]["scripts"]) + " direct")

        thr = throughput(serve, noop_token, load_seconds)
        results["throughput"] = {k: dict(vars(v)) for k, v in thr.items()}
        for conc in (1, 8, 32):
            r, d = thr[f"run_c{conc}"], thr[f"direct_c{conc}"]
            table.add(f"/run throughput, embedded provider, concurrency {conc}", r.describe(),
                      f"{d.describe()} direct",
                      f">= {RPS_TARGET}/s" if conc > 1 else "",
                      verdict(r.rps >= RPS_TARGET and not r.errors) if conc > 1 else "")
        for conc in (1, 8, 32):
            h = thr[f"health_c{conc}"]
            table.add(f"GET /health throughput, concurrency {conc}", h.describe())
        r32 = thr["run_c32"]
        table.add("CPU per /run call at concurrency 32: gateway / provider + script",
                  f"{r32.cpu_gateway_ms:.2f} ms / {r32.cpu_provider_ms:.2f} ms")
        floor = results["spawn_floor"] = spawn_floor(counts["pairs"])
        ncpu = os.cpu_count() or 1
        table.add("one process per call: posix_spawn(/bin/sh -c true) + wait, CPU",
                  f"{ms(floor['cpu'])} ({ms(floor['child'])} in the child)",
                  f"at most {ncpu / floor['cpu']:,.0f}/s on {ncpu} cores with nothing else")
        per_call = (r32.cpu_gateway_ms + r32.cpu_provider_ms) / 1000
        table.add("ceiling of the embedded path: cores / CPU per call at concurrency 32",
                  f"{ncpu / per_call:,.0f}/s" if per_call else "n/a",
                  "whatever the gateway costs, the script's process alone caps it near "
                  f"{ncpu / floor['cpu']:,.0f}/s")

        st = results["stream"] = streaming(serve, count_token, body_size)
        _stream_rows(table, st)

    alone = results["instant"] = gateway_alone(workdir, python, counts["pairs"],
                                               load_seconds)
    lat = alone["latency"]
    table.add("no-op OpenFaaS function: /run p50 / p99 (sequential)",
              f"{ms(lat['run']['p50'])} / {ms(lat['run']['p99'])}",
              f"{ms(lat['direct']['p50'])} / {ms(lat['direct']['p99'])} direct /function")
    table.add("no-op OpenFaaS function: gateway overhead p50 / p99 (per pair)",
              f"{ms(lat['diff']['p50'])} / {ms(lat['diff']['p99'])}", "",
              f"<= {ms(P50_TARGET)} / {ms(P99_TARGET)}",
              verdict(lat["diff"]["p50"] <= P50_TARGET and lat["diff"]["p99"] <= P99_TARGET))
    table.add("no-op OpenFaaS function: gateway CPU per /run",
              ms(lat["cpu"]["run"]["gateway"]),
              f"{ms(lat['cpu']['direct']['provider'])} in the stand-in per direct call")
    thr = alone["throughput"]
    results["instant"]["throughput"] = {k: dict(vars(v)) for k, v in thr.items()}
    for conc in (1, 8, 32):
        r, d = thr[f"run_c{conc}"], thr[f"direct_c{conc}"]
        table.add(f"/run throughput, no-op OpenFaaS function, concurrency {conc}",
                  r.describe(), f"{d.describe()} direct",
                  f">= {RPS_TARGET}/s" if conc > 1 else "",
                  verdict(r.rps >= RPS_TARGET and not r.errors) if conc > 1 else "")
    _notes(table, results, load_seconds)
    return table, results


def _stream_rows(table: Table, st: dict) -> None:
    """The streaming rows: throughput and the memory readings taken during it."""
    size_mb = st["size"] / 1e6
    spread = "-".join(f"{r / 1e6:.0f}" for r in (min(st["rates"]), max(st["rates"])))
    table.add(f"stream {size_mb:,.0f} MB of base64 through /run, median of "
              f"{len(st['rates'])}", f"{st['rate'] / 1e6:.0f} MB/s ({spread})",
              f"{st['direct_rate'] / 1e6:.0f} MB/s direct /function",
              f">= {STREAM_TARGET / 1e6:.0f} MB/s", verdict(st["rate"] >= STREAM_TARGET))
    gw_rss = st["peak_rss"]["gateway"]
    workers = st["gateway_pids"] - 1
    table.add(f"gateway peak RSS during it (master + {workers} worker"
              f"{'s' if workers != 1 else ''}, sampled sum)", mib(gw_rss),
              f"{mib(st['idle_rss']['gateway'])} idle",
              f"< {mib(RSS_TARGET_KIB)}", verdict(gw_rss < RSS_TARGET_KIB))
    table.add("gateway peak PSS during it (shared pages counted once)",
              mib(st["peak_pss"]["gateway"]), f"{mib(st['idle_pss']['gateway'])} idle")
    table.add("gateway sum of VmHWM (each process's own peak)",
              mib(st["peak_hwm"]["gateway"]))
    masters = list(st["idle_rss_per_process"].values())
    table.add("idle RSS per process: master / worker(s) / provider",
              " / ".join(mib(v) for v in masters))
    table.add("gateway RSS growth during the stream",
              mib(gw_rss - st["idle_rss"]["gateway"]))
    table.add("provider (with the in-process supervisor) peak RSS during it",
              mib(st["peak_rss"]["provider"]),
              f"{mib(st['idle_rss']['provider'])} idle")
    table.add("script (`wc -c`) peak RSS during it", mib(st["peak_rss"]["functions"])
              if st["peak_rss"]["functions"] else "too short-lived to sample")


def _notes(table: Table, results: dict, load_seconds: float) -> None:
    table.notes.append(
        f"load generator: {results['load_tool']} (1 thread, keep-alive, closed loop, "
        f"{load_seconds:g} s per figure); it shares the 2 cores with the gateway, the provider "
        "and the functions")
    table.notes.append(
        f"the no-op service runs `true` through the supervisor (a /bin/sh fork per call) with "
        f"max_inflight={NOOP_VARIABLES['max_inflight']}, so the function limiter is not the cap")
    table.notes.append(
        f"streaming: {STREAM_REPEATS} POSTs per path, each with Content-Length, body "
        "generated on the fly (valid base64, decodes to 3/4 of its size), answer checked "
        "against the decoded byte count; memory sampled every 50 ms from /proc")
    table.notes.append(
        "no-op OpenFaaS function: a second `oscar-faas serve` with OPENFAAS_URL pointing at "
        "bench/instant_openfaas.py (uvicorn), whose function answers at once, as a cluster's "
        "would from another node; it shares the 2 cores too")
