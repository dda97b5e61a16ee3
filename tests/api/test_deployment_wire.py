"""OSCAR's deployment view of a service (issue 26.3) and a provider's "cannot start" 503
passed on whole (issue 22.3), against pytest-httpserver playing OpenFaaS.

The deployment shapes are OSCAR's ``types.ServiceDeploymentStatus`` and
``types.DeploymentLogStream`` (grycap/oscar ``pkg/types/deployment.go``), which the
dashboard's ``models/deployment.ts`` reads."""

from __future__ import annotations

import json
import time

import requests

from .conftest import ADMIN, function_status
from .test_run_wire import BEARER, SERVICE, forwarded, gw  # noqa: F401 - the gw fixture

STATUS_KEYS = {"service_name", "namespace", "state", "reason", "last_transition_time",
               "active_instances", "affected_instances", "resource_kind"}
#: A cause as long as a container engine's, with its last words at the end.
CAUSE = ("cannot start the container of cowsay: image nope:1 is not on this machine and "
         "cannot be pulled: " + "initializing source docker://nope:1 " * 20 + "THE END")


def _with_runtime(httpserver, service: dict, runtime: dict | None, **extra) -> None:
    status = function_status(service, **extra)
    if runtime is not None:
        status["runtime"] = runtime
    httpserver.expect_request(f"/system/function/{service['name']}").respond_with_json(status)


def test_deployment_of_a_failed_service_in_oscars_shape(client, httpserver):
    _with_runtime(httpserver, SERVICE, {"state": "failed", "reason": CAUSE, "retryIn": 4.0,
                                        "since": "2026-12-04T10:00:00Z", "restarts": 2,
                                        "running": False}, availableReplicas=0)
    resp = client.get("/system/services/cowsay/deployment", headers=ADMIN)
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    got = resp.get_json()
    assert set(got) == STATUS_KEYS
    assert got["service_name"] == "cowsay" and got["namespace"] == "oscar-svc"
    assert got["state"] == "failed" and got["reason"].startswith(CAUSE)
    assert "next try in 4 s" in got["reason"]
    assert got["last_transition_time"] == "2026-12-04T10:00:00Z"
    assert (got["active_instances"], got["affected_instances"]) == (0, 0)
    assert got["resource_kind"] == "knative_service"


def test_deployment_states_from_the_runtime_or_the_replicas(client, httpserver):
    exposed = {**SERVICE, "name": "web", "expose": {"api_port": 8080}}
    _with_runtime(httpserver, exposed, {"state": "starting", "reason": "pulling",
                                        "since": "2026-12-04T10:00:00Z", "running": True},
                  availableReplicas=0)
    _with_runtime(httpserver, SERVICE, None)  # a real OpenFaaS: replicas only
    web = client.get("/system/services/web/deployment", headers=ADMIN).get_json()
    assert (web["state"], web["reason"], web["resource_kind"]) == (
        "pending", "pulling", "exposed_service")
    assert (web["active_instances"], web["affected_instances"]) == (1, 1)
    ready = client.get("/system/services/cowsay/deployment", headers=ADMIN).get_json()
    assert ready["state"] == "ready" and ready["reason"] == "Deployment is ready."
    assert (ready["active_instances"], ready["affected_instances"]) == (1, 0)
    assert "last_transition_time" not in ready


def test_deployment_routes_need_the_cluster_credentials(client, httpserver):
    _with_runtime(httpserver, SERVICE, None)
    httpserver.expect_request("/system/function/nope").respond_with_data("", status=404)
    for path in ("/system/services/cowsay/deployment",
                 "/system/services/cowsay/deployment/logs"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers=BEARER).status_code == 401
    assert client.get("/system/services/nope/deployment", headers=ADMIN).status_code == 404
    assert client.get("/system/services/nope/deployment/logs",
                      headers=ADMIN).status_code == 404


