"""/run/<service> against a fake OpenFaaS: exactly what is forwarded and what comes back."""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
import time

import pytest
from werkzeug import Response as WResponse

from oscar_faas.api import create_app
from oscar_faas.config import Settings
from oscar_faas.model import Service

from .conftest import ADMIN, function_status

TOKEN = "ab" * 32
SERVICE = {"name": "cowsay", "image": "alpine", "script": "cat", "token": TOKEN}
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def deployed(httpserver):
    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        function_status(SERVICE))
    return httpserver


def forwarded(httpserver):
    return [req for req, _ in httpserver.log if req.path.startswith("/function/")]


def test_unknown_service_is_404_before_auth(client, httpserver):
    httpserver.expect_request("/system/function/ghost").respond_with_data("", 404)
    resp = client.post("/run/ghost", data=b"aGk=")
    assert resp.status_code == 404
    assert forwarded(httpserver) == []


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer " + "cd" * 32}, {"Authorization": "Bearer short"},
    {"Authorization": "Basic " + base64.b64encode(b"oscar:wrong").decode()}])
def test_wrong_or_missing_credentials_are_401(client, deployed, headers):
    resp = client.post("/run/cowsay", data=b"aGk=", headers=headers)
    assert resp.status_code == 401
    assert "Bearer" in resp.text
    assert forwarded(deployed) == []


def test_body_headers_and_answer_pass_through(client, deployed):
    deployed.expect_request("/function/cowsay", method="POST").respond_with_response(
        WResponse(b"bW9v\n", status=200, headers={
            "Content-Type": "text/plain", "X-Duration-Seconds": "0.010000",
            "X-Call-Id": "call-1"}))
    resp = client.post("/run/cowsay", data=b"aGVsbG8=", headers={
        **BEARER, "Content-Type": "application/octet-stream", "X-Call-Id": "call-1",
        "X-Custom": "yes", "Expect": "100-continue", "Connection": "keep-alive"})
    assert resp.status_code == 200 and resp.data == b"bW9v\n"
    assert resp.headers["Content-Type"] == "text/plain"
    assert resp.headers["X-Duration-Seconds"] == "0.010000"
    assert resp.headers["X-Call-Id"] == "call-1"
    (req,) = forwarded(deployed)
    assert req.get_data() == b"aGVsbG8="
    assert req.headers["Content-Type"] == "application/octet-stream"
    assert req.headers["X-Custom"] == "yes" and req.headers["X-Call-Id"] == "call-1"
    assert "Authorization" not in req.headers  # neither the token nor our OpenFaaS creds
    assert "Expect" not in req.headers


def test_cluster_basic_credentials_are_accepted_like_oscar_cli_sends(client, deployed):
    deployed.expect_request("/function/cowsay").respond_with_data("ok")
    resp = client.post("/run/cowsay", data=b"aGk=", headers=ADMIN)
    assert resp.status_code == 200 and resp.data == b"ok"


def test_function_errors_keep_their_status_and_body(client, deployed):
    deployed.expect_request("/function/cowsay").respond_with_data(
        "exit status 3\nboom\n", status=500, headers={"X-Duration-Seconds": "0.1"})
    resp = client.post("/run/cowsay", data=b"aGk=", headers=BEARER)
    assert resp.status_code == 500 and resp.text == "exit status 3\nboom\n"


def test_chunked_body_without_content_type_is_forwarded(client, deployed):
    deployed.expect_request("/function/cowsay").respond_with_data("ok")
    chunks = [b"aGVs", b"bG8g", b"d29y", b"bGQ="]
    resp = client.post("/run/cowsay", input_stream=iter_stream(chunks),
                       headers={**BEARER, "Transfer-Encoding": "chunked"},
                       environ_overrides=CHUNKED)
    assert resp.status_code == 200
    (req,) = forwarded(deployed)
    assert req.get_data() == b"".join(chunks)


#: What gunicorn sets for a chunked request body it has de-chunked.
CHUNKED = {"wsgi.input_terminated": True}


def iter_stream(chunks):
    import io
    return io.BytesIO(b"".join(chunks))


