"""Issue 21: the function checks its own caller, so the gateway proves every /run call with
the service's token (``Authorization: Bearer <token>``), whatever the client sent: the
client's token, or the cluster's Basic credentials (oscar-cli without ``--token``), which
never go further; the OpenFaaS credentials never go to a function call, on a cluster or on
the embedded provider."""

from __future__ import annotations

import requests

from .conftest import ADMIN, OPENFAAS_AUTH
from .test_run_wire import BEARER, TOKEN, deployed, forwarded, served  # noqa: F401 - fixture


def test_the_call_carries_the_service_token_not_the_clients_basic(deployed, settings):
    deployed.expect_request("/function/cowsay", method="POST").respond_with_data("ok")
    with served(settings) as url:
        with_token = requests.post(url + "/run/cowsay", data=b"aGk=", headers=BEARER,
                                   timeout=30)
        with_basic = requests.post(url + "/run/cowsay", data=b"aGk=", headers=ADMIN, timeout=30)
    assert with_token.status_code == 200 and with_basic.status_code == 200
    sent = [req.headers.get("Authorization") for req in forwarded(deployed)]
    assert sent == [f"Bearer {TOKEN}", f"Bearer {TOKEN}"]
    assert OPENFAAS_AUTH not in sent


def test_a_refused_client_never_reaches_the_function(deployed, settings):
    deployed.expect_request("/function/cowsay", method="POST").respond_with_data("ok")
    with served(settings) as url:
        resp = requests.post(url + "/run/cowsay", data=b"aGk=",
                             headers={"Authorization": "Bearer " + "cd" * 32}, timeout=30)
    assert resp.status_code == 401
    assert forwarded(deployed) == []
