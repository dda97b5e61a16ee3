"""Expose mode: a real runtime process keeping a real server (tests/exposed_app.py) and
proxying HTTP and WebSockets to it."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
import requests
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from oscar_faas.serve import free_port
from tests.supervisor.conftest import make_env

from .conftest import RuntimeFactory, wait_for

SERVER = f'exec "{sys.executable}" -m tests.exposed_app "$EXPOSED_PORT"\n'


def expose_env(tmp_path: Path, script: str = SERVER, health: str = "/health",
               **extra: str) -> dict[str, str]:
    port = free_port()
    return make_env(script, {"name": "demo"}, tmp_path / "tmp", OSCAR_EXPOSE_PORT=str(port),
                    OSCAR_EXPOSE_HEALTH_PATH=health, EXPOSED_PORT=str(port),
                    OSCAR_EXPOSE_READY_WAIT="1", **extra)


def test_http_is_proxied_with_path_query_headers_and_bodies(runtime: RuntimeFactory,
                                                             tmp_path: Path) -> None:
    rt = runtime(expose_env(tmp_path, EXPOSED_TAG="t1"))
    info = requests.get(rt.url + "/a%2Fb/info?x=1&y=%20z", headers={"X-Test": "yes"},
                        timeout=30)
    assert info.status_code == 200
    doc = info.json()
    assert (doc["method"], doc["raw_path"], doc["query"]) == ("GET", "/a%2Fb/info", "x=1&y=%20z")
    assert doc["x_test"] == "yes" and doc["tag"] == "t1"
    assert doc["host"] == rt.url.removeprefix("http://")  # the client's Host is kept
    assert "X-Duration-Seconds" in info.headers
    body = bytes(range(256)) * 4000  # ~1 MB, streamed chunked both ways
    echo = requests.put(rt.url + "/x/echo", data=iter([body[:1000], body[1000:]]),
                        headers={"Content-Type": "application/x-test"}, timeout=30)
    assert (echo.status_code, echo.headers["Content-Type"]) == (200, "application/x-test")
    assert echo.content == body
    big = requests.get(rt.url + "/big?n=3000001", timeout=30)
    assert len(big.content) == 3000001
    head = requests.head(rt.url + "/info", timeout=30)
    assert head.status_code == 200 and head.content == b""
    for method in ("PROPFIND", "TRACE", "REPORT"):
        res = requests.request(method, rt.url + "/info", timeout=30)
        assert (res.status_code, res.json()["method"]) == (200, method)
    connect = requests.request("CONNECT", rt.url + "/info", timeout=30)
    assert connect.status_code == 501 and "tunnel" in connect.text


def test_websocket_echo_through_the_runtime(runtime: RuntimeFactory, tmp_path: Path) -> None:
    rt = runtime(expose_env(tmp_path, EXPOSED_TAG="t2"))

    async def talk() -> tuple[str | None, object, object, int | None]:
        async with connect(rt.url.replace("http", "ws") + "/ws?q=1",
                           subprotocols=["chat.v1", "other"]) as ws:
            await ws.send("hello")
            text = await ws.recv()
            await ws.send(b"\x00\x01bin")
            data = await ws.recv()
            await ws.send("close-4001")
            try:
                await ws.recv()
            except ConnectionClosed:
                pass
            return ws.subprotocol, text, data, ws.close_code

    sub, text, data, code = asyncio.run(talk())
    assert (sub, text, data, code) == ("chat.v1", "t2: hello", b"\x00\x01bin", 4001)


def test_a_server_that_dies_is_restarted(runtime: RuntimeFactory, tmp_path: Path) -> None:
    rt = runtime(expose_env(tmp_path))
    first = rt.status()["server_pid"]
    assert requests.get(rt.url + "/exit", timeout=30).text == "bye"
    wait_for(lambda: rt.status()["server_pid"] not in (first, None) and rt.health() == 200,
             "the server to be restarted")
    assert rt.status()["restarts"] >= 1
    assert requests.get(rt.url + "/info", timeout=30).json()["path"] == "/info"
    assert "exited with status 3" in rt.log()


def test_never_healthy_answers_503_naming_service_and_check(runtime: RuntimeFactory,
                                                            tmp_path: Path) -> None:
    rt = runtime(expose_env(tmp_path, EXPOSED_SICK="1"), ready=False)
    wait_for(lambda: "answers GET /health" in requests.get(rt.url + "/_/health",
                                                           timeout=30).text,
             "a probe of the sick server")
    res = requests.get(rt.url + "/info", timeout=30)
    assert res.status_code == 503
    assert "exposed service demo is not ready" in res.text
    assert "GET /health on port" in res.text and "with 500" in res.text
    assert rt.health() == 503

    async def ws() -> int:
        try:
            async with connect(rt.url.replace("http", "ws") + "/ws", open_timeout=60):
                return 101
        except InvalidStatus as err:
            return err.response.status_code

    assert asyncio.run(ws()) == 503


def test_no_health_path_means_the_port(runtime: RuntimeFactory, tmp_path: Path) -> None:
    rt = runtime(expose_env(tmp_path, health=""))
    assert requests.get(rt.url + "/info", timeout=30).status_code == 200


def test_a_script_that_serves_nothing_is_reported(runtime: RuntimeFactory,
                                                   tmp_path: Path) -> None:
    rt = runtime(expose_env(tmp_path, script="echo starting up; exit 7\n"), ready=False)
    wait_for(lambda: "exited with status 7" in requests.get(rt.url + "/x", timeout=30).text,
             "the exit to be reported")
    res = requests.get(rt.url + "/x", timeout=30)
    assert res.status_code == 503 and "starting up" in res.text  # the server's last output


@pytest.mark.parametrize("command", ["", "x"])
def test_default_command_needs_the_image_command(runtime: RuntimeFactory, tmp_path: Path,
                                                 command: str) -> None:
    env = expose_env(tmp_path, OSCAR_EXPOSE_DEFAULT_COMMAND="true")
    if command:  # the image's own command, as a container launcher would set it
        env["OSCAR_EXPOSE_COMMAND"] = f"{sys.executable} -m tests.exposed_app {env['EXPOSED_PORT']}"
        rt = runtime(env)
        assert requests.get(rt.url + "/info", timeout=30).json()["tag"] == "v1"
        return
    rt = runtime(env, ready=False)
    wait_for(lambda: "OSCAR_EXPOSE_COMMAND is not set" in requests.get(
        rt.url + "/x", timeout=30).text, "the missing command to be reported")


def test_the_server_does_not_outlive_the_runtime(runtime: RuntimeFactory, tmp_path: Path) -> None:
    """Its own session keeps it out of the runtime's process group, so a launcher's SIGKILL
    of that group would orphan it on the port; the death signal ends it."""
    rt = runtime(expose_env(tmp_path))
    server = rt.status()["server_pid"]
    rt.proc.kill()
    rt.proc.wait()

    def gone() -> bool:
        try:
            os.kill(server, 0)
        except ProcessLookupError:
            return True
        return Path(f"/proc/{server}/stat").read_text().split(") ")[1].startswith("Z")

    wait_for(gone, "the server to die with its runtime")
