"""The oscar-faas CLI against a live gateway, and the gateway against a separately started
`oscar-faas provider` with basic auth, reached through OPENFAAS_URL as a cluster would be."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from oscar_faas.serve import free_port
from tests.livegateway import LiveGateway

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
HELLO = REPO / "examples" / "hello" / "hello.yaml"


def cli(gateway, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OSCAR_ENDPOINT": gateway.url, "OSCAR_USERNAME": gateway.user,
           "OSCAR_PASSWORD": gateway.password}
    done = subprocess.run([sys.executable, "-m", "oscar_faas.cli", *args], env=env,
                          capture_output=True, timeout=120)
    if check:
        assert done.returncode == 0, done.stderr.decode()
    return done


def test_apply_run_ls_get_rm(gateway, tmp_path):
    created = cli(gateway, "apply", str(HELLO)).stdout.decode().splitlines()
    assert created[0] == "hello: created" and created[-1].startswith("hello: ready (")
    updated = cli(gateway, "apply", str(HELLO)).stdout.decode().splitlines()
    assert updated[0] == "hello: updated" and updated[-1].startswith("hello: ready (")
    assert cli(gateway, "run", "hello", "--text-input", "world").stdout == b"Hello, world!\n"

    infile, outfile = tmp_path / "name.txt", tmp_path / "greeting.txt"
    infile.write_bytes(b"file")
    cli(gateway, "run", "hello", "--input", str(infile), "--output", str(outfile))
    assert outfile.read_bytes() == b"Hello, file!\n"

    listing = cli(gateway, "ls").stdout.decode().splitlines()
    assert listing[0].split() == ["NAME", "IMAGE", "CPU", "MEMORY", "STATE"]
    assert ["hello", "alpine:3.20", "0.1", "128Mi", "Ready"] in [row.split() for row in listing]
    shown = cli(gateway, "get", "hello").stdout.decode()
    assert "name: hello" in shown and "token: " in shown
    assert cli(gateway, "rm", "hello").stdout == b"hello: removed\n"
    gone = cli(gateway, "get", "hello", check=False)
    assert gone.returncode == 1 and b"404" in gone.stderr


def test_run_with_a_large_file_streams_and_decodes(gateway, tmp_path):
    (tmp_path / "copy.sh").write_text('#!/bin/sh\ncp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/x"\n')
    fdl = tmp_path / "copy.yaml"
    fdl.write_text("functions:\n  oscar:\n  - any-cluster-id:\n      name: copy\n"
                   "      image: alpine\n      script: copy.sh\n      log_level: CRITICAL\n")
    cli(gateway, "apply", str(fdl))
    big, out = tmp_path / "big.bin", tmp_path / "out.bin"
    big.write_bytes(os.urandom(2_500_000))  # under the e2e gateway's MAX_BODY once encoded
    cli(gateway, "run", "copy", "--input", str(big), "--output", str(out))
    assert out.read_bytes() == big.read_bytes()


def test_client_errors_name_the_fix(gateway, tmp_path):
    bad = cli(gateway, "--help", check=False)
    assert b"serve" in bad.stdout and b"apply" in bad.stdout
    missing = cli(gateway, "run", "hello", "--input", str(tmp_path / "nope"), check=False)
    assert missing.returncode == 1 and b"cannot read input file" in missing.stderr
    env = {**os.environ, "OSCAR_ENDPOINT": gateway.url, "OSCAR_PASSWORD": "wrong"}
    denied = subprocess.run([sys.executable, "-m", "oscar_faas.cli", "ls"], env=env,
                            capture_output=True, timeout=60)
    assert denied.returncode == 1 and b"invalid credentials" in denied.stderr
    down = subprocess.run([sys.executable, "-m", "oscar_faas.cli", "ls", "--endpoint",
                           f"http://127.0.0.1:{free_port()}"], capture_output=True, timeout=60)
    assert down.returncode == 1 and b"oscar-faas serve" in down.stderr


def test_apply_names_misspelled_keys_and_still_applies(gateway, tmp_path):
    (tmp_path / "s.sh").write_text("#!/bin/sh\necho hi\n")
    fdl = tmp_path / "typo.yaml"
    fdl.write_text("functions:\n  oscar:\n  - c:\n      name: typo\n      image: alpine\n"
                   "      script: s.sh\n      memroy: 1Gi\n      environment:\n"
                   "        Varaibles: {A: '1'}\n")
    done = cli(gateway, "apply", str(fdl))
    assert done.stdout.startswith(b"typo: created\n")  # then its readiness (apply waits)
    warned = [line for line in done.stderr.decode().splitlines() if "warning" in line]
    assert len(warned) == 2, warned
    assert "unknown key 'memroy' is ignored; did you mean 'memory'?" in warned[0]
    assert "unknown key 'environment.Varaibles' is ignored; did you mean " \
           "'environment.variables'?" in warned[1]
    assert all(line.startswith("oscar-faas: warning: FDL file ") for line in warned)
    # The server ignored them too (clients may send fields it does not know).
    svc = requests.get(f"{gateway.url}/system/services/typo", auth=gateway.auth,
                       timeout=10).json()
    assert svc["memory"] == "256Mi" and svc["environment"]["variables"] == {}
    cli(gateway, "rm", "typo")


def test_run_of_an_unknown_service_says_so(gateway):
    done = cli(gateway, "run", "nope", "--text-input", "x", check=False)
    assert done.returncode == 1
    message = done.stderr.decode().strip()
    assert message.startswith("oscar-faas: service nope not found (404) at "), message
    gone = cli(gateway, "get", "nope", check=False)
    assert gone.returncode == 1
    assert not gone.stderr.decode().strip().endswith("404"), gone.stderr  # a reason follows


@pytest.fixture
def standalone_provider(tmp_path):
    port = free_port()
    env = {**os.environ, "OPENFAAS_USERNAME": "admin", "OPENFAAS_PASSWORD": "pw-123"}
    log = open(tmp_path / "provider.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "oscar_faas.cli", "provider", "--port",
                             str(port), "--data-dir", str(tmp_path / "state")],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if requests.get(url + "/healthz", timeout=1).ok:
                break
        except requests.RequestException:
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


def test_serve_with_openfaas_url_uses_that_gateway(standalone_provider, tmp_path):
    env = {"OPENFAAS_URL": standalone_provider, "OPENFAAS_USERNAME": "admin",
           "OPENFAAS_PASSWORD": "pw-123"}
    (tmp_path / "gw").mkdir()
    with LiveGateway(tmp_path / "gw", env=env) as gateway:
        cli(gateway, "apply", str(HELLO))
        assert cli(gateway, "run", "hello", "-i", "cluster").stdout == b"Hello, cluster!\n"
        info = requests.get(f"{gateway.url}/system/info", auth=gateway.auth, timeout=10).json()
        assert info["serverless_backend"]["name"] == "OpenFaaS"
        # The function lives in that provider, behind its basic auth.
        assert requests.get(f"{standalone_provider}/system/function/hello",
                            timeout=10).status_code == 401
        fn = requests.get(f"{standalone_provider}/system/function/hello",
                          auth=("admin", "pw-123"), timeout=10).json()
        assert fn["envProcess"] == "/oscar/bin/supervisor"
        assert not (tmp_path / "gw" / "data").exists()  # no embedded provider was started
        token = json.loads(cli(gateway, "get", "hello", "--json").stdout)["token"]
    payload = base64.b64encode(b"direct")
    # issue 21: /function is open, as in faas-provider; the function checks its token
    assert requests.post(f"{standalone_provider}/function/hello", data=payload,
                         timeout=30).status_code == 401
    assert requests.post(f"{standalone_provider}/function/hello", data=payload,
                         auth=("admin", "pw-123"), timeout=30).status_code == 401
    resp = requests.post(f"{standalone_provider}/function/hello", data=payload, timeout=30,
                         headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200 and base64.b64decode(resp.content) == b"Hello, direct!\n"


def hello_named(tmp_path, name: str) -> Path:
    """examples/hello under another service name, next to its script."""
    import shutil

    shutil.copy(HELLO.parent / "script.sh", tmp_path / "script.sh")
    fdl = tmp_path / f"{name}.yaml"
    fdl.write_text(HELLO.read_text().replace("name: hello", f"name: {name}"))
    return fdl


def test_get_json_is_the_service_as_json(gateway, tmp_path):
    cli(gateway, "apply", str(hello_named(tmp_path, "hello-json")))
    shown = json.loads(cli(gateway, "get", "hello-json", "--json").stdout)
    api = requests.get(f"{gateway.url}/system/services/hello-json", auth=gateway.auth,
                       timeout=10).json()
    assert shown == api and len(shown["token"]) == 64
    assert shown == yaml.safe_load(cli(gateway, "get", "hello-json").stdout)
    cli(gateway, "rm", "hello-json")


def test_run_token_authenticates_with_the_service_token(gateway, tmp_path):
    cli(gateway, "apply", str(hello_named(tmp_path, "hello-token")))
    token = json.loads(cli(gateway, "get", "hello-token", "--json").stdout)["token"]
    env = {**os.environ, "OSCAR_ENDPOINT": gateway.url, "OSCAR_PASSWORD": "not-the-password"}

    def run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "oscar_faas.cli", "run", "hello-token",
                               "--text-input", "token", *extra], env=env,
                              capture_output=True, timeout=120)

    # The cluster password is wrong, so only the token can make these work.
    first = run("--token", token)
    assert first.stdout == b"Hello, token!\n", first.stderr
    assert run("-t", token).stdout == b"Hello, token!\n"
    wrong = run("--token", "ab" * 32)
    assert wrong.returncode == 1 and b"401" in wrong.stderr
    assert run().returncode == 1
    cli(gateway, "rm", "hello-token")


def test_rm_removes_every_service_named(gateway, tmp_path):
    names = ["rm-one", "rm-two", "rm-three"]
    for name in names:
        cli(gateway, "apply", str(hello_named(tmp_path, name)))
    done = cli(gateway, "rm", "rm-one", "rm-two")
    assert done.stdout == b"rm-one: removed\nrm-two: removed\n"
    listed = [row.split()[0] for row in cli(gateway, "ls").stdout.decode().splitlines()[1:]]
    assert "rm-one" not in listed and "rm-two" not in listed and "rm-three" in listed
    # An unknown name among them: the ones before it go, the error names it.
    failed = cli(gateway, "rm", "rm-three", "rm-ghost", check=False)
    assert failed.returncode == 1 and b"rm-three: removed" in failed.stdout
    assert b"404" in failed.stderr or b"not found" in failed.stderr.lower()
