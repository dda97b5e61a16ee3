"""``/job`` and ``/system/logs/<svc>`` against pytest-httpserver playing an OpenFaaS gateway with
NATS (its recorded async contract: ``POST /async-function/<name>`` -> 202, then the
queue-worker's callback with ``X-Function-Status``, ``X-Duration-Seconds``,
``X-Function-Name``, ``X-Call-Id``), the job store on disk and on a real S3 server (moto)."""

from __future__ import annotations

import re
import time
from urllib.parse import urlsplit

import pytest

from oscar_faas.api import create_app
from oscar_faas.config import Settings
from oscar_faas.contract import HEADER_JOB_NAME
from tests.s3server import S3Server

from .conftest import ADMIN, function_status, sent

TOKEN = "cd" * 32
SERVICE = {"name": "cowsay", "image": "alpine", "script": "cat", "token": TOKEN}
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def make_settings(httpserver, **env) -> Settings:
    return Settings.from_env({
        "OPENFAAS_URL": httpserver.url_for("/").rstrip("/"),
        "OPENFAAS_USERNAME": "ofadmin", "OPENFAAS_PASSWORD": "ofpass",
        "OSCAR_USERNAME": "oscar", "OSCAR_PASSWORD": "s3cret", "SERVICE_CACHE_TTL": "0",
        "JOB_CALLBACK_URL": "http://gateway.openfaas:8080", **env})


@pytest.fixture
def jobs_client(httpserver, tmp_path):
    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        function_status(SERVICE))
    return create_app(make_settings(httpserver, JOBS_DIR=str(tmp_path / "jobs"))).test_client()


def submit(client, httpserver, body: bytes = b"aGk=", headers=BEARER) -> tuple[str, str]:
    """``POST /job/cowsay`` with OpenFaaS queueing it; the job name and the callback path."""
    httpserver.expect_oneshot_request("/async-function/cowsay", method="POST"
                                      ).respond_with_data("", 202)
    resp = client.post("/job/cowsay", data=body, headers=headers)
    assert resp.status_code == 201 and resp.data == b"", resp.data
    job = resp.headers[HEADER_JOB_NAME]
    queued = sent(httpserver, "POST", "/async-function/cowsay")[-1]
    assert queued.headers["X-Call-Id"] == job
    callback = urlsplit(queued.headers["X-Callback-Url"])
    assert callback.netloc == "gateway.openfaas:8080"
    return job, callback.path


def call_back(client, path: str, status: int, body: bytes, **extra):
    """What nats-queue-worker POSTs after the call (openfaas/nats-queue-worker main.go)."""
    return client.post(path, data=body, headers={
        "X-Function-Status": str(status), "X-Duration-Seconds": "0.250000",
        "X-Function-Name": "cowsay", "X-Call-Id": path.split("/")[3], **extra})


def jobs(client, page: str = "") -> dict:
    resp = client.get(f"/system/logs/cowsay?page={page}", headers=ADMIN)
    assert resp.status_code == 200
    return resp.get_json()


def test_submit_sends_the_async_contract(jobs_client, httpserver):
    job, path = submit(jobs_client, httpserver, headers={**BEARER, "Content-Type": "text/json"})
    assert re.fullmatch(r"cowsay-[0-9a-f-]{36}", job)
    queued = sent(httpserver, "POST", "/async-function/cowsay")[-1]
    assert queued.get_data() == b"aGk="
    # the function checks the service token; the queue gets no cluster credentials
    assert queued.headers["Authorization"] == f"Bearer {TOKEN}"
    assert queued.headers["Content-Type"] == "text/json"
    assert queued.headers["X-Oscar-Faas-Answer"] == "log"  # outputs only go to storage
    assert re.fullmatch(rf"/job-callback/cowsay/{job}/[0-9a-f]{{64}}", path)
    assert jobs(jobs_client)["jobs"][job]["status"] == "Pending"
    assert set(jobs(jobs_client)["jobs"][job]) == {"status", "creation_time"}


