"""Storage events and job answers through the classic supervisor (in-process and as the
watchdog's subprocess), with a real moto S3 server: a MinIO notification body makes the input
the new object; a job's answer is the script's output, its files going to storage only."""

from __future__ import annotations

import io
import json
from pathlib import Path

from tests.s3server import S3Server

from .conftest import Runner, b64, make_env
from .test_upload import minio_entry, objects, service_config, write_secret

SCRIPT = ('echo "key=$STORAGE_OBJECT_KEY time=$EVENT_TIME"\n'
          'tr a-z A-Z < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"\n')


def event(bucket: str, key: str) -> bytes:
    return json.dumps({"Records": [{
        "eventSource": "minio:s3", "eventTime": "2026-02-10T14:55:21.674Z",
        "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}]}).encode()


def test_minio_event_input_and_job_answer(run: Runner, s3: S3Server, bucket: str,
                                          tmp_path: Path) -> None:
    s3.client().put_object(bucket, "in/a b.txt", io.BytesIO(b"hello"), 5)
    outputs = [{"storage_provider": "minio.default", "path": f"{bucket}/out"}]
    env = make_env(SCRIPT, service_config(s3, outputs), tmp_path / "work",
                   **write_secret(tmp_path, {"minio": {"default": minio_entry(s3)}}))
    res = run(event(bucket, "in%2Fa+b.txt"), env)  # URL-encoded, as MinIO sends keys
    assert res.rc == 0, res.stderr
    assert objects(s3, bucket)["out/a b.txt"] == b"HELLO"
    assert res.stdout.strip() == b64(b"HELLO").encode()  # a /run answer: the output file
    job = run(event(bucket, "in%2Fa+b.txt"), {**env, "Http_X_Oscar_Faas_Answer": "log"})
    assert job.rc == 0 and job.stdout == b"key=in/a b.txt time=2026-02-10T14:55:21.674Z\n"


def test_other_json_is_kept_as_the_input(run: Runner, tmp_path: Path) -> None:
    body = json.dumps({"Records": [{"eventSource": "aws:sqs"}]}).encode()
    res = run(body, make_env('cat "$INPUT_FILE_PATH"', {"log_level": "INFO"}, tmp_path / "w"))
    assert res.rc == 0 and res.stdout == body


def test_stored_job_input_is_read_and_decoded(run: Runner, s3: S3Server, bucket: str,
                                              tmp_path: Path) -> None:
    """A body the gateway kept in its bucket (too large for the queue) is decoded as if it
    had come inline."""
    s3.client().put_object(bucket, "svc/job.input", io.BytesIO(b64(b"big input").encode()), 12)
    env = make_env('cat "$INPUT_FILE_PATH"', service_config(s3, []), tmp_path / "work",
                   **write_secret(tmp_path, {"minio": {"default": minio_entry(s3)}}))
    ref = json.dumps({"oscar-faas-stored-input": {"bucket": bucket, "key": "svc/job.input"}})
    res = run(ref, env)
    assert res.rc == 0, res.stderr
    assert res.stdout == b"big input"
    missing = run(json.dumps({"oscar-faas-stored-input": {"bucket": bucket, "key": "nope"}}),
                  env)
    assert missing.rc != 0 and b"nope" in missing.stdout + missing.stderr.encode()
