"""``/system/status``, ``/system/metrics`` and the OSCAR v4 routes oscar-faas answers with a
404 or an empty result, against pytest-httpserver playing OpenFaaS."""

from __future__ import annotations

from oscar_faas.api import create_app
from oscar_faas.config import Settings

from .conftest import ADMIN, function_status

SERVICE = {"name": "cowsay", "image": "alpine", "script": "cat", "token": "ef" * 32}


def _functions(httpserver, ready: int = 1, count: int = 7):
    httpserver.expect_request("/system/functions").respond_with_json([
        function_status(SERVICE, availableReplicas=ready, invocationCount=count),
        {"name": "not-oscar", "image": "x", "availableReplicas": 1}])


def test_status_in_oscars_shape_with_this_machine(client, httpserver):
    _functions(httpserver)
    resp = client.get("/system/status", headers=ADMIN)
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    st = resp.get_json()
    # OPENFAAS_URL is the loopback fake: the functions run on this machine, one node
    assert st["numberNodes"] == 1 and len(st["detail"]) == 1
    node = st["detail"][0]
    assert int(node["cpuCapacity"]) >= 1000 and int(node["memoryCapacity"]) > 0
    assert 0 <= int(node["cpuUsage"]) <= int(node["cpuCapacity"])
    assert float(node["cpuPercentage"]) >= 0 and node["conditions"][0]["type"] == "Ready"
    for key in ("cpuFreeTotal", "cpuMaxFree", "memoryFreeTotal", "memoryMaxFree",
                "gpusTotal"):
        assert isinstance(st[key], int) and st[key] >= 0
    assert st["cpuFreeTotal"] == int(node["cpuCapacity"]) - int(node["cpuUsage"])
    assert isinstance(st["hasGPU"], bool)
    oscar = st["OSCAR"]
    assert oscar["deploymentReady"] is True
    assert oscar["podsInfo"] == {"pods": [{"name": "cowsay", "state": "Running"}],
                                 "total": 1, "states": {"Running": 1}}
    assert oscar["OIDC"]["enabled"] is False and st["MinIO"] == {"buckets": []}


def test_status_of_a_remote_openfaas_has_no_nodes_and_says_when_it_is_down(httpserver):
    settings = Settings.from_env({"OPENFAAS_URL": "http://openfaas.invalid:8080",
                                  "OSCAR_USERNAME": "oscar", "OSCAR_PASSWORD": "s3cret",
                                  "OPENFAAS_TIMEOUT": "2"})
    st = create_app(settings).test_client().get("/system/status", headers=ADMIN).get_json()
    assert st["numberNodes"] == 0 and st["detail"] == [] and st["cpuMaxFree"] == 0
    assert st["OSCAR"]["deploymentReady"] is False
    assert st["OSCAR"]["podsInfo"]["total"] == 0


def test_status_needs_credentials(client):
    assert client.get("/system/status").status_code == 401


def test_metrics_counts_calls_per_service(client, httpserver):
    _functions(httpserver, count=7)
    got = client.get("/system/metrics", headers=ADMIN).get_json()
    assert got["group_by"] == "service" and got["start"] < got["end"]
    assert got["items"] == [{"key": "cowsay", "requests_count_total": 7,
                             "requests_count_sync": 7, "requests_count_async": 0,
                             "requests_count_exposed": 0, "unique_users_count": 0,
                             "countries": []}]


def test_v4_routes_are_clear_404s_or_empty(client, httpserver):
    httpserver.expect_request("/system/function/nope").respond_with_data("", status=404)
    assert client.get("/system/services/nope/deployment", headers=ADMIN).status_code == 404
    volumes = client.get("/system/volumes", headers=ADMIN)
    assert volumes.status_code == 200 and volumes.get_json() == []
