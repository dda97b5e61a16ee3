"""Jobs with MinIO (a real S3 server, moto, through the minio SDK): a MinIO event body makes the
job read the new object, outputs are uploaded, and the job records live in the gateway's
bucket."""

from __future__ import annotations

import io
import json
import textwrap
import time

import pytest
import requests

from oscar_faas.contract import HEADER_JOB_NAME
from tests.livegateway import LiveGateway
from tests.s3server import S3Server

pytestmark = pytest.mark.slow

SCRIPT = """\
#!/bin/sh
echo "key=$STORAGE_OBJECT_KEY time=$EVENT_TIME"
tr a-z A-Z < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH").up"
"""


@pytest.fixture(scope="module")
def s3():
    with S3Server() as server:
        yield server


@pytest.fixture(scope="module")
def gateway(s3, tmp_path_factory):
    env = {**s3.gateway_env(), "MINIO_TLS_VERIFY": "false"}
    with LiveGateway(tmp_path_factory.mktemp("async-minio-gw"), env=env) as gw:
        yield gw


def minio_event(bucket: str, key: str) -> bytes:
    """MinIO's webhook body (grycap/oscar examples/kserve-isvc-sklearn/output.log), key
    URL-encoded as MinIO sends it."""
    from urllib.parse import quote_plus
    return json.dumps({
        "EventName": "s3:ObjectCreated:Put", "Key": f"{bucket}/{key}",
        "Records": [{"eventVersion": "2.0", "eventSource": "minio:s3", "awsRegion": "",
                     "eventTime": "2026-02-10T14:55:21.674Z",
                     "eventName": "s3:ObjectCreated:Put",
                     "userIdentity": {"principalId": "minio"},
                     "requestParameters": {"principalId": "minio", "region": "",
                                           "sourceIPAddress": "10.244.0.1"},
                     "s3": {"s3SchemaVersion": "1.0", "configurationId": "Config",
                            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                            "object": {"key": quote_plus(key), "size": 5}}}]}).encode()


def finished(gateway, service: str, job: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = requests.get(f"{gateway.url}/system/logs/{service}", auth=gateway.auth,
                            timeout=10).json()["jobs"].get(job, {})
        if info.get("status") in ("Succeeded", "Failed"):
            return info
        time.sleep(0.2)
    raise AssertionError(f"job {job} did not finish")


def test_minio_event_job_reads_the_object_and_writes_outputs(gateway, s3, tmp_path):
    (tmp_path / "script.sh").write_text(SCRIPT)
    fdl = tmp_path / "photos.yaml"
    fdl.write_text(textwrap.dedent("""\
        functions:
          oscar:
          - oscar-cluster:
              name: photos
              image: alpine
              cpu: '0.1'
              log_level: CRITICAL
              script: script.sh
              input:
              - storage_provider: minio.default
                path: photos/in
              output:
              - storage_provider: minio.default
                path: photos/out
        """))
    client = gateway.oscar_python_client()
    assert client.create_service(str(fdl)).status_code == 201
    token = client.get_service("photos").json()["token"]
    s3.client().put_object("photos", "in/my file.txt", io.BytesIO(b"hello"), 5)

    resp = requests.post(f"{gateway.url}/job/photos", data=minio_event("photos", "in/my file.txt"),
                         headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert resp.status_code == 201, resp.text
    job = resp.headers[HEADER_JOB_NAME]
    assert finished(gateway, "photos", job)["status"] == "Succeeded", \
        requests.get(f"{gateway.url}/system/logs/photos/{job}", auth=gateway.auth).text
    out = s3.client().get_object("photos", "out/my file.txt.up")
    assert out.read() == b"HELLO"
    out.close()
    log = requests.get(f"{gateway.url}/system/logs/photos/{job}", auth=gateway.auth,
                       timeout=10).text
    # the log is the script's output: the outputs went to storage
    assert log == "key=in/my file.txt time=2026-02-10T14:55:21.674Z\n"
    # the job's record and log are in the gateway's own bucket
    stored = sorted(o.object_name for o in s3.client().list_objects(
        "oscar-faas-jobs", prefix="photos/"))
    assert stored == [f"photos/{job}.{kind}" for kind in ("done", "json", "log", "started")]

    # an object that is not there: Failed, and the log names it
    resp = requests.post(f"{gateway.url}/job/photos", data=minio_event("photos", "in/gone.txt"),
                         headers={"Authorization": f"Bearer {token}"}, timeout=30)
    job = resp.headers[HEADER_JOB_NAME]
    assert finished(gateway, "photos", job)["status"] == "Failed"
    log = requests.get(f"{gateway.url}/system/logs/photos/{job}", auth=gateway.auth,
                       timeout=10).text
    assert "in/gone.txt" in log and "photos" in log and "NoSuchKey" in log

    # an event without the object's key is the caller's mistake, named
    bad = json.dumps({"Records": [{"eventSource": "minio:s3", "s3": {"bucket": {
        "name": "photos"}}}]}).encode()
    sync = requests.post(f"{gateway.url}/run/photos", data=bad, timeout=30,
                         headers={"Authorization": f"Bearer {token}"})
    assert sync.status_code == 400 and "Records[0].s3.object.key" in sync.text


def test_a_large_job_input_goes_through_the_bucket(gateway, s3, tmp_path):
    """Over JOB_INLINE_LIMIT (512 KiB) the body waits in the gateway's bucket, the function
    reads it there: the script sees the whole decoded input."""
    (tmp_path / "size.sh").write_text('#!/bin/sh\nwc -c < "$INPUT_FILE_PATH"\n')
    fdl = tmp_path / "sizer.yaml"
    fdl.write_text(textwrap.dedent("""\
        functions:
          oscar:
          - oscar-cluster:
              name: sizer
              image: alpine
              cpu: '0.1'
              log_level: CRITICAL
              script: size.sh
        """))
    client = gateway.oscar_python_client()
    assert client.create_service(str(fdl)).status_code == 201
    data = bytes(range(256)) * 4000  # 1 MB, 1.3 MB of base64
    infile = tmp_path / "big.bin"
    infile.write_bytes(data)
    resp = client.run_service("sizer", input=str(infile), async_call=True)
    job = resp.headers[HEADER_JOB_NAME]
    assert finished(gateway, "sizer", job)["status"] == "Succeeded"
    log = requests.get(f"{gateway.url}/system/logs/sizer/{job}", auth=gateway.auth,
                       timeout=10).text
    assert log.strip() == str(len(data))
    left = [o.object_name for o in s3.client().list_objects("oscar-faas-jobs",
                                                            prefix="sizer/")]
    assert sorted(left) == [f"sizer/{job}.{kind}"  # the input is gone
                            for kind in ("done", "json", "log", "started")]
