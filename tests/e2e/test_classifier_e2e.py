"""The use case end to end: a real pretrained CNN classifies a real photograph through
POST /run on the embedded default, driven by the oscar-faas CLI and oscar-python.

The FDL is applied unchanged, as a real client sends it (no ``--env``): on the embedded
default the function runs on the host, where ``python3`` is the first on the gateway's PATH,
here the venv running the tests (as in an activated venv), with ``oscar_classifier``
installed in it (``pip install -e examples/image-classification-sync``).
"""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.livegateway import LiveGateway

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "image-classification-sync"
FDL = EXAMPLE / "image-classification-sync.yaml"
NAME = "image-classification-sync"
CAT_CLASSES = set(range(281, 286))  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    pytest.importorskip("torch", reason="the classifier needs the 'ml' extra")
    pytest.importorskip("efficientnet_lite_pytorch", reason="the classifier needs 'ml'")
    pytest.importorskip("oscar_classifier", reason="pip install -e examples/image-classification-sync")
    dest = tmp_path_factory.mktemp("samples")
    out = subprocess.run([sys.executable, str(EXAMPLE / "fetch_samples.py"), str(dest),
                          "chelsea"], capture_output=True, text=True)
    if out.returncode == 2:
        pytest.skip("scikit-image (the sample photo) is not installed")
    assert out.returncode == 0, out.stderr
    return Path(out.stdout.strip())


@pytest.fixture
def gateway(tmp_path):
    """A gateway of its own per test (each creates the same service), started from the
    venv as an activated venv would: its bin folder first on PATH."""
    venv_bin = os.path.dirname(sys.executable)
    path = os.pathsep.join([venv_bin, os.environ.get("PATH", "/usr/bin:/bin")])
    workdir = tmp_path / "gateway"
    workdir.mkdir()
    with LiveGateway(workdir, env={"PATH": path}) as gw:
        yield gw


def _apply_with_the_cli(gateway) -> None:
    env = {"OSCAR_ENDPOINT": gateway.url, "OSCAR_USERNAME": gateway.user,
           "OSCAR_PASSWORD": gateway.password, "PATH": "/usr/bin:/bin"}
    applied = subprocess.run(
        [sys.executable, "-m", "oscar_faas.cli", "apply", str(FDL)],
        env=env, capture_output=True, text=True, timeout=60)
    assert applied.returncode == 0, applied.stderr
    assert f"{NAME}: created" in applied.stdout


def _apply_with_oscar_python(gateway) -> None:
    resp = gateway.oscar_python_client().create_service(str(FDL))
    assert resp.status_code == 201, resp.text


@pytest.mark.parametrize("apply", [_apply_with_the_cli, _apply_with_oscar_python],
                         ids=["oscar-faas-apply", "oscar-python-create_service"])
def test_classifies_the_sample_photo_through_the_gateway(gateway, photo, tmp_path, apply):
    client = gateway.oscar_python_client()
    apply(gateway)  # the FDL as it is: no --env, no copy

    result = tmp_path / "prediction.json"
    resp = client.run_service(NAME, input=str(photo), output=str(result), timeout=120)
    assert resp.status_code == 200, resp.text
    prediction = json.loads(result.read_text())
    top5 = prediction["predictions"]
    assert len(top5) == 5
    probabilities = [p["probability"] for p in top5]
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(0 < p <= 1 for p in probabilities)
    assert top5[0]["label_id"] in CAT_CLASSES, top5[0]
    assert "cat" in top5[0]["label"]

    # served by the function's warm workers (the process that loaded the model and one forked
    # worker per CPU), which stay loaded: the same processes answer again
    workers = _workers_under(gateway.proc.pid)
    assert workers
    again = tmp_path / "again.json"
    resp = client.run_service(NAME, input=str(photo), output=str(again), timeout=120)
    assert resp.status_code == 200, resp.text
    assert json.loads(again.read_text()) == prediction
    assert _workers_under(gateway.proc.pid) == workers
    log = (gateway.workdir / "data" / "logs" / f"{NAME}.log").read_text()
    assert log.count("oscar_classifier: classifying") == 2, log


def _workers_under(root: int) -> list[int]:
    """Pids of the classifier's warm workers among the descendants of ``root``."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found = []
    for pid in parents:
        ancestor = parents.get(pid)
        while ancestor and ancestor != root:
            ancestor = parents.get(ancestor)
        if ancestor != root:
            continue
        try:
            cmdline = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"oscar_classifier.worker" in cmdline:
            found.append(pid)
    return sorted(found)



# --- through the function runtime: warm worker and script give the same answer -------------


def _fdl_env(secrets_dir: Path, **changes: str | None) -> tuple[dict[str, str], str]:
    """The function env the gateway deploys for the FDL as it is (SCRIPT, FUNCTION_CONFIG,
    its variables), with this venv first on PATH, and the service's token; its secret (the
    token the runtime checks) is written in ``secrets_dir``, as a provider does; ``changes``
    set or (None) drop variables."""
    from oscar_faas.config import Settings
    from oscar_faas.fdl import load_fdl
    from oscar_faas.plan import plan_deployment, prepare_service

    (service,) = load_fdl(FDL).services
    settings = Settings.from_env({})
    plan = plan_deployment(prepare_service(service, settings), settings)
    assert plan.secret is not None
    secrets_dir.mkdir(exist_ok=True)
    (secrets_dir / plan.secret.name).write_text(plan.secret.value)
    env = {"PATH": os.pathsep.join([os.path.dirname(sys.executable),
                                    os.environ.get("PATH", "/usr/bin:/bin")]),
           "OSCAR_SECRETS_DIR": str(secrets_dir)}
    env.update(plan.deployment["envVars"])
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env, plan.service.token


@pytest.mark.timeout(600)  # two runtimes, torch loaded three times
def test_the_runtime_answers_the_same_with_the_warm_worker_as_with_the_script(photo, tmp_path):
    import base64

    import requests

    from tests.runtime.conftest import Runtime

    body = base64.b64encode(photo.read_bytes())
    junk = base64.b64encode(b"this is not an image\n" * 10)
    warm_env, warm_token = _fdl_env(tmp_path / "secrets-warm")
    assert warm_env["OSCAR_WORKER"] == "python3 -m oscar_classifier.worker"
    answers = {}
    for label, (env, token) in (("worker", (warm_env, warm_token)),
                                ("script", _fdl_env(tmp_path / "secrets-script",
                                                    OSCAR_WORKER=None))):
        runtime = Runtime(env, tmp_path / f"runtime-{label}.log")
        headers = {"Content-Type": "text/plain", "Authorization": f"Bearer {token}"}
        try:
            runtime.wait_ready()
            first = runtime.post(body, headers=headers)
            assert first.status_code == 200, (first.text, runtime.log())
            failed = runtime.post(junk, headers=headers)
            assert failed.status_code == 500, failed.text
            assert "cannot read an image" in failed.text
            again = runtime.post(body, headers=headers)
            assert again.status_code == 200 and again.content == first.content
            answers[label] = first.content
            if label == "worker":  # the worker served the calls and survived the bad one
                log = runtime.log()
                assert len(re.findall(r"worker \d: oscar_classifier: classifying", log)) == 2, log
                assert "InputImageError" in log and "exited" not in log
                assert requests.get(runtime.url + "/_/health", timeout=30).status_code == 200
        finally:
            runtime.stop()
    assert answers["worker"] == answers["script"]
    top1 = json.loads(base64.b64decode(answers["worker"]))["predictions"][0]
    assert top1["label_id"] in CAT_CLASSES, top1
