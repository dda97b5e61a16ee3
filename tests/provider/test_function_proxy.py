"""``FunctionProxy`` (``/function/<name>``) served by a real uvicorn, over a real
``LocalBackend`` (host launcher) and real runtimes, over real HTTP: bodies both ways (small,
chunked, 100 MB streamed), headers, early answers, a runtime that starts or dies, WebSocket."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from websockets.asyncio.client import connect

from oscar_faas.contract import SUPERVISOR_PROCESS
from oscar_faas.metrics import ProviderMetrics
from oscar_faas.provider.backend import LocalBackend
from oscar_faas.provider.http.function_proxy import FunctionProxy
from oscar_faas.provider.state.types import FunctionDeployment
from oscar_faas.serve import free_port
from tests.asgiserver import ThreadedServer
from tests.functionpython import function_python

REPO = Path(__file__).resolve().parents[2]
WAIT = 30.0


class _App:
    """The part of the provider's app this test needs: ``/function/...`` only."""

    def __init__(self, proxy: FunctionProxy) -> None:
        self.proxy = proxy

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    await self.proxy.aclose()
                    return
        elif scope["type"] == "http":
            await self.proxy.http(scope, receive, send)
        else:
            await self.proxy.websocket(scope, receive, send)


class Provider:
    def __init__(self, backend: LocalBackend, url: str, metrics: ProviderMetrics) -> None:
        self.backend, self.url, self.metrics = backend, url, metrics

    def deploy(self, name: str, script: str, update: bool = False, **env: str) -> None:
        (self.backend.update if update else self.backend.deploy)(FunctionDeployment(
            service=name, image="ignored", env_process=SUPERVISOR_PROCESS,
            env_vars={"SCRIPT": base64.b64encode(script.encode()).decode(),
                      "LOG_LEVEL": "INFO", **env}))

    def expose(self, name: str, **env: str) -> None:
        port = free_port()
        self.deploy(name, f'exec "{function_python()}" -m tests.exposed_app {port}\n',
                    OSCAR_EXPOSE_PORT=str(port), OSCAR_EXPOSE_HEALTH_PATH="/health",
                    PYTHONPATH=str(REPO), EXPOSED_TAG="t", **env)

    def wait_ready(self, name: str) -> None:
        deadline = time.monotonic() + WAIT
        while not self.backend.runtimes.ready(name):
            assert time.monotonic() < deadline, f"{name} never got ready"
            time.sleep(0.02)

    def call(self, name: str, path: str = "", method: str = "POST", **kw: Any
             ) -> requests.Response:
        kw.setdefault("timeout", 60)
        return requests.request(method, f"{self.url}/function/{name}{path}", **kw)


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    backend = LocalBackend(tmp_path_factory.mktemp("fproxy") / "data", env=dict(os.environ))
    backend.load()
    try:
        metrics = ProviderMetrics(backend.function_load, "openfaas-fn")
        with ThreadedServer(_App(FunctionProxy(backend, metrics))) as url:
            yield Provider(backend, url, metrics)
    finally:
        backend.close()


@pytest.fixture(scope="module")
def exposed(provider: Provider) -> str:
    provider.expose("fp-exposed")
    provider.wait_ready("fp-exposed")
    return "fp-exposed"


def test_small_and_chunked_bodies_headers_and_methods(provider: Provider, exposed: str) -> None:
    small = provider.call(exposed, "/x/echo", data=b"hello", headers={"Content-Type": "a/b"})
    assert (small.status_code, small.content, small.headers["Content-Type"]) == (200, b"hello",
                                                                                "a/b")
    for header in ("X-Duration-Seconds", "X-Call-Id", "X-Start-Time"):
        assert header in small.headers
    chunked = provider.call(exposed, "/x/echo", data=iter([b"one ", b"two"]))
    assert chunked.content == b"one two"
    info = provider.call(exposed, "/a%2Fb/info?x=1", method="GET", headers={"X-Test": "yes"})
    doc = info.json()
    assert (doc["raw_path"], doc["query"], doc["x_test"]) == ("/a%2Fb/info", "x=1", "yes")
    head = provider.call(exposed, "/info", method="HEAD")
    assert head.status_code == 200 and head.content == b""
    assert provider.call(exposed, "/info", method="PROPFIND").json()["method"] == "PROPFIND"
    refused = provider.call(exposed, "/info", method="CONNECT")
    assert refused.status_code == 501 and "tunnel" in refused.text
    assert provider.call("nope").status_code == 404
    wrong_ns = provider.call(exposed + ".other-ns", "/info", method="GET")
    assert wrong_ns.status_code == 404 and wrong_ns.headers["X-OpenFaaS-Internal"] == "proxy"


