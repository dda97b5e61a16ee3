"""Replays what faas-cli sends for deploy (PUT, then POST on 404), list, describe, invoke
and remove, and checks it gets the answers faas-cli counts as success."""

from __future__ import annotations

from .conftest import ProviderProcess

FAAS_CLI_OK = (200, 202)


def test_faas_cli_sequence(shared_provider: ProviderProcess, fn_name: str) -> None:
    p = shared_provider
    headers = {"User-Agent": "faas-cli/0.17.0 (openfaas; linux; amd64)"}
    deployment = {
        "service": fn_name, "image": "ghcr.io/example/fn:latest", "envProcess": "cat",
        "envVars": {"write_debug": "true"}, "labels": {}, "annotations": {},
        "secrets": [], "limits": {"memory": "128Mi"}, "readOnlyRootFilesystem": False,
        "namespace": "openfaas-fn",
    }
    # faas-cli deploy --update=true: PUT first ...
    resp = p.request("PUT", "/system/functions", json=deployment, headers=headers)
    assert resp.status_code == 404
    # ... then POST on 404
    resp = p.request("POST", "/system/functions", json=deployment, headers=headers)
    assert resp.status_code in FAAS_CLI_OK
    # a second deploy takes the PUT path
    resp = p.request("PUT", "/system/functions", json=deployment, headers=headers)
    assert resp.status_code in FAAS_CLI_OK

    listed = p.request("GET", "/system/functions?namespace=openfaas-fn", headers=headers)
    assert listed.status_code == 200
    assert fn_name in [f["name"] for f in listed.json()]
    described = p.request("GET", f"/system/function/{fn_name}?namespace=openfaas-fn",
                          headers=headers).json()
    assert described["availableReplicas"] == 1 and described["labels"] == {}

    invoked = p.invoke(f"{fn_name}.openfaas-fn", b"from faas-cli",
                       headers={**headers, "Content-Type": "text/plain"})
    assert invoked.status_code == 200 and invoked.text == "from faas-cli"

    removed = p.request("DELETE", "/system/functions",
                        json={"functionName": fn_name, "namespace": "openfaas-fn"},
                        headers=headers)
    assert removed.status_code in FAAS_CLI_OK
    again = p.request("DELETE", "/system/functions",
                      json={"functionName": fn_name, "namespace": "openfaas-fn"})
    assert again.status_code == 404


def test_faas_cli_namespace_get_and_namespaces(shared_provider: ProviderProcess) -> None:
    """``faas-cli namespaces`` and ``faas-cli namespace get openfaas-fn`` (go-sdk's
    ``GetNamespace``: ``GET /system/namespace/<ns>``, a ``FunctionNamespace`` back)."""
    p = shared_provider
    assert p.request("GET", "/system/namespaces").json() == ["openfaas-fn"]
    got = p.request("GET", "/system/namespace/openfaas-fn")
    assert got.status_code == 200 and got.json() == {"name": "openfaas-fn"}
    assert got.headers["Content-Type"] == "application/json"
    missing = p.request("GET", "/system/namespace/staging-fn")
    assert missing.status_code == 404 and "staging-fn" in missing.text
    # faas-cli namespace create/update/delete: not possible on one machine
    for method in ("POST", "PUT", "DELETE"):
        resp = p.request(method, "/system/namespace/dev", json={"name": "dev"})
        assert resp.status_code == 501


def test_faas_cli_describe_sees_provider_info(shared_provider: ProviderProcess,
                                              fn_name: str) -> None:
    """What ``faas-cli describe`` and the OpenFaaS gateway's ``/system/info`` decode."""
    p = shared_provider
    info = p.request("GET", "/system/info").json()
    assert set(info) == {"provider", "orchestration", "version"}
    assert isinstance(info["provider"], str) and isinstance(info["orchestration"], str)
    assert set(info["version"]) >= {"sha", "release"}
    p.deploy(fn_name, "cat", labels={"team": "a"}, annotations={"topic": "t"})
    described = p.request("GET", f"/system/function/{fn_name}?namespace=openfaas-fn").json()
    assert described["name"] == fn_name and described["namespace"] == "openfaas-fn"
    assert described["labels"] == {"team": "a"}
    assert described["annotations"] == {"topic": "t"}
    assert described["envProcess"] == "cat" and described["availableReplicas"] == 1
