"""Section 4: the long-lived function runtime and warm workers (issue 13).

Every row talks straight to ``python -m oscar_faas.runtime --host 127.0.0.1 --port P`` over
one keep-alive connection (no gateway, no provider), with the function's env built by the
gateway's own translation code, as a function image gets it:

(a) a script that does nothing (``true``): the runtime, which forks only the script, against
    a process per call (``python -m oscar_faas.supervisor`` with the body on stdin, as the
    classic watchdog runs it) and against the script alone (``/bin/sh script``, the floor);
    plus the same service with a Python warm worker that does nothing (``OSCAR_WORKER``);
(b) the example classifier, FDL as it is (``OSCAR_WORKER: python3 -m oscar_classifier.worker``,
    one torch thread), warm: the answer's p50/p99 against the model's own ``predict()`` on the
    same decoded image in this process, interleaved call by call;
(c) cold start of that classifier: runtime process start -> ``/_/health`` 200 -> first answer,
    against one run of its ``script.sh`` (what every call costs without the worker).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Mapping

from benchlib import (NOOP_SCRIPT, KeepAlive, Table, _ChildServer, cpu_seconds, descendants,
                      free_port, ms, summary, verdict)
from sec_classifier import EXAMPLE, _check, _fetch  # one way to find and feed the classifier

FDL = EXAMPLE / "image-classification-sync.yaml"
CAT_CLASSES = set(range(281, 286))
PAYLOAD_B64 = base64.b64encode(b"hello from the oscar-faas benchmark\n")
#: a Python warm worker that does nothing: the protocol's own cost
NOOP_WORKER = "import oscar_worker\noscar_worker.serve(lambda *args: None)\n"

TARGET_NOOP_P50 = 0.003        # s
TARGET_NOOP_SPEEDUP = 20       # x better than a process per call
TARGET_WARM_X_PREDICT = 3      # p50 <= 3x predict()
TARGET_COLD = 5.0              # s


class Runtime(_ChildServer):
    """``python -m oscar_faas.runtime`` on a free port, in its own session, logging to a file.
    ``started``/``ready`` are the ``perf_counter`` times of the spawn and of the first 200
    from ``/_/health``."""

    def __init__(self, workdir: Path, env: Mapping[str, str], python: str = sys.executable,
                 ready_seconds: float = 120) -> None:
        self.workdir = workdir
        self.env = dict(env)
        self.python = python
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "runtime.log"
        self.ready_seconds = ready_seconds
        self.proc: subprocess.Popen | None = None
        self.started = self.ready = 0.0

    def cpu(self) -> float:
        """CPU seconds so far of the runtime, the scripts it has reaped, and its live
        descendants (warm workers)."""
        assert self.proc is not None
        return (cpu_seconds([self.proc.pid], reaped=True)
                + cpu_seconds(descendants(self.proc.pid)))

    def __enter__(self) -> "Runtime":
        self.started = time.perf_counter()
        self._spawn([self.python, "-m", "oscar_faas.runtime", "--host", "127.0.0.1",
                     "--port", str(self.port)], self.env, self.url + "/_/health",
                    seconds=self.ready_seconds)
        self.ready = time.perf_counter()
        return self


def function_env(script: str, variables: Mapping[str, str] | None = None,
                 path_first: str | None = None,
                 resources: Mapping[str, str] | None = None) -> dict[str, str]:
    """The env a function gets: the provider's inherited host variables, then the
    deployment's envVars (SCRIPT, FUNCTION_CONFIG, the service's variables)."""
    from benchlib import deployment
    from oscar_faas.launchers.host.launcher import inherited_env
    env = inherited_env(os.environ)
    env.update(deployment("bench-runtime", script, variables, resources)["envVars"])
    if path_first:
        env["PATH"] = os.pathsep.join([path_first, env.get("PATH", "")])
    return env


def _timed(fn, count: int, seconds: float) -> list[float]:
    times: list[float] = []
    deadline = time.monotonic() + seconds
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        times.append(fn())
    return times


def _post(client: KeepAlive, body: bytes, what: str) -> tuple[float, bytes]:
    seconds, status, data = client.call("POST", "/", body, {"Content-Type": "text/plain"})
    if status != 200:
        raise RuntimeError(f"{what}: {status} {data[-2000:]!r}")
    return seconds, data


# --- (a) a script that does nothing ----------------------------------------------------------

def _interleaved(runtimes: Mapping[str, Runtime], body: bytes, count: int,
                 seconds: float) -> dict[str, list[float]]:
    """``count`` rounds of one call to each runtime in turn (the same machine state for all);
    the durations by name, and under ``<name>:cpu`` the CPU seconds per measured call."""
    clients = {name: KeepAlive(rt.url, timeout=300) for name, rt in runtimes.items()}
    times: dict[str, list[float]] = {name: [] for name in runtimes}
    try:
        for _ in range(10):  # warm-up
            for name, client in clients.items():
                _post(client, body, name)
        cpu0 = {name: rt.cpu() for name, rt in runtimes.items()}
        deadline = time.monotonic() + seconds
        for _ in range(count):
            if time.monotonic() > deadline:
                break
            for name, client in clients.items():
                times[name].append(_post(client, body, name)[0])
        for name, rt in runtimes.items():
            times[f"{name}:cpu"] = [(rt.cpu() - cpu0[name]) / max(len(times[name]), 1)]
    finally:
        for client in clients.values():
            client.close()
    return times


def _noop_worker_env(env: Mapping[str, str], workdir: Path) -> dict[str, str]:
    """``env`` with OSCAR_WORKER = a Python worker that does nothing."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "noop_worker.py").write_text(NOOP_WORKER)
    return dict(env, OSCAR_WORKER=f"{sys.executable} {workdir / 'noop_worker.py'}")


