"""The faas-provider REST contract and its status codes, over real HTTP."""

from __future__ import annotations

import re

import pytest

from .conftest import ProviderProcess


def test_healthz_info_namespaces(shared_provider: ProviderProcess) -> None:
    assert shared_provider.request("GET", "/healthz").status_code == 200
    info = shared_provider.request("GET", "/system/info").json()
    # faas-provider's flat ProviderInfo, which the OpenFaaS gateway decodes and wraps
    assert info["provider"] == "oscar-faas-local"
    assert info["orchestration"] == "local"
    assert info["version"]["release"] and "sha" in info["version"]
    assert shared_provider.request("GET", "/system/namespaces").json() == ["openfaas-fn"]


def test_deploy_get_list_update_delete(shared_provider: ProviderProcess, fn_name: str) -> None:
    p = shared_provider
    resp = p.request("POST", "/system/functions", json={
        "service": fn_name, "image": "img:1", "envProcess": "cat",
        "envVars": {"A": "1"}, "labels": {}, "annotations": {"k": "v"}})
    assert resp.status_code == 202
    status = p.request("GET", f"/system/function/{fn_name}").json()
    assert status["name"] == fn_name and status["image"] == "img:1"
    assert status["envVars"] == {"A": "1"} and status["labels"] == {}
    assert status["replicas"] == 1 and status["availableReplicas"] == 1
    assert status["namespace"] == "openfaas-fn"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", status["createdAt"])
    assert fn_name in [f["name"] for f in p.request("GET", "/system/functions").json()]

    resp = p.request("PUT", "/system/functions", json={
        "service": fn_name, "image": "img:2", "envProcess": "cat"})
    assert resp.status_code == 202
    updated = p.request("GET", f"/system/function/{fn_name}").json()
    assert updated["image"] == "img:2" and "envVars" not in updated
    assert updated["createdAt"] == status["createdAt"]

    resp = p.request("DELETE", "/system/functions", json={"functionName": fn_name})
    assert resp.status_code == 202
    assert p.request("GET", f"/system/function/{fn_name}").status_code == 404
    assert p.request("DELETE", "/system/functions",
                     json={"functionName": fn_name}).status_code == 404


def test_post_existing_is_400(shared_provider: ProviderProcess, fn_name: str) -> None:
    shared_provider.deploy(fn_name, "cat")
    resp = shared_provider.request("POST", "/system/functions", json={
        "service": fn_name, "image": "x", "envProcess": "cat"})
    assert resp.status_code == 400
    assert f"function {fn_name} already exists" in resp.text


def test_put_unknown_is_404(shared_provider: ProviderProcess, fn_name: str) -> None:
    resp = shared_provider.request("PUT", "/system/functions", json={
        "service": fn_name, "image": "x"})
    assert resp.status_code == 404


@pytest.mark.parametrize("body, message", [
    ({"image": "x"}, "service is required"),
    ({"service": "ok-name"}, "image is required"),
    ({"service": "Bad_Name", "image": "x"}, "must be a valid DNS entry"),
    ({"service": "a.b", "image": "x"}, "must be a valid DNS entry"),
    ({"service": "-a", "image": "x"}, "must be a valid DNS entry"),
    ({"service": "x" * 64, "image": "x"}, "must be a valid DNS entry"),
    ({"service": "ok-name", "image": "x", "envVars": {"A": 1}}, "envVars"),
    ({"service": "ok-name", "image": "x", "namespace": "other"}, "namespace"),
    ({"service": "ok-name", "image": "x", "secrets": ["missing-secret"]}, "missing-secret"),
    ([1, 2], "JSON object"),
])
def test_deploy_validation_400(shared_provider: ProviderProcess, body: object,
                               message: str) -> None:
    resp = shared_provider.request("POST", "/system/functions", json=body)
    assert resp.status_code == 400, resp.text
    assert message in resp.text
    assert resp.text.startswith("validation failed") or message == "namespace"
    # validation never leaves a half-created function behind
    assert shared_provider.request("GET", "/system/function/ok-name").status_code == 404


def test_invalid_json_is_400(shared_provider: ProviderProcess) -> None:
    for method in ("POST", "PUT", "DELETE"):
        resp = shared_provider.request(method, "/system/functions", data=b"{not json")
        assert resp.status_code == 400, method
        assert "invalid JSON" in resp.text


def test_delete_requires_function_name(shared_provider: ProviderProcess) -> None:
    resp = shared_provider.request("DELETE", "/system/functions", json={})
    assert resp.status_code == 400
    assert "functionName" in resp.text