def test_callback_finishes_the_job_and_a_redelivery_changes_nothing(jobs_client, httpserver):
    job, path = submit(jobs_client, httpserver)
    assert call_back(jobs_client, path, 200, b"moo\n").status_code == 204
    info = jobs(jobs_client)["jobs"][job]
    assert info["status"] == "Succeeded" and {"start_time", "finish_time"} <= set(info)
    # the queue redelivered the call (ack_wait passed) and it answered again: ignored
    assert call_back(jobs_client, path, 500, b"second run\n").status_code == 204
    assert jobs(jobs_client)["jobs"][job]["status"] == "Succeeded"
    log = jobs_client.get(f"/system/logs/cowsay/{job}", headers=ADMIN)
    assert log.status_code == 200 and log.data == b"moo\n"
    assert log.headers["Content-Type"].startswith("text/plain")


def test_failed_call_is_failed_with_its_log(jobs_client, httpserver):
    job, path = submit(jobs_client, httpserver)
    call_back(jobs_client, path, 500, b"exit status 3\nboom\n")
    assert jobs(jobs_client)["jobs"][job]["status"] == "Failed"
    assert jobs_client.get(f"/system/logs/cowsay/{job}", headers=ADMIN).data == \
        b"exit status 3\nboom\n"
    # the queue-worker could not call it at all: 503, no body
    job2, path2 = submit(jobs_client, httpserver)
    call_back(jobs_client, path2, 503, b"")
    text = jobs_client.get(f"/system/logs/cowsay/{job2}", headers=ADMIN).data.decode()
    assert "503" in text


def test_started_event_marks_running(jobs_client, httpserver):
    job, path = submit(jobs_client, httpserver)
    resp = jobs_client.post(path, headers={"X-Oscar-Faas-Job-Event": "started"})
    assert resp.status_code == 204
    info = jobs(jobs_client)["jobs"][job]
    assert info["status"] == "Running" and "start_time" in info
    assert jobs_client.get(f"/system/logs/cowsay/{job}", headers=ADMIN).data == b""


def test_a_redelivered_job_is_claimed_once_and_its_refusal_dropped(jobs_client, httpserver):
    """Issue 25: a call that outlives the queue's ack_wait is delivered again; the function's
    runtime claims each delivery before it runs (runtime/claim.py): the first claim is 204
    (the job is Running, which a cluster's queue-worker alone never tells), a later one 409;
    the refused delivery's answer (409 + X-Oscar-Faas-Duplicate) changes nothing."""
    job, path = submit(jobs_client, httpserver)
    claim = {"X-Oscar-Faas-Job-Event": "claim"}
    assert jobs_client.post(path, headers=claim).status_code == 204
    assert jobs(jobs_client)["jobs"][job]["status"] == "Running"
    again = jobs_client.post(path, headers=claim)
    assert again.status_code == 409 and job in again.text
    dropped = call_back(jobs_client, path, 409, b"already delivered\n",
                        **{"X-Oscar-Faas-Duplicate": "1"})
    assert dropped.status_code == 204
    assert jobs(jobs_client)["jobs"][job]["status"] == "Running"  # still the first run's
    assert call_back(jobs_client, path, 200, b"first run\n").status_code == 204
    assert jobs(jobs_client)["jobs"][job]["status"] == "Succeeded"
    assert jobs_client.get(f"/system/logs/cowsay/{job}", headers=ADMIN).data == b"first run\n"
    assert jobs_client.post(path, headers=claim).status_code == 409  # finished: never again