def _process_per_call(env: dict[str, str], count: int) -> list[float]:
    argv = [sys.executable, "-m", "oscar_faas.supervisor"]

    def call() -> float:
        start = time.perf_counter()
        out = subprocess.run(argv, input=PAYLOAD_B64, env=env, capture_output=True, timeout=60)
        seconds = time.perf_counter() - start
        if out.returncode != 0:
            raise RuntimeError(f"supervisor exited {out.returncode}: {out.stderr[-2000:]!r}")
        return seconds

    _timed(call, 1, 60)
    return _timed(call, count, 120)


def _script_alone(workdir: Path, env: dict[str, str], count: int) -> list[float]:
    root = Path(tempfile.mkdtemp(prefix="noop-floor-", dir=workdir))
    script = root / "script.sh"
    script.write_text(NOOP_SCRIPT)
    (root / "event-file").write_bytes(b"hello\n")
    script_env = dict(env, INPUT_FILE_PATH=str(root / "event-file"), TMP_INPUT_DIR=str(root),
                      TMP_OUTPUT_DIR=str(root))

    def call() -> float:
        start = time.perf_counter()
        with open(root / "script-output", "wb") as sink:
            code = subprocess.Popen(["/bin/sh", str(script)], stdin=subprocess.DEVNULL,
                                    stdout=sink, stderr=subprocess.STDOUT, env=script_env,
                                    start_new_session=True).wait()
        if code != 0:
            raise RuntimeError(f"script exited {code}")
        return time.perf_counter() - start

    _timed(call, 5, 30)
    return _timed(call, count, 60)


def noop(counts: dict[str, int], workdir: Path, table: Table, results: dict) -> None:
    env = function_env(NOOP_SCRIPT)
    with Runtime(workdir / "noop-script", env) as script_rt, \
            Runtime(workdir / "noop-worker", _noop_worker_env(env, workdir / "noop-worker")) \
            as worker_rt:
        times = _interleaved({"script": script_rt, "worker": worker_rt}, PAYLOAD_B64,
                             counts["runtime"], 120)
    results["a_runtime_script"] = summary(times["script"])
    results["a_runtime_worker"] = summary(times["worker"])
    results["a_cpu_per_call_script"] = times["script:cpu"][0]
    results["a_cpu_per_call_worker"] = times["worker:cpu"][0]
    results["a_process_per_call"] = summary(_process_per_call(env, counts["runtime_proc"]))
    results["a_script_alone"] = summary(_script_alone(workdir, env, counts["floor"]))

    ours, theirs = results["a_runtime_script"], results["a_process_per_call"]
    speedup = theirs["p50"] / ours["p50"]
    results["a_speedup"] = speedup
    table.add(f"(a) no-op script through the runtime, p50 (p99), n={ours['n']}",
              f"{ms(ours['p50'])} ({ms(ours['p99'])})",
              f"{ms(theirs['p50'])} (p99 {ms(theirs['p99'])}, n={theirs['n']}) process per call",
              f"<= {ms(TARGET_NOOP_P50)} and >= x{TARGET_NOOP_SPEEDUP}",
              f"{verdict(ours['p50'] <= TARGET_NOOP_P50 and speedup >= TARGET_NOOP_SPEEDUP)}"
              f" (x{speedup:.0f})")
    floor = results["a_script_alone"]
    table.add("    floor: `/bin/sh script` alone, p50", ms(floor["p50"]))
    table.add("    runtime's own work per call (p50 minus floor)", ms(ours["p50"] - floor["p50"]))
    table.add("    CPU per call: runtime + the script it starts",
              ms(results["a_cpu_per_call_script"]))
    warm = results["a_runtime_worker"]
    table.add(f"(a') same service, no-op Python warm worker (OSCAR_WORKER), p50 (p99), "
              f"n={warm['n']}", f"{ms(warm['p50'])} ({ms(warm['p99'])})",
              f"{ms(theirs['p50'])} process per call", "",
              f"(x{theirs['p50'] / warm['p50']:.0f})")
    table.add("    CPU per call: runtime + worker", ms(results["a_cpu_per_call_worker"]))


