"""``/system/status``, ``/system/quotas`` and the OSCAR v4 routes oscar-faas answers with a
404 or an empty result, against pytest-httpserver playing OpenFaaS."""

from __future__ import annotations

import multiprocessing
import os
import time

from oscar_faas.api import create_app
from oscar_faas.config import Settings
from oscar_faas.hoststatus import CpuSampler

from .conftest import ADMIN, function_status

SERVICE = {"name": "cowsay", "image": "alpine", "script": "cat", "token": "ef" * 32}


def _functions(httpserver, ready: int = 1, count: int = 7):
    httpserver.expect_request("/system/functions").respond_with_json([
        function_status(SERVICE, availableReplicas=ready, invocationCount=count),
        {"name": "not-oscar", "image": "x", "availableReplicas": 1}])


def test_status_in_oscars_current_shape_with_this_machine(client, httpserver):
    _functions(httpserver)
    resp = client.get("/system/status", headers=ADMIN)
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    st = resp.get_json()
    assert set(st) == {"cluster", "oscar", "minio"}  # OSCAR 3.6's camelCase shape is gone
    cluster = st["cluster"]
    # OPENAFAAS_URL is the loopback fake: the functions run on this machine, one node
    assert cluster["nodes_count"] == 1 and len(cluster["nodes"]) == 1
    node = cluster["nodes"][0]
    cpus = os.cpu_count()
    assert node["cpu"]["capacity_cores"] == cpus * 1000  # millicores, as OSCAR's
    assert 0 <= node["cpu"]["usage_cores"] <= node["cpu"]["capacity_cores"]
    assert node["cpu"]["request_cores"] == 200  # the one service's default cpu 0.2
    mem_total = int(open("/proc/meminfo").readline().split()[1]) * 1024
    assert node["memory"]["capacity_bytes"] == mem_total
    assert 0 < node["memory"]["usage_bytes"] < mem_total
    assert node["memory"]["request_bytes"] == 256 * 2**20  # default memory 256Mi
    assert node["status"] == "Ready" and node["conditions"] == [{"type": "Ready",
                                                                  "status": True}]
    assert node["is_interlink"] is False and isinstance(node["gpu"], int)
    cpu = cluster["metrics"]["cpu"]
    assert cpu["total_free_cores"] == cpus * 1000 - node["cpu"]["usage_cores"]
    assert cpu["max_free_on_node_cores"] == cpu["total_free_cores"]
    assert cpu["total_schedulable_cores"] == cpus * 1000 - 200
    mem = cluster["metrics"]["memory"]
    assert mem["total_free_bytes"] == mem_total - node["memory"]["usage_bytes"]
    assert mem["max_schedulable_on_node_bytes"] == mem_total - 256 * 2**20
    assert cluster["metrics"]["gpu"] == {"total_gpu": node["gpu"]}
    oscar = st["oscar"]
    assert oscar["ready"] is True and oscar["deployment_name"] == "oscar-faas"
    assert oscar["deployment"]["ready_replicas"] == oscar["deployment"]["replicas"] == 1
    assert oscar["deployment"]["creation_timestamp"].endswith("Z")
    # the OSCAR service's function is a running "pod"; the plain OpenFaaS one is not counted
    assert oscar["pods"] == {"total": 1, "states": {"Pending": 0, "Running": 1,
                                                    "Succeeded": 0, "Failed": 0,
                                                    "Unknown": 0}}
    assert oscar["jobs_count"] == 0
    assert oscar["oidc"] == {"enabled": False, "issuers": [], "groups": []}
    assert st["minio"] == {"buckets_count": 0, "total_objects": 0}  # no MinIO configured


def test_a_function_not_ready_is_a_pending_pod(client, httpserver):
    _functions(httpserver, ready=0)
    pods = client.get("/system/status", headers=ADMIN).get_json()["oscar"]["pods"]
    assert pods["total"] == 1 and pods["states"]["Pending"] == 1


