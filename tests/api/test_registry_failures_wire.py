"""Issue 15: a failure part-way never answers success and never leaves a change behind that
the client was told did not happen. pytest-httpserver plays OpenFaaS (real HTTP) and fails
where the test says."""

from __future__ import annotations

import dataclasses

from oscar_faas.api import create_app
from oscar_faas.contract import SERVICE_ANNOTATION

from .conftest import ADMIN, function_status, sent

WITH_SECRET = {"name": "keep", "image": "alpine", "script": "env",
               "environment": {"secrets": {"TOKEN": "t0k3n"}}}


def test_delete_reports_a_secret_it_could_not_delete(client, httpserver):
    httpserver.expect_request("/system/function/keep").respond_with_json(
        function_status(WITH_SECRET))
    httpserver.expect_request("/system/functions", method="DELETE").respond_with_data("", 202)
    httpserver.expect_request("/system/secrets", method="DELETE").respond_with_data(
        "disk full", 500)
    resp = client.delete("/system/services/keep", headers=ADMIN)
    assert resp.status_code == 502
    assert "keep was deleted" in resp.text and "oscar-storage-keep" in resp.text
    # the function went first: no function is ever left without its credentials
    assert [r.method for r, _ in httpserver.log if r.path in
            ("/system/functions", "/system/secrets")] == ["DELETE", "DELETE"]


def test_delete_of_a_namespaced_name_touches_nothing(client, httpserver):
    resp = client.delete("/system/services/keep.openfaas-fn", headers=ADMIN)
    assert resp.status_code == 404
    assert not [r for r, _ in httpserver.log if r.method == "DELETE"]


def test_put_over_the_body_cap_changes_nothing(settings, httpserver):
    client = create_app(dataclasses.replace(settings, max_api_body_size=10_000)).test_client()
    httpserver.expect_request("/system/function/keep").respond_with_json(
        function_status(WITH_SECRET))
    big = {**WITH_SECRET, "environment": {"secrets": {"TOKEN": "x" * 20_000}}}
    resp = client.put("/system/services", json=big, headers=ADMIN)
    assert resp.status_code == 413 and "MAX_API_BODY_SIZE" in resp.text
    assert not sent(httpserver, "PUT", "/system/secrets")
    assert not sent(httpserver, "POST", "/system/secrets")
    assert not sent(httpserver, "PUT", "/system/functions")


def test_put_refused_by_openfaas_undoes_a_new_secret(client, httpserver):
    plain = {"name": "keep", "image": "alpine", "script": "env"}
    httpserver.expect_request("/system/function/keep").respond_with_json(
        function_status(plain, secrets=[]))  # deployed by a gateway before issue 21
    httpserver.expect_request("/system/secrets", method="PUT").respond_with_data("", 404)
    httpserver.expect_request("/system/secrets", method="POST").respond_with_data("", 202)
    httpserver.expect_request("/system/functions", method="PUT").respond_with_data(
        "no room", 500)
    httpserver.expect_request("/system/secrets", method="DELETE").respond_with_data("", 202)
    resp = client.put("/system/services", json=WITH_SECRET, headers=ADMIN)
    assert resp.status_code == 502
    (deleted,) = sent(httpserver, "DELETE", "/system/secrets")
    assert deleted.get_json() == {"name": "oscar-storage-keep"}


def test_put_whose_secret_cannot_be_written_puts_the_function_back(client, httpserver):
    httpserver.expect_request("/system/function/keep").respond_with_json(
        function_status(WITH_SECRET))
    httpserver.expect_request("/system/functions", method="PUT").respond_with_data("", 202)
    httpserver.expect_request("/system/secrets", method="PUT").respond_with_data("full", 500)
    httpserver.expect_request("/system/secrets", method="POST").respond_with_data("full", 500)
    changed = {**WITH_SECRET, "script": "echo changed",
               "environment": {"secrets": {"TOKEN": "n3w"}}}
    resp = client.put("/system/services", json=changed, headers=ADMIN)
    assert resp.status_code == 502
    first, second = [r.get_json() for r in sent(httpserver, "PUT", "/system/functions")]
    assert "echo changed" in first["annotations"][SERVICE_ANNOTATION]
    assert "echo changed" not in second["annotations"][SERVICE_ANNOTATION]  # put back
    assert second["secrets"] == ["oscar-storage-keep"]
    assert not sent(httpserver, "DELETE", "/system/secrets")  # the old secret stays