# --- (b), (c) the classifier -----------------------------------------------------------------

def _classifier_env(classifier_python: str) -> dict[str, str]:
    """The FDL's service, unchanged (script.sh, cpu, memory, CLASSIFIER_NUM_THREADS,
    OSCAR_WORKER), with the classifier's venv first on PATH, as on the embedded default in an
    activated venv."""
    import yaml
    (entry,) = yaml.safe_load(FDL.read_text())["functions"]["oscar"]
    service = entry["oscar-cluster"]
    variables = service["environment"]["variables"]
    return function_env((EXAMPLE / service["script"]).read_text(), variables,
                        path_first=os.path.dirname(classifier_python),
                        resources={k: service[k] for k in ("cpu", "memory") if k in service})


def _script_once(photo: Path, env: dict[str, str], workdir: Path) -> float:
    out_dir = Path(tempfile.mkdtemp(prefix="clf-out-", dir=workdir))
    start = time.perf_counter()
    done = subprocess.run(["/bin/sh", str(EXAMPLE / "script.sh")], capture_output=True,
                          timeout=120, env=dict(env, INPUT_FILE_PATH=str(photo),
                                                TMP_OUTPUT_DIR=str(out_dir)))
    seconds = time.perf_counter() - start
    if done.returncode != 0 or not (out_dir / f"{photo.stem}.json").exists():
        raise RuntimeError(f"script.sh failed: {done.stderr[-2000:]!r}")
    shutil.rmtree(out_dir, ignore_errors=True)
    return seconds


