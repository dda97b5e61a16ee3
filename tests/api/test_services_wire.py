"""Service management, asserted on the wire: what the gateway sends to OpenFaaS and what it
answers the OSCAR client."""

from __future__ import annotations

import base64
import json
import re

import pytest
import yaml

from oscar_faas.api import create_app
from oscar_faas.config import Settings
from oscar_faas.contract import SERVICE_ANNOTATION, SUPERVISOR_PROCESS
from oscar_faas.serve import free_port

from .conftest import ADMIN, OPENFAAS_AUTH, function_status, sent

COWSAY = {"name": "cowsay", "image": "ghcr.io/grycap/cowsay", "script": "echo moo\n",
          "memory": "1Gi", "cpu": "1.0", "log_level": "critical",
          "environment": {"Variables": {"INPUT_TYPE": "json"}}}


def stored(client, httpserver, body=COWSAY) -> dict:
    """Create ``body`` against the fake OpenFaaS; return the FunctionDeployment sent."""
    httpserver.expect_request(f"/system/function/{body['name']}").respond_with_data("", 404)
    httpserver.expect_request("/system/secrets", method="PUT").respond_with_data("", 202)
    httpserver.expect_request("/system/functions", method="POST").respond_with_data("", 202)
    resp = client.post("/system/services", json=body, headers=ADMIN)
    assert resp.status_code == 201, resp.text
    assert resp.data == b""
    (req,) = sent(httpserver, "POST", "/system/functions")
    return req.get_json()


def test_health_needs_no_auth(client):
    resp = client.get("/health")
    assert resp.status_code == 200 and resp.text == "Ok"


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Basic " + base64.b64encode(b"oscar:wrong").decode()},
    {"Authorization": "Bearer " + "a" * 64}, {"Authorization": "Basic !!!"}])
def test_system_routes_need_basic_auth(client, headers, httpserver):
    for path in ("/system/services", "/system/info", "/system/config",
                 "/system/services/x"):
        resp = client.get(path, headers=headers)
        assert resp.status_code == 401
        assert resp.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert httpserver.log == []  # nothing reached OpenFaaS


def test_create_sends_the_exact_function_deployment(client, httpserver):
    fd = stored(client, httpserver)
    assert set(fd) == {"service", "image", "envProcess", "envVars", "labels", "annotations",
                       "limits", "requests", "secrets"}
    # every service reads its secret: its token, checked by its runtime (issue 21)
    assert fd["secrets"] == ["oscar-storage-cowsay"]
    assert fd["envVars"]["OSCAR_STORAGE_SECRET"] == "oscar-storage-cowsay"
    (secret,) = sent(httpserver, "PUT", "/system/secrets")
    service = json.loads(fd["annotations"][SERVICE_ANNOTATION])
    assert json.loads(secret.get_json()["value"]) == {"token": service["token"]}
    assert fd["service"] == "cowsay" and fd["image"] == "ghcr.io/grycap/cowsay"
    assert fd["envProcess"] == SUPERVISOR_PROCESS
    env = fd["envVars"]
    assert base64.b64decode(env["SCRIPT"]).decode() == "echo moo\n"
    config = yaml.safe_load(base64.b64decode(env["FUNCTION_CONFIG"]))
    assert config["name"] == "cowsay" and config["log_level"] == "CRITICAL"
    assert "script" not in config and "token" not in config
    assert env["LOG_LEVEL"] == "CRITICAL" and env["INPUT_TYPE"] == "json"
    assert env["combine_output"] == "false" and env["max_inflight"] == "0"
    assert fd["labels"] == {"oscar_service": "cowsay", "applicationId": "cowsay",
                            "queue": "root.oscar-queue.cowsay"}
    assert fd["limits"] == fd["requests"] == {"memory": "1Gi", "cpu": "1.0"}
    service = json.loads(fd["annotations"][SERVICE_ANNOTATION])
    assert service["script"] == "echo moo\n" and re.fullmatch(r"[0-9a-f]{64}", service["token"])
    assert "com.openfaas.scale.zero" not in fd["labels"]  # Pro-only: CE rejects it
    for req, _ in httpserver.log:
        assert req.headers["Authorization"] == OPENFAAS_AUTH


def test_create_existing_is_409(client, httpserver):
    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        function_status(COWSAY))
    resp = client.post("/system/services", json=COWSAY, headers=ADMIN)
    assert resp.status_code == 409
    assert "already exists" in resp.text
    assert sent(httpserver, "POST", "/system/functions") == []


