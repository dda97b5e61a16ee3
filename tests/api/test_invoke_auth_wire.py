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
