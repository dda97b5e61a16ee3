"""The README's settings table, one behaviour per row, on the wire: the gateway as ``serve``
runs it (or its Flask app) against pytest-httpserver playing OpenFaaS."""

from __future__ import annotations

import base64
import threading
import time

import pytest
import requests
from werkzeug import Response as WResponse

from oscar_faas.api import create_app
from oscar_faas.config import Settings

from .conftest import ADMIN, function_status, sent
from .test_run_wire import BEARER, SERVICE, forwarded, served

COWSAY = {"name": "cowsay", "image": "alpine", "script": "cat"}


def base_env(httpserver, **extra: str) -> dict[str, str]:
    return {"OPENFAAS_URL": httpserver.url_for("/").rstrip("/"),
            "OPENFAAS_USERNAME": "ofadmin", "OPENFAAS_PASSWORD": "ofpass",
            "OSCAR_USERNAME": "oscar", "OSCAR_PASSWORD": "s3cret", **extra}


def lookups(httpserver) -> int:
    return len(sent(httpserver, "GET", "/system/function/cowsay"))


# --- SERVICE_CACHE_TTL -------------------------------------------------------------------

def test_service_cache_spares_the_lookup_within_the_ttl(httpserver):
    """Within SERVICE_CACHE_TTL, /run checks the token without asking OpenFaaS, even when
    the service changed there meanwhile."""
    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        function_status(SERVICE))
    httpserver.expect_request("/function/cowsay").respond_with_data("ok")
    with served(Settings.from_env(base_env(httpserver, SERVICE_CACHE_TTL="60"))) as url:
        for _ in range(3):
            resp = requests.post(url + "/run/cowsay", data=b"aGk=", headers=BEARER, timeout=10)
            assert resp.status_code == 200
        assert lookups(httpserver) == 1
        httpserver.clear()  # the token changes in OpenFaaS (the service was re-created)
        httpserver.expect_request("/system/function/cowsay").respond_with_json(
            function_status({**SERVICE, "token": "cd" * 32}))
        httpserver.expect_request("/function/cowsay").respond_with_data("ok")
        assert requests.post(url + "/run/cowsay", data=b"aGk=", headers=BEARER,
                             timeout=10).status_code == 200  # still the cached token
        assert lookups(httpserver) == 0


def test_a_token_change_or_delete_shows_after_the_ttl(httpserver):
    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        function_status(SERVICE))
    httpserver.expect_request("/function/cowsay").respond_with_data("ok")
    new_bearer = {"Authorization": "Bearer " + "cd" * 32}
    with served(Settings.from_env(base_env(httpserver, SERVICE_CACHE_TTL="0.5"))) as url:
        assert requests.post(url + "/run/cowsay", data=b"aGk=", headers=BEARER,
                             timeout=10).status_code == 200
        httpserver.clear()
        httpserver.expect_request("/system/function/cowsay").respond_with_json(
            function_status({**SERVICE, "token": "cd" * 32}))
        httpserver.expect_request("/function/cowsay").respond_with_data("ok")
        time.sleep(0.6)  # past the TTL (waiting for expiry, not asserting a duration)
        assert requests.post(url + "/run/cowsay", data=b"aGk=", headers=BEARER,
                             timeout=10).status_code == 401
        assert requests.post(url + "/run/cowsay", data=b"aGk=", headers=new_bearer,
                             timeout=10).status_code == 200
        httpserver.clear()
        httpserver.expect_request("/system/function/cowsay").respond_with_data("", 404)
        time.sleep(0.6)
        assert requests.post(url + "/run/cowsay", data=b"aGk=", headers=new_bearer,
                             timeout=10).status_code == 404


def test_service_cache_ttl_zero_asks_every_time(httpserver):
    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        function_status(SERVICE))
    httpserver.expect_request("/function/cowsay").respond_with_data("ok")
    with served(Settings.from_env(base_env(httpserver, SERVICE_CACHE_TTL="0"))) as url:
        for _ in range(3):
            assert requests.post(url + "/run/cowsay", data=b"aGk=", headers=BEARER,
                                 timeout=10).status_code == 200
    assert lookups(httpserver) == 3


# --- OpenFaaS credentials ----------------------------------------------------------------