def _logs(httpserver, lines: list[str]) -> None:
    body = "".join(json.dumps({"name": "cowsay", "namespace": "openfaas-fn",
                               "instance": "local", "timestamp": f"2026-12-04T10:00:0{i}"
                               ".123456Z", "text": text}) + "\n"
                   for i, text in enumerate(lines))
    httpserver.expect_request("/system/logs").respond_with_data(
        body, content_type="application/x-ndjson")


def test_deployment_logs_in_oscars_shape(client, httpserver):
    _with_runtime(httpserver, SERVICE, None)
    _logs(httpserver, ["INFO listening", "INFO script: it broke", "ERROR not running"])
    got = client.get("/system/services/cowsay/deployment/logs?timestamps=true&tailLines=2",
                     headers=ADMIN).get_json()
    assert got == {"service_name": "cowsay", "available": True, "entries": [
        {"timestamp": "2026-12-04T10:00:01Z", "message": "INFO script: it broke"},
        {"timestamp": "2026-12-04T10:00:02Z", "message": "ERROR not running"}]}
    asked = [r for r, _ in httpserver.log if r.path == "/system/logs"]
    assert asked[-1].args["name"] == "cowsay" and asked[-1].args["tail"] == "2"
    plain = client.get("/system/services/cowsay/deployment/logs", headers=ADMIN).get_json()
    assert [e for e in plain["entries"] if "timestamp" in e] == []  # timestamps default false
    for value, sent in (("abc", "200"), ("0", "200"), ("5000", "1000")):
        client.get(f"/system/services/cowsay/deployment/logs?tailLines={value}",
                   headers=ADMIN)
        asked = [r for r, _ in httpserver.log if r.path == "/system/logs"]
        assert asked[-1].args["tail"] == sent, value


def test_deployment_logs_not_yet_available(client, httpserver):
    _with_runtime(httpserver, SERVICE, None)
    _logs(httpserver, [])
    got = client.get("/system/services/cowsay/deployment/logs", headers=ADMIN).get_json()
    assert got == {"service_name": "cowsay", "available": False, "entries": [],
                   "message": "Deployment logs are not yet available."}


def test_a_provider_cause_is_passed_on_whole_and_at_once(gw, httpserver):  # noqa: F811
    """The embedded provider's 503 for a runtime that cannot start (Retry-After): /run
    answers at once with the provider's words, whole, instead of retrying until
    RUN_READY_WAIT and blaming readiness."""
    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        function_status(SERVICE))
    httpserver.expect_request("/function/cowsay").respond_with_data(
        f"function cowsay cannot start: {CAUSE}", status=503,
        headers={"Retry-After": "4", "X-OpenFaaS-Internal": "proxy"})
    started = time.monotonic()
    resp = requests.post(gw + "/run/cowsay", data=b"aGk=", headers=BEARER, timeout=10)
    assert resp.status_code == 503
    assert resp.text.strip() == f"service cowsay is not ready: function cowsay cannot start: " \
                                f"{CAUSE}"
    assert len(forwarded(httpserver)) == 1 and time.monotonic() - started < 1
    assert resp.headers["Retry-After"] == "4"


def test_an_exposed_service_that_cannot_start_says_why_whole(gw, httpserver):  # noqa: F811
    """Not cut mid-word, and not blamed on its health check."""
    web = {**SERVICE, "name": "web", "expose": {"api_port": 8080, "health_path": "/health"}}
    httpserver.expect_request("/system/function/web").respond_with_json(function_status(web))
    httpserver.expect_request("/function/web/info").respond_with_data(
        f"function web cannot start: {CAUSE}", status=503,
        headers={"Retry-After": "4", "X-OpenFaaS-Internal": "proxy"})
    resp = requests.get(gw + "/system/services/web/exposed/info", timeout=10)
    assert resp.status_code == 503
    assert resp.text.strip() == f"exposed service web is not ready: function web cannot " \
                                f"start: {CAUSE}"
    assert "health check" not in resp.text