@pytest.mark.slow
def test_100mb_streams_both_ways(provider: Provider, exposed: str) -> None:
    size, block = 100 * 1024 * 1024, bytes(range(256)) * 256
    sent = hashlib.sha256()

    def body() -> Iterator[bytes]:
        for _ in range(size // len(block)):
            sent.update(block)
            yield block

    received, got = hashlib.sha256(), 0
    with provider.call(exposed, "/x/echo", data=body(), stream=True, timeout=300) as resp:
        assert resp.status_code == 200
        for chunk in resp.iter_content(1 << 20):
            received.update(chunk)
            got += len(chunk)
    assert got == size and received.hexdigest() == sent.hexdigest()
    with provider.call(exposed, f"/big?n={size}", method="GET", stream=True,
                       timeout=300) as resp:
        assert sum(len(c) for c in resp.iter_content(1 << 20)) == size


def test_a_call_waits_for_a_starting_runtime_then_a_plain_function_answers(
        provider: Provider) -> None:
    provider.deploy("fp-plain", 'echo "plain $(cat "$INPUT_FILE_PATH" 2>/dev/null)"\n')
    resp = provider.call("fp-plain", data=b"eA==")  # right after the deploy: waits for it
    assert resp.status_code == 200, resp.text
    assert "plain x" in resp.text
    assert provider.call("fp-plain", method="PROPFIND").status_code == 405
    assert provider.backend.get_function("fp-plain").invocation_count >= 1


def test_an_early_429_is_heard_while_the_body_still_streams(provider: Provider) -> None:
    provider.deploy("fp-busy", "sleep 20\n", max_inflight="1", max_queue="0")
    provider.wait_ready("fp-busy")
    busy = threading.Thread(target=provider.call, args=("fp-busy",), daemon=True)
    busy.start()
    time.sleep(1.0)
    # a client that keeps sending its body and reads as it goes (requests would not read
    # before the body is sent whole)
    port = int(provider.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /function/fp-busy HTTP/1.1\r\nHost: x\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        started = time.monotonic()
        sock.setblocking(False)
        answer = b""
        while time.monotonic() - started < 10 and b"\r\n" not in answer:
            try:
                sock.send(b"10000\r\n" + b"x" * 65536 + b"\r\n")
            except BlockingIOError:
                pass
            try:
                answer += sock.recv(4096)
            except BlockingIOError:
                time.sleep(0.01)
    assert answer.startswith(b"HTTP/1.1 429"), answer
    assert time.monotonic() - started < 10


def test_a_runtime_that_dies_in_the_call_is_a_502_with_its_output(provider: Provider) -> None:
    provider.deploy("fp-dies", 'echo "about to die"\nkill -9 $PPID\nsleep 5\n')
    provider.wait_ready("fp-dies")
    resp = provider.call("fp-dies", data=b"")
    assert resp.status_code == 502, resp.text
    assert "went away during the call" in resp.text


def test_websocket_echo_of_an_exposed_service(provider: Provider, exposed: str) -> None:
    async def talk() -> list[str]:
        async with connect(provider.url.replace("http://", "ws://")
                           + f"/function/{exposed}/ws") as ws:
            await ws.send("hi")
            text = await ws.recv()
            await ws.send(b"\x00\x01")
            return [str(text), repr(await ws.recv())]

    assert asyncio.run(talk()) == ["t: hi", repr(b"\x00\x01")]


#: The script copies its input to its output (the answer is that file, in base64).
ECHO = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/echo.bin"\n'


@pytest.mark.parametrize("size", [1, 60_000, 1_000_000])
def test_the_first_call_after_create_and_update_gets_its_whole_body(provider: Provider,
                                                                    size: int) -> None:
    """As tests/provider/test_whole_calls.py: no wait after the deploy or the update, so the
    call is held until the (new) runtime listens, and must still reach it whole."""
    for framing, chunked in (("sized", False), ("chunked", True)):
        name = f"fp-first-{framing}-{size}"
        for update in (False, True):
            provider.deploy(name, ECHO, update=update, MY_VAR=str(update))
            raw = os.urandom(size)
            encoded = base64.b64encode(raw)
            pieces = [encoded[i:i + 100_000] for i in range(0, len(encoded), 100_000)]
            resp = provider.call(name, data=iter(pieces) if chunked else encoded)
            assert resp.status_code == 200, f"{resp.status_code} {resp.text[:300]}"
            assert base64.b64decode(resp.content) == raw, f"{name}: not the body sent"


def test_calls_are_counted_in_the_metrics_unknown_functions_not(provider: Provider,
                                                                exposed: str) -> None:
    before = provider.metrics.exposition()[0].decode()
    assert provider.call(exposed, "/info", method="GET").status_code == 200
    assert provider.call("fp-never-deployed").status_code == 404
    text = provider.metrics.exposition()[0].decode()
    line = f'gateway_function_invocation_total{{code="200",function_name="{exposed}.openfaas-fn"}}'
    count = [float(x.split()[-1]) for x in text.splitlines() if x.startswith(line)]
    was = [float(x.split()[-1]) for x in before.splitlines() if x.startswith(line)]
    assert count and count[0] == (was[0] if was else 0) + 1, text
    assert "fp-never-deployed" not in text


def test_a_client_that_leaves_mid_answer_frees_the_runtime(provider: Provider,
                                                           exposed: str) -> None:
    """The answer is not read on for nobody: the runtime's connection is closed and the call
    released at once."""
    runtime = provider.backend.runtimes.get(exposed)
    assert runtime is not None
    port = int(provider.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET /function/{exposed}/big?n={10 ** 11} HTTP/1.1\r\nHost: x\r\n\r\n"
                     .encode())
        got = 0
        while got < 4 * 1024 * 1024:
            got += len(sock.recv(1 << 20))
        assert runtime.inflight == 1
    deadline = time.monotonic() + 10
    while runtime.inflight:
        assert time.monotonic() < deadline, "the call still holds its runtime"
        time.sleep(0.05)
