"""Section 3: the example image classifier through the gateway (issue 8).

``oscar-faas apply`` of ``examples/image-classification-sync`` on a fresh ``oscar-faas
serve``, then the first ``/run`` after the apply and warm calls with the sample photo. The
baseline is the service's ``script.sh`` run directly, as a function runs it, without the
gateway, provider or supervisor.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from benchlib import REPO, KeepAlive, Serve, Table, cpu_seconds, ms, summary

EXAMPLE = REPO / "examples" / "image-classification-sync"
FDL = EXAMPLE / "image-classification-sync.yaml"
NAME = "image-classification-sync"
CAT_CLASSES = set(range(281, 286))


def _check(python: str) -> str | None:
    """Why ``python`` cannot run the classifier, or None."""
    out = subprocess.run([python, "-c", "import oscar_classifier, torch, efficientnet_lite_pytorch, "
                          "skimage"],
                         capture_output=True, text=True, timeout=120)
    return None if out.returncode == 0 else out.stderr.strip().splitlines()[-1]


def _fetch(python: str, dest: Path) -> Path:
    out = subprocess.run([python, str(EXAMPLE / "fetch_samples.py"), str(dest), "chelsea"],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"fetch_samples.py failed: {out.stderr}")
    return Path(out.stdout.strip())


def _script_alone(photo: Path, env: dict[str, str]) -> float:
    """One run of the service's script.sh as a function runs it; seconds."""
    out_dir = Path(tempfile.mkdtemp(prefix="clf-out-"))
    start = time.perf_counter()
    done = subprocess.run(["/bin/sh", str(EXAMPLE / "script.sh")], capture_output=True,
                          timeout=120, env=dict(env, INPUT_FILE_PATH=str(photo),
                                                TMP_OUTPUT_DIR=str(out_dir)))
    seconds = time.perf_counter() - start
    if done.returncode != 0 or not (out_dir / f"{photo.stem}.json").exists():
        raise RuntimeError(f"script.sh failed: {done.stderr[-2000:]!r}")
    shutil.rmtree(out_dir, ignore_errors=True)
    return seconds


def run(counts: dict[str, int], workdir: Path, python: str,
        classifier_python: str) -> tuple[Table, dict]:
    table = Table("3. Image classifier through the gateway (issue 8)")
    results: dict = {"classifier_python": classifier_python}
    problem = _check(classifier_python)
    if problem:
        table.add("skipped", f"{classifier_python} cannot import the classifier: {problem}")
        results["skipped"] = problem
        return table, results
    photo = _fetch(classifier_python, workdir / "samples")
    body = base64.b64encode(photo.read_bytes())
    # On the embedded default the function runs on the host with the gateway's PATH: the
    # classifier's venv first, as when serve runs in that activated venv.
    path = os.pathsep.join([os.path.dirname(classifier_python), os.environ.get("PATH", "")])

    with Serve(workdir / "classifier", python=python, env={"PATH": path}) as serve:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENFAAS_", "MINIO_"))}
        env.update(OSCAR_ENDPOINT=serve.url, OSCAR_USERNAME=serve.user,
                   OSCAR_PASSWORD=serve.password)
        # The FDL as the real clients send it: no --env, no copy.
        start = time.perf_counter()
        applied = subprocess.run([python, "-m", "oscar_faas.cli", "apply", str(FDL)],
                                 env=env, capture_output=True, text=True, timeout=120)
        results["apply_seconds"] = time.perf_counter() - start
        if applied.returncode != 0:
            raise RuntimeError(f"oscar-faas apply failed: {applied.stderr}")
        token = serve.token(NAME)
        client = KeepAlive(serve.url, timeout=300)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "text/plain"}

        def call() -> tuple[float, dict]:
            seconds, status, data = client.call("POST", f"/run/{NAME}", body, headers)
            if status != 200:
                raise RuntimeError(f"/run/{NAME}: {status} {data[-2000:]!r}")
            return seconds, json.loads(base64.b64decode(data))

        first, prediction = call()
        ours = serve.gunicorn_pids() + serve.provider_pids()
        cpu0 = cpu_seconds(ours)
        # warm calls interleaved with runs of the script alone, so both see the same machine
        alone_env = dict(os.environ, CLASSIFIER_PYTHON=classifier_python,
                         CLASSIFIER_NUM_THREADS="1")
        warm, alone = [], []
        deadline = time.monotonic() + 240
        for _ in range(counts["classifier"]):
            if time.monotonic() > deadline:
                break
            warm.append(call()[0])
            alone.append(_script_alone(photo, alone_env))
        client.close()
        results["cpu_per_call"] = (cpu_seconds(ours) - cpu0) / max(len(warm), 1)

    top = prediction["predictions"][0]
    results.update(first=first, warm=summary(warm), script_alone=summary(alone),
                   prediction=prediction, photo=photo.name, photo_bytes=photo.stat().st_size)
    table.add("oscar-faas apply (create the service)", ms(results["apply_seconds"]))
    table.add("cold start: apply -> first /run answered", ms(results["apply_seconds"] + first),
              "", "<= 5 s", "PASS" if results["apply_seconds"] + first <= 5 else "MISS")
    table.add("first /run after apply", ms(first), "", "",
              "ok" if top["label_id"] in CAT_CLASSES else f"MISS: top-1 {top['label']}")
    table.add(f"warm /run, median (p90), n={len(warm)}",
              f"{ms(results['warm']['p50'])} ({ms(results['warm']['p90'])})",
              f"{ms(results['script_alone']['p50'])} ({ms(results['script_alone']['p90'])})"
              " script.sh alone (what each call cost before the warm worker)")
    table.add("warm /run speed-up over the script per call, medians",
              f"x{results['script_alone']['p50'] / max(results['warm']['p50'], 1e-9):.0f}")
    table.add("CPU per warm call in the gateway + provider + runtime",
              ms(results["cpu_per_call"]))
    table.notes.append(f"input: {photo.name} ({photo.stat().st_size:,} bytes, "
                       f"{len(body):,} bytes of base64); the FDL keeps the model loaded in a "
                       "warm worker (OSCAR_WORKER), started once by the service's runtime; "
                       "the baseline runs script.sh once per call, as without the worker")
    table.notes.append("top-5: " + json.dumps(prediction))
    return table, results
