"""Issue 21: every way of reaching a function asks for the same thing.

``oscar-faas serve`` (gunicorn + the embedded provider, a runtime per function). An OSCAR
service answers only calls that carry its token, whichever hop they came through: the
gateway's ``/run``, the provider's ``/function/<name>`` (open, as faas-provider's is, so the
real OpenFaaS gateway and ``faas-cli invoke`` work against it) and the runtime's own loopback
port, which any local process can find. A plain function (what faas-cli deploys) stays open,
as in OpenFaaS; an exposed service keeps OSCAR's ``set_auth`` rule on every hop.
"""

from __future__ import annotations

import re
import textwrap
import time
from pathlib import Path

import pytest
import requests

from oscar_faas.serve import free_port
from tests.functionpython import function_python
from tests.livegateway import LiveGateway
from tests.supervisor.conftest import REPO

from .test_serve_e2e import provider_credentials, provider_of

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SCRIPT = 'cat "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/out.txt"\n'


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    with LiveGateway(tmp_path_factory.mktemp("caller"), env={"RUN_READY_WAIT": "30"}) as g:
        yield g


def runtime_url(gw: LiveGateway, name: str, timeout: float = 60.0) -> str:
    """The loopback URL of ``name``'s runtime, as the provider logged it (what a local
    process finds with ``ss -ltn`` too)."""
    pattern = re.compile(rf"{re.escape(name)}: runtime pid \d+ listening on (http://\S+)")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pattern.findall(gw.log())
        if found:
            return found[-1]
        time.sleep(0.2)
    raise AssertionError(f"no runtime of {name} in the provider's log:\n{gw.log()}")


def create(gw: LiveGateway, service: dict) -> str:
    resp = requests.post(gw.url + "/system/services", json=service, auth=gw.auth, timeout=60)
    assert resp.status_code == 201, resp.text
    return requests.get(f"{gw.url}/system/services/{service['name']}", auth=gw.auth,
                        timeout=60).json()["token"]


def until_ok(call, what: str, timeout: float = 60.0) -> requests.Response:
    deadline = time.monotonic() + timeout
    while True:
        resp = call()
        if resp.status_code == 200 or time.monotonic() > deadline:
            assert resp.status_code == 200, f"{what}: {resp.status_code} {resp.text}"
            return resp
        time.sleep(0.2)


def test_an_oscar_service_asks_for_its_token_on_every_hop(gw: LiveGateway) -> None:
    token = create(gw, {"name": "guarded", "image": "busybox", "script": SCRIPT,
                        "log_level": "CRITICAL"})
    bearer = {"Authorization": f"Bearer {token}"}
    _, _, provider = provider_of(gw)
    function = f"{provider}/function/guarded"
    runtime = runtime_url(gw, "guarded")
    payload = b"only for its owner"

    # with the token: 200 through the gateway, the provider and the runtime's own port
    run = until_ok(lambda: requests.post(f"{gw.url}/run/guarded", data=b"b25seSBmb3IgaXRzIG93bmVy",
                                         headers=bearer, timeout=60), "run with the token")
    import base64
    assert base64.b64decode(run.text) == payload
    for url in (function, runtime + "/"):
        ok = requests.post(url, data=base64.b64encode(payload), headers=bearer, timeout=60)
        assert ok.status_code == 200, (url, ok.text)
        assert base64.b64decode(ok.text) == payload

    # without it, or with anything else: 401 on every hop, the script never runs
    wrong = [{}, {"Authorization": "Bearer " + "0" * 64},
             {"Authorization": requests.auth._basic_auth_str(*provider_credentials(gw))},
             {"Authorization": requests.auth._basic_auth_str(*gw.auth)}]
    for url in (function, runtime + "/", runtime + "/any/path"):
        for headers in wrong:
            refused = requests.post(url, data=base64.b64encode(payload), headers=headers,
                                    timeout=60)
            assert refused.status_code == 401, (url, headers, refused.text)
            assert "token" in refused.text and payload not in refused.content
            assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    # probes stay open: platforms call them without credentials
    assert requests.get(runtime + "/_/health", timeout=10).status_code == 200
    # the gateway still takes the cluster's Basic credentials on /run (oscar-cli)
    assert requests.post(f"{gw.url}/run/guarded", data=base64.b64encode(payload),
                         auth=gw.auth, timeout=60).status_code == 200


def test_a_new_token_counts_from_the_next_call(gw: LiveGateway) -> None:
    """The token reaches the runtime as a secret, read again when it changes."""
    import base64
    import json

    old = create(gw, {"name": "rotated", "image": "busybox", "script": SCRIPT})
    _, _, provider = provider_of(gw)
    function = f"{provider}/function/rotated"
    until_ok(lambda: requests.post(function, data=b"aGk=",
                                   headers={"Authorization": f"Bearer {old}"}, timeout=60),
             "the old token")
    new = "9" * 64
    put = requests.put(f"{provider}/system/secrets", auth=provider_credentials(gw), timeout=60,
                       json={"name": "oscar-storage-rotated",
                             "value": json.dumps({"token": new})})
    assert put.status_code in (200, 202), put.text
    assert requests.post(function, data=b"aGk=", headers={"Authorization": f"Bearer {old}"},
                         timeout=60).status_code == 401
    resp = requests.post(function, data=b"aGk=", headers={"Authorization": f"Bearer {new}"},
                         timeout=60)
    assert resp.status_code == 200 and base64.b64decode(resp.text) == b"hi"


