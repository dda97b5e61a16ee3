"""Warm services end to end on the embedded default (``oscar-faas serve``): a service whose
FDL sets ``OSCAR_WORKER`` is served by one long-lived worker through the provider's runtime,
called the way oscar-python and oscar-cli call it. The worker answers with its pid, so "the
model stays loaded" is checked as "the same process answered"."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import requests

from tests.functionpython import function_python

pytestmark = pytest.mark.slow

WORKER = '''\
import os
from oscar_worker import serve


def setup():
    return {"pid": os.getpid(), "calls": 0}


def handle(input_path, output_dir, env, state):
    state["calls"] += 1
    with open(input_path, "rb") as src:
        data = src.read()
    with open(os.path.join(output_dir, "answer.json"), "w") as out:
        out.write(f'{{"pid": {state["pid"]}, "calls": {state["calls"]}, "size": {len(data)}}}')


serve(handle, setup)
'''


def worker_command(tmp_path: Path) -> str:
    path = tmp_path / "warm_worker.py"
    path.write_text(WORKER)
    return f"{function_python()} {path}"


def answer(resp: requests.Response) -> dict:
    assert resp.status_code == 200, resp.text
    return json.loads(base64.b64decode(resp.content))


def test_oscar_python_runs_a_warm_service(gateway, tmp_path):
    (tmp_path / "warm.sh").write_text("#!/bin/sh\necho the script is not used\n")
    fdl = tmp_path / "warm.yaml"
    fdl.write_text(
        "functions:\n  oscar:\n  - oscar-cluster:\n      name: warm-py\n      image: alpine\n"
        "      cpu: '0.1'\n      log_level: INFO\n      script: warm.sh\n"
        "      environment:\n        variables:\n"
        f"          OSCAR_WORKER: {worker_command(tmp_path)}\n")
    client = gateway.oscar_python_client()
    assert client.create_service(str(fdl)).status_code == 201
    infile = tmp_path / "in.txt"
    infile.write_text("twelve bytes")
    results = []
    for index in range(2):
        out = tmp_path / f"out{index}.json"
        resp = client.run_service("warm-py", input=str(infile), output=str(out), timeout=120)
        assert resp.status_code == 200, resp.text
        results.append(json.loads(out.read_text()))
    assert [r["calls"] for r in results] == [1, 2]  # one worker kept its state
    assert results[0]["pid"] == results[1]["pid"] and results[0]["size"] == 12
    assert client.remove_service("warm-py").status_code == 204


def test_oscar_cli_shaped_calls_reach_the_same_worker(gateway, tmp_path):
    """Full Go struct on create (variables under ``environment.Variables``), then base64
    bodies, chunked, no Content-Type, Basic auth on /run, as oscar-cli sends them."""
    body = json.loads((Path(__file__).parent.parent / "data" / "oscar_cli_cowsay.json"
                       ).read_text())
    body.update(name="warm-cli", image="alpine", script="#!/bin/sh\necho unused\n",
                environment={"Variables": {"OSCAR_WORKER": worker_command(tmp_path)}})
    resp = requests.post(f"{gateway.url}/system/services", json=body, auth=gateway.auth,
                         timeout=20)
    assert resp.status_code == 201, resp.text
    payload = b'{"message": "Hi there"}'

    def chunks():
        encoded = base64.b64encode(payload)
        for i in range(0, len(encoded), 8):
            yield encoded[i:i + 8]

    first, second = (answer(requests.post(f"{gateway.url}/run/warm-cli", data=chunks(),
                                          auth=gateway.auth, timeout=120))
                     for _ in range(2))
    assert first["size"] == second["size"] == len(payload)
    assert (first["calls"], second["calls"]) == (1, 2)
    assert first["pid"] == second["pid"]


FORKING_WORKER = '''\
import os
import time
from pathlib import Path
from oscar_worker import serve

MARKS = Path(os.environ["MARKS"])


def setup():
    (MARKS / f"setup-{os.getpid()}").touch()
    return "model"


def handle(input_path, output_dir, env, model):
    (MARKS / f"call-{os.getpid()}").touch()
    deadline = time.monotonic() + 60
    while len(list(MARKS.glob("call-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # wait for a second call to run at the same time
    Path(output_dir, "pid.txt").write_text(str(os.getpid()))


serve(handle, setup)
'''


def test_a_warm_service_with_no_setting_serves_calls_at_once_from_one_setup(gateway,
                                                                            tmp_path):
    """The FDL grants 2 CPUs and sets no max_inflight: 2 workers serve 2 calls at the same
    time, and setup() ran once (the workers were forked from it)."""
    from concurrent.futures import ThreadPoolExecutor

    from oscar_faas.runtime.sizing import cores
    if cores() < 2:
        pytest.skip("needs 2 CPUs")
    marks = tmp_path / "marks"
    marks.mkdir()
    marks.chmod(0o777)  # the function's own user writes there
    worker = tmp_path / "forking_worker.py"
    worker.write_text(FORKING_WORKER)
    (tmp_path / "warm.sh").write_text("#!/bin/sh\necho the script is not used\n")
    fdl = tmp_path / "warm2.yaml"
    fdl.write_text(
        "functions:\n  oscar:\n  - oscar-cluster:\n      name: warm-two\n      image: alpine\n"
        "      cpu: '2'\n      memory: 1Gi\n      log_level: INFO\n      script: warm.sh\n"
        "      environment:\n        variables:\n"
        f"          MARKS: {marks}\n"
        f"          OSCAR_WORKER: {function_python()} {worker}\n")
    client = gateway.oscar_python_client()
    assert client.create_service(str(fdl)).status_code == 201
    body = base64.b64encode(b"photo")

    def call(_: int) -> requests.Response:
        return requests.post(f"{gateway.url}/run/warm-two", data=body,
                             auth=gateway.auth, timeout=120)

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(call, range(2)))
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    pids = {base64.b64decode(a.content) for a in answers}
    assert len(pids) == 2  # two workers, each waited for the other's call
    assert len(list(marks.glob("setup-*"))) == 1  # one setup() for both
    assert client.remove_service("warm-two").status_code == 204
