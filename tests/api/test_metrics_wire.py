"""The gateway's /run metrics, against pytest-httpserver playing OpenFaaS (one process, so
the process's own registry; the multiprocess sum is tested end to end in tests/e2e)."""

from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families
from werkzeug import Response as WResponse

from .conftest import function_status
from .test_run_wire import BEARER, SERVICE, served


def value(url: str, name: str, **labels: str) -> float:
    text = requests.get(url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def test_retries_errors_and_statuses_are_counted(app, httpserver):
    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        function_status(SERVICE))
    answers = iter([WResponse("No endpoints available for: cowsay.", status=503),
                    WResponse("No endpoints available for: cowsay.", status=503),
                    WResponse("moo", headers={"X-Duration-Seconds": "0.1"}),
                    WResponse(b"", status=502)])
    httpserver.expect_request("/function/cowsay").respond_with_handler(
        lambda _req: next(answers))
    with served(app) as gw:
        before = {
            "retries": value(gw, "oscar_faas_run_ready_retries_total", service="cowsay"),
            "ok": value(gw, "oscar_faas_run_requests_total", service="cowsay", code="200"),
            "502": value(gw, "oscar_faas_run_requests_total", service="cowsay", code="502"),
            "bad": value(gw, "oscar_faas_run_upstream_errors_total", service="cowsay",
                         kind="bad_gateway"),
            "count": value(gw, "oscar_faas_run_duration_seconds_count", service="cowsay"),
        }
        assert requests.post(gw + "/run/cowsay", data=b"aGk=", headers=BEARER,
                             timeout=30).text == "moo"
        assert requests.post(gw + "/run/cowsay", data=b"aGk=", headers=BEARER,
                             timeout=30).status_code == 502
        assert value(gw, "oscar_faas_run_ready_retries_total",
                     service="cowsay") == before["retries"] + 2
        assert value(gw, "oscar_faas_run_requests_total", service="cowsay",
                     code="200") == before["ok"] + 1
        assert value(gw, "oscar_faas_run_requests_total", service="cowsay",
                     code="502") == before["502"] + 1
        assert value(gw, "oscar_faas_run_upstream_errors_total", service="cowsay",
                     kind="bad_gateway") == before["bad"] + 1
        assert value(gw, "oscar_faas_run_duration_seconds_count",
                     service="cowsay") == before["count"] + 2
        assert value(gw, "oscar_faas_run_in_flight", service="cowsay") == 0