def test_large_body_streams_through_unchanged(client, deployed):
    payload = base64.b64encode(bytes(range(256)) * 12_000)  # ~4 MB, past the replay size
    deployed.expect_request("/function/cowsay").respond_with_handler(
        lambda req: WResponse(hashlib.sha256(req.get_data()).hexdigest()))
    resp = client.post("/run/cowsay", data=payload, headers=BEARER)
    assert resp.status_code == 200
    assert resp.text == hashlib.sha256(payload).hexdigest()


def test_503_while_starting_is_retried(client, deployed):
    deployed.expect_oneshot_request("/function/cowsay").respond_with_data(
        "No endpoints available for: cowsay.", status=503)
    deployed.expect_oneshot_request("/function/cowsay").respond_with_data(
        "No endpoints available for: cowsay.", status=503)
    deployed.expect_request("/function/cowsay").respond_with_data(
        "ready", headers={"X-Duration-Seconds": "0.001"})
    resp = client.post("/run/cowsay", data=b"aGk=", headers=BEARER)
    assert resp.status_code == 200 and resp.text == "ready"
    assert len(forwarded(deployed)) == 3
    assert all(req.get_data() == b"aGk=" for req in forwarded(deployed))


def test_503_past_the_bound_says_not_ready(client, deployed):
    deployed.expect_request("/function/cowsay").respond_with_data(
        "No endpoints available for: cowsay.", status=503)
    resp = client.post("/run/cowsay", data=b"aGk=", headers=BEARER)
    assert resp.status_code == 503
    assert "not ready" in resp.text


def test_timeout_is_504(httpserver, settings):
    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        function_status(SERVICE))

    release = threading.Event()

    def slow(_req):
        release.wait(10)
        return WResponse("late")

    httpserver.expect_request("/function/cowsay").respond_with_handler(slow)
    app = create_app(Settings(**{**settings.__dict__, "run_timeout": 0.3}))
    resp = app.test_client().post("/run/cowsay", data=b"aGk=", headers=BEARER)
    assert resp.status_code == 504 and "RUN_TIMEOUT" in resp.text
    release.set()
    while not forwarded(httpserver):  # let the fake finish before the next test starts
        time.sleep(0.01)


def test_openfaas_down_is_502():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    app = create_app(Settings.from_env({"OPENFAAS_URL": url, "SERVICE_CACHE_TTL": "60"}))
    # The service is known (cached from an earlier lookup) but OpenFaaS has gone away.
    app.extensions["oscar_faas"].registry.cache.put(Service.from_dict(SERVICE))
    resp = app.test_client().post("/run/cowsay", data=b"aGk=", headers=BEARER)
    assert resp.status_code == 502 and url in resp.text


@pytest.mark.parametrize("chunked", [False, True])
def test_body_over_the_limit_is_413(httpserver, settings, chunked):
    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        function_status(SERVICE))
    httpserver.expect_request("/function/cowsay").respond_with_data("ok")
    app = create_app(Settings(**{**settings.__dict__, "max_body_size": 1000}))
    headers = dict(BEARER)
    kwargs = {"data": b"A" * 1004}
    if chunked:
        headers["Transfer-Encoding"] = "chunked"
        kwargs = {"input_stream": iter_stream([b"A" * 1004]), "environ_overrides": CHUNKED}
    resp = app.test_client().post("/run/cowsay", headers=headers, **kwargs)
    assert resp.status_code == 413 and "1000 bytes" in resp.text
    assert forwarded(httpserver) == []


def test_streamed_body_over_the_limit_is_cut_with_413(httpserver, settings):
    """A chunked body larger than the replay buffer is streamed; passing the limit midway
    stops it with 413, and the half-sent upstream request is abandoned."""
    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        function_status(SERVICE))
    httpserver.expect_request("/function/cowsay").respond_with_data("ok")
    app = create_app(Settings(**{**settings.__dict__, "max_body_size": 2_000_000}))
    resp = app.test_client().post("/run/cowsay", headers={**BEARER,
                                  "Transfer-Encoding": "chunked"},
                                  input_stream=iter_stream([b"A" * 3_000_000]),
                                  environ_overrides=CHUNKED)
    assert resp.status_code == 413 and "2000000 bytes" in resp.text


def test_job_says_async_is_not_supported(client, deployed):
    assert client.post("/job/cowsay", data=b"aGk=").status_code == 401
    resp = client.post("/job/cowsay", data=b"aGk=", headers=BEARER)
    assert resp.status_code == 501 and "/run/cowsay" in resp.text
    assert forwarded(deployed) == []
