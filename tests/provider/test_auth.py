"""Basic auth guards /system/* with OpenFaaS' exact failure answer; /function/* is open, as
in faas-provider (issue 21)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import requests

from .conftest import REPO, ProviderProcess

CREDS = ("admin", "s3cret")


def test_system_routes_need_credentials(make_provider: Callable[..., ProviderProcess]) -> None:
    p = make_provider(auth=CREDS)
    for path in ("/system/functions", "/system/info", "/system/secrets",
                 "/system/namespaces", "/system/function/x", "/system/unknown"):
        resp = requests.get(p.url + path, timeout=10)
        assert resp.status_code == 401, path
        assert resp.headers["WWW-Authenticate"] == 'Basic realm="Restricted"'
        assert resp.text.strip() == "invalid credentials"
    assert requests.get(p.url + "/system/functions", auth=("admin", "wrong"),
                        timeout=10).status_code == 401
    assert requests.get(p.url + "/system/functions", auth=("root", "s3cret"),
                        timeout=10).status_code == 401
    assert requests.get(p.url + "/system/functions", headers={"Authorization": "Bearer x"},
                        timeout=10).status_code == 401
    assert requests.get(p.url + "/system/functions", auth=CREDS, timeout=10).status_code == 200


def test_functions_stay_open_as_in_faas_provider(
        make_provider: Callable[..., ProviderProcess]) -> None:
    """Issue 21: the real OpenFaaS gateway sends no provider credentials on function calls,
    and faas-provider leaves its proxy open; an OSCAR service's runtime checks its own
    caller instead (tests/e2e/test_caller_e2e.py). ``/healthz`` stays open too."""
    p = make_provider(auth=CREDS)
    assert requests.get(p.url + "/healthz", timeout=10).status_code == 200
    p.deploy("open-fn", "cat")  # the helper session carries the credentials
    for path in ("/function/open-fn", "/function/open-fn.openfaas-fn/sub/path"):
        resp = requests.post(p.url + path, data=b"no auth", timeout=10)
        assert resp.status_code == 200 and resp.text == "no auth", path
    assert requests.post(p.url + "/function/unknown-fn", data=b"x",
                         timeout=10).status_code == 404
    assert requests.post(p.url + "/system/functions", json={}, timeout=10).status_code == 401


def test_function_open_without_credentials(make_provider: Callable[..., ProviderProcess]
                                           ) -> None:
    p = make_provider()
    p.deploy("open-fn", "cat")
    resp = requests.post(p.url + "/function/open-fn", data=b"no auth needed", timeout=10)
    assert resp.status_code == 200 and resp.text == "no auth needed"


@pytest.mark.parametrize("command", [["oscar_faas.provider"], ["oscar_faas.cli", "provider"]],
                         ids=["python-m", "oscar-faas"])
def test_half_configured_auth_is_refused(tmp_path: Path, command: list[str]) -> None:
    """Both entry points are one: the same credential check."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENFAAS_USERNAME": "admin"}
    env.pop("OPENFAAS_PASSWORD", None)
    proc = subprocess.run([sys.executable, "-m", *command, "--port", "0",
                           "--data-dir", str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "OPENFAAS_PASSWORD" in proc.stderr


def test_the_clients_authorization_reaches_the_function(
        make_provider: Callable[..., ProviderProcess]) -> None:
    """The function sees the caller's own Authorization (the token its runtime checks), as
    behind an OpenFaaS gateway."""
    p = make_provider(auth=CREDS)
    p.deploy("env-fn", "env")  # the classic watchdog's CGI variables show what arrived
    resp = requests.post(p.url + "/function/env-fn", data=b"",
                         headers={"Authorization": "Bearer client-token"}, timeout=10)
    assert resp.status_code == 200, resp.text
    assert "Http_Authorization=Bearer client-token" in resp.text
    assert "s3cret" not in resp.text


def test_a_websocket_upgrade_to_a_function_is_open_too(
        make_provider: Callable[..., ProviderProcess]) -> None:
    """The upgrade tunnel follows the same rule as every call: no provider credentials."""
    import socket
    from urllib.parse import urlsplit

    p = make_provider(auth=CREDS)
    p.deploy("ws-fn", "cat")
    url = urlsplit(p.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(b"GET /function/ws-fn/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1."), head
    assert b" 401 " not in head.split(b"\r\n", 1)[0], head


@pytest.mark.skipif(os.geteuid() != 0, reason="isolation by uid needs a provider run as root")
def test_isolation_setting_decides_the_functions_user(
        make_provider: Callable[..., ProviderProcess]) -> None:
    """OSCAR_FAAS_ISOLATION (README settings): as root, functions run as a user of their own;
    ``off`` runs them as root."""
    isolated = make_provider()
    isolated.deploy("who-fn", "id -u")
    uid = isolated.invoke("who-fn", b"").text.strip()
    assert uid.isdigit() and uid != "0"
    shared = make_provider(env={"OSCAR_FAAS_ISOLATION": "off"})
    shared.deploy("who-fn", "id -u")
    assert shared.invoke("who-fn", b"").text.strip() == "0"