def test_unknown_keys_are_ignored(shared_provider: ProviderProcess, fn_name: str) -> None:
    resp = shared_provider.request("POST", "/system/functions", json={
        "service": fn_name, "image": "x", "envProcess": "cat", "registryAuth": "abc",
        "network": "func_functions", "somethingNew": {"a": 1}})
    assert resp.status_code == 202
    status = shared_provider.request("GET", f"/system/function/{fn_name}").json()
    assert "registryAuth" not in status and "somethingNew" not in status


def test_omitempty_rules(shared_provider: ProviderProcess, fn_name: str) -> None:
    shared_provider.request("POST", "/system/functions",
                            json={"service": fn_name, "image": "x"})
    status = shared_provider.request("GET", f"/system/function/{fn_name}").json()
    # no envProcess: deployed but never ready, so availableReplicas (0) is omitted
    for key in ("envProcess", "envVars", "constraints", "secrets", "labels", "annotations",
                "limits", "requests", "readOnlyRootFilesystem", "invocationCount",
                "availableReplicas", "usage"):
        assert key not in status, key
    assert status["replicas"] == 1 and "createdAt" in status


def test_limits_and_flags_round_trip(shared_provider: ProviderProcess, fn_name: str) -> None:
    shared_provider.deploy(fn_name, "cat", limits={"memory": "128Mi", "cpu": ""},
                           requests={}, readOnlyRootFilesystem=True, constraints=["a == b"])
    status = shared_provider.request("GET", f"/system/function/{fn_name}").json()
    assert status["limits"] == {"memory": "128Mi"} and status["requests"] == {}
    assert status["readOnlyRootFilesystem"] is True and status["constraints"] == ["a == b"]


def test_invocation_count(shared_provider: ProviderProcess, fn_name: str) -> None:
    shared_provider.deploy(fn_name, "cat")
    for _ in range(3):
        assert shared_provider.invoke(fn_name, b"x").status_code == 200
    status = shared_provider.request("GET", f"/system/function/{fn_name}").json()
    assert status["invocationCount"] == 3


def test_namespace_suffix_and_query(shared_provider: ProviderProcess, fn_name: str) -> None:
    p = shared_provider
    p.deploy(fn_name, "cat")
    assert p.request("GET", f"/system/function/{fn_name}.openfaas-fn").status_code == 200
    assert p.request("GET", f"/system/function/{fn_name}?namespace=openfaas-fn"
                     ).status_code == 200
    assert p.request("GET", "/system/functions?namespace=openfaas-fn").status_code == 200
    assert p.request("GET", f"/system/function/{fn_name}.other").status_code == 400
    assert p.request("GET", "/system/functions?namespace=other").status_code == 400
    assert p.invoke(f"{fn_name}.openfaas-fn", b"ns").text == "ns"
    assert p.invoke(f"{fn_name}.other", b"ns").status_code == 404
    resp = p.request("DELETE", "/system/functions",
                     json={"functionName": fn_name, "namespace": "openfaas-fn"})
    assert resp.status_code == 202


def test_scale_function(shared_provider: ProviderProcess, fn_name: str) -> None:
    p = shared_provider
    p.deploy(fn_name, "cat")
    body = {"serviceName": fn_name, "replicas": 2}
    assert p.request("POST", f"/system/scale-function/{fn_name}", json=body).status_code == 202
    assert p.request("POST", "/system/scale-function/nope-404",
                     json={"serviceName": "nope-404", "replicas": 1}).status_code == 404
    assert p.request("POST", f"/system/scale-function/{fn_name}",
                     json={"serviceName": fn_name, "replicas": 0}).status_code == 400


def test_unknown_route_and_method(shared_provider: ProviderProcess) -> None:
    assert shared_provider.request("GET", "/system/nothing").status_code == 404
    assert shared_provider.request("PATCH", "/system/functions").status_code == 405


def test_invoke_unknown_is_404(shared_provider: ProviderProcess) -> None:
    resp = shared_provider.invoke("does-not-exist", b"x")
    assert resp.status_code == 404
    assert resp.text.startswith("error finding function does-not-exist")
    assert resp.headers["X-OpenFaaS-Internal"] == "proxy"


def test_invoke_not_ready_is_503(shared_provider: ProviderProcess, fn_name: str) -> None:
    shared_provider.request("POST", "/system/functions", json={"service": fn_name, "image": "x"})
    resp = shared_provider.invoke(fn_name, b"x")
    assert resp.status_code == 503
    assert resp.text == f"No endpoints available for: {fn_name}.\n"


def test_keep_alive_survives_unread_bodies(shared_provider: ProviderProcess) -> None:
    """Error answers before the body is read must not desynchronise the connection."""
    p = shared_provider
    for _ in range(3):
        assert p.request("POST", "/function/no-such-fn", data=b"x" * 200_000).status_code == 404
        assert p.request("GET", "/healthz").status_code == 200
