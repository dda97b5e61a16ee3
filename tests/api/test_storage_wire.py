"""MinIO side effects of service management, against a real S3 server process (moto) and a
fake OpenFaaS gateway."""

from __future__ import annotations

import io
import json

import pytest

from oscar_faas.api import create_app
from oscar_faas.config import Settings
from tests.s3server import S3Server

from .conftest import ADMIN, function_status, sent

SERVICE = {"name": "grayify", "image": "alpine", "script": "echo",
           "input": [{"storage_provider": "minio.default", "path": "grayify/in"}],
           "output": [{"storage_provider": "minio", "path": "grayify/out/png",
                       "suffix": [".png"]}]}


@pytest.fixture(scope="module")
def s3():
    with S3Server() as server:
        yield server


def make_app(httpserver, s3, **overrides):
    env = {"OPENFAAS_URL": httpserver.url_for("/").rstrip("/"), "OSCAR_USERNAME": "oscar",
           "OSCAR_PASSWORD": "s3cret", **s3.gateway_env(), "SERVICE_CACHE_TTL": "0",
           **overrides}
    return create_app(Settings.from_env(env)).test_client()


def deploy_ok(httpserver, body=SERVICE):
    httpserver.expect_request(f"/system/function/{body['name']}").respond_with_data("", 404)
    httpserver.expect_request("/system/functions", method="POST").respond_with_data("", 202)
    httpserver.expect_request("/system/secrets").respond_with_data("", 202)


def objects(s3, bucket):
    client = s3.client()
    if not client.bucket_exists(bucket):
        return None
    return sorted(o.object_name for o in client.list_objects(bucket, recursive=True))


def test_create_makes_buckets_and_folders_idempotently(httpserver, s3):
    client = make_app(httpserver, s3)
    deploy_ok(httpserver)
    assert client.post("/system/services", json=SERVICE, headers=ADMIN).status_code == 201
    assert objects(s3, "grayify") == ["in/", "out/png/"]
    # Update: same paths again, nothing breaks, nothing duplicated.
    stored = json.loads(sent(httpserver, "POST", "/system/functions")[0].get_json()
                        ["annotations"]["com.oscar-faas.service"])
    httpserver.clear()
    httpserver.expect_request("/system/function/grayify").respond_with_json(
        function_status(stored))
    httpserver.expect_request("/system/functions", method="PUT").respond_with_data("", 202)
    httpserver.expect_request("/system/secrets").respond_with_data("", 202)
    assert client.put("/system/services", json=SERVICE, headers=ADMIN).status_code == 204
    assert objects(s3, "grayify") == ["in/", "out/png/"]


def test_secret_holds_the_gateway_minio_keys_and_get_hides_them(httpserver, s3):
    client = make_app(httpserver, s3)
    deploy_ok(httpserver, {**SERVICE, "name": "keys"})
    body = {**SERVICE, "name": "keys"}
    assert client.post("/system/services", json=body, headers=ADMIN).status_code == 201
    (secret,) = [r for r in sent(httpserver, "PUT", "/system/secrets")]
    value = json.loads(secret.get_json()["value"])
    assert value["minio"]["default"]["secret_key"] == s3.secret_key
    (fd,) = [r.get_json() for r in sent(httpserver, "POST", "/system/functions")]
    assert s3.secret_key not in json.dumps(fd) and s3.access_key not in json.dumps(fd)
    httpserver.clear()
    httpserver.expect_request("/system/function/keys").respond_with_json(
        {"name": "keys", "annotations": fd["annotations"]})
    got = client.get("/system/services/keys", headers=ADMIN)
    assert s3.secret_key not in got.text and s3.access_key not in got.text
    assert got.get_json()["storage_providers"]["minio"]["default"]["access_key"] == "hidden"


