"""Outputs to S3: a real moto server with signature checks, real minio SDK uploads."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from oscar_faas.serve import free_port
from tests.s3server import S3Server

from .conftest import Runner, b64, make_env, run_inprocess

FILES_SCRIPT = (
    'printf "result" > "$TMP_OUTPUT_DIR/result.txt"\n'
    'printf "log" > "$TMP_OUTPUT_DIR/result.log"\n'
    'printf "other" > "$TMP_OUTPUT_DIR/other.txt"\n'
    'mkdir -p "$TMP_OUTPUT_DIR/sub"\n'
    'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/sub/input.bin"\n'
)


def minio_entry(s3: S3Server, *, keys: bool = True, secret_key: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"endpoint": s3.endpoint, "verify": True, "region": s3.region}
    if keys:
        entry.update(access_key=s3.access_key, secret_key=secret_key or s3.secret_key)
    return entry


def write_secret(tmp_path: Path, doc: dict[str, Any]) -> dict[str, str]:
    """Write the storage secret as the provider does; return the env that points at it."""
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "oscar-storage-svc").write_text(json.dumps(doc))
    return {"OSCAR_SECRETS_DIR": str(secrets), "OSCAR_STORAGE_SECRET": "oscar-storage-svc"}


def service_config(s3: S3Server, outputs: list[dict[str, Any]]) -> dict[str, Any]:
    """FUNCTION_CONFIG as the gateway writes it: endpoint known, keys masked."""
    masked = dict(minio_entry(s3, keys=False), access_key="hidden", secret_key="hidden")
    return {"log_level": "INFO", "output": outputs, "storage_providers": {"minio": {"default": masked}}}


def objects(s3: S3Server, bucket: str) -> dict[str, bytes]:
    client = s3.client()
    return {
        obj.object_name: client.get_object(bucket, obj.object_name).read()
        for obj in client.list_objects(bucket, recursive=True)
    }


def test_upload_all_files_and_still_answer(run: Runner, s3: S3Server, bucket: str, tmp_path: Path) -> None:
    outputs = [{"storage_provider": "minio.default", "path": f"{bucket}/out/deep/"}]
    env = make_env(FILES_SCRIPT, service_config(s3, outputs), tmp_path / "work",
                   **write_secret(tmp_path, {"minio": {"default": minio_entry(s3)}}))
    res = run(b64(b"\x00in"), env)
    assert res.rc == 0, res.stdout
    assert objects(s3, bucket) == {
        "out/deep/result.txt": b"result",
        "out/deep/result.log": b"log",
        "out/deep/other.txt": b"other",
        "out/deep/sub/input.bin": b"\x00in",
    }
    assert res.stdout.count(b"\n") == 1 and base64.b64decode(res.stdout[:-1])[:2] == b"PK"  # the zip
    assert s3.client().stat_object(bucket, "out/deep/result.txt").content_type == "text/plain"


def test_bucket_only_path_and_single_file_response(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    outputs = [{"storage_provider": "minio", "path": bucket}]
    env = make_env('printf hi > "$TMP_OUTPUT_DIR/a.txt"', service_config(s3, outputs), tmp_path / "w",
                   **write_secret(tmp_path, {"minio": {"default": minio_entry(s3)}}))
    res = run_inprocess(b"", env)
    assert (res.rc, res.stdout) == (0, b"aGk=\n")
    assert objects(s3, bucket) == {"a.txt": b"hi"}


@pytest.mark.parametrize(
    "filters, expected",
    [
        ({"suffix": [".txt"]}, {"result.txt", "other.txt"}),
        ({"prefix": ["result"]}, {"result.txt", "result.log"}),
        ({"prefix": ["result", "sub/"], "suffix": [".txt", ".bin"]}, {"result.txt", "sub/input.bin"}),
        ({"suffix": [".none"]}, set()),
    ],
)
def test_prefix_and_suffix_filters(
    s3: S3Server, bucket: str, tmp_path: Path, filters: dict[str, list[str]], expected: set[str]
) -> None:
    outputs = [dict({"storage_provider": "minio.default", "path": f"{bucket}/f"}, **filters)]
    env = make_env(FILES_SCRIPT, service_config(s3, outputs), tmp_path / "w",
                   **write_secret(tmp_path, {"minio": {"default": minio_entry(s3)}}))
    assert run_inprocess(b"aGk=", env).rc == 0
    assert set(objects(s3, bucket)) == {f"f/{name}" for name in expected}


def test_several_outputs_and_providers(s3: S3Server, tmp_path: Path) -> None:
    """minio.default, a second minio id and an s3 id, each with its own bucket and filter."""
    names = [f"multi-{i}-{uuid.uuid4().hex[:8]}" for i in range(3)]
    for name in names:
        s3.client().make_bucket(name)
    outputs = [
        {"storage_provider": "minio.default", "path": f"{names[0]}/txt", "suffix": [".txt"]},
        {"storage_provider": "minio.other", "path": names[1], "prefix": ["sub/"]},
        {"storage_provider": "s3.aws", "path": f"{names[2]}/logs", "suffix": [".log"]},
    ]
    secret = {
        "minio": {"default": minio_entry(s3), "other": minio_entry(s3)},
        "s3": {"aws": dict(minio_entry(s3))},  # an endpoint in the secret overrides AWS
    }
    env = make_env(FILES_SCRIPT, service_config(s3, outputs), tmp_path / "w", **write_secret(tmp_path, secret))
    res = run_inprocess(b"aGk=", env)
    assert res.rc == 0, res.stdout
    assert set(objects(s3, names[0])) == {"txt/result.txt", "txt/other.txt"}
    assert objects(s3, names[1]) == {"sub/input.bin": b"hi"}
    assert objects(s3, names[2]) == {"logs/result.log": b"log"}


def test_keys_in_the_service_config_are_used_without_secret(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    """An OSCAR v3.3-style config with real keys inline still works."""
    config = {"output": [{"storage_provider": "minio.default", "path": bucket}],
              "storage_providers": {"minio": {"default": minio_entry(s3)}}}
    env = make_env('printf x > "$TMP_OUTPUT_DIR/x.txt"', config, tmp_path / "w")
    assert run_inprocess(b"", env).rc == 0
    assert objects(s3, bucket) == {"x.txt": b"x"}


def test_wrong_credentials_name_the_bucket(run: Runner, s3: S3Server, bucket: str, tmp_path: Path) -> None:
    outputs = [{"storage_provider": "minio.default", "path": f"{bucket}/out"}]
    secret = {"minio": {"default": minio_entry(s3, secret_key="not-the-key")}}
    env = make_env(FILES_SCRIPT, service_config(s3, outputs), tmp_path / "w", **write_secret(tmp_path, secret))
    res = run(b"aGk=", env)
    assert res.rc == 1
    line = res.stdout.decode()
    assert line.count("\n") == 1 and line.endswith("\n")
    assert f"bucket '{bucket}'" in line and "SignatureDoesNotMatch" in line
    assert objects(s3, bucket) == {}


def test_missing_bucket_names_it(run: Runner, s3: S3Server, tmp_path: Path) -> None:
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    outputs = [{"storage_provider": "minio.default", "path": f"{missing}/out"}]
    env = make_env(FILES_SCRIPT, service_config(s3, outputs), tmp_path / "w",
                   **write_secret(tmp_path, {"minio": {"default": minio_entry(s3)}}))
    res = run(b"aGk=", env)
    assert res.rc == 1
    assert f"bucket '{missing}'" in res.stdout.decode() and "NoSuchBucket" in res.stdout.decode()
    assert res.stdout.count(b"\n") == 1


def test_one_broken_output_does_not_hide_the_others(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    outputs = [{"storage_provider": "minio", "path": missing}, {"storage_provider": "minio", "path": bucket}]
    env = make_env(FILES_SCRIPT, service_config(s3, outputs), tmp_path / "w",
                   **write_secret(tmp_path, {"minio": {"default": minio_entry(s3)}}))
    res = run_inprocess(b"aGk=", env)
    assert res.rc == 1 and missing.encode() in res.stdout
    assert len(objects(s3, bucket)) == 4


def test_missing_credentials_fail_before_the_script(run: Runner, s3: S3Server, bucket: str, tmp_path: Path) -> None:
    marker = tmp_path / "script-ran"
    outputs = [{"storage_provider": "minio.default", "path": bucket}]
    env = make_env(f'touch "{marker}"', service_config(s3, outputs), tmp_path / "w")  # keys "hidden", no secret
    res = run(b"aGk=", env)
    assert res.rc == 1
    line = res.stdout.decode()
    assert "no credentials" in line and "'minio.default'" in line and f"bucket '{bucket}'" in line
    assert not marker.exists()


def test_named_secret_file_missing(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    outputs = [{"storage_provider": "minio.default", "path": bucket}]
    env = make_env("true", service_config(s3, outputs), tmp_path / "w",
                   OSCAR_SECRETS_DIR=str(tmp_path), OSCAR_STORAGE_SECRET="nope")
    res = run_inprocess(b"", env)
    assert res.rc == 1 and b"cannot read storage secret" in res.stdout


def test_unsupported_provider_type(tmp_path: Path) -> None:
    env = make_env("true", {"output": [{"storage_provider": "onedata.x", "path": "b"}]}, tmp_path)
    res = run_inprocess(b"", env)
    assert res.rc == 1 and b"'onedata' is not supported" in res.stdout


def test_unreachable_endpoint(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # a port nobody listens on
    secret = {"minio": {"default": dict(minio_entry(s3), endpoint=dead)}}
    env = make_env(FILES_SCRIPT, service_config(s3, [{"storage_provider": "minio", "path": bucket}]),
                   tmp_path / "w", **write_secret(tmp_path, secret))
    res = run_inprocess(b"aGk=", env)
    assert res.rc == 1
    assert f"bucket '{bucket}'".encode() in res.stdout and b"cannot reach" in res.stdout
    assert dead.encode() in res.stdout
