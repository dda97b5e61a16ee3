"""Issue 15: the embedded provider guards /function/<name> with its credentials, so the
gateway sends them there when OPENFAAS_INVOKE_AUTH is on (``serve`` turns it on), and never
on a cluster, whose gateway would hand them to the function."""

from __future__ import annotations

import dataclasses

import requests

from .conftest import OPENFAAS_AUTH
from .test_run_wire import BEARER, deployed, forwarded, served  # noqa: F401 - fixture


def test_openfaas_credentials_go_to_function_calls_when_asked(deployed, settings):
    deployed.expect_request("/function/cowsay", method="POST").respond_with_data("ok")
    with served(dataclasses.replace(settings, openfaas_invoke_auth=True)) as url:
        resp = requests.post(url + "/run/cowsay", data=b"aGk=", headers=BEARER, timeout=30)
    assert resp.status_code == 200
    (req,) = forwarded(deployed)
    assert req.headers["Authorization"] == OPENFAAS_AUTH  # not the client's token


def test_no_credentials_to_function_calls_by_default(deployed, settings):
    deployed.expect_request("/function/cowsay", method="POST").respond_with_data("ok")
    with served(settings) as url:
        resp = requests.post(url + "/run/cowsay", data=b"aGk=", headers=BEARER, timeout=30)
    assert resp.status_code == 200
    (req,) = forwarded(deployed)
    assert "Authorization" not in req.headers


def test_credentials_follow_a_provider_401_asking_for_them(deployed, settings):
    """A standalone embedded provider with credentials: its 401 (no function ran) makes the
    gateway send them, once it sees the call was refused; the client never sees the 401."""
    from werkzeug import Response as WResponse

    def provider(request):
        if request.headers.get("Authorization") != OPENFAAS_AUTH:
            return WResponse("invalid credentials\n", 401,
                             {"WWW-Authenticate": 'Basic realm="Restricted"'})
        return WResponse("ok", 200, {"X-Duration-Seconds": "0.001"})

    deployed.expect_request("/function/cowsay", method="POST").respond_with_handler(provider)
    with served(settings) as url:
        for _ in range(2):
            resp = requests.post(url + "/run/cowsay", data=b"aGk=", headers=BEARER,
                                 timeout=30)
            assert resp.status_code == 200 and resp.text == "ok"
    sent_auth = [r.headers.get("Authorization") for r in forwarded(deployed)]
    assert sent_auth == [None, OPENFAAS_AUTH, OPENFAAS_AUTH]


def test_a_functions_own_401_is_passed_on_without_credentials(deployed, settings):
    deployed.expect_request("/function/cowsay", method="POST").respond_with_data(
        "nope", 401, {"WWW-Authenticate": "Basic", "X-Duration-Seconds": "0.001"})
    with served(settings) as url:
        resp = requests.post(url + "/run/cowsay", data=b"aGk=", headers=BEARER, timeout=30)
    assert resp.status_code == 401 and resp.text == "nope"
    assert [r.headers.get("Authorization") for r in forwarded(deployed)] == [None]
