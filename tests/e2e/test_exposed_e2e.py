"""Exposed services end to end: ``oscar-faas serve`` (gunicorn + the embedded provider, a
runtime per function in expose mode), services created with oscar-python whose script starts
a real HTTP + WebSocket server (tests/exposed_app.py), reached through
``/system/services/<name>/exposed/``."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from oscar_faas.serve import free_port
from tests.functionpython import function_python
from tests.livegateway import LiveGateway
from tests.supervisor.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    with LiveGateway(tmp_path_factory.mktemp("exposed"), env={"RUN_READY_WAIT": "5"}) as g:
        yield g


def fdl(folder: Path, name: str, port: int, tag: str, script: str | None = None,
        **expose: Any) -> str:
    """An FDL as a user writes it: the script starts the server on the exposed port."""
    (folder / f"{name}.sh").write_text(script or textwrap.dedent(f"""\
        #!/bin/sh
        echo "starting {name} on {port}"
        exec "{function_python()}" -m tests.exposed_app {port}
        """))
    extra = "".join(f"        {k}: {str(v).lower() if isinstance(v, bool) else v}\n"
                    for k, v in expose.items())
    path = folder / f"{name}.yaml"
    path.write_text(
        f"functions:\n  oscar:\n  - oscar-cluster:\n      name: {name}\n      image: python\n"
        f"      cpu: '0.5'\n      script: {name}.sh\n"
        f"      environment:\n        variables:\n          EXPOSED_TAG: {tag}\n"
        f"          PYTHONPATH: {REPO}\n"
        f"      expose:\n        api_port: [{port}]\n{extra}")
    return str(path)


def get_until(url: str, ok, what: str, timeout: float = 120.0, **kwargs: Any) -> Any:
    """GET ``url`` until ``ok(response)``; a state is awaited, never a duration asserted."""
    deadline = time.monotonic() + timeout
    while True:
        res = requests.get(url, timeout=60, **kwargs)
        if ok(res):
            return res
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {res.status_code} {res.text}")
        time.sleep(0.2)


def test_exposed_service_lifecycle(gw: LiveGateway, tmp_path: Path) -> None:
    client = gw.oscar_python_client()
    port = free_port()
    assert client.create_service(fdl(tmp_path, "web", port, "v1",
                                     health_path="/health")).status_code == 201
    base = f"{gw.url}/system/services/web/exposed"
    info = get_until(base + "/info?x=1&y=two", lambda r: r.status_code == 200,
                     "the server to answer", headers={"X-Test": "e2e"}).json()
    assert (info["path"], info["query"], info["x_test"], info["tag"]) == (
        "/info", "x=1&y=two", "e2e", "v1")
    assert info["base_path"] == "/system/services/web/exposed"

    body = bytes(range(256)) * 1024
    echo = requests.post(base + "/echo", data=body, timeout=60,
                         headers={"Content-Type": "application/x-e2e"})
    assert (echo.status_code, echo.headers["Content-Type"]) == (200, "application/x-e2e")
    assert echo.content == body
    head = requests.head(base + "/info", timeout=60)  # every method reaches the server
    assert (head.status_code, head.content) == (200, b"")
    options = requests.options(base + "/echo", timeout=60)
    assert options.status_code == 200
    for method in ("PROPFIND", "TRACE", "MKCOL", "LOCK", "M-SEARCH", "QUERY"):  # WebDAV & co.
        res = requests.request(method, base + "/info", timeout=60)
        assert (res.status_code, res.json()["method"]) == (200, method), res.text
    xml = b'<?xml version="1.0"?><propfind xmlns="DAV:"><allprop/></propfind>'
    dav = requests.request("PROPFIND", base + "/echo", data=xml, timeout=60,
                           headers={"Content-Type": "application/xml", "Depth": "1"})
    assert (dav.status_code, dav.content) == (200, xml)
    tunnel = requests.request("CONNECT", base + "/info", timeout=60)  # a proxy's method
    assert tunnel.status_code == 501 and "CONNECT is not passed" in tunnel.text

    async def talk() -> tuple[Any, ...]:
        async with connect(base.replace("http://", "ws://") + "/ws",
                           subprotocols=["e2e.v1"]) as ws:
            await ws.send("hello")
            text = await ws.recv()
            await ws.send(b"\x00bin")
            return ws.subprotocol, text, await ws.recv()

    assert asyncio.run(talk()) == ("e2e.v1", "v1: hello", b"\x00bin")

    # the service is still an OSCAR service: GET shows expose as sent, /run says where to go
    svc = client.get_service("web").json()
    assert svc["expose"]["api_port"] == [port] and svc["expose"]["health_path"] == "/health"
    run = requests.post(f"{gw.url}/run/web", data=b"aGk=", timeout=60,
                        headers={"Authorization": f"Bearer {svc['token']}"})
    assert run.status_code == 400 and "exposed" in run.text

    # update: the new definition's server answers (the old one is stopped)
    assert client.update_service("web", fdl(tmp_path, "web", port, "v2",
                                            health_path="/health")).status_code == 204
    get_until(base + "/info", lambda r: r.status_code == 200 and r.json()["tag"] == "v2",
              "the updated server")
    assert asyncio.run(talk())[1] == "v2: hello"

    assert client.remove_service("web").status_code == 204
    gone = requests.get(base + "/info", timeout=60)
    assert gone.status_code == 404
    assert requests.get(f"{gw.url}/system/services/web", auth=gw.auth,
                        timeout=60).status_code == 404


def test_set_auth_refuses_a_wrong_password(gw: LiveGateway, tmp_path: Path) -> None:
    client = gw.oscar_python_client()
    port = free_port()
    assert client.create_service(fdl(tmp_path, "locked", port, "v1", set_auth=True,
                                     rewrite_target=True)).status_code == 201
    token = client.get_service("locked").json()["token"]
    base = f"{gw.url}/system/services/locked/exposed"
    res = get_until(base + "/info", lambda r: r.status_code == 200, "the locked server",
                    auth=("locked", token))
    assert res.json()["path"] == "/system/services/locked/exposed/info"  # rewrite_target
    for auth in (("locked", "wrong"), ("oscar", gw.password), None):
        refused = requests.get(base + "/info", auth=auth, timeout=60)
        assert refused.status_code == 401
        assert "Basic" in refused.headers["WWW-Authenticate"]

    async def ws(password: str) -> int:
        import base64
        header = base64.b64encode(f"locked:{password}".encode()).decode()
        try:
            async with connect(base.replace("http://", "ws://") + "/ws",
                               additional_headers={"Authorization": f"Basic {header}"}):
                return 101
        except InvalidStatus as err:
            return err.response.status_code

    assert asyncio.run(ws("wrong")) == 401
    assert asyncio.run(ws(token)) == 101
    assert client.remove_service("locked").status_code == 204


def test_a_service_that_never_gets_healthy_is_a_clear_503(gw: LiveGateway,
                                                          tmp_path: Path) -> None:
    client = gw.oscar_python_client()
    port = free_port()
    sick = f'#!/bin/sh\nexport EXPOSED_SICK=1\nexec "{function_python()}" -m tests.exposed_app {port}\n'
    assert client.create_service(fdl(tmp_path, "sick", port, "v1", script=sick,
                                     health_path="/health")).status_code == 201
    res = requests.get(f"{gw.url}/system/services/sick/exposed/info", timeout=120)
    assert res.status_code == 503
    assert "exposed service sick is not ready" in res.text
    assert "/health" in res.text
    assert client.remove_service("sick").status_code == 204


#: What one stalled WebSocket may cost a process of the chain (it was ~200 MB).
STALL_BUDGET_MB = 30


def _descendants(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        try:
            for tid in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{tid}/children") as handle:
                    stack.extend(int(p) for p in handle.read().split())
        except OSError:
            pass
    return found


def _memory_mb(pid: int, field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (the peak so far) of ``pid``, in MB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def _stalled_websocket(gw: LiveGateway, path: str) -> socket.socket:
    """A WebSocket client that completes the handshake, then never reads (a small receive
    buffer, so the stall reaches the gateway at once)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", gw.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 f"Sec-WebSocket-Version: 13\r\n"
                 f"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        byte = sock.recv(1)
        assert byte, head
        head += byte
    assert head.startswith(b"HTTP/1.1 101 "), head + sock.recv(500)
    return sock


