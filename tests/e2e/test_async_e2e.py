"""Asynchronous invocations end to end on the embedded default: oscar-python's async calls and
oscar-cli-shaped requests through a real gateway, the embedded provider's queue on disk, the
function's runtime and /bin/sh scripts."""

from __future__ import annotations

import base64
import os
import re
import signal
import time
from pathlib import Path

import pytest
import requests

from oscar_faas.contract import HEADER_JOB_NAME
from tests.livegateway import LiveGateway

from .test_sync_e2e import create

pytestmark = pytest.mark.slow

#: OSCAR's job name: the service name, "-", a UUID4.
JOB = re.compile(r"-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def wait_status(client, service: str, job: str, wanted: set[str], timeout: float = 60) -> dict:
    """Poll oscar-python's ``list_jobs`` until ``job`` reaches one of ``wanted``."""
    deadline = time.monotonic() + timeout
    info: dict = {}
    while time.monotonic() < deadline:
        jobs = client.list_jobs(service).json()["jobs"]
        info = jobs.get(job, {})
        if info.get("status") in wanted:
            return info
        time.sleep(0.2)
    raise AssertionError(f"job {job} still {info} after {timeout} s")


def test_oscar_python_async_lifecycle(gateway, tmp_path):
    client = gateway.oscar_python_client()
    create(gateway, tmp_path, "asyncupper", """\
        #!/bin/sh
        echo "processing $(cat "$INPUT_FILE_PATH")"
        tr a-z A-Z < "$INPUT_FILE_PATH"
        """)
    resp = client.run_service("asyncupper", input="hello jobs", async_call=True)
    assert resp.status_code == 201 and resp.text == ""
    job = resp.headers[HEADER_JOB_NAME]
    assert job.startswith("asyncupper-") and JOB.search(job)
    assert resp.headers["Location"] == f"/system/logs/asyncupper/{job}"

    info = wait_status(client, "asyncupper", job, {"Succeeded", "Failed"})
    assert info["status"] == "Succeeded", client.get_job_logs("asyncupper", job).text
    for key in ("creation_time", "start_time", "finish_time"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", info[key])
    assert info["creation_time"] <= info["start_time"] <= info["finish_time"]

    log = client.get_job_logs("asyncupper", job)
    assert log.status_code == 200
    assert log.text == "processing hello jobs\nHELLO JOBS"
    stamped = requests.get(f"{gateway.url}/system/logs/asyncupper/{job}?timestamps=true",
                           auth=gateway.auth, timeout=10).text
    assert [line.split(" ", 1)[1] for line in stamped.splitlines()] == \
        ["processing hello jobs", "HELLO JOBS"]
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z ", stamped)

    assert client.remove_job("asyncupper", job).status_code == 204
    assert job not in client.list_jobs("asyncupper").json()["jobs"]
    gone = requests.get(f"{gateway.url}/system/logs/asyncupper/{job}", auth=gateway.auth,
                        timeout=10)
    assert gone.status_code == 404 and job in gone.text


def test_failing_script_is_failed_with_its_log(gateway, tmp_path):
    client = gateway.oscar_python_client()
    token = create(gateway, tmp_path, "asyncfail", """\
        #!/bin/sh
        echo "cannot do it" >&2
        exit 3
        """)
    resp = client.run_service("asyncfail", input="x", async_call=True, token=token)
    job = resp.headers[HEADER_JOB_NAME]
    assert wait_status(client, "asyncfail", job, {"Succeeded", "Failed"})["status"] == "Failed"
    log = client.get_job_logs("asyncfail", job).text
    assert "cannot do it" in log and "exit status 3" in log
    from .test_cli_e2e import cli
    followed = cli(gateway, "jobs", "asyncfail", job, "--follow", check=False)
    assert followed.returncode == 1 and b"cannot do it" in followed.stdout
    # remove_all_jobs deletes succeeded jobs only, as OSCAR's; ?all=true the rest
    assert client.remove_all_jobs("asyncfail").status_code == 204
    assert job in client.list_jobs("asyncfail").json()["jobs"]
    assert requests.delete(f"{gateway.url}/system/logs/asyncfail?all=true",
                           auth=gateway.auth, timeout=10).status_code == 204
    assert client.list_jobs("asyncfail").json()["jobs"] == {}


def test_oscar_cli_shaped_requests(gateway, tmp_path):
    """oscar-cli's ``service job`` (base64 body, Basic auth when no --token), ``service logs
    list`` (``?page=``, follows next_page), ``logs get``, ``logs delete``."""
    create(gateway, tmp_path, "asynccli", """\
        #!/bin/sh
        cat "$INPUT_FILE_PATH"
        """)
    names = []
    for i in range(3):
        resp = requests.post(f"{gateway.url}/job/asynccli", auth=gateway.auth, timeout=30,
                             data=base64.b64encode(f"input {i}".encode()))
        assert resp.status_code == 201, resp.text
        names.append(resp.headers[HEADER_JOB_NAME])
    wrong = requests.post(f"{gateway.url}/job/asynccli", timeout=30, data=b"eA==",
                          headers={"Authorization": "Bearer " + "0" * 64})
    assert wrong.status_code == 401
    assert requests.post(f"{gateway.url}/job/nosuchservice", auth=gateway.auth,
                         timeout=30).status_code == 404

    client = gateway.oscar_python_client()
    for name in names:
        wait_status(client, "asynccli", name, {"Succeeded"})
    listed = requests.get(f"{gateway.url}/system/logs/asynccli?page=", auth=gateway.auth,
                          timeout=10).json()
    assert set(listed["jobs"]) == set(names) and "next_page" not in listed
    for i, name in enumerate(names):
        text = requests.get(f"{gateway.url}/system/logs/asynccli/{name}", auth=gateway.auth,
                            timeout=10).text
        assert text == f"input {i}"
    assert requests.get(f"{gateway.url}/system/logs/asynccli", timeout=10).status_code == 401
    assert requests.delete(f"{gateway.url}/system/logs/asynccli/{names[0]}",
                           auth=gateway.auth, timeout=10).status_code == 204
    assert requests.delete(f"{gateway.url}/system/logs/asynccli/{names[0]}",
                           auth=gateway.auth, timeout=10).status_code == 404
    # deleting the service deletes its jobs
    assert client.remove_service("asynccli").status_code == 204
    create(gateway, tmp_path, "asynccli", "#!/bin/sh\ntrue\n")
    assert client.list_jobs("asynccli").json()["jobs"] == {}


def _provider_pid(gw) -> int:
    """The embedded provider ``serve`` started for ``gw`` (its data dir names it)."""
    data_dir = str(gw.workdir / "data")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"oscar_faas.provider" in argv and data_dir.encode() in argv:
            return int(proc.name)
    raise AssertionError("no provider process found")


def _lengthy_jobs(gw, tmp_path, name: str) -> tuple[object, list[str]]:
    """A one-at-a-time service whose jobs take a second; three of them submitted, the first
    one seen Running."""
    client = gw.oscar_python_client()
    create(gw, tmp_path, name, """\
        #!/bin/sh
        sleep 1
        echo "done $(cat "$INPUT_FILE_PATH")"
        """)
    jobs = [client.run_service(name, input=f"in{i}", async_call=True).headers[HEADER_JOB_NAME]
            for i in range(3)]
    wait_status(client, name, jobs[0], {"Running"}, timeout=30)
    return client, jobs


def _after_restart(client, name: str, jobs: list[str]) -> None:
    """The running job is Failed (not run twice), the queued ones ran afterwards."""
    final = {j: wait_status(client, name, j, {"Succeeded", "Failed"}, timeout=60)["status"]
             for j in jobs}
    assert final == {jobs[0]: "Failed", jobs[1]: "Succeeded", jobs[2]: "Succeeded"}
    assert "not run again" in client.get_job_logs(name, jobs[0]).text
    assert client.get_job_logs(name, jobs[2]).text == "done in2\n"


@pytest.fixture
def one_at_a_time(tmp_path):
    (tmp_path / "gw").mkdir()
    with LiveGateway(tmp_path / "gw", env={"WATCHDOG_MAX_INFLIGHT": "1",
                                           "PROVIDER_RESTART_DELAY": "0.2"}) as gw:
        yield gw


def test_jobs_survive_a_provider_crash(one_at_a_time, tmp_path):
    client, jobs = _lengthy_jobs(one_at_a_time, tmp_path, "crashy")
    os.kill(_provider_pid(one_at_a_time), signal.SIGKILL)  # serve starts it again
    _after_restart(client, "crashy", jobs)


def test_jobs_survive_a_restart_of_serve(one_at_a_time, tmp_path):
    """Gateway and provider stopped together; the same data dir and port started again."""
    client, jobs = _lengthy_jobs(one_at_a_time, tmp_path, "restarty")
    one_at_a_time.__exit__()
    with one_at_a_time:
        _after_restart(client, "restarty", jobs)


def test_run_with_prefer_respond_async(gateway, tmp_path):
    """RFC 7240: the synchronous route, told not to wait, answers 202 and where the log is."""
    token = create(gateway, tmp_path, "preferring", """\
        #!/bin/sh
        sleep 0.3
        echo "late $(cat "$INPUT_FILE_PATH")"
        """)
    resp = requests.post(f"{gateway.url}/run/preferring", timeout=30,
                         data=base64.b64encode(b"answer"),
                         headers={"Authorization": f"Bearer {token}",
                                  "Prefer": "respond-async, wait=0"})
    assert resp.status_code == 202, resp.text
    job = resp.headers[HEADER_JOB_NAME]
    assert resp.text == f"{job}\n" and resp.headers["Preference-Applied"] == "respond-async"
    assert resp.headers["Location"] == f"/system/logs/preferring/{job}"
    client = gateway.oscar_python_client()
    assert wait_status(client, "preferring", job, {"Succeeded", "Failed"})["status"] == \
        "Succeeded"
    log = requests.get(gateway.url + resp.headers["Location"], auth=gateway.auth, timeout=10)
    assert log.text == "late answer\n"
    # without the preference /run waits and answers, as always
    sync = requests.post(f"{gateway.url}/run/preferring", data=base64.b64encode(b"now"),
                         headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert sync.status_code == 200 and sync.text == "late now\n"
    refused = requests.post(f"{gateway.url}/run/preferring", data=b"eA==", timeout=30,
                            headers={"Prefer": "respond-async"})
    assert refused.status_code == 401


def test_cli_job_and_jobs(gateway, tmp_path):
    from .test_cli_e2e import cli
    token = create(gateway, tmp_path, "clijobs", """\
        #!/bin/sh
        sleep 0.3
        echo "got $(cat "$INPUT_FILE_PATH")"
        """)
    (tmp_path / "in.txt").write_text("a file")
    job = cli(gateway, "job", "clijobs", "--text-input", "some text").stdout.decode().strip()
    assert JOB.search(job) and job.startswith("clijobs-")
    job2 = cli(gateway, "job", "clijobs", "-f", str(tmp_path / "in.txt"), "--token",
               token).stdout.decode().strip()
    # --follow waits for the end, then prints the log
    assert cli(gateway, "jobs", "clijobs", job, "--follow").stdout == b"got some text\n"
    assert cli(gateway, "jobs", "clijobs", job2, "--follow").stdout == b"got a file\n"
    stamped = cli(gateway, "jobs", "clijobs", job, "--timestamps").stdout.decode()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z got some text\n", stamped)
    table = cli(gateway, "jobs", "clijobs").stdout.decode().splitlines()
    assert table[0].split() == ["NAME", "STATUS", "CREATED", "STARTED", "FINISHED"]
    assert {line.split()[0]: line.split()[1] for line in table[1:]} == \
        {job: "Succeeded", job2: "Succeeded"}
    cli(gateway, "jobs", "clijobs", job, "--delete")
    assert job not in cli(gateway, "jobs", "clijobs").stdout.decode()
    cli(gateway, "jobs", "clijobs", "--delete")  # the succeeded ones
    assert cli(gateway, "jobs", "clijobs").stdout.decode().splitlines()[1:] == []
    missing = cli(gateway, "jobs", "clijobs", job, check=False)
    assert missing.returncode == 1 and b"404" in missing.stderr
    bad = cli(gateway, "job", "clijobs", "-f", str(tmp_path / "nope"), check=False)
    assert bad.returncode == 1 and b"cannot read input file" in bad.stderr
