"""Section 1: what one invocation costs in the supervisor (issue 4).

Same script, same small base64 input, ``log_level: CRITICAL``, same SCRIPT/FUNCTION_CONFIG
(built by the gateway's own translation code), four ways:

(a) ``supervise()`` called in-process, as the embedded provider calls it;
(b) through the provider's HTTP ``/function/<name>`` (a real provider process, keep-alive);
(c) OSCAR's faas-supervisor 1.5.8, a new ``python -m faassupervisor.supervisor`` per call
    with the body on stdin, as OSCAR's watchdog runs it;
(d) the script alone (``/bin/sh script`` started from Python the way the supervisor does):
    the floor.

Plus, for an apples-to-apples process-per-call comparison, (e) ours as a new
``python -m oscar_faas.supervisor`` per call.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import (COPY_SCRIPT, KeepAlive, Provider, Table, deployment, ms, summary,
                      verdict)

NAME = "bench-copy"
PAYLOAD = b"hello from the oscar-faas benchmark\n"
BODY = base64.b64encode(PAYLOAD)
#: ours must cost at most this fraction of faas-supervisor's per-call time
TARGET_RATIO = 50


def _function_env(fd: dict) -> dict[str, str]:
    """The env the provider gives this function (see provider/backend.py)."""
    from oscar_faas.launchers.host.launcher import inherited_env
    env = inherited_env(os.environ)
    env.update(fd["envVars"])
    env["fprocess"] = fd["envProcess"]
    return env


def _time_loop(fn, count: int, seconds: float) -> list[float]:
    """``fn()`` up to ``count`` times or ``seconds``, whichever ends first; durations."""
    times: list[float] = []
    deadline = time.monotonic() + seconds
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def in_process(env: dict[str, str], count: int) -> list[float]:
    from oscar_faas.supervisor.core import supervise
    logger = logging.getLogger("bench.function")
    logger.setLevel(logging.CRITICAL)

    def call() -> None:
        out = io.BytesIO()
        code = supervise(io.BytesIO(BODY), out, env, logger)
        if code != 0 or out.getvalue().strip() != BODY:
            raise RuntimeError(f"supervise() returned {code}: {out.getvalue()[:200]!r}")

    _time_loop(call, 5, 30)  # warm-up: imports, page cache
    return _time_loop(call, count, 120)


def through_provider(workdir: Path, fd: dict, count: int) -> list[float]:
    with Provider(workdir) as provider:
        provider.deploy(fd)
        client = KeepAlive(provider.url)
        headers = {"Content-Type": "text/plain"}

        def call() -> None:
            _, status, data = client.call("POST", f"/function/{NAME}", BODY, headers)
            if status != 200 or data.strip() != BODY:
                raise RuntimeError(f"/function/{NAME}: {status} {data[:200]!r}")

        _time_loop(call, 5, 30)
        times = _time_loop(call, count, 120)
        client.close()
        return times


def process_per_call(argv: list[str], env: dict[str, str], count: int,
                     seconds: float) -> list[float]:
    def call() -> None:
        out = subprocess.run(argv, input=BODY, env=env, capture_output=True, timeout=60)
        if out.returncode != 0 or out.stdout.strip() != BODY:
            raise RuntimeError(f"{argv}: exit {out.returncode}, stdout {out.stdout[:200]!r}, "
                               f"stderr {out.stderr[-2000:]!r}")

    _time_loop(call, 1, 60)
    return _time_loop(call, count, seconds)


def script_alone(workdir: Path, env: dict[str, str], count: int) -> list[float]:
    root = Path(tempfile.mkdtemp(prefix="floor-", dir=workdir))
    (root / "input").mkdir()
    (root / "output").mkdir()
    (root / "input" / "event-file").write_bytes(PAYLOAD)
    script = root / "script.sh"
    script.write_text(COPY_SCRIPT)
    script_env = dict(env, INPUT_FILE_PATH=str(root / "input" / "event-file"),
                      TMP_INPUT_DIR=str(root / "input"), TMP_OUTPUT_DIR=str(root / "output"))

    def call() -> None:
        with open(root / "script-output", "wb") as sink:
            code = subprocess.Popen(["/bin/sh", str(script)], stdin=subprocess.DEVNULL,
                                    stdout=sink, stderr=subprocess.STDOUT, env=script_env,
                                    start_new_session=True).wait()
        if code != 0:
            raise RuntimeError(f"script exited {code}")

    _time_loop(call, 5, 30)
    return _time_loop(call, count, 60)


def run(counts: dict[str, int], workdir: Path, theirs_python: str | None) -> tuple[Table, dict]:
    fd = deployment(NAME, COPY_SCRIPT)
    env = _function_env(fd)
    results: dict[str, dict] = {}

    results["a_in_process"] = summary(in_process(env, counts["inproc"]))
    results["b_provider_http"] = summary(through_provider(workdir, fd, counts["http"]))
    proc_env = {k: v for k, v in env.items() if k != "fprocess"}
    results["e_ours_process"] = summary(process_per_call(
        [sys.executable, "-m", "oscar_faas.supervisor"], proc_env, counts["theirs"], 120))
    if theirs_python:
        theirs_env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
        theirs_env.update(SCRIPT=fd["envVars"]["SCRIPT"],
                          FUNCTION_CONFIG=fd["envVars"]["FUNCTION_CONFIG"])
        results["c_faas_supervisor"] = summary(process_per_call(
            [theirs_python, "-m", "faassupervisor.supervisor"], theirs_env, counts["theirs"],
            180))
    results["d_script_alone"] = summary(script_alone(workdir, env, counts["floor"]))

    table = Table("1. Supervisor: cost of one invocation (issue 4)")
    theirs = results.get("c_faas_supervisor")
    theirs_text = (f"{ms(theirs['p50'])} (p90 {ms(theirs['p90'])}, n={theirs['n']})"
                   if theirs else "not installed")

    def row(label: str, key: str, compare: bool) -> None:
        ours = results[key]
        ratio = theirs["p50"] / ours["p50"] if theirs else None
        table.add(label, f"{ms(ours['p50'])} (p90 {ms(ours['p90'])}, n={ours['n']})",
                  theirs_text if compare else "",
                  f"<= 1/{TARGET_RATIO} of baseline" if compare else "",
                  (f"{verdict(ratio >= TARGET_RATIO)} (x{ratio:.0f} faster)" if ratio
                   else "n/a") if compare else "")
        if ratio:
            results[key]["speedup_vs_faas_supervisor"] = ratio

    row("(a) supervise() in-process, median", "a_in_process", True)
    row("(b) provider HTTP /function/<name>, median", "b_provider_http", True)
    row("(e) ours, new `python -m oscar_faas.supervisor` per call", "e_ours_process", False)
    floor = results["d_script_alone"]
    table.add("(d) floor: `/bin/sh script` alone, median",
              f"{ms(floor['p50'])} (p90 {ms(floor['p90'])}, n={floor['n']})")
    table.add("(a) minus floor: supervisor's own work",
              ms(results["a_in_process"]["p50"] - floor["p50"]))
    table.notes.append("baseline = (c) OSCAR's faas-supervisor 1.5.8 from PyPI, one "
                       "`python -m faassupervisor.supervisor` process per call (body on stdin, "
                       "SCRIPT and FUNCTION_CONFIG in env), as OSCAR's watchdog runs it; "
                       "OSCAR ships it as a PyInstaller binary, which starts more slowly still")
    table.notes.append(f"script: {COPY_SCRIPT.splitlines()[1]!r}; input: {len(BODY)} bytes of "
                       "base64; every answer is checked")
    return table, results