def test_delete_keeps_data_unless_purged(httpserver, s3):
    """Purge deletes the service's minio.default buckets with everything in them, and only
    those: buckets of its minio.<id> and s3.<id> providers (here on the same server, so a
    purge that took every path would reach them) and other buckets stay."""
    client = make_app(httpserver, s3)
    store = s3.client()
    for bucket in ("keepme", "theirs", "keepme-s3", "unrelated"):
        store.make_bucket(bucket)
        for key in ("in/a.txt", "in/sub/b.bin", "top.json"):
            store.put_object(bucket, key, io.BytesIO(b"data"), 4)
    other = {"endpoint": s3.endpoint, "access_key": s3.access_key,
             "secret_key": s3.secret_key, "region": "us-east-1", "verify": False}
    body = {**SERVICE, "name": "keeper",
            "input": [{"storage_provider": "minio.default", "path": "keepme/in"}],
            "output": [{"storage_provider": "minio.other", "path": "theirs/out"},
                       {"storage_provider": "s3.aws", "path": "keepme-s3/out"}],
            "storage_providers": {"minio": {"other": other}, "s3": {"aws": {
                "access_key": "AKIA", "secret_key": "SECRET", "region": "us-east-1"}}}}
    httpserver.expect_request("/system/function/keeper").respond_with_json(
        function_status(body))
    httpserver.expect_request("/system/functions", method="DELETE").respond_with_data("", 202)
    httpserver.expect_request("/system/secrets", method="DELETE").respond_with_data("", 202)
    full = ["in/a.txt", "in/sub/b.bin", "top.json"]
    assert client.delete("/system/services/keeper", headers=ADMIN).status_code == 204
    assert objects(s3, "keepme") == full
    assert client.delete("/system/services/keeper?purge=true",
                         headers=ADMIN).status_code == 204
    assert objects(s3, "keepme") is None
    for bucket in ("theirs", "keepme-s3", "unrelated"):
        assert objects(s3, bucket) == full, bucket


def test_minio_default_without_minio_configured_is_400(httpserver):
    app = create_app(Settings.from_env({
        "OPENFAAS_URL": httpserver.url_for("/").rstrip("/"), "OSCAR_USERNAME": "oscar",
        "OSCAR_PASSWORD": "s3cret"}))
    resp = app.test_client().post("/system/services", json=SERVICE, headers=ADMIN)
    assert resp.status_code == 400 and "MINIO_ENDPOINT" in resp.text
    assert httpserver.log == []


def test_wrong_minio_credentials_fail_clearly_and_leave_nothing(httpserver, s3):
    client = make_app(httpserver, s3, MINIO_SECRET_KEY="wrong")
    deploy_ok(httpserver, {**SERVICE, "name": "badkeys"})
    httpserver.expect_request("/system/secrets", method="DELETE").respond_with_data("", 202)
    resp = client.post("/system/services", json={**SERVICE, "name": "badkeys"},
                       headers=ADMIN)
    assert resp.status_code == 502
    assert "grayify" in resp.text  # names the bucket
    assert sent(httpserver, "POST", "/system/functions") == []
    assert len(sent(httpserver, "DELETE", "/system/secrets")) == 1


@pytest.fixture
def tls_s3(s3, tmp_path):
    """The S3 server behind TLS, with a certificate no system CA vouches for."""
    from urllib.parse import urlsplit

    from tests.tlscerts import TLSProxy, make_ca_and_server

    _, cert, key = make_ca_and_server(tmp_path, "minio")
    with TLSProxy(urlsplit(s3.endpoint).port, cert, key) as url:
        yield url


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_minio_tls_verify_false_reaches_minio_over_tls(httpserver, s3, tls_s3):
    client = make_app(httpserver, s3, MINIO_ENDPOINT=tls_s3, MINIO_TLS_VERIFY="false")
    body = {**SERVICE, "name": "tlsok", "input": [
        {"storage_provider": "minio.default", "path": "tls-ok/in"}], "output": [
        {"storage_provider": "minio.default", "path": "tls-ok/out"}]}
    deploy_ok(httpserver, body)
    resp = client.post("/system/services", json=body, headers=ADMIN)
    assert resp.status_code == 201, resp.text
    assert objects(s3, "tls-ok") == ["in/", "out/"]
    # The function is told the same: its credentials say not to verify.
    (secret,) = sent(httpserver, "PUT", "/system/secrets")
    default = json.loads(secret.get_json()["value"])["minio"]["default"]
    assert default["endpoint"] == tls_s3 and default["verify"] is False


def test_minio_over_tls_is_verified_by_default(httpserver, s3, tls_s3):
    client = make_app(httpserver, s3, MINIO_ENDPOINT=tls_s3)
    body = {**SERVICE, "name": "tlsbad", "input": [
        {"storage_provider": "minio.default", "path": "tls-bad/in"}], "output": []}
    deploy_ok(httpserver, body)
    httpserver.expect_request("/system/secrets", method="DELETE").respond_with_data("", 202)
    resp = client.post("/system/services", json=body, headers=ADMIN)
    assert resp.status_code == 502
    assert "tls-bad" in resp.text and "CERTIFICATE_VERIFY_FAILED" in resp.text
    assert objects(s3, "tls-bad") is None
    assert sent(httpserver, "POST", "/system/functions") == []