def test_openfaas_credentials_fall_back_to_the_secret_files(httpserver, tmp_path):
    """The cluster install gives the gateway basic-auth-user/-password as OpenFaaS secret
    files, not env: management calls and /run's readiness poll use them."""
    (tmp_path / "basic-auth-user").write_text("admin\n")
    (tmp_path / "basic-auth-password").write_text("from-the-file\n")
    env = base_env(httpserver, OPENFAAS_SECRETS_DIR=str(tmp_path))
    del env["OPENFAAS_USERNAME"], env["OPENFAAS_PASSWORD"]
    expected = "Basic " + base64.b64encode(b"admin:from-the-file").decode()
    httpserver.expect_request("/system/functions", method="GET",
                              headers={"Authorization": expected}).respond_with_json([])
    client = create_app(Settings.from_env(env)).test_client()
    resp = client.get("/system/services", headers=ADMIN)
    assert resp.status_code == 200 and resp.get_json() == []
    # The variables win over the files when both are there.
    env.update(OPENFAAS_USERNAME="ofadmin", OPENFAAS_PASSWORD="ofpass")
    client = create_app(Settings.from_env(env)).test_client()
    assert client.get("/system/services", headers=ADMIN).status_code == 502


def test_openfaas_401_is_502_naming_the_fix(httpserver):
    httpserver.expect_request("/system/functions").respond_with_data(
        "Unauthorized", status=401, headers={"WWW-Authenticate": "Basic realm=Restricted"})
    client = create_app(Settings.from_env(base_env(httpserver))).test_client()
    resp = client.get("/system/services", headers=ADMIN)
    assert resp.status_code == 502
    assert "401" in resp.text and "OPENFAAS_USERNAME/OPENFAAS_PASSWORD" in resp.text
    # The gateway's own 401 challenge is not passed on: the client's credentials were fine.
    assert "WWW-Authenticate" not in resp.headers


# --- OPENFAAS_TIMEOUT --------------------------------------------------------------------

def test_openfaas_timeout_bounds_management_calls(httpserver):
    release = threading.Event()

    def stuck(_req):
        release.wait(20)
        return WResponse("[]", content_type="application/json")

    httpserver.expect_request("/system/functions").respond_with_handler(stuck)
    try:
        with served(Settings.from_env(base_env(httpserver, OPENFAAS_TIMEOUT="1"))) as url:
            # The default (30 s) would outlast this client's timeout.
            resp = requests.get(url + "/system/services", auth=("oscar", "s3cret"),
                                timeout=1 + 9)
        assert resp.status_code == 504
        assert "did not answer" in resp.text and "within 1" in resp.text
    finally:
        release.set()


# --- WATCHDOG_* ----------------------------------------------------------------------------

def deployment_for(httpserver, env: dict[str, str], body: dict) -> dict:
    httpserver.expect_request(f"/system/function/{body['name']}").respond_with_data("", 404)
    httpserver.expect_request("/system/secrets", method="PUT").respond_with_data("", 202)
    httpserver.expect_request("/system/functions", method="POST").respond_with_data("", 202)
    client = create_app(Settings.from_env(env)).test_client()
    resp = client.post("/system/services", json=body, headers=ADMIN)
    assert resp.status_code == 201, resp.text
    return sent(httpserver, "POST", "/system/functions")[-1].get_json()


def test_watchdog_settings_reach_every_function(httpserver):
    defaults = deployment_for(httpserver, base_env(httpserver), COWSAY)["envVars"]
    assert {k: defaults[k] for k in ("max_inflight", "exec_timeout", "read_timeout",
                                     "write_timeout")} == {
        "max_inflight": "0", "exec_timeout": "0", "read_timeout": "300",
        "write_timeout": "300"}
    env = base_env(httpserver, WATCHDOG_MAX_INFLIGHT="3", WATCHDOG_EXEC_TIMEOUT="7",
                   WATCHDOG_READ_TIMEOUT="11", WATCHDOG_WRITE_TIMEOUT="13")
    fd = deployment_for(httpserver, env, {**COWSAY, "name": "set"})["envVars"]
    assert {k: fd[k] for k in ("max_inflight", "exec_timeout", "read_timeout",
                               "write_timeout")} == {
        "max_inflight": "3", "exec_timeout": "7", "read_timeout": "11",
        "write_timeout": "13"}


def test_a_service_overrides_the_watchdog_settings_in_its_variables(httpserver):
    env = base_env(httpserver, WATCHDOG_MAX_INFLIGHT="3", WATCHDOG_READ_TIMEOUT="11",
                   WATCHDOG_WRITE_TIMEOUT="13")
    body = {**COWSAY, "environment": {"variables": {
        "max_inflight": "1", "read_timeout": "600", "write_timeout": "601s",
        "combine_output": "true"}}}
    fd = deployment_for(httpserver, env, body)["envVars"]
    assert fd["max_inflight"] == "1" and fd["read_timeout"] == "600"
    assert fd["write_timeout"] == "601s"
    assert fd["combine_output"] == "false"  # the one setting a service cannot change


