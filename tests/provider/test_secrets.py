"""/system/secrets and the per-function secrets folder behind OSCAR_SECRETS_DIR."""

from __future__ import annotations

import base64
from typing import Callable

import pytest

from .conftest import ProviderProcess, secrets_folder


def test_secret_crud(shared_provider: ProviderProcess) -> None:
    p = shared_provider
    assert p.request("POST", "/system/secrets",
                     json={"name": "crud-s", "value": "v1"}).status_code == 202
    assert p.request("POST", "/system/secrets",
                     json={"name": "crud-s", "value": "v1"}).status_code == 409
    listed = p.request("GET", "/system/secrets").json()
    assert {"name": "crud-s", "namespace": "openfaas-fn"} in listed
    assert all(set(item) == {"name", "namespace"} for item in listed)  # never values
    assert p.request("PUT", "/system/secrets",
                     json={"name": "crud-s", "value": "v2"}).status_code == 202
    assert p.request("PUT", "/system/secrets",
                     json={"name": "crud-missing", "value": "v"}).status_code == 404
    assert p.request("DELETE", "/system/secrets", json={"name": "crud-s"}).status_code == 202
    assert p.request("DELETE", "/system/secrets", json={"name": "crud-s"}).status_code == 404
    assert "crud-s" not in [s["name"] for s in p.request("GET", "/system/secrets").json()]


@pytest.mark.parametrize("body", [
    {"name": "Bad_Name", "value": "x"},
    {"name": "../escape", "value": "x"},
    {"value": "no name"},
    {"name": "ok-name", "rawValue": "***not base64***"},
    {"name": "ok-name", "value": "x", "namespace": "elsewhere"},
])
def test_secret_validation(shared_provider: ProviderProcess, body: dict[str, str]) -> None:
    assert shared_provider.request("POST", "/system/secrets", json=body).status_code == 400


def test_function_sees_only_its_secrets(shared_provider: ProviderProcess, fn_name: str,
                                        script: Callable[[str, str], str]) -> None:
    p = shared_provider
    mine, other = f"{fn_name}-mine", f"{fn_name}-other"
    raw = bytes(range(256))
    p.request("POST", "/system/secrets", json={"name": mine, "value": "first"})
    p.request("POST", "/system/secrets",
              json={"name": other, "rawValue": base64.b64encode(raw).decode()})
    show = script("show", f"""
        ls "$OSCAR_SECRETS_DIR"
        cat "$OSCAR_SECRETS_DIR/{mine}"
    """)
    p.deploy(fn_name, show, secrets=[mine])
    assert p.invoke(fn_name).text == f"{mine}\nfirst"

    p.request("PUT", "/system/secrets", json={"name": mine, "value": "second"})
    assert p.invoke(fn_name).text == f"{mine}\nsecond"  # refreshed on secret change

    binary = script("binary", f'cat "$OSCAR_SECRETS_DIR/{other}"\n')
    p.request("PUT", "/system/functions", json={
        "service": fn_name, "image": "x", "envProcess": binary, "secrets": [other]})
    assert p.invoke(fn_name).content == raw  # refreshed on function change; rawValue kept
    folder = secrets_folder(p.data_dir, fn_name)
    assert sorted(f.name for f in folder.iterdir()) == [other]

    p.request("DELETE", "/system/secrets", json={"name": other})
    assert not (folder / other).exists()