def test_a_job_whose_answer_never_comes_is_failed_after_the_deadline(httpserver, tmp_path):
    """A lost callback (a queue-worker or provider gone) leaves no job Running for ever:
    past JOB_ANSWER_DEADLINE it reads Failed, with a log saying why; a late answer changes
    nothing."""
    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        function_status(SERVICE))
    client = create_app(make_settings(httpserver, JOBS_DIR=str(tmp_path / "jobs"),
                                      JOB_ANSWER_DEADLINE="1")).test_client()
    job, path = submit(client, httpserver)
    assert client.post(path, headers={"X-Oscar-Faas-Job-Event": "claim"}).status_code == 204
    assert jobs(client)["jobs"][job]["status"] == "Running"
    time.sleep(1.2)  # past the deadline (what is asserted is the state after it)
    assert jobs(client)["jobs"][job]["status"] == "Failed"
    log = client.get(f"/system/logs/cowsay/{job}", headers=ADMIN).data.decode()
    assert "JOB_ANSWER_DEADLINE" in log and "submit it again" in log
    assert call_back(client, path, 200, b"too late\n").status_code == 204
    assert jobs(client)["jobs"][job]["status"] == "Failed"


def test_forged_or_malformed_callbacks_are_refused(jobs_client, httpserver):
    job, path = submit(jobs_client, httpserver)
    forged = path[:-64] + "0" * 64
    assert call_back(jobs_client, forged, 200, b"x").status_code == 403
    other = path.replace(f"/{job}/", "/cowsay-00000000-0000-4000-8000-000000000000/")
    assert call_back(jobs_client, other, 200, b"x").status_code == 403
    resp = jobs_client.post(path, data=b"x", headers={"X-Function-Status": "ok"})
    assert resp.status_code == 400 and b"X-Function-Status" in resp.data
    assert jobs(jobs_client)["jobs"][job]["status"] == "Pending"


def test_auth_on_job_and_logs(jobs_client, httpserver):
    assert jobs_client.post("/job/cowsay", data=b"x").status_code == 401
    assert jobs_client.post("/job/cowsay", data=b"x",
                            headers={"Authorization": "Bearer " + "0" * 64}).status_code == 401
    # the cluster's Basic credentials, as oscar-cli sends them without --token
    job, _ = submit(jobs_client, httpserver, headers=ADMIN)
    assert jobs_client.get("/system/logs/cowsay").status_code == 401
    assert jobs_client.get(f"/system/logs/cowsay/{job}").status_code == 401
    assert jobs_client.delete(f"/system/logs/cowsay/{job}").status_code == 401


def test_openfaas_refusing_the_job_leaves_no_job(jobs_client, httpserver):
    httpserver.expect_oneshot_request("/async-function/cowsay").respond_with_data(
        "nats: connection closed", 500)
    resp = jobs_client.post("/job/cowsay", data=b"x", headers=BEARER)
    assert resp.status_code == 502 and b"nats: connection closed" in resp.data
    assert jobs(jobs_client)["jobs"] == {}
    httpserver.expect_oneshot_request("/async-function/cowsay").respond_with_data(
        "404 page not found", 404)
    resp = jobs_client.post("/job/cowsay", data=b"x", headers=BEARER)
    assert resp.status_code == 502 and b"queue-worker" in resp.data


def test_unknown_service_and_job(jobs_client, httpserver):
    httpserver.expect_request("/system/function/ghost").respond_with_data("", 404)
    assert jobs_client.post("/job/ghost", data=b"x", headers=BEARER).status_code == 404
    assert jobs_client.get("/system/logs/ghost", headers=ADMIN).status_code == 404
    for job in ("cowsay-nope", "..", "a%2Fb"):
        assert jobs_client.get(f"/system/logs/cowsay/{job}", headers=ADMIN).status_code == 404
        assert jobs_client.delete(f"/system/logs/cowsay/{job}",
                                  headers=ADMIN).status_code == 404


def test_delete_succeeded_all_and_one(jobs_client, httpserver):
    done, path = submit(jobs_client, httpserver)
    call_back(jobs_client, path, 200, b"ok")
    failed, path = submit(jobs_client, httpserver)
    call_back(jobs_client, path, 500, b"no")
    pending, _ = submit(jobs_client, httpserver)
    assert jobs_client.delete("/system/logs/cowsay", headers=ADMIN).status_code == 204
    assert set(jobs(jobs_client)["jobs"]) == {failed, pending}
    assert jobs_client.delete(f"/system/logs/cowsay/{failed}", headers=ADMIN).status_code == 204
    assert set(jobs(jobs_client)["jobs"]) == {pending}
    assert jobs_client.delete("/system/logs/cowsay?all=true", headers=ADMIN).status_code == 204
    assert jobs(jobs_client)["jobs"] == {}


