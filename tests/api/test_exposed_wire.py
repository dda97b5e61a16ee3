"""``/system/services/<name>/exposed/...`` through the live gateway front, to a real runtime
in expose mode keeping a real server (tests/exposed_app.py).

The function's env is the gateway's own translation of the service; OpenFaaS is played by a
tiny ASGI pass-through (function status from the annotation, ``/function/<name>/<path>`` to the
runtime, WebSockets bridged), as an OpenFaaS gateway passes them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from oscar_faas.api import create_app
from oscar_faas.api.asgi import GatewayASGI
from oscar_faas.config import Settings
from oscar_faas.contract import SERVICE_ANNOTATION
from oscar_faas.model import Service
from oscar_faas.serve import free_port
from oscar_faas.translate import service_to_deployment
from oscar_faas.upstream import Upstream
from oscar_faas.wsproxy import bridge, client_headers

from ..asgiserver import ThreadedServer
from ..runtime.conftest import Runtime, wait_for

TOKEN = "cd" * 32
SERVER = f'exec "{sys.executable}" -m tests.exposed_app "$EXPOSED_PORT"\n'


class FakeOpenFaaS:
    """Function statuses, and ``/function/<name>/...`` passed to that function's runtime."""

    def __init__(self) -> None:
        self.statuses: dict[str, dict[str, Any]] = {}
        self.runtimes: dict[str, str] = {}
        self.paths: list[str] = []
        self.not_ready: set[str] = set()

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                await send({"type": msg["type"] + ".complete"})
                if msg["type"] == "lifespan.shutdown":
                    return
        raw = scope["raw_path"].decode()
        query = scope["query_string"].decode()
        if raw.startswith("/system/function/"):
            status = self.statuses.get(raw.rsplit("/", 1)[1])
            body = json.dumps(status).encode() if status else b"not found"
            await send({"type": "http.response.start", "status": 200 if status else 404,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        name, _, rest = raw.removeprefix("/function/").partition("/")
        target = "/" + rest + ("?" + query if query else "")
        self.paths.append(target)
        host, port = self.runtimes[name].removeprefix("http://").split(":")
        if scope["type"] == "websocket":
            await bridge(scope, receive, send, host=host, port=int(port), path=target,
                         headers=client_headers(scope))
            return
        if name in self.not_ready:  # as a provider with no ready replica
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"x-openfaas-internal", b"proxy")]})
            await send({"type": "http.response.body", "body": b"No endpoints available"})
            return
        body = b""
        more = True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        up = Upstream(host, int(port), 10, 60)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]
                   if k not in (b"content-length", b"transfer-encoding", b"connection")}
        resp = await up.request(scope["method"], target, headers, body)
        data = b"" if scope["method"] == "HEAD" else await resp.read()
        resp.close()
        up.close()
        await send({"type": "http.response.start", "status": resp.status,
                    "headers": [(k.lower(), v) for k, v in resp.raw_headers
                                if k.lower() not in (b"transfer-encoding", b"connection")]})
        await send({"type": "http.response.body", "body": data})


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Any]:
    """``deploy(expose=..., **env)`` starts the service's runtime from the gateway's own
    translation; yields an object with ``gw`` (gateway URL) and ``deploy``."""
    fake = FakeOpenFaaS()
    runtimes: list[Runtime] = []
    with ThreadedServer(fake) as of_url:
        settings = Settings.from_env({"OPENFAAS_URL": of_url, "OSCAR_USERNAME": "oscar",
                                      "OSCAR_PASSWORD": "s3cret", "RUN_READY_WAIT": "1",
                                      "SERVICE_CACHE_TTL": "0"})

        class Stack:
            gw = ""
            openfaas = fake

            @staticmethod
            def deploy(name: str = "web", ready: bool = True, script: str = SERVER,
                       **expose: Any) -> Runtime:
                port = free_port()
                service = Service.from_dict({
                    "name": name, "image": "python", "script": script,
                    "expose": {"api_port": port, "health_path": "/health", **expose},
                }).normalized(token=TOKEN)
                service.validate()
                fd = service_to_deployment(service, settings, None)
                env = {**fd["envVars"], "PATH": "/usr/bin:/bin", "EXPOSED_PORT": str(port),
                       "TMPDIR": str(tmp_path)}
                rt = Runtime(env, tmp_path / f"{name}-{len(runtimes)}.log")
                runtimes.append(rt)
                if ready:
                    rt.wait_ready()
                fake.statuses[name] = {
                    "name": name, "image": "python", "replicas": 1, "availableReplicas": 1,
                    "annotations": fd["annotations"]}
                fake.runtimes[name] = rt.url
                return rt

        with ThreadedServer(GatewayASGI(create_app(settings), threads=4)) as gw_url:
            Stack.gw = gw_url
            try:
                yield Stack
            finally:
                for rt in runtimes:
                    rt.stop()


