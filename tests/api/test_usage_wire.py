"""``/system/metrics`` (OSCAR v4's summary, breakdown and per-service metrics) from the
gateway's request counts: real calls through the live gateway front (uvicorn), pytest-httpserver
playing OpenFaaS, the counts in a SQLite file that outlives the gateway."""

from __future__ import annotations

import base64
import csv
import dataclasses
import io
from datetime import datetime, timedelta, timezone

import pytest
import requests

from oscar_faas.api import create_app
from oscar_faas.config import Settings

from .conftest import ADMIN, function_status
from .test_run_wire import BEARER, SERVICE, served

EXPOSED = {"name": "web", "image": "alpine", "script": "s", "token": "ef" * 32,
           "expose": {"api_port": 8080}}


def _settings(httpserver, tmp_path) -> Settings:
    return Settings.from_env({
        "OPENFAAS_URL": httpserver.url_for("/").rstrip("/"), "OSCAR_USERNAME": "oscar",
        "OSCAR_PASSWORD": "s3cret", "SERVICE_CACHE_TTL": "0", "RUN_READY_WAIT": "1",
        "USAGE_DB": str(tmp_path / "usage.sqlite3")})


@pytest.fixture
def counted(httpserver, tmp_path):
    """A gateway that answered: 3 token calls and 1 Basic call to cowsay, 2 calls to the
    exposed service, and calls that ran nothing (bad token, unknown service, /job);
    then stopped. Returns its settings."""
    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        function_status(SERVICE))
    httpserver.expect_request("/system/function/web").respond_with_json(
        function_status(EXPOSED))
    httpserver.expect_request("/system/function/nope").respond_with_data("", status=404)
    httpserver.expect_request("/system/functions").respond_with_json(
        [function_status(SERVICE), function_status(EXPOSED)])
    httpserver.expect_request("/function/cowsay").respond_with_data(
        "moo", headers={"X-Duration-Seconds": "0.1"})
    httpserver.expect_request("/function/web/hello").respond_with_data(
        "hi", headers={"X-Duration-Seconds": "0.1"})
    settings = _settings(httpserver, tmp_path)
    with served(create_app(settings)) as gw:
        for _ in range(3):
            assert requests.post(gw + "/run/cowsay", data=b"aGk=", headers=BEARER,
                                 timeout=30).status_code == 200
        assert requests.post(gw + "/run/cowsay", data=b"aGk=", headers=ADMIN,
                             timeout=30).status_code == 200
        bad = {"Authorization": "Bearer " + "00" * 32}
        assert requests.post(gw + "/run/cowsay", data=b"aGk=", headers=bad,
                             timeout=30).status_code == 401
        assert requests.post(gw + "/run/nope", data=b"aGk=", headers=BEARER,
                             timeout=30).status_code == 404
        # a job OpenFaaS refuses (no /async-function here) is not counted
        assert requests.post(gw + "/job/cowsay", data=b"aGk=", headers=BEARER,
                             timeout=30).status_code == 502
        for _ in range(2):
            assert requests.get(gw + "/system/services/web/exposed/hello",
                                timeout=30).text == "hi"
    return settings


def test_summary_counts_sync_and_exposed_per_service_and_survives_a_restart(counted):
    # a new gateway (new process state) on the same counts file: nothing was lost
    client = create_app(counted).test_client()
    resp = client.get("/system/metrics", headers=ADMIN)
    assert resp.status_code == 200
    got = resp.get_json()
    totals = got["totals"]
    assert totals["requests_count_sync"] == 4 and totals["requests_count_async"] == 0
    assert totals["requests_count_exposed"] == 2
    assert totals["requests_count_total"] == 4  # sync + async, as OSCAR counts it
    assert totals["services_count_active"] == 2 and totals["services_count_total"] == 2
    assert totals["users"] == ["oscar"] and totals["users_count"] == 1
    assert totals["countries"] == [] and totals["cpu_hours_total"] == 0
    start = datetime.fromisoformat(got["start"])
    end = datetime.fromisoformat(got["end"])
    assert timedelta(hours=23.9) < end - start <= timedelta(hours=24)
    sources = {s["name"]: s for s in got["sources"]}
    assert sources["request-logs"]["status"] == "ok"
    assert "usage.sqlite3" in sources["request-logs"]["notes"]
    assert sources["usage-metrics"]["status"] == "missing"


def test_breakdown_by_service_user_and_country(counted):
    client = create_app(counted).test_client()
    by_service = client.get("/system/metrics/breakdown?group_by=service&include_users=true",
                            headers=ADMIN).get_json()
    assert by_service["group_by"] == "service"
    assert by_service["items"] == [
        {"key": "cowsay", "requests_count_total": 4, "requests_count_sync": 4,
         "requests_count_async": 0, "requests_count_exposed": 0, "unique_users_count": 1,
         "countries": [], "users": ["oscar"]},
        {"key": "web", "requests_count_total": 0, "requests_count_sync": 0,
         "requests_count_async": 0, "requests_count_exposed": 2, "unique_users_count": 0,
         "countries": [], "users": []}]
    by_user = client.get("/system/metrics/breakdown?group_by=user", headers=ADMIN).get_json()
    assert by_user["items"] == [{"key": "oscar", "membership": "external",
                                 "executions_count": 4, "countries": []}]
    by_country = client.get("/system/metrics/breakdown?group_by=country",
                            headers=ADMIN).get_json()
    assert by_country["items"] == [{"key": "unknown", "executions_count": 4,
                                    "unique_users_count": 1,
                                    "countries": [{"country": "unknown",
                                                   "request_count": 4}]}]
    as_csv = client.get("/system/metrics/breakdown?group_by=service&format=csv",
                        headers=ADMIN)
    assert as_csv.status_code == 200 and as_csv.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(as_csv.text)))
    assert rows[0] == ["key", "membership", "requests_count_total", "requests_count_sync",
                       "requests_count_async", "requests_count_exposed",
                       "unique_users_count", "countries"]
    assert rows[1] == ["cowsay", "", "4", "4", "0", "0", "1", ""]
    user_csv = client.get("/system/metrics/breakdown?group_by=user&format=csv", headers=ADMIN)
    assert list(csv.reader(io.StringIO(user_csv.text)))[1] == ["oscar", "external", "4", ""]