def test_paging_follows_job_listing_limit(httpserver, tmp_path):
    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        function_status(SERVICE))
    client = create_app(make_settings(httpserver, JOBS_DIR=str(tmp_path),
                                      JOB_LISTING_LIMIT="2")).test_client()
    made = {submit(client, httpserver)[0] for _ in range(5)}
    seen, page, pages = set(), "", 0
    while True:
        body = jobs(client, page)
        assert len(body["jobs"]) <= 2
        seen |= set(body["jobs"])
        pages += 1
        if "next_page" not in body:
            break
        assert body["remaining_jobs"] == 5 - len(seen)
        page = body["next_page"]
    assert seen == made and pages == 3


def test_finished_jobs_expire_after_ttl_job(httpserver, tmp_path):
    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        function_status(SERVICE))
    client = create_app(make_settings(httpserver, JOBS_DIR=str(tmp_path),
                                      TTL_JOB="1")).test_client()
    done, path = submit(client, httpserver)
    call_back(client, path, 200, b"ok")
    pending, _ = submit(client, httpserver)
    assert set(jobs(client)["jobs"]) == {done, pending}
    time.sleep(1.3)
    assert set(jobs(client)["jobs"]) == {pending}  # a job still waiting does not expire
    assert client.get(f"/system/logs/cowsay/{done}", headers=ADMIN).status_code == 404
    assert not list(tmp_path.glob(f"cowsay/{done}*"))


def test_jobs_survive_a_gateway_restart_on_disk(httpserver, tmp_path):
    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        function_status(SERVICE))
    settings = make_settings(httpserver, JOBS_DIR=str(tmp_path))
    first = create_app(settings).test_client()
    job, path = submit(first, httpserver)
    second = create_app(settings).test_client()  # a new gateway process: nothing in memory
    assert call_back(second, path, 200, b"after restart").status_code == 204
    assert jobs(first)["jobs"][job]["status"] == "Succeeded"
    assert second.get(f"/system/logs/cowsay/{job}", headers=ADMIN).data == b"after restart"


def test_deleting_the_service_deletes_its_jobs(jobs_client, httpserver):
    job, path = submit(jobs_client, httpserver)
    call_back(jobs_client, path, 200, b"ok")
    httpserver.expect_request("/system/functions", method="DELETE").respond_with_data("", 202)
    httpserver.expect_request("/system/secrets", method="DELETE").respond_with_data("", 202)
    assert jobs_client.delete("/system/services/cowsay", headers=ADMIN).status_code == 204
    assert jobs(jobs_client)["jobs"] == {}


@pytest.fixture(scope="module")
def s3():
    with S3Server() as server:
        yield server


def test_jobs_on_minio_are_shared_by_gateway_replicas(httpserver, s3, tmp_path):
    """With MinIO configured the records and logs live in the gateway's bucket: a second
    gateway (another replica, no shared disk) sees and finishes the first one's job."""
    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        function_status(SERVICE))
    env = {**s3.gateway_env(), "JOBS_BUCKET": "gateway-jobs"}
    one = create_app(make_settings(httpserver, JOBS_DIR=str(tmp_path / "one"), **env))
    two = create_app(make_settings(httpserver, JOBS_DIR=str(tmp_path / "two"), **env))
    job, path = submit(one.test_client(), httpserver)
    assert call_back(two.test_client(), path, 200, b"on minio").status_code == 204
    assert jobs(one.test_client())["jobs"][job]["status"] == "Succeeded"
    assert one.test_client().get(f"/system/logs/cowsay/{job}", headers=ADMIN).data == \
        b"on minio"
    keys = sorted(o.object_name for o in s3.client().list_objects(
        "gateway-jobs", prefix="cowsay/"))
    assert keys == [f"cowsay/{job}.{kind}" for kind in ("done", "json", "log")]
    assert not (tmp_path / "one").exists() and not (tmp_path / "two").exists()


