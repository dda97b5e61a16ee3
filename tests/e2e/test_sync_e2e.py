"""Synchronous invocation end to end through real processes: gunicorn gateway, embedded
provider, supervisor, /bin/sh scripts; driven by oscar-python, oscar-cli-shaped and
curl-shaped requests."""

from __future__ import annotations

import base64
import io
import json
import textwrap
import zipfile
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from .conftest import MAX_BODY

pytestmark = pytest.mark.slow


def fdl(tmp_path, name: str, script: str, cluster: str = "oscar-cluster", **fields) -> str:
    (tmp_path / f"{name}.sh").write_text(textwrap.dedent(script))
    extra = "".join(f"      {k}: {v}\n" for k, v in fields.items())
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"functions:\n  oscar:\n  - {cluster}:\n      name: {name}\n      image: alpine\n      cpu: '0.1'\n"
        f"      log_level: CRITICAL\n      script: {name}.sh\n{extra}")
    return str(path)


def create(gateway, tmp_path, name: str, script: str, **fields) -> str:
    """Create a service with oscar-python; return its token."""
    client = gateway.oscar_python_client()
    client.create_service(fdl(tmp_path, name, script, **fields))
    return client.get_service(name).json()["token"]


def run(gateway, name: str, body: bytes, token: str, **headers) -> requests.Response:
    return requests.post(f"{gateway.url}/run/{name}", data=body, timeout=60,
                         headers={"Authorization": f"Bearer {token}", **headers})


def test_oscar_python_lifecycle_and_file_run(gateway, tmp_path):
    client = gateway.oscar_python_client()
    path = fdl(tmp_path, "upper", """\
        #!/bin/sh
        tr a-z A-Z < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/out.txt"
        """)
    assert client.create_service(path).status_code == 201
    svc = client.get_service("upper").json()
    assert svc["name"] == "upper" and len(svc["token"]) == 64
    assert "upper" in [s["name"] for s in client.list_services().json()]

    infile, outfile = tmp_path / "in.txt", tmp_path / "out.txt"
    infile.write_text("hello oscar\n")
    resp = client.run_service("upper", input=str(infile), output=str(outfile))
    assert resp.status_code == 200
    assert outfile.read_text() == "HELLO OSCAR\n"

    assert client.update_service("upper", path).status_code == 204
    assert client.get_service("upper").json()["token"] == svc["token"]
    assert client.remove_service("upper").status_code == 204
    assert requests.get(f"{gateway.url}/system/services/upper", auth=gateway.auth,
                        timeout=10).status_code == 404


def test_oscar_cli_shaped_call(gateway, tmp_path):
    """Full Go struct on create; base64 body, chunked, no Content-Type, Basic auth on /run
    (current oscar-cli without --token)."""
    body = json.loads((__import__("pathlib").Path(__file__).parent.parent / "data"
                       / "oscar_cli_cowsay.json").read_text())
    body.update(name="cli-echo", image="alpine",
                script="#!/bin/sh\ncat \"$INPUT_FILE_PATH\" > \"$TMP_OUTPUT_DIR/r.json\"\n")
    resp = requests.post(f"{gateway.url}/system/services", json=body, auth=gateway.auth,
                         timeout=20)
    assert resp.status_code == 201, resp.text
    payload = b'{"message": "Hi there"}'

    def chunks():
        encoded = base64.b64encode(payload)
        for i in range(0, len(encoded), 8):
            yield encoded[i:i + 8]

    resp = requests.post(f"{gateway.url}/run/cli-echo", data=chunks(), auth=gateway.auth,
                         timeout=60)
    assert resp.status_code == 200, resp.text
    assert base64.b64decode(resp.content) == payload