def test_per_service_metrics(counted):
    client = create_app(counted).test_client()
    all_of = client.get("/system/metrics/cowsay", headers=ADMIN).get_json()
    assert all_of["service_name"] == "cowsay"
    values = {m["metric"]: m["value"] for m in all_of["metrics"]}
    assert values == {"cpu-hours": 0.0, "gpu-hours": 0.0, "requests-sync-per-service": 4.0,
                      "requests-async-per-service": 0.0,
                      "requests-exposed-per-service": 0.0, "users-per-service": 1.0}
    one = client.get("/system/metrics/web?metric=requests-exposed-per-service",
                     headers=ADMIN).get_json()
    assert one["service_id"] == "web" and one["value"] == 2.0
    assert one["metric"] == "requests-exposed-per-service" and one["sources"]


def test_time_range_selects_hours(counted):
    client = create_app(counted).test_client()
    now = datetime.now(timezone.utc)
    past = {"start": (now - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end": (now - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    got = client.get("/system/metrics", query_string=past, headers=ADMIN).get_json()
    assert got["totals"]["requests_count_sync"] == 0 and got["start"] == past["start"]
    around = {"start": (now - timedelta(hours=2)).isoformat(),
              "end": (now + timedelta(hours=1)).isoformat()}
    got = client.get("/system/metrics", query_string=around, headers=ADMIN).get_json()
    assert got["totals"]["requests_count_sync"] == 4


@pytest.mark.parametrize("path, error", [
    ("/system/metrics?start=2026-01-02T00:00:00Z&end=2026-01-01T00:00:00Z",
     "end must be after start"),
    ("/system/metrics?start=yesterday", "invalid start timestamp"),
    ("/system/metrics?end=2026-01-01", "invalid end timestamp"),
    ("/system/metrics?end=2026-01-01T00:00:00", "invalid end timestamp"),
    ("/system/metrics/breakdown", "group_by is required"),
    ("/system/metrics/breakdown?group_by=planet", "unsupported group_by"),
    ("/system/metrics/breakdown?group_by=service&format=xml", "invalid format"),
    ("/system/metrics/breakdown?group_by=service&format=csv&include_users=true",
     "include_users is not supported for csv"),
    ("/system/metrics/cowsay?metric=nonsense", "invalid metric key"),
    ("/system/metrics/cowsay?metric=countries-list", "unsupported metric for value query"),
    ("/system/metrics/cowsay?start=2026-01-02T00:00:00Z&end=2026-01-01T00:00:00Z",
     "end must be after start"),
])
def test_validation_is_a_400_with_oscars_error(client, path, error):
    resp = client.get(path, headers=ADMIN)
    assert resp.status_code == 400 and resp.get_json() == {"error": error}


def test_metrics_need_basic_credentials(client):
    assert client.get("/system/metrics").status_code == 401
    assert client.get("/system/metrics/breakdown?group_by=user", headers=BEARER
                      ).status_code == 401
    wrong = {"Authorization": "Basic " + base64.b64encode(b"oscar:nope").decode()}
    assert client.get("/system/metrics/cowsay", headers=wrong).status_code == 401


def test_without_a_counts_file_the_source_says_so(client, httpserver):
    httpserver.expect_request("/system/functions").respond_with_json([])
    got = client.get("/system/metrics", headers=ADMIN).get_json()
    source = {s["name"]: s for s in got["sources"]}["request-logs"]
    assert source["status"] == "partial" and "USAGE_DB" in source["notes"]


def test_an_accepted_job_counts_as_async(httpserver, tmp_path):
    """A job OpenFaaS accepts (``/async-function`` 202, so ``/job`` 201) counts as async."""
    httpserver.expect_request("/system/functions").respond_with_json([function_status(SERVICE)])
    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        function_status(SERVICE))
    httpserver.expect_request("/async-function/cowsay", method="POST").respond_with_data(
        "", status=202)
    settings = dataclasses.replace(_settings(httpserver, tmp_path),
                                   jobs_dir=str(tmp_path / "jobs"))
    client = create_app(settings).test_client()
    assert client.post("/job/cowsay", data=b"aGk=", headers=BEARER).status_code == 201
    assert client.post("/job/cowsay", data=b"aGk=", headers=ADMIN).status_code == 201
    totals = client.get("/system/metrics", headers=ADMIN).get_json()["totals"]
    assert totals["requests_count_async"] == 2 and totals["requests_count_total"] == 2
    assert totals["users"] == ["oscar"]  # a token is OSCAR's "oscar", Basic its user (oscar)
    by_user = client.get("/system/metrics/breakdown?group_by=user", headers=ADMIN).get_json()
    assert by_user["items"][0]["executions_count"] == 2
