"""Basic auth guards /system/* and /function/*, with OpenFaaS' exact failure answer."""

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


def test_functions_need_credentials_healthz_stays_open(
        make_provider: Callable[..., ProviderProcess]) -> None:
    """Issue 15: another local user could run any function through the provider's port."""
    p = make_provider(auth=CREDS)
    assert requests.get(p.url + "/healthz", timeout=10).status_code == 200
    p.deploy("guarded-fn", "cat")  # the helper session carries the credentials
    for path in ("/function/guarded-fn", "/function/guarded-fn.openfaas-fn/sub/path",
                 "/function/unknown-fn"):
        resp = requests.post(p.url + path, data=b"no auth", timeout=10)
        assert resp.status_code == 401, path
        assert resp.headers["WWW-Authenticate"] == 'Basic realm="Restricted"'
    assert requests.post(p.url + "/function/guarded-fn", data=b"x", auth=("admin", "wrong"),
                         timeout=10).status_code == 401
    resp = requests.post(p.url + "/function/guarded-fn", data=b"with auth", auth=CREDS,
                         timeout=10)
    assert resp.status_code == 200 and resp.text == "with auth"


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


def test_the_gateways_dedicated_header_keeps_the_clients_authorization(
        make_provider: Callable[..., ProviderProcess]) -> None:
    """Exposed services: the gateway sends the provider's credentials in their own header,
    so the client's Authorization reaches the function; neither credential set leaks."""
    import base64

    from oscar_faas.contract import PROVIDER_AUTH_HEADER

    p = make_provider(auth=CREDS)
    p.deploy("env-fn", "env")  # the classic watchdog's CGI variables show what arrived
    basic = "Basic " + base64.b64encode(b"admin:s3cret").decode()
    resp = requests.post(p.url + "/function/env-fn", data=b"",
                         headers={PROVIDER_AUTH_HEADER: basic,
                                  "Authorization": "Bearer client-token"}, timeout=10)
    assert resp.status_code == 200, resp.text
    assert "Http_Authorization=Bearer client-token" in resp.text
    assert "s3cret" not in resp.text and basic.split()[1] not in resp.text
    wrong = "Basic " + base64.b64encode(b"admin:nope").decode()
    assert requests.post(p.url + "/function/env-fn", headers={PROVIDER_AUTH_HEADER: wrong},
                         timeout=10).status_code == 401
    # faas-cli's way: the credentials in Authorization are taken out before the function
    resp = requests.post(p.url + "/function/env-fn", auth=CREDS, timeout=10)
    assert resp.status_code == 200 and "Http_Authorization" not in resp.text


def test_a_websocket_upgrade_to_a_function_needs_the_credentials(
        make_provider: Callable[..., ProviderProcess]) -> None:
    """The upgrade tunnel bypasses the router, not the credential check."""
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
    assert head.startswith(b"HTTP/1.1 401") or head.startswith(b"HTTP/1.0 401"), head


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
