"""Outputs written to MinIO by real invocations: gateway + embedded provider + supervisor,
with a real S3 server process (moto) in MinIO's place, reached through the minio SDK."""

from __future__ import annotations

import base64
import io
import textwrap

import pytest
import requests

from tests.livegateway import LiveGateway
from tests.s3server import S3Server

pytestmark = pytest.mark.slow

SCRIPT = """\
#!/bin/sh
cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/result.json"
echo "log line" > "$TMP_OUTPUT_DIR/run.log"
"""


@pytest.fixture(scope="module")
def s3():
    with S3Server() as server:
        yield server


@pytest.fixture(scope="module")
def gateway(s3, tmp_path_factory):
    env = {**s3.gateway_env(), "MINIO_TLS_VERIFY": "false"}
    with LiveGateway(tmp_path_factory.mktemp("minio-gw"), env=env) as gw:
        yield gw


def create(gateway, tmp_path, name: str, outputs: str, providers: str = "") -> str:
    (tmp_path / "script.sh").write_text(SCRIPT)
    fdl = tmp_path / f"{name}.yaml"
    fdl.write_text(textwrap.dedent(f"""\
        functions:
          oscar:
          - oscar-cluster:
              name: {name}
              image: alpine
              cpu: '0.1'
              log_level: CRITICAL
              script: script.sh
              output:
        """) + textwrap.indent(textwrap.dedent(outputs) + providers, " " * 6))
    client = gateway.oscar_python_client()
    resp = client.create_service(str(fdl))
    assert resp.status_code == 201, resp.text
    return client.get_service(name).json()["token"]


def invoke(gateway, name, token, payload=b'{"label": "cat"}'):
    return requests.post(f"{gateway.url}/run/{name}", data=payload, timeout=60,
                         headers={"Authorization": f"Bearer {token}"})


def keys(s3, bucket, prefix=""):
    return sorted(o.object_name for o in s3.client().list_objects(bucket, prefix=prefix,
                                                                   recursive=True))


def test_sync_run_writes_its_outputs_with_suffix_filter(gateway, s3, tmp_path):
    token = create(gateway, tmp_path, "writer", """\
        - storage_provider: minio.default
          path: results/json
          suffix: [".json"]
        """)
    assert keys(s3, "results") == ["json/"]  # bucket and folder made on create
    resp = invoke(gateway, "writer", token)
    assert resp.status_code == 200, resp.text
    assert base64.b64decode(resp.content)  # the sync answer is still returned (a zip here)
    assert keys(s3, "results", "json/") == ["json/", "json/result.json"]
    obj = s3.client().get_object("results", "json/result.json")
    assert obj.read() == b'{"label": "cat"}'


def test_prefix_filter_and_several_outputs(gateway, s3, tmp_path):
    token = create(gateway, tmp_path, "fanout", """\
        - storage_provider: minio
          path: fan/logs
          prefix: ["run"]
        - storage_provider: minio.default
          path: fan/all
        """)
    assert invoke(gateway, "fanout", token).status_code == 200
    assert keys(s3, "fan", "logs/") == ["logs/", "logs/run.log"]
    assert keys(s3, "fan", "all/") == ["all/", "all/result.json", "all/run.log"]


def test_wrong_credentials_are_a_clear_error(gateway, s3, tmp_path):
    s3.client().make_bucket("elsewhere")
    # Inside the service: oscar-python does not merge an FDL's top-level storage_providers.
    providers = textwrap.dedent(f"""\
        storage_providers:
          minio:
            other:
              endpoint: {s3.endpoint}
              verify: false
              region: us-east-1
              access_key: {s3.access_key}
              secret_key: not-the-secret
        """)
    token = create(gateway, tmp_path, "badcreds", """\
        - storage_provider: minio.other
          path: elsewhere/out
        """, providers)
    resp = invoke(gateway, "badcreds", token)
    assert resp.status_code == 500
    assert "elsewhere" in resp.text and "SignatureDoesNotMatch" in resp.text
    assert keys(s3, "elsewhere") == []


def test_no_key_in_get_annotation_or_env(gateway, s3, tmp_path):
    create(gateway, tmp_path, "secretive", """\
        - storage_provider: minio.default
          path: hush/out
        """)
    got = requests.get(f"{gateway.url}/system/services/secretive", auth=gateway.auth,
                       timeout=10)
    listed = requests.get(f"{gateway.url}/system/services", auth=gateway.auth, timeout=10)
    for text in (got.text, listed.text):
        assert s3.secret_key not in text and s3.access_key not in text
    assert got.json()["storage_providers"]["minio"]["default"]["secret_key"] == "hidden"
    # The provider's stored FunctionDeployments (env vars and annotations) hold no key
    # either: only the secret files do.
    state = (gateway.workdir / "data" / "functions.json").read_text()
    assert "secretive" in state
    assert s3.secret_key not in state and s3.access_key not in state


def test_oscar_python_storage_client_sees_the_output(gateway, s3, tmp_path):
    token = create(gateway, tmp_path, "visible", """\
        - storage_provider: minio.default
          path: shown/out
          suffix: [".json"]
        """)
    assert invoke(gateway, "visible", token).status_code == 200
    storage = gateway.oscar_python_client().create_storage_client("visible")
    listing = storage.list_files_from_path("minio.default", "shown/out")
    assert "out/result.json" in [o["Key"] for o in listing["Contents"]]


def test_cli_rm_purge_deletes_the_buckets_with_their_contents(gateway, s3, tmp_path):
    from tests.e2e.test_cli_e2e import cli

    for name in ("kept", "purged"):
        create(gateway, tmp_path, name, f"""\
            - storage_provider: minio.default
              path: {name}-bucket/out
            """)
        s3.client().put_object(f"{name}-bucket", "out/data.txt", io.BytesIO(b"1234"), 4)
    assert cli(gateway, "rm", "kept").stdout == b"kept: removed\n"
    assert keys(s3, "kept-bucket") == ["out/", "out/data.txt"]
    done = cli(gateway, "rm", "--purge", "purged")
    assert done.stdout == b"purged: removed (buckets purged)\n"
    assert not s3.client().bucket_exists("purged-bucket")
    assert keys(s3, "kept-bucket") == ["out/", "out/data.txt"]
