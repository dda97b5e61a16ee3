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