def test_a_plain_function_stays_open(gw: LiveGateway) -> None:
    """What faas-cli deploys is no OSCAR service: open, as in OpenFaaS."""
    _, _, provider = provider_of(gw)
    deployed = requests.post(f"{provider}/system/functions", auth=provider_credentials(gw),
                             json={"service": "plain-echo", "image": "ignored",
                                   "envProcess": "cat"}, timeout=60)
    assert deployed.status_code == 202, deployed.text
    resp = until_ok(lambda: requests.post(f"{provider}/function/plain-echo", data=b"open",
                                          timeout=60), "the plain function")
    assert resp.text == "open"


def test_exposed_services_keep_set_auth_on_every_hop(gw: LiveGateway, tmp_path: Path) -> None:
    _, _, provider = provider_of(gw)
    tokens = {}
    for name, set_auth in (("locked-api", True), ("open-api", False)):
        port = free_port()
        tokens[name] = create(gw, {
            "name": name, "image": "python", "cpu": "0.5",
            "script": textwrap.dedent(f"""\
                #!/bin/sh
                exec "{function_python()}" -m tests.exposed_app {port}
                """),
            "environment": {"variables": {"EXPOSED_TAG": name, "PYTHONPATH": str(REPO)}},
            "expose": {"api_port": port, "set_auth": set_auth}})
    locked = f"{provider}/function/locked-api/info"
    until_ok(lambda: requests.get(locked, auth=("locked-api", tokens["locked-api"]),
                                  timeout=60), "the locked server")
    for auth in (None, ("locked-api", "wrong"), ("open-api", tokens["locked-api"])):
        refused = requests.get(locked, auth=auth, timeout=60)
        assert refused.status_code == 401 and "Basic" in refused.headers["WWW-Authenticate"]
    runtime = runtime_url(gw, "locked-api")
    assert requests.get(runtime + "/info", timeout=60).status_code == 401
    opened = until_ok(lambda: requests.get(f"{provider}/function/open-api/info", timeout=60),
                      "the open server")
    assert opened.json()["tag"] == "open-api"


HUNTER = r'''
import base64, json, os, urllib.request
ports = set()
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        lines = open(table).read().splitlines()[1:]
    except OSError:
        continue
    for line in lines:
        local, state = line.split()[1], line.split()[3]
        if state == "0A":  # LISTEN
            ports.add(int(local.rsplit(":", 1)[1], 16))
report = {}
for port in sorted(ports):
    for path in ("/", "/function/victim"):
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST",
                                     data=base64.b64encode(b"steal"))
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                report[f"{port}{path}"] = [resp.status, resp.read(4096).decode("latin-1")]
        except urllib.error.HTTPError as err:
            report[f"{port}{path}"] = [err.code, ""]
        except Exception as err:
            report[f"{port}{path}"] = [0, type(err).__name__]
open(os.environ["TMP_OUTPUT_DIR"] + "/report.json", "w").write(json.dumps(report))
'''


def test_a_hostile_service_cannot_run_another_through_its_port(gw: LiveGateway) -> None:
    """What the attack round did: list the listening ports, call each (the runtimes, the
    provider), hoping to run the victim with its secrets. Every call without the victim's
    token is refused; its script never runs."""
    import base64
    import json

    marker = "victim-secret-output"
    victim = create(gw, {"name": "victim", "image": "busybox",
                         "script": f'echo {marker} > "$TMP_OUTPUT_DIR/out.txt"\n'})
    until_ok(lambda: requests.post(f"{gw.url}/run/victim", data=b"aGk=", timeout=60,
                                   headers={"Authorization": f"Bearer {victim}"}), "victim")
    runtime = runtime_url(gw, "victim")
    hunter = create(gw, {"name": "hunter", "image": "python",
                         "script": f'"{function_python()}" - <<\'EOF\'\n{HUNTER}\nEOF\n'})
    resp = until_ok(lambda: requests.post(f"{gw.url}/run/hunter", data=b"aGk=", timeout=120,
                                          headers={"Authorization": f"Bearer {hunter}"}),
                    "hunter")
    report = json.loads(base64.b64decode(resp.text))
    port = runtime.rsplit(":", 1)[1]
    assert report[f"{port}/"][0] == 401, report  # found it, and was refused
    assert marker not in json.dumps(report)
    assert not any(status == 200 and base64.b64encode(marker.encode()).decode()[:12] in body
                   for status, body in report.values())
