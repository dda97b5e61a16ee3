"""Observing a running gateway end to end (real ``oscar-faas serve`` with 2 gunicorn
workers and the embedded provider): metrics, status, info, logs, the timing header."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.livegateway import LiveGateway

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    with LiveGateway(tmp_path_factory.mktemp("observe")) as gateway:
        yield gateway


def create(gw: LiveGateway, tmp_path, name: str, script: str, log_level: str = "CRITICAL"
           ) -> str:
    (tmp_path / f"{name}.sh").write_text(textwrap.dedent(script))
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"functions:\n  oscar:\n  - oscar-cluster:\n      name: {name}\n"
                    f"      image: alpine\n      cpu: '0.1'\n      log_level: {log_level}\n"
                    f"      script: {name}.sh\n")
    client = gw.oscar_python_client()
    assert client.create_service(str(path)).status_code == 201
    return client.get_service(name).json()["token"]


def run(gw: LiveGateway, name: str, token: str, body: bytes = b"aGk=") -> requests.Response:
    return requests.post(f"{gw.url}/run/{name}", data=body, timeout=60,
                         headers={"Authorization": f"Bearer {token}"})


def metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def test_metrics_add_up_every_worker(gw, tmp_path):
    token = create(gw, tmp_path, "counted", "cat \"$INPUT_FILE_PATH\"\n")
    calls = 12
    for _ in range(calls):
        assert run(gw, "counted", token).status_code == 200
    assert run(gw, "counted", "f" * 64).status_code == 401
    assert requests.post(f"{gw.url}/run/no-such-service", data=b"x",
                         timeout=30).status_code == 404
    # Two workers answered those calls; whichever answers /metrics must show them all.
    for _ in range(6):
        text = requests.get(f"{gw.url}/metrics", timeout=10).text
        assert metric(text, "oscar_faas_run_requests_total", service="counted",
                      code="200") == calls
        assert metric(text, "oscar_faas_run_requests_total", service="counted",
                      code="401") == 1
        assert metric(text, "oscar_faas_run_duration_seconds_count",
                      service="counted") == calls + 1
        assert metric(text, "oscar_faas_run_in_flight", service="counted") == 0
        assert metric(text, "oscar_faas_run_requests_total", service="(unknown)",
                      code="404") == 1
        assert "no-such-service" not in text and token not in text
    # OSCAR's /system/metrics: both workers' counts in the one counts file (each writes its
    # tally every 2 s); the 401 ran nothing and is not counted
    deadline = time.monotonic() + 10
    while True:
        items = requests.get(f"{gw.url}/system/metrics/breakdown?group_by=service",
                             auth=gw.auth, timeout=10).json()["items"]
        counted = next((i for i in items if i["key"] == "counted"), {})
        if counted.get("requests_count_sync") == calls or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert counted["requests_count_sync"] == counted["requests_count_total"] == calls
    assert (gw.workdir / "data" / "usage.sqlite3").is_file()


def test_status_info_and_namespace(gw, tmp_path):
    create(gw, tmp_path, "statused", "cat \"$INPUT_FILE_PATH\"\n")
    # Pending while its runtime starts, then Running: every function is counted as one
    deadline = time.monotonic() + 30
    while True:
        st = requests.get(f"{gw.url}/system/status", auth=gw.auth, timeout=10).json()
        pods = st["oscar"]["pods"]
        if pods["states"]["Pending"] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert pods["states"]["Running"] == pods["total"] >= 1
    cluster = st["cluster"]
    assert cluster["nodes_count"] == 1 and cluster["metrics"]["cpu"]["max_free_on_node_cores"] >= 0
    # the services' requests (cpu 0.1 each) are what the machine has promised
    assert cluster["nodes"][0]["cpu"]["request_cores"] == 100 * pods["total"]
    info = requests.get(f"{gw.url}/system/info", auth=gw.auth, timeout=10).json()
    assert info["version"].startswith("v3.6.")
    # the embedded provider's release, read from its flat ProviderInfo
    from oscar_faas import __version__
    assert info["serverless_backend"] == {"name": "OpenFaaS", "version": __version__}


def test_server_timing_separates_the_phases(gw, tmp_path):
    """The provider measures queue wait, set-up, script and upload; /run passes it on."""
    token = create(gw, tmp_path, "timed", "cat \"$INPUT_FILE_PATH\" > \"$TMP_OUTPUT_DIR/o\"\n")
    resp = run(gw, "timed", token)
    assert resp.status_code == 200 and resp.text.strip() == "aGk="
    parts = {}
    for part in resp.headers["Server-Timing"].split(","):
        name, *params = [p.strip() for p in part.split(";")]
        parts[name] = dict(p.split("=", 1) for p in params)
    assert list(parts) == ["queue", "setup", "script", "upload"]
    for params in parts.values():
        assert float(params["dur"]) >= 0 and params["desc"].startswith('"')
    assert "X-Duration-Seconds" in resp.headers


def cli(gw: LiveGateway, *args: str, timeout: float = 60):
    return subprocess.run(
        [sys.executable, "-m", "oscar_faas.cli", *args, "--endpoint", gw.url,
         "--user", gw.user, "--password", gw.password],
        capture_output=True, timeout=timeout, check=False)


def test_function_logs_through_the_gateway_and_the_cli(gw, tmp_path):
    token = create(gw, tmp_path, "logged", "echo working >&2\ncat \"$INPUT_FILE_PATH\"\n",
                   log_level="DEBUG")
    assert run(gw, "logged", token).status_code == 200
    resp = requests.get(f"{gw.url}/system/services/logged/logs", auth=gw.auth, timeout=30)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in resp.text.splitlines() if line.strip()]
    assert {"name", "namespace", "instance", "timestamp", "text"} <= set(lines[0])
    texts = [m["text"] for m in lines]
    assert any(t.startswith("INFO call ") and ": 200 in " in t for t in texts), texts
    assert any("script: working" in t for t in texts), texts  # the script's stderr (DEBUG)
    # tail, auth, unknown service; OSCAR's job list stays empty
    tail = requests.get(f"{gw.url}/system/services/logged/logs?tail=1", auth=gw.auth,
                        timeout=30)
    assert len([line for line in tail.text.splitlines() if line.strip()]) == 1
    assert requests.get(f"{gw.url}/system/services/logged/logs", timeout=30
                        ).status_code == 401
    assert requests.get(f"{gw.url}/system/services/nope/logs", auth=gw.auth,
                        timeout=30).status_code == 404
    jobs = requests.get(f"{gw.url}/system/logs/logged", auth=gw.auth, timeout=30).json()
    assert jobs["jobs"] == {}

    out = cli(gw, "logs", "logged", "--tail", "3", "--since", "1h")
    assert out.returncode == 0, out.stderr
    printed = out.stdout.decode().splitlines()
    assert len(printed) == 3 and printed[-1] == f"{lines[-1]['timestamp']} {texts[-1]}"
    assert cli(gw, "logs", "nope").returncode == 1


def test_cli_follow_prints_lines_as_they_come(gw, tmp_path):
    token = create(gw, tmp_path, "followed", "cat \"$INPUT_FILE_PATH\"\n", log_level="INFO")
    proc = subprocess.Popen(
        [sys.executable, "-m", "oscar_faas.cli", "logs", "followed", "--follow",
         "--endpoint", gw.url, "--user", gw.user, "--password", gw.password],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert run(gw, "followed", token).status_code == 200
        first = proc.stdout.readline().decode()  # printed while the stream stays open
        timestamp, _, text = first.strip().partition(" ")
        assert timestamp.endswith("Z") and text.startswith("INFO "), first
        assert proc.poll() is None  # still following
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_given_prometheus_multiproc_dir_is_used_and_kept(tmp_path):
    """PROMETHEUS_MULTIPROC_DIR (README settings): the workers keep their values there, old
    values are cleared at start, and the folder, not ours, stays when serve exits."""
    folder = tmp_path / "prom"
    folder.mkdir()
    (folder / "counter_999999.db").write_bytes(b"stale")  # a previous run's values
    (tmp_path / "gw").mkdir()
    with LiveGateway(tmp_path / "gw", env={"PROMETHEUS_MULTIPROC_DIR": str(folder)}) as gw:
        token = create(gw, tmp_path, "multiproc", "cat \"$INPUT_FILE_PATH\"\n")
        assert run(gw, "multiproc", token).status_code == 200
        text = requests.get(f"{gw.url}/metrics", timeout=10).text
        assert metric(text, "oscar_faas_run_requests_total", service="multiproc",
                      code="200") == 1
        assert not (folder / "counter_999999.db").exists()
        assert list(folder.glob("*.db"))
    assert folder.is_dir() and list(folder.glob("*.db"))
