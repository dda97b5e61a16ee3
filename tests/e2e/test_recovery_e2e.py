"""Issue 15: failures leave nothing behind. ``serve`` restarts its provider when it dies
(kill -9 here), ``/health`` says degraded meanwhile; storage secrets never outlive their
service; names OpenFaaS would read as another function are not found."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest
import requests

from tests.livegateway import LiveGateway
from tests.provider.conftest import ProviderProcess

PATIENCE = 60
SERVICE = {"name": "keep", "image": "alpine", "script": "echo \"$MY_SECRET\"",
           "environment": {"secrets": {"MY_SECRET": "s3cr3t"}}}


def _provider_pid(gw: LiveGateway) -> int:
    children = Path(f"/proc/{gw.proc.pid}/task/{gw.proc.pid}/children").read_text().split()
    for pid in children:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"oscar_faas.provider" in cmdline:
            return int(pid)
    raise AssertionError("no provider child")


def _run(gw: LiveGateway, name: str) -> requests.Response:
    return requests.post(f"{gw.url}/run/{name}", data=b"aGk=", auth=gw.auth, timeout=PATIENCE)


def _until(check, what: str):
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"never: {what}")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    # a first restart delay long enough that /health is seen degraded on any machine
    with LiveGateway(tmp_path_factory.mktemp("recovery-gw"),
                     env={"PROVIDER_RESTART_DELAY": "3"}) as gw:
        resp = requests.post(gw.url + "/system/services", json=SERVICE, auth=gw.auth,
                             timeout=PATIENCE)
        assert resp.status_code == 201, resp.text
        yield gw


def test_killed_provider_is_restarted_and_health_says_degraded_meanwhile(
        gateway: LiveGateway) -> None:
    assert _run(gateway, "keep").text == "s3cr3t\n"
    os.kill(_provider_pid(gateway), signal.SIGKILL)
    degraded = _until(lambda: (r := requests.get(gateway.url + "/health", timeout=PATIENCE))
                      .status_code == 503 and r.text, "/health degraded")
    assert "Degraded" in degraded
    _until(lambda: requests.get(gateway.url + "/health", timeout=PATIENCE).status_code == 200,
           "/health healthy again")
    resp = _run(gateway, "keep")
    assert resp.status_code == 200 and resp.text == "s3cr3t\n"
    assert "restarting it" in gateway.log_path.read_text()


def test_provider_port_wants_credentials_for_functions(gateway: LiveGateway) -> None:
    url = re.search(r"embedded local provider at (http://[^\s,]+)", gateway.log_path.read_text())
    assert url is not None
    resp = requests.post(url.group(1) + "/function/keep", data=b"aGk=", timeout=PATIENCE)
    assert resp.status_code == 401


@pytest.mark.parametrize("name", ["keep.openfaas-fn", "keep.other", "KEEP", "keep%2Fx"])
def test_names_openfaas_would_misread_are_not_found(gateway: LiveGateway, name: str) -> None:
    resp = requests.delete(f"{gateway.url}/system/services/{name}", auth=gateway.auth,
                           timeout=PATIENCE)
    assert resp.status_code == 404
    assert requests.get(f"{gateway.url}/system/services/keep", auth=gateway.auth,
                        timeout=PATIENCE).status_code == 200
    assert _run(gateway, "keep").text == "s3cr3t\n"  # its secret is still there


def test_orphan_storage_secrets_are_cleaned_when_the_gateway_starts(tmp_path: Path) -> None:
    """A create killed between its two writes leaves a secret without its function: the
    next start removes it, and keeps the secrets of services that exist."""
    auth = ("admin", "provider-pw")
    provider = ProviderProcess(tmp_path / "data", tmp_path / "provider.log", auth=auth).start()
    try:
        env = {"OPENFAAS_URL": provider.url, "OPENFAAS_USERNAME": auth[0],
               "OPENFAAS_PASSWORD": auth[1], "OPENFAAS_INVOKE_AUTH": "true"}
        (tmp_path / "gw1").mkdir()
        (tmp_path / "gw2").mkdir()
        with LiveGateway(tmp_path / "gw1", env=env) as gw:
            assert requests.post(gw.url + "/system/services", json=SERVICE, auth=gw.auth,
                                 timeout=PATIENCE).status_code == 201
        # what a provider killed mid-create leaves: the secret, no function
        assert provider.request("POST", "/system/secrets", json={
            "name": "oscar-storage-ghost", "value": "{}"}).status_code == 202
        assert provider.request("POST", "/system/secrets", json={
            "name": "unrelated", "value": "x"}).status_code == 202
        with LiveGateway(tmp_path / "gw2", env=env) as gw:
            names = {s["name"] for s in provider.request("GET", "/system/secrets").json()}
            assert names == {"oscar-storage-keep", "unrelated"}
            assert "oscar-storage-ghost" in gw.log_path.read_text()
            assert _run(gw, "keep").text == "s3cr3t\n"
    finally:
        provider.stop()


def test_provider_killed_during_creates_leaves_no_secret_without_its_function(
        tmp_path: Path) -> None:
    """kill -9 of the provider while creates (each with a secret) are in flight: whatever
    state each create reached, after the next start every storage secret has its function."""
    import json
    from concurrent.futures import ThreadPoolExecutor

    def create(i: int) -> int:
        body = {**SERVICE, "name": f"svc-{i}"}
        try:
            return requests.post(gw.url + "/system/services", json=body, auth=gw.auth,
                                 timeout=PATIENCE).status_code
        except requests.RequestException:
            return 0

    data = tmp_path / "data"
    with LiveGateway(tmp_path, env={"PROVIDER_RESTART_DELAY": "0.2"}) as gw:
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(create, i) for i in range(40)]
            _until(lambda: any(f.done() for f in futures), "a create finished")
            os.kill(_provider_pid(gw), signal.SIGKILL)
            codes = [f.result() for f in futures]
        assert 201 in codes
    with LiveGateway(tmp_path) as gw:  # same data dir: the next start
        assert requests.get(gw.url + "/system/services", auth=gw.auth,
                            timeout=PATIENCE).status_code == 200
        functions = {f["deployment"]["service"] for f in
                     json.loads((data / "functions.json").read_text())["functions"]}
        secrets = set(json.loads((data / "secrets.json").read_text())["secrets"])
        assert {s for s in secrets if s.startswith("oscar-storage-")} == {
            f"oscar-storage-{name}" for name in functions}


@pytest.mark.parametrize("restart_after", [0.0, 0.3])
def test_a_gateway_stopped_while_its_provider_restarts_leaves_no_provider(
        tmp_path: Path, restart_after: float) -> None:
    """SIGTERM to serve's process group just as it restarts a killed provider: the one
    being started goes too (it used to outlive the gateway, with its functions)."""
    from tests.conftest import left_behind, LEFTOVER_MARK

    with LiveGateway(tmp_path, env={"PROVIDER_RESTART_DELAY": "0.1"}) as gw:
        assert _run(gw, "nothing").status_code == 404
        assert requests.post(gw.url + "/system/services", json=SERVICE, auth=gw.auth,
                             timeout=PATIENCE).status_code == 201
        assert _run(gw, "keep").text == "s3cr3t\n"  # its runtime is up
        os.kill(_provider_pid(gw), signal.SIGKILL)
        _until(lambda: "restarting it" in gw.log_path.read_text(), "a restart")
        time.sleep(restart_after)
    data = str(tmp_path / "data")
    deadline = time.monotonic() + 15
    while (mine := [cmd for cmd in left_behind(os.environ[LEFTOVER_MARK]).values()
                    if data in cmd]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert mine == [], gw.log()