@pytest.mark.parametrize("body, message", [
    ({**COWSAY, "name": ""}, "'name' is required"),
    ({**COWSAY, "image": None}, "'image' is required"),
    ({**COWSAY, "script": ""}, "'script' is required"),
    ({**COWSAY, "name": "Bad_Name"}, "DNS-1123"),
    ({**COWSAY, "memory": "2 GB"}, "Kubernetes quantity"),
    ({**COWSAY, "output": [{"storage_provider": "ftp", "path": "b"}]}, "storage_provider"),
])
def test_invalid_service_is_400_and_nothing_is_created(client, httpserver, body, message):
    resp = client.post("/system/services", json=body, headers=ADMIN)
    assert resp.status_code == 400 and message in resp.text
    assert httpserver.log == []


def test_invalid_json_is_400(client, httpserver):
    resp = client.post("/system/services", data=b"{not json", headers=ADMIN)
    assert resp.status_code == 400 and "invalid JSON" in resp.text
    assert httpserver.log == []


def test_get_rebuilds_the_service_from_the_annotation(client, httpserver):
    fd = stored(client, httpserver)
    httpserver.clear()
    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        {"name": "cowsay", "annotations": fd["annotations"]})
    resp = client.get("/system/services/cowsay", headers=ADMIN)
    assert resp.status_code == 200
    assert resp.content_type == "application/json"
    out = resp.get_json()
    assert out["name"] == "cowsay" and out["script"] == "echo moo\n"
    assert out["environment"]["variables"] == {"INPUT_TYPE": "json"}
    assert '"name":"cowsay"' in resp.text  # compact JSON


def test_get_unknown_is_404_with_empty_body(client, httpserver):
    httpserver.expect_request("/system/function/nope").respond_with_data("", 404)
    resp = client.get("/system/services/nope", headers=ADMIN)
    assert resp.status_code == 404 and resp.data == b""


def test_functions_without_annotation_are_not_services(client, httpserver):
    httpserver.expect_request("/system/function/figlet").respond_with_json(
        {"name": "figlet", "image": "ghcr.io/openfaas/figlet"})
    assert client.get("/system/services/figlet", headers=ADMIN).status_code == 404
    httpserver.expect_request("/system/functions").respond_with_json([
        {"name": "figlet", "image": "x"},
        function_status({**COWSAY, "token": "t" * 64}),
    ])
    resp = client.get("/system/services", headers=ADMIN)
    assert resp.status_code == 200
    assert [s["name"] for s in resp.get_json()] == ["cowsay"]
    assert "\"oscar_service\":" in resp.text  # oscar-tests checks this substring


def test_update_keeps_the_token_and_sends_put(client, httpserver):
    fd = stored(client, httpserver)
    token = json.loads(fd["annotations"][SERVICE_ANNOTATION])["token"]
    httpserver.clear()
    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        {"name": "cowsay", "annotations": fd["annotations"], "secrets": fd["secrets"]})
    httpserver.expect_request("/system/functions", method="PUT").respond_with_data("", 202)
    httpserver.expect_request("/system/secrets", method="PUT").respond_with_data("", 202)
    resp = client.put("/system/services", json={**COWSAY, "image": "alpine:3",
                                                "token": "f" * 64}, headers=ADMIN)
    assert resp.status_code == 204, resp.text
    (req,) = sent(httpserver, "PUT", "/system/functions")
    new = req.get_json()
    assert new["image"] == "alpine:3"
    assert json.loads(new["annotations"][SERVICE_ANNOTATION])["token"] == token


def test_update_unknown_is_404(client, httpserver):
    httpserver.expect_request("/system/function/cowsay").respond_with_data("", 404)
    resp = client.put("/system/services", json=COWSAY, headers=ADMIN)
    assert resp.status_code == 404
    assert sent(httpserver, "PUT", "/system/functions") == []


def test_delete_sends_function_name_in_body(client, httpserver):
    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        function_status({**COWSAY, "token": "t" * 64}))
    httpserver.expect_request("/system/functions", method="DELETE").respond_with_data("", 202)
    httpserver.expect_request("/system/secrets", method="DELETE").respond_with_data("", 202)
    resp = client.delete("/system/services/cowsay", headers=ADMIN)
    assert resp.status_code == 204
    (req,) = sent(httpserver, "DELETE", "/system/functions")
    assert req.get_json() == {"functionName": "cowsay"}
    (secret,) = sent(httpserver, "DELETE", "/system/secrets")
    assert secret.get_json() == {"name": "oscar-storage-cowsay"}


def test_delete_unknown_is_404(client, httpserver):
    httpserver.expect_request("/system/function/ghost").respond_with_data("", 404)
    assert client.delete("/system/services/ghost", headers=ADMIN).status_code == 404
    assert sent(httpserver, "DELETE", "/system/functions") == []


