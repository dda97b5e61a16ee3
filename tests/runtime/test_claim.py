"""Issue 25: a queued job runs once even when OpenFaaS's queue delivers it twice.

A real runtime; pytest-httpserver plays the gateway's callback URL (what it answers to a
claim is what the test asserts on). A delivery is what nats-queue-worker sends the function:
the original request's headers, ``X-Call-Id`` and ``X-Callback-Url`` among them.
"""

from __future__ import annotations

from pathlib import Path

from werkzeug import Response as WResponse

from tests.supervisor.conftest import make_env

from .conftest import RuntimeFactory

#: Counts its runs in a file, then answers.
COUNTING = 'echo run >> "$RUNS"\necho ran\n'


def delivery(job: str, callback: str) -> dict[str, str]:
    return {"X-Call-Id": job, "X-Callback-Url": callback, "X-Oscar-Faas-Answer": "log",
            "Content-Type": "text/plain"}


def test_a_redelivery_is_refused_and_runs_nothing(runtime: RuntimeFactory, tmp_path: Path,
                                                   httpserver) -> None:
    runs = tmp_path / "runs"
    claims: list[str] = []

    def gateway(request):  # the first claim wins, as the gateway's store decides
        claims.append(request.headers.get("X-Oscar-Faas-Job-Event", ""))
        return WResponse(status=204 if len(claims) == 1 else 409)

    httpserver.expect_request("/job-callback/svc/job-1/sig", method="POST"
                              ).respond_with_handler(gateway)
    rt = runtime(make_env(COUNTING, tmpdir=tmp_path / "tmp", RUNS=str(runs)))
    callback = httpserver.url_for("/job-callback/svc/job-1/sig")
    first = rt.post(b"aGk=", headers=delivery("job-1", callback))
    assert first.status_code == 200 and "ran" in first.text
    second = rt.post(b"aGk=", headers=delivery("job-1", callback))
    assert second.status_code == 409 and second.headers["X-Oscar-Faas-Duplicate"] == "1"
    assert "redelivery" in second.text
    assert runs.read_text() == "run\n"  # the script ran once for two deliveries
    assert claims == ["claim", "claim"]
    assert "job job-1: already delivered" in rt.log()


def test_a_gateway_out_of_reach_does_not_lose_the_job(runtime: RuntimeFactory,
                                                      tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    rt = runtime(make_env(COUNTING, tmpdir=tmp_path / "tmp", RUNS=str(runs)))
    resp = rt.post(b"aGk=", headers=delivery("job-2", "http://127.0.0.1:9/job-callback/x"))
    assert resp.status_code == 200 and runs.read_text() == "run\n"
    assert "running it anyway" in rt.log()


def test_calls_that_are_not_queued_jobs_claim_nothing(runtime: RuntimeFactory, tmp_path: Path,
                                                      httpserver) -> None:
    """A synchronous call, or the embedded provider's (which keeps X-Callback-Url to itself),
    runs without asking anyone."""
    runs = tmp_path / "runs"
    rt = runtime(make_env(COUNTING, tmpdir=tmp_path / "tmp", RUNS=str(runs)))
    assert rt.post(b"aGk=", headers={"X-Call-Id": "sync-1"}).status_code == 200
    only_callback = {"X-Call-Id": "j", "X-Callback-Url": httpserver.url_for("/cb")}
    assert rt.post(b"aGk=", headers=only_callback).status_code == 200
    assert runs.read_text() == "run\nrun\n"
    assert httpserver.log == []