def test_a_body_too_large_for_the_queue_goes_through_the_bucket(httpserver, s3, tmp_path):
    """OpenFaaS's NATS takes 1 MB messages: a larger body is kept in the jobs bucket and the
    queue carries where it is; the function reads it there, and it goes when the job ends."""
    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        function_status(SERVICE))
    env = {**s3.gateway_env(), "JOBS_BUCKET": "big-jobs", "JOB_INLINE_LIMIT": "1000"}
    client = create_app(make_settings(httpserver, **env)).test_client()
    big = b"QUJD" * 600  # 2400 bytes of base64
    job, path = submit(client, httpserver, body=big)
    queued = sent(httpserver, "POST", "/async-function/cowsay")[-1]
    assert queued.get_json() == {"oscar-faas-stored-input": {"bucket": "big-jobs",
                                                             "key": f"cowsay/{job}.input"}}
    assert queued.headers["Content-Type"] == "application/json"
    stored = s3.client().get_object("big-jobs", f"cowsay/{job}.input")
    assert stored.read() == big
    stored.close()
    small, _ = submit(client, httpserver, body=b"QUJD")
    assert sent(httpserver, "POST", "/async-function/cowsay")[-1].get_data() == b"QUJD"
    call_back(client, path, 200, b"ok")
    names = [o.object_name for o in s3.client().list_objects("big-jobs", prefix="cowsay/")]
    assert f"cowsay/{job}.input" not in names and f"cowsay/{job}.log" in names


def test_without_minio_a_large_body_travels_inline(httpserver, tmp_path):
    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        function_status(SERVICE))
    client = create_app(make_settings(httpserver, JOBS_DIR=str(tmp_path),
                                      JOB_INLINE_LIMIT="1000", MAX_BODY_SIZE="5000")
                        ).test_client()
    big = b"QUJD" * 600
    submit(client, httpserver, body=big)
    assert sent(httpserver, "POST", "/async-function/cowsay")[-1].get_data() == big
    resp = client.post("/job/cowsay", data=b"QUJD" * 1500, headers=BEARER)
    assert resp.status_code == 413 and b"MAX_BODY_SIZE" in resp.data
    assert len(jobs(client)["jobs"]) == 1


def test_a_long_answer_is_cut_and_still_finishes_the_job(jobs_client, httpserver):
    from oscar_faas.jobstore import MAX_LOG
    job, path = submit(jobs_client, httpserver)
    big = b"x" * (9 * 1024 * 1024)  # over MAX_API_BODY_SIZE (8 MiB) too
    assert call_back(jobs_client, path, 200, big).status_code == 204
    assert jobs(jobs_client)["jobs"][job]["status"] == "Succeeded"
    log = jobs_client.get(f"/system/logs/cowsay/{job}", headers=ADMIN).data
    assert log.startswith(b"x" * MAX_LOG) and log.endswith(b"[cut at 4194304 bytes]\n")


def test_start_and_answer_at_once_on_two_workers_never_lose_the_answer(httpserver, tmp_path):
    """A quick job's start event and answer reach two gateway processes at the same moment:
    whatever the order, the job ends Succeeded (no read-modify-write to lose)."""
    import threading
    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        function_status(SERVICE))
    settings = make_settings(httpserver, JOBS_DIR=str(tmp_path))
    one, two = create_app(settings).test_client(), create_app(settings).test_client()
    for _ in range(20):
        job, path = submit(one, httpserver)
        threads = [threading.Thread(target=lambda: one.post(
                       path, headers={"X-Oscar-Faas-Job-Event": "started"})),
                   threading.Thread(target=lambda: call_back(two, path, 200, b"ok"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert jobs(one)["jobs"][job]["status"] == "Succeeded"
    # a start that comes after the answer changes nothing either
    assert one.post(path, headers={"X-Oscar-Faas-Job-Event": "started"}).status_code == 204
    assert jobs(two)["jobs"][job]["status"] == "Succeeded"