def classifier(counts: dict[str, int], workdir: Path, classifier_python: str, table: Table,
               results: dict) -> None:
    problem = _check(classifier_python)
    if problem:
        table.add("(b), (c) classifier: skipped", f"{classifier_python}: {problem}")
        results["classifier_skipped"] = problem
        return
    photo = _fetch(classifier_python, workdir / "samples")
    body = base64.b64encode(photo.read_bytes())
    env = _classifier_env(classifier_python)

    # (c) cold: spawn -> ready -> first answer, a fresh runtime each time
    cold, ready, prediction = [], [], None
    for n in range(counts["cold"]):
        with Runtime(workdir / f"clf-cold-{n}", env, python=sys.executable) as runtime:
            client = KeepAlive(runtime.url, timeout=300)
            _, data = _post(client, body, "classifier (cold)")
            cold.append(time.perf_counter() - runtime.started)
            ready.append(runtime.ready - runtime.started)
            prediction = json.loads(base64.b64decode(data))
            client.close()
    script_once = [_script_once(photo, env, workdir) for _ in range(counts["cold"])]

    # (b) warm, interleaved with predict() on the same image in this process
    if classifier_python != sys.executable:
        table.add("(b) predict() baseline", "skipped: --classifier-python is another "
                  "interpreter; the baseline runs in this one")
        return
    import oscar_classifier
    model = oscar_classifier.Classifier(num_threads=oscar_classifier.threads_from_env(env))
    img = oscar_classifier.load_image(photo)

    def predict() -> float:
        start = time.perf_counter()
        model.predict(img)
        return time.perf_counter() - start

    # (b) interleaved, call by call: the warm classifier, predict() here, and (b') the same
    # photo to a no-op Python worker (the runtime's own share for this body)
    warm, predicts, same_body = [], [], []
    noop_env = _noop_worker_env(env, workdir / "clf-noop-worker")
    with Runtime(workdir / "clf-warm", env) as runtime, \
            Runtime(workdir / "clf-noop-worker", noop_env) as noop_rt:
        client = KeepAlive(runtime.url, timeout=300)
        noop_client = KeepAlive(noop_rt.url, timeout=300)
        for _ in range(5):  # warm-up
            _post(client, body, "classifier (warm-up)")
            _post(noop_client, body, "photo to a no-op worker")
            predict()
        deadline = time.monotonic() + 180
        for _ in range(counts["runtime_clf"]):
            if time.monotonic() > deadline:
                break
            seconds, data = _post(client, body, "classifier (warm)")
            warm.append(seconds)
            predicts.append(predict())
            same_body.append(_post(noop_client, body, "photo to a no-op worker")[0])
        client.close()
        noop_client.close()
    last = json.loads(base64.b64decode(data))
    if last != prediction:
        raise RuntimeError(f"warm and cold answers differ: {last} != {prediction}")
    results["b_noop_worker_same_body"] = summary(same_body)

    results.update(c_cold=summary(cold), c_ready=summary(ready), c_script=summary(script_once),
                   b_warm=summary(warm), b_predict=summary(predicts), prediction=prediction,
                   photo=photo.name, photo_bytes=photo.stat().st_size)
    w, p = results["b_warm"], results["b_predict"]
    ratio = w["p50"] / p["p50"]
    results["b_ratio"] = ratio
    top = prediction["predictions"][0]
    table.add(f"(b) classifier warm (OSCAR_WORKER), p50 / p99, n={w['n']}",
              f"{ms(w['p50'])} / {ms(w['p99'])}",
              f"{ms(p['p50'])} / {ms(p['p99'])} predict() in-process",
              f"p50 <= {TARGET_WARM_X_PREDICT}x predict",
              f"{verdict(ratio <= TARGET_WARM_X_PREDICT)} ({ratio:.2f}x)")
    table.add("    warm p50 minus predict p50 (decode, PNG load, JSON, HTTP)",
              ms(w["p50"] - p["p50"]))
    nb = results["b_noop_worker_same_body"]
    table.add(f"(b') the same photo to a no-op Python worker, p50 (p99), n={nb['n']}",
              f"{ms(nb['p50'])} ({ms(nb['p99'])})", "", "",
              "the runtime's share for this body")
    c, r, s = results["c_cold"], results["c_ready"], results["c_script"]
    table.add(f"(c) cold start: runtime spawn -> first answer, median (max), n={c['n']}",
              f"{ms(c['p50'])} ({ms(c['max'])})",
              f"{ms(s['p50'])} one script.sh run (every call without the worker)",
              f"<= {TARGET_COLD:g} s", f"{verdict(c['max'] <= TARGET_COLD)}")
    table.add("    of which spawn -> /_/health 200 (worker loaded the model)",
              ms(r["p50"]))
    table.add("    top-1 of the answer", f"{top['label']} {top['probability']:.3f}", "", "",
              "ok" if top["label_id"] in CAT_CLASSES else "MISS: not a cat")
    table.notes.append(f"(b)/(c) input: {photo.name} ({photo.stat().st_size:,} bytes, "
                       f"{len(body):,} bytes of base64); the FDL's env as is: "
                       f"OSCAR_WORKER={env.get('OSCAR_WORKER')!r}, CLASSIFIER_NUM_THREADS="
                       f"{env.get('CLASSIFIER_NUM_THREADS')!r}; predict() is "
                       "oscar_classifier.Classifier.predict on the already decoded image, "
                       "timed in the benchmark process right after each call")


def run(counts: dict[str, int], workdir: Path, classifier_python: str) -> tuple[Table, dict]:
    table = Table("4. Function runtime and warm workers (issue 13)")
    results: dict = {}
    noop(counts, workdir, table, results)
    classifier(counts, workdir, classifier_python, table, results)
    table.notes.append("direct HTTP POSTs to `python -m oscar_faas.runtime` over one keep-alive "
                       "connection; baseline (a): a new `python -m oscar_faas.supervisor` per "
                       "call, body on stdin, as the classic watchdog runs it")
    return table, results