def test_get_with_query_reaches_the_server_without_the_prefix(stack: Any) -> None:
    stack.deploy()
    res = requests.get(stack.gw + "/system/services/web/exposed/info?x=1&y=a%20b",
                       headers={"X-Test": "t"}, timeout=30)
    assert res.status_code == 200, res.text
    doc = res.json()
    assert (doc["method"], doc["path"], doc["query"]) == ("GET", "/info", "x=1&y=a%20b")
    assert doc["x_test"] == "t"
    assert doc["host"] == stack.gw.removeprefix("http://")  # the client's Host
    assert doc["base_path"] == "/system/services/web/exposed"
    root = requests.get(stack.gw + "/system/services/web/exposed", timeout=30)
    assert root.json()["path"] == "/"
    assert stack.openfaas.paths[-1] == "/"


def test_rewrite_target_keeps_the_full_path(stack: Any) -> None:
    stack.deploy(rewrite_target=True)  # the probe then asks /system/services/web/exposed/health
    res = requests.get(stack.gw + "/system/services/web/exposed/a/info?q=1", timeout=30)
    assert res.json()["path"] == "/system/services/web/exposed/a/info"
    assert res.json()["query"] == "q=1"


def test_post_bodies_stream_both_ways(stack: Any) -> None:
    stack.deploy()
    body = bytes(range(256)) * 2048
    res = requests.post(stack.gw + "/system/services/web/exposed/echo", data=body,
                        headers={"Content-Type": "application/x-thing"}, timeout=30)
    assert (res.status_code, res.headers["Content-Type"]) == (200, "application/x-thing")
    assert res.content == body
    big = requests.get(stack.gw + "/system/services/web/exposed/big?n=2500000", timeout=30)
    assert len(big.content) == 2500000


def ws_url(stack: Any, path: str) -> str:
    return stack.gw.replace("http://", "ws://") + path


def test_websocket_echo_through_the_gateway(stack: Any) -> None:
    stack.deploy()

    async def talk() -> tuple[Any, ...]:
        async with connect(ws_url(stack, "/system/services/web/exposed/ws"),
                           subprotocols=["p1"]) as ws:
            await ws.send("ping")
            text = await ws.recv()
            await ws.send(b"\x01\x02")
            return ws.subprotocol, text, await ws.recv()

    assert asyncio.run(talk()) == ("p1", "v1: ping", b"\x01\x02")


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_set_auth_needs_the_service_name_and_token(stack: Any) -> None:
    stack.deploy(set_auth=True)
    url = stack.gw + "/system/services/web/exposed/info"
    for headers in ({}, basic("web", "wrong"), basic("oscar", "s3cret"), basic("other", TOKEN)):
        res = requests.get(url, headers=headers, timeout=30)
        assert res.status_code == 401, headers
        assert res.headers["WWW-Authenticate"].startswith("Basic realm=")
        assert "user web, password the service's token" in res.text
    ok = requests.get(url, headers=basic("web", TOKEN), timeout=30)
    assert ok.status_code == 200
    assert ok.json()["authorization"] == basic("web", TOKEN)["Authorization"]

    async def ws(headers: dict[str, str]) -> int:
        try:
            async with connect(ws_url(stack, "/system/services/web/exposed/ws"),
                               additional_headers=headers) as conn:
                await conn.send("x")
                assert await conn.recv() == "v1: x"
                return 101
        except InvalidStatus as err:
            return err.response.status_code

    assert asyncio.run(ws(basic("web", "wrong"))) == 401
    assert asyncio.run(ws(basic("web", TOKEN))) == 101


def test_unknown_unexposed_and_run_on_exposed(stack: Any) -> None:
    stack.deploy()
    ghost = requests.get(stack.gw + "/system/services/ghost/exposed/", timeout=30)
    assert ghost.status_code == 404 and "service ghost not found" in ghost.text
    plain = Service.from_dict({"name": "plain", "image": "a", "script": "b"}).normalized(
        token=TOKEN)
    stack.openfaas.statuses["plain"] = {"name": "plain", "annotations": {
        SERVICE_ANNOTATION: json.dumps(plain.to_dict())}}
    res = requests.get(stack.gw + "/system/services/plain/exposed/", timeout=30)
    assert res.status_code == 404 and "not exposed" in res.text
    run = requests.post(stack.gw + "/run/web", data=b"aGk=",
                        headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert run.status_code == 400
    assert "/system/services/web/exposed/" in run.text
    # the management API still sees the service
    got = requests.get(stack.gw + "/system/services/web", auth=("oscar", "s3cret"), timeout=30)
    assert got.status_code == 200 and got.json()["expose"]["health_path"] == "/health"


def test_a_server_never_healthy_is_a_clear_503(stack: Any) -> None:
    rt = stack.deploy(ready=False, script="export EXPOSED_SICK=1\n" + SERVER)
    wait_for(lambda: "with 500" in requests.get(rt.url + "/_/health", timeout=30).text,
             "the runtime's first probe")
    res = requests.get(stack.gw + "/system/services/web/exposed/info", timeout=30)
    assert res.status_code == 503
    assert "exposed service web is not ready" in res.text
    assert "GET /health on port" in res.text
    # a provider that holds the request back (no ready replica): the gateway retries within
    # RUN_READY_WAIT, then says which service and which check
    stack.openfaas.not_ready.add("web")
    res = requests.get(stack.gw + "/system/services/web/exposed/info", timeout=30)
    assert res.status_code == 503
    assert "exposed service web is not ready after 1 s" in res.text
    assert "GET /health on port" in res.text and "No endpoints available" in res.text