def test_openfaas_4xx_is_passed_on(client, httpserver):
    httpserver.expect_request("/system/function/cowsay").respond_with_data("", 404)
    httpserver.expect_request("/system/secrets", method="PUT").respond_with_data("", 202)
    httpserver.expect_request("/system/secrets", method="DELETE").respond_with_data("", 202)
    httpserver.expect_request("/system/functions", method="POST").respond_with_data(
        "validation failed: image is required", 400)
    resp = client.post("/system/services", json=COWSAY, headers=ADMIN)
    assert resp.status_code == 400
    assert "validation failed: image is required" in resp.text


def test_failed_create_leaves_no_secret_behind(client, httpserver):
    body = {**COWSAY, "storage_providers": {"s3": {"aws": {
                "access_key": "AKIA", "secret_key": "SECRET", "region": "eu-west-1"}}},
            "output": [{"storage_provider": "s3.aws", "path": "results/out"}]}
    httpserver.expect_request("/system/function/cowsay").respond_with_data("", 404)
    httpserver.expect_request("/system/secrets", method="PUT").respond_with_data("", 404)
    httpserver.expect_request("/system/secrets", method="POST").respond_with_data("", 202)
    httpserver.expect_request("/system/functions", method="POST").respond_with_data(
        "boom", 500)
    httpserver.expect_request("/system/secrets", method="DELETE").respond_with_data("", 202)
    resp = client.post("/system/services", json=body, headers=ADMIN)
    assert resp.status_code == 502
    (created,) = sent(httpserver, "POST", "/system/secrets")
    assert created.get_json()["name"] == "oscar-storage-cowsay"
    (deleted,) = sent(httpserver, "DELETE", "/system/secrets")
    assert deleted.get_json() == {"name": "oscar-storage-cowsay"}


def test_credentials_travel_as_a_secret_never_as_env_or_annotation(client, httpserver):
    body = {**COWSAY, "storage_providers": {"s3": {"aws": {
                "access_key": "AKIA123", "secret_key": "SECRET456", "region": "eu-west-1"}}},
            "environment": {"variables": {"A": "1"}, "secrets": {"DB_PASS": "hunter2"}},
            "output": [{"storage_provider": "s3.aws", "path": "results/out"}]}
    httpserver.expect_request("/system/secrets", method="PUT").respond_with_data("", 202)
    fd = stored(client, httpserver, body)
    text = json.dumps(fd) + base64.b64decode(fd["envVars"]["FUNCTION_CONFIG"]).decode()
    for secret in ("AKIA123", "SECRET456", "hunter2"):
        assert secret not in text
    assert fd["secrets"] == ["oscar-storage-cowsay"]
    assert fd["envVars"]["OSCAR_STORAGE_SECRET"] == "oscar-storage-cowsay"
    (req,) = sent(httpserver, "PUT", "/system/secrets")
    value = json.loads(req.get_json()["value"])
    assert value["s3"]["aws"]["secret_key"] == "SECRET456"
    assert value["environment"] == {"DB_PASS": "hunter2"}


def test_unreachable_openfaas_is_502_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}"
    app = create_app(Settings.from_env({"OPENFAAS_URL": url, "OSCAR_USERNAME": "oscar",
                                        "OSCAR_PASSWORD": "s3cret"}))
    resp = app.test_client().get("/system/services", headers=ADMIN)
    assert resp.status_code == 502 and url in resp.text


def test_info_reports_openfaas_backend(client, httpserver):
    httpserver.expect_request("/system/info").respond_with_json(
        {"provider": {"provider": "faas-netes-ce"}, "version": {"release": "0.27.0"},
         "arch": "x86_64"})
    info = client.get("/system/info", headers=ADMIN).get_json()
    assert info["version"].startswith("v3.6.")
    assert info["serverless_backend"] == {"name": "OpenFaaS", "version": "0.27.0"}


@pytest.mark.parametrize("path", ["/system/config", "/system/config/"])
def test_config_has_exactly_typed_minio_provider(httpserver, path):
    settings = Settings.from_env({
        "OPENFAAS_URL": httpserver.url_for("/").rstrip("/"), "OSCAR_USERNAME": "oscar",
        "OSCAR_PASSWORD": "s3cret", "MINIO_ENDPOINT": "http://minio:9000",
        "MINIO_ACCESS_KEY": "ak", "MINIO_SECRET_KEY": "sk", "MINIO_TLS_VERIFY": "false"})
    resp = create_app(settings).test_client().get(path, headers=ADMIN)
    assert resp.status_code == 200
    data = resp.get_json()
    assert data["minio_provider"] == {"endpoint": "http://minio:9000", "verify": False,
                                      "access_key": "ak", "secret_key": "sk",
                                      "region": "us-east-1"}
    assert data["config"]["oidc_groups"] == [""] and data["config"]["name"] == "oscar"