def test_curl_shaped_raw_json_is_stored_as_sent(gateway, tmp_path):
    token = create(gateway, tmp_path, "jsonin", """\
        #!/bin/sh
        cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/in.json"
        """)
    raw = b'{"message":  "Hi there", "n": [1, 2]}'
    resp = run(gateway, "jsonin", raw, token,
               **{"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 200
    assert base64.b64decode(resp.content) == raw
    # The answer's type describes the answer (base64 text), not the request's form encoding.
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_no_output_file_returns_script_text(gateway, tmp_path):
    token = create(gateway, tmp_path, "talk", """\
        #!/bin/sh
        echo "said: $(cat "$INPUT_FILE_PATH")"
        """)
    resp = run(gateway, "talk", base64.b64encode(b"hi"), token)
    assert resp.status_code == 200 and resp.text.strip() == "said: hi"


def test_several_outputs_come_back_as_a_zip(gateway, tmp_path):
    token = create(gateway, tmp_path, "multi", """\
        #!/bin/sh
        mkdir -p "$TMP_OUTPUT_DIR/sub"
        echo one > "$TMP_OUTPUT_DIR/a.txt"
        echo two > "$TMP_OUTPUT_DIR/sub/b.txt"
        """)
    resp = run(gateway, "multi", base64.b64encode(b"x"), token)
    assert resp.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(base64.b64decode(resp.content)))
    assert sorted(archive.namelist()) == ["a.txt", "sub/b.txt"]
    assert archive.read("sub/b.txt") == b"two\n"


def test_failing_script_is_an_http_error_with_its_output(gateway, tmp_path):
    token = create(gateway, tmp_path, "fails", """\
        #!/bin/sh
        echo "model not found" >&2
        exit 3
        """)
    resp = run(gateway, "fails", base64.b64encode(b"x"), token)
    assert resp.status_code == 500
    assert "model not found" in resp.text


def test_exec_timeout_is_408(gateway, tmp_path):
    token = create(gateway, tmp_path, "sleepy", """\
        #!/bin/sh
        sleep 30
        """, environment="{Variables: {exec_timeout: '1'}}")
    resp = run(gateway, "sleepy", base64.b64encode(b"x"), token)
    assert resp.status_code == 408


def test_twenty_concurrent_calls(gateway, tmp_path):
    token = create(gateway, tmp_path, "par", """\
        #!/bin/sh
        sleep 0.2
        cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/o"
        """)
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(
            lambda i: run(gateway, "par", base64.b64encode(f"call {i}".encode()), token),
            range(20)))
    assert [r.status_code for r in results] == [200] * 20
    assert [base64.b64decode(r.content) for r in results] == [
        f"call {i}".encode() for i in range(20)]


def test_auth_and_unknown_service(gateway, tmp_path):
    token = create(gateway, tmp_path, "guarded", "#!/bin/sh\necho ok\n")
    assert run(gateway, "guarded", b"eA==", "0" * 64).status_code == 401
    assert requests.post(f"{gateway.url}/run/guarded", data=b"eA==",
                         timeout=10).status_code == 401
    assert run(gateway, "no-such-service", b"eA==", token).status_code == 404


def test_body_over_the_limit_is_413(gateway, tmp_path):
    token = create(gateway, tmp_path, "limited", "#!/bin/sh\necho ok\n")
    resp = run(gateway, "limited", b"A" * (MAX_BODY + 4), token)
    assert resp.status_code == 413 and str(MAX_BODY) in resp.text


@pytest.mark.skipif(__import__("shutil").which("curl") is None, reason="needs curl")
def test_documented_curl_pipeline(gateway, tmp_path):
    """OSCAR's documented call, run by a real shell and a real curl:
    base64 FILE | curl -X POST -H 'Authorization: Bearer TOKEN' --data @- URL | base64 -d"""
    import os
    import subprocess

    token = create(gateway, tmp_path, "rev", """\
        #!/bin/sh
        rev < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/reversed.txt"
        """)
    infile = tmp_path / "input.txt"
    infile.write_bytes(b"stressed\n" * 40_000)  # 360 kB: base64 wraps its lines
    pipeline = (f'base64 "{infile}" | curl -sS -X POST -H "Authorization: Bearer {token}" '
                f'--data @- {gateway.url}/run/rev | base64 -d')
    done = subprocess.run(["sh", "-c", pipeline], capture_output=True, timeout=60,
                          env={"PATH": os.environ["PATH"]})
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"desserts\n" * 40_000