def test_watchdog_settings_must_be_numbers(httpserver):
    with pytest.raises(Exception, match="WATCHDOG_READ_TIMEOUT"):
        Settings.from_env(base_env(httpserver, WATCHDOG_READ_TIMEOUT="soon"))
    assert forwarded(httpserver) == []


# --- https:// OPENFAAS_URL ---------------------------------------------------------------

@pytest.fixture
def tls_openfaas(tmp_path):
    """A fake OpenFaaS over TLS with a certificate from a CA made for this test."""
    from pytest_httpserver import HTTPServer

    from tests.tlscerts import make_ca_and_server, server_context

    ca, cert, key = make_ca_and_server(tmp_path)
    server = HTTPServer(host="127.0.0.1", port=0, ssl_context=server_context(cert, key))
    server.start()
    server.expect_request("/system/functions").respond_with_json([])
    server.expect_request("/system/function/cowsay").respond_with_json(
        function_status(SERVICE))
    server.expect_request("/function/cowsay").respond_with_data("over tls")
    try:
        yield server, ca
    finally:
        server.clear()
        server.stop()


def tls_env(server) -> dict[str, str]:
    url = server.url_for("/").rstrip("/")
    assert url.startswith("https://")
    return {**base_env(server), "OPENFAAS_URL": url, "SERVICE_CACHE_TTL": "0"}


def test_https_openfaas_is_trusted_through_the_system_cas_on_both_paths(
        tls_openfaas, monkeypatch):
    """Management calls (requests) and /run (the event-loop client) check the certificate
    against the same CAs: OpenSSL's system store, which SSL_CERT_FILE names here."""
    server, ca = tls_openfaas
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with served(Settings.from_env(tls_env(server))) as url:
        listed = requests.get(url + "/system/services", auth=("oscar", "s3cret"), timeout=10)
        assert listed.status_code == 200, listed.text
        run = requests.post(url + "/run/cowsay", data=b"aGk=", headers=BEARER, timeout=10)
        assert run.status_code == 200 and run.text == "over tls"
    assert len(forwarded(server)) == 1


def test_https_openfaas_with_an_unknown_ca_fails_on_both_paths(tls_openfaas, monkeypatch,
                                                               tmp_path):
    from tests.tlscerts import make_ca_and_server

    server, _ = tls_openfaas
    other_ca, _, _ = make_ca_and_server(tmp_path, "other")
    monkeypatch.setenv("SSL_CERT_FILE", str(other_ca))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with served(Settings.from_env(tls_env(server))) as url:
        listed = requests.get(url + "/system/services", auth=("oscar", "s3cret"), timeout=10)
        assert listed.status_code == 502
        app = create_app(Settings.from_env({**tls_env(server), "SERVICE_CACHE_TTL": "60"}))
    # /run with the service known (cached), so the call itself meets the certificate.
    from oscar_faas.model import Service
    app.extensions["oscar_faas"].registry.cache.put(Service.from_dict(SERVICE))
    with served(app) as url:
        run = requests.post(url + "/run/cowsay", data=b"aGk=", headers=BEARER, timeout=10)
    assert run.status_code == 502
    assert forwarded(server) == []


# --- reported settings, RUN_TIMEOUT by its variable ----------------------------------------

def test_names_and_minio_region_are_reported_by_system_config(httpserver):
    env = base_env(httpserver, OSCAR_NAME="edge-1", OSCAR_NAMESPACE="oscar-edge",
                   OSCAR_SERVICES_NAMESPACE="edge-svc", MINIO_ENDPOINT="http://minio:9000",
                   MINIO_ACCESS_KEY="ak", MINIO_SECRET_KEY="sk", MINIO_REGION="eu-west-3")
    data = create_app(Settings.from_env(env)).test_client().get(
        "/system/config", headers=ADMIN).get_json()
    assert (data["config"]["name"], data["config"]["namespace"],
            data["config"]["services_namespace"]) == ("edge-1", "oscar-edge", "edge-svc")
    assert data["minio_provider"]["region"] == "eu-west-3"


def test_run_timeout_variable_bounds_a_call(httpserver):
    release = threading.Event()

    def slow(_req):
        release.wait(20)
        return WResponse("late")

    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        function_status(SERVICE))
    httpserver.expect_request("/function/cowsay").respond_with_handler(slow)
    try:
        with served(Settings.from_env(base_env(httpserver, RUN_TIMEOUT="0.5"))) as url:
            resp = requests.post(url + "/run/cowsay", data=b"aGk=", headers=BEARER,
                                 timeout=0.5 + 9)
        assert resp.status_code == 504 and "within 0.5 s (RUN_TIMEOUT)" in resp.text
    finally:
        release.set()