def test_peers_that_never_read_cost_bounded_memory(gw: LiveGateway, tmp_path: Path) -> None:
    """A server that sends without end to clients that never read, and a client that sends
    without end to a server that never reads: back-pressure holds every process of the chain
    (gateway workers, provider, runtime) to a bounded cost, and the service keeps answering."""
    client = gw.oscar_python_client()
    port = free_port()
    assert client.create_service(fdl(tmp_path, "flood", port, "v1",
                                     health_path="/health")).status_code == 201
    base = "/system/services/flood/exposed"
    get_until(gw.url + base + "/info", lambda r: r.status_code == 200, "the flood server")
    assert gw.proc is not None
    before = {pid: _memory_mb(pid, "VmRSS") for pid in _descendants(gw.proc.pid)}

    stalled = [_stalled_websocket(gw, base + "/flood") for _ in range(3)]

    async def send_to_a_server_that_never_reads() -> int:
        sent = 0
        async with connect(f"ws://127.0.0.1:{gw.port}{base}/flood", max_size=None) as ws:
            piece = os.urandom(1 << 20)

            async def forever() -> None:
                nonlocal sent
                while True:
                    await ws.send(piece)
                    sent += 1
            try:
                await asyncio.wait_for(forever(), 8)
            except asyncio.TimeoutError:
                pass
        return sent

    try:
        sent = asyncio.run(send_to_a_server_that_never_reads())
        # the stalled clients were sent to all along: their data waits for them
        for sock in stalled:
            sock.settimeout(30)
            assert len(sock.recv(65536)) > 0
        grown = {pid: _memory_mb(pid, "VmHWM") - rss for pid, rss in before.items()}
        assert all(mb < STALL_BUDGET_MB for mb in grown.values()), grown
        assert sent < 200, sent  # the sender was held back, not buffered for (~1 MiB each)
        assert requests.get(gw.url + base + "/info", timeout=60).status_code == 200
    finally:
        for sock in stalled:
            sock.close()
    assert client.remove_service("flood").status_code == 204
