"""Outputs uploaded to S3 (a real moto server with signature checks) through the runtime,
from a script and from a warm worker."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests.s3server import S3Server
from tests.supervisor.conftest import b64, make_env
from tests.supervisor.test_upload import minio_entry, objects, service_config, write_secret

from .conftest import RuntimeFactory
from .test_workers import COPY_TO_OUTPUT, WORKER


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


@pytest.fixture
def bucket(s3: S3Server) -> str:
    name = f"out-{uuid.uuid4().hex[:12]}"
    s3.client().make_bucket(name)
    return name


@pytest.mark.parametrize("warm", [False, True], ids=["script", "worker"])
def test_output_is_uploaded_and_answered(runtime: RuntimeFactory, s3: S3Server, bucket: str,
                                         tmp_path: Path, warm: bool) -> None:
    outputs = [{"storage_provider": "minio.default", "path": f"{bucket}/results"}]
    extra = {"OSCAR_WORKER": WORKER} if warm else {}
    env = make_env(COPY_TO_OUTPUT, service_config(s3, outputs), tmp_path / "tmp",
                   **write_secret(tmp_path, {"minio": {"default": minio_entry(s3)}}), **extra)
    rt = runtime(env)
    res = rt.post(b64(b"\x00payload"))
    assert (res.status_code, res.content) == (200, b64(b"\x00payload").encode() + b"\n")
    assert objects(s3, bucket) == {"results/result.bin": b"\x00payload"}


def test_failed_upload_is_a_500_naming_the_bucket(runtime: RuntimeFactory, s3: S3Server,
                                                  tmp_path: Path) -> None:
    outputs = [{"storage_provider": "minio.default", "path": "no-such-bucket"}]
    env = make_env(COPY_TO_OUTPUT, service_config(s3, outputs), tmp_path / "tmp",
                   **write_secret(tmp_path, {"minio": {"default": minio_entry(s3)}}))
    rt = runtime(env)
    res = rt.post(b64("x"))
    assert res.status_code == 500
    assert "bucket 'no-such-bucket'" in res.text