def test_function_image_setting_replaces_the_fdl_image(httpserver, settings):
    app = create_app(Settings(**{**settings.__dict__,
                                 "function_image": "registry.example.org/me/{name}:v1"}))
    fd = stored(app.test_client(), httpserver)
    assert fd["image"] == "registry.example.org/me/cowsay:v1"
    stored_service = json.loads(fd["annotations"][SERVICE_ANNOTATION])
    assert stored_service["image"] == "ghcr.io/grycap/cowsay"  # the service keeps its own


def test_function_image_with_an_unknown_placeholder_is_refused():
    from oscar_faas.errors import ConfigError
    with pytest.raises(ConfigError, match="FUNCTION_IMAGE"):
        Settings.from_env({"FUNCTION_IMAGE": "reg/{service}:v1"})


WITH_S3 = {**COWSAY, "storage_providers": {"s3": {"aws": {
               "access_key": "AKIA123", "secret_key": "SECRET456", "region": "eu-west-1"}}},
           "output": [{"storage_provider": "s3.aws", "path": "results/out"}]}


def test_update_that_no_longer_needs_credentials_keeps_the_secret_for_the_token(
        client, httpserver):
    httpserver.expect_request("/system/secrets", method="PUT").respond_with_data("", 202)
    fd = stored(client, httpserver, WITH_S3)
    assert fd["secrets"] == ["oscar-storage-cowsay"]
    httpserver.clear()
    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        {"name": "cowsay", "annotations": fd["annotations"], "secrets": fd["secrets"]})
    httpserver.expect_request("/system/functions", method="PUT").respond_with_data("", 202)
    httpserver.expect_request("/system/secrets", method="PUT").respond_with_data("", 202)
    resp = client.put("/system/services", json=COWSAY, headers=ADMIN)  # no outputs now
    assert resp.status_code == 204, resp.text
    (update,) = sent(httpserver, "PUT", "/system/functions")
    assert update.get_json()["secrets"] == ["oscar-storage-cowsay"]
    (secret,) = sent(httpserver, "PUT", "/system/secrets")
    value = json.loads(secret.get_json()["value"])
    assert set(value) == {"token"} and "SECRET456" not in secret.get_data(as_text=True)
    assert sent(httpserver, "DELETE", "/system/secrets") == []


def test_update_that_still_needs_the_storage_secret_keeps_it(client, httpserver):
    httpserver.expect_request("/system/secrets", method="PUT").respond_with_data("", 202)
    fd = stored(client, httpserver, WITH_S3)
    httpserver.clear()
    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        {"name": "cowsay", "annotations": fd["annotations"]})
    httpserver.expect_request("/system/functions", method="PUT").respond_with_data("", 202)
    httpserver.expect_request("/system/secrets", method="PUT").respond_with_data("", 202)
    assert client.put("/system/services", json=WITH_S3, headers=ADMIN).status_code == 204
    assert sent(httpserver, "DELETE", "/system/secrets") == []


def test_hidden_credentials_are_refused_on_update(client, httpserver):
    """A client that sends back what GET showed (``hidden``) must send the real key: the
    update is a 400 naming the field, and nothing reaches OpenFaaS."""
    httpserver.expect_request("/system/secrets", method="PUT").respond_with_data("", 202)
    fd = stored(client, httpserver, WITH_S3)
    httpserver.clear()
    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        {"name": "cowsay", "annotations": fd["annotations"]})
    shown = client.get("/system/services/cowsay", headers=ADMIN).get_json()
    assert shown["storage_providers"]["s3"]["aws"]["secret_key"] == "hidden"
    resp = client.put("/system/services", json=shown, headers=ADMIN)
    assert resp.status_code == 400
    assert "storage_providers.s3.aws" in resp.text and "hidden" in resp.text
    assert [req.method for req, _ in httpserver.log] == ["GET", "GET"]  # lookups only


def test_enable_gpu_becomes_a_gpu_limit(client, httpserver):
    fd = stored(client, httpserver, {**COWSAY, "enable_gpu": True})
    assert fd["limits"] == {"memory": "1Gi", "cpu": "1.0", "nvidia.com/gpu": "1"}
    httpserver.clear()
    assert "nvidia.com/gpu" not in stored(client, httpserver)["limits"]