def test_cpu_usage_follows_real_load():
    """The CPU figure is measured (``/proc/stat``), not a constant: a busy loop on every CPU
    shows up."""
    sampler = CpuSampler()
    cpus = os.cpu_count() or 1
    sampler.usage_millicores(cpus)
    stop = time.monotonic() + 0.6
    procs = [multiprocessing.Process(target=_spin, args=(stop,)) for _ in range(cpus)]
    for proc in procs:
        proc.start()
    time.sleep(0.3)
    busy = sampler.usage_millicores(cpus)
    for proc in procs:
        proc.join()
    assert busy >= cpus * 1000 * 0.5


def _spin(until: float) -> None:
    while time.monotonic() < until:
        pass


def test_status_of_a_remote_openfaas_has_no_nodes_and_says_when_it_is_down(httpserver):
    settings = Settings.from_env({"OPENFAAS_URL": "http://openfaas.invalid:8080",
                                  "OSCAR_USERNAME": "oscar", "OSCAR_PASSWORD": "s3cret",
                                  "OPENFAAS_TIMEOUT": "2"})
    st = create_app(settings).test_client().get("/system/status", headers=ADMIN).get_json()
    assert st["cluster"]["nodes_count"] == 0 and st["cluster"]["nodes"] == []
    assert st["cluster"]["metrics"]["cpu"]["max_free_on_node_cores"] == 0
    assert st["oscar"]["ready"] is False and st["oscar"]["pods"]["total"] == 0


def test_status_needs_basic_credentials(client):
    assert client.get("/system/status").status_code == 401
    token = {"Authorization": "Bearer " + SERVICE["token"]}  # a service token is not enough
    assert client.get("/system/status", headers=token).status_code == 401


def test_quotas_say_no_quota_in_oscars_shape(client):
    resp = client.get("/system/quotas/user/alice", headers=ADMIN)
    assert resp.status_code == 200 and resp.get_json() == {"user_id": "alice"}
    own = client.get("/system/quotas/user", headers=ADMIN)
    assert own.status_code == 200 and own.get_json() == {"user_id": "oscar"}
    put = client.put("/system/quotas/user/alice", json={"cpu": "1"}, headers=ADMIN)
    assert put.status_code == 501 and "quotas are not available" in put.text
    assert client.get("/system/quotas/user/alice").status_code == 401


def test_v4_routes_are_clear_404s_or_empty(client, httpserver):
    httpserver.expect_request("/system/function/nope").respond_with_data("", status=404)
    assert client.get("/system/services/nope/deployment", headers=ADMIN).status_code == 404
    volumes = client.get("/system/volumes", headers=ADMIN)
    assert volumes.status_code == 200 and volumes.get_json() == []


def test_plain_wsgi_caps_followed_log_streams(app, httpserver):
    """Without the ASGI front (``oscar-faas serve`` answers follow streams on its event loop,
    tests/e2e/test_dashboard_e2e.py), each followed stream holds a WSGI thread: only
    FLASK_FOLLOWERS at once, then a 429 naming the limit; a stream the server closes frees
    its slot. (Called as a WSGI server calls the app: the test client never closes.)"""
    from werkzeug.test import EnvironBuilder

    from oscar_faas.api.status import FLASK_FOLLOWERS

    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        function_status(SERVICE))
    httpserver.expect_request("/system/logs").respond_with_data(
        '{"text":"moo"}\n', content_type="application/x-ndjson")

    def follow(**query):
        environ = EnvironBuilder(path="/system/services/cowsay/logs", headers=ADMIN,
                                 query_string={"follow": "true", **query}).get_environ()
        status: list[str] = []
        body = app(environ, lambda s, h, e=None: status.append(s))
        return status[0], body

    held = [follow() for _ in range(FLASK_FOLLOWERS)]
    assert [status for status, _ in held] == ["200 OK"] * FLASK_FOLLOWERS
    status, body = follow()
    assert status.startswith("429") and b"too many log streams" in b"".join(body)
    held.pop()[1].close()
    status, body = follow()
    assert status == "200 OK"
    for _, stream in [(status, body), *held]:
        stream.close()
