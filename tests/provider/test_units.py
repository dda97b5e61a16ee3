"""Small pieces: payload shapes, parsing, the limiter, body framing (over one real
connection), the store's all-or-nothing writes and the in-process supervisor call."""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pytest

from oscar_faas.errors import InvalidService
from oscar_faas.provider.errors import FunctionExists
from oscar_faas.provider.state import store as state_mod
from oscar_faas.provider.http.routes import check_basic_auth
from oscar_faas.provider.state.store import Store
from oscar_faas.provider.state.types import (FunctionDeployment, FunctionStatus, Secret,
                                       format_time)
from oscar_faas.contract import canonical_header, parse_duration
from oscar_faas.runtime.cgi import cgi_env
from oscar_faas.runtime.limiter import Limiter, QueueFull
from oscar_faas.runtime.settings import RuntimeSettings

from .conftest import ProviderProcess
from .test_watchdog import wait_dead


# --- types ------------------------------------------------------------------------------------

def test_function_status_omitempty_exact() -> None:
    fd = FunctionDeployment(service="fn", image="img", namespace="openfaas-fn",
                            labels={}, annotations=None)
    status = FunctionStatus(fd, created_at=datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc))
    assert status.to_dict() == {"name": "fn", "image": "img", "namespace": "openfaas-fn",
                                "labels": {}, "createdAt": "2024-05-01T10:00:00Z"}
    busy = FunctionStatus(fd, invocation_count=3, replicas=1, available_replicas=1)
    out = busy.to_dict()
    assert out["invocationCount"] == 3 and isinstance(out["invocationCount"], int)
    assert out["createdAt"] == "0001-01-01T00:00:00Z"


def test_deployment_parsing() -> None:
    fd = FunctionDeployment.from_dict({
        "service": "a-b1", "image": "i", "envVars": {"K": "V"}, "secrets": ["s", "s"],
        "limits": {"memory": "1Gi", "cpu": "", "bogus": "x"}, "unknown": [1]})
    assert fd.secrets == ["s"] and fd.limits == {"memory": "1Gi"}
    assert fd.to_dict() == {"service": "a-b1", "image": "i", "envVars": {"K": "V"},
                            "secrets": ["s"], "limits": {"memory": "1Gi"}}
    for bad in ({"service": "UP", "image": "i"}, {"service": "a", "image": 1},
                {"service": "a", "image": "i", "secrets": "s"},
                {"service": "a", "image": "i", "readOnlyRootFilesystem": "yes"}):
        with pytest.raises(InvalidService):
            FunctionDeployment.from_dict(bad)


def test_secret_payload() -> None:
    assert Secret.from_dict({"name": "a", "value": "txt"}).payload == b"txt"
    assert Secret.from_dict({"name": "a", "rawValue": "AAE="}).payload == b"\0\1"
    assert Secret(name="a", value="v").to_dict() == {"name": "a", "namespace": "openfaas-fn"}


def test_format_time_trims_like_go() -> None:
    moment = datetime(2024, 1, 2, 3, 4, 5, 120000, tzinfo=timezone.utc)
    assert format_time(moment) == "2024-01-02T03:04:05.12Z"


# --- watchdog settings ------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [
    ("10", 10.0), ("10s", 10.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0),
    ("1.5s", 1.5), ("", None), (None, None), ("ten", None), ("10x", None)])
def test_parse_duration(text: str | None, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


def test_watchdog_config_from_env() -> None:
    """A classic function's watchdog settings, as its runtime reads them."""
    classic = {"OSCAR_RUNTIME_CLASSIC": "true", "fprocess": "cat"}
    default = RuntimeSettings.from_env(classic)
    assert default.combine_output is True and default.exec_timeout == 0
    assert default.slots == 4 * (os.cpu_count() or 1) and default.max_queue == 100
    assert default.classic == ("cat",)
    assert RuntimeSettings.from_env({**classic, "max_inflight": "0"}).slots == default.slots
    cfg = RuntimeSettings.from_env({**classic, "combine_output": "false", "exec_timeout": "2s",
                                    "max_inflight": "1", "max_queue": "0",
                                    "content_type": "application/json"})
    assert (cfg.combine_output, cfg.exec_timeout, cfg.slots, cfg.max_queue,
            cfg.content_type) == (False, 2.0, 1, 0, "application/json")
    assert RuntimeSettings.from_env({**classic, "fprocess": "python3  h.py "}).classic == (
        "python3", "h.py")
    with pytest.raises(ValueError):
        RuntimeSettings.from_env({**classic, "fprocess": " "})


def test_cgi_env() -> None:
    headers = [("x-call-id", "c"), ("Connection", "keep-alive"), ("content-type", "a/b"),
               ("X-Call-Id", "second"), ("host", "h:1"), ("transfer-encoding", "chunked")]
    env = cgi_env({"method": "PUT", "path": "/p", "query_string": b"a=1",
                   "headers": [(k.lower().encode(), v.encode()) for k, v in headers]})
    assert env == {"Http_X_Call_Id": "c", "Http_Content_Type": "a/b", "Http_Method": "PUT",
                   "Http_ContentLength": "-1", "Http_Content_Length": "-1",
                   "Http_Query": "a=1", "Http_Path": "/p", "Http_Host": "h:1",
                   "Http_Transfer_Encoding": "chunked"}
    assert canonical_header("x-FORWARDED-for") == "X-Forwarded-For"


def test_limiter_queue_then_full() -> None:
    """The runtime's one limiter (asyncio): FIFO hand-over, bounded queue."""
    import asyncio

    async def scenario() -> None:
        limiter = Limiter(slots=1, max_queue=1)
        await limiter.acquire()
        waiter = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(0)
        assert limiter.queued == 1
        with pytest.raises(QueueFull):
            await limiter.acquire()
        assert not waiter.done()
        limiter.release()  # handed straight to the waiter
        await asyncio.wait_for(waiter, 10)
        assert limiter.queued == 0
        # The waiter holds the only slot: the next caller has to queue.
        late = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(0)
        assert limiter.queued == 1
        limiter.release()  # the waiter's slot goes to the late caller
        await asyncio.wait_for(late, 10)
        assert late.done() and limiter.queued == 0
        limiter.release()
        # Every slot is free again: a caller gets one without queueing.
        await asyncio.wait_for(limiter.acquire(), 10)
        assert limiter.queued == 0

    asyncio.run(scenario())


def test_basic_auth_check() -> None:
    import base64
    good = "Basic " + base64.b64encode(b"admin:pw").decode()
    assert check_basic_auth(good, "admin", "pw")
    assert not check_basic_auth(good, "admin", "other")
    assert not check_basic_auth("Basic !!!", "admin", "pw")
    assert not check_basic_auth("", "admin", "pw")


# --- body framing (httptools, on a real provider) -----------------------------------------

def _exchange(port: int, raw: bytes, answers: int) -> list[bytes]:
    """Send ``raw`` on one connection and read ``answers`` Content-Length answers."""
    got, data = [], b""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(raw)
        while len(got) < answers:
            while b"\r\n\r\n" not in data:
                data += sock.recv(65536) or b"<closed>"
                assert not data.endswith(b"<closed>"), got
            head, _, data = data.partition(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            while len(data) < length:
                data += sock.recv(65536)
            got.append(head + b"\r\n\r\n" + data[:length])
            data = data[length:]
    return got


def test_chunked_body_reader(make_provider: Callable[..., ProviderProcess]) -> None:
    """A chunked body with an extension and a trailer is read whole, and the next request
    on the connection is read in step."""
    p = make_provider()
    body = b'{"name": "s", "value": "hello world"}'
    raw = (b"POST /system/secrets HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5;ext=1\r\n" + body[:5] + b"\r\n%x\r\n" % (len(body) - 5) + body[5:]
           + b"\r\n0\r\nTrailer: x\r\n\r\n" + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    first, second = _exchange(p.port, raw, 2)
    assert first.startswith(b"HTTP/1.1 202 ") and second.startswith(b"HTTP/1.1 200 ")
    assert second.endswith(b"OK\n")
    assert [s["name"] for s in p.session.get(p.url + "/system/secrets").json()] == ["s"]


def test_length_body_reader_stops_at_length(make_provider: Callable[..., ProviderProcess]
                                            ) -> None:
    p = make_provider()
    body = b'{"name": "t", "value": "v"}'
    raw = (b"POST /system/secrets HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
           % len(body) + body + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    first, second = _exchange(p.port, raw, 2)
    assert first.startswith(b"HTTP/1.1 202 ") and second.startswith(b"HTTP/1.1 200 ")


# --- store ------------------------------------------------------------------------------------

def test_store_create_is_all_or_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    store = Store(tmp_path)
    store.load()
    store.put_secret(Secret(name="s", value="v"), create=True)
    fd = FunctionDeployment(service="fn", image="i", secrets=["s"])
    real = state_mod.atomic_write

    def failing(path: Path, data: bytes, mode: int = 0o644,
                owner: tuple[int, int, int] | None = None) -> None:
        if path.name == "functions.json":
            raise OSError("disk full")
        real(path, data, mode, owner)

    monkeypatch.setattr(state_mod, "atomic_write", failing)
    with pytest.raises(OSError):
        store.create(fd)
    assert store.get("fn") is None and not (tmp_path / "functions" / "fn").exists()
    monkeypatch.setattr(state_mod, "atomic_write", real)
    store.create(fd)
    with pytest.raises(FunctionExists) as err:
        store.create(fd)
    assert err.value.status == 400
    reloaded = Store(tmp_path)
    reloaded.load()
    assert reloaded.get("fn") is not None
    assert (tmp_path / "functions" / "fn" / "secrets" / "s").read_bytes() == b"v"


# --- host launcher ---------------------------------------------------------------------------

def _spec(tmp_path: Path, script: bytes, **env: str) -> "RuntimeSpec":
    import base64

    from oscar_faas.launchers.launch import RuntimeSpec
    return RuntimeSpec(name="unit", image="ignored", secrets_dir=tmp_path,
                       env={"SCRIPT": base64.b64encode(script).decode(), **env})


def test_host_launcher_env_output_and_stop(tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    """The runtime gets the function's env and the secrets folder, never the provider's
    credentials; its log lines reach the function's logger at their level; stop ends it."""
    import requests

    from oscar_faas.launchers.host.launcher import HostLauncher
    launcher = HostLauncher({**os.environ, "OPENFAAS_PASSWORD": "pw-secret-9"})
    spec = _spec(tmp_path, b'echo "$MY_VAR $OSCAR_SECRETS_DIR ${OPENFAAS_PASSWORD:-none}"\n',
                 MY_VAR="mine", LOG_LEVEL="INFO")
    with caplog.at_level(logging.DEBUG, logger="oscar_faas.provider.function.unit"):
        handle = launcher.start(spec)
        try:
            assert handle.alive() and handle.url.startswith("http://127.0.0.1:")
            resp = requests.post(handle.url + "/", data=b"", timeout=30)
            assert resp.status_code == 200
            assert resp.text == f"mine {tmp_path} none\n"
        finally:
            handle.stop()
    assert not handle.alive() and wait_dead(handle.pid)
    handle.stop()  # idempotent
    records = [r for r in caplog.records if r.name == "oscar_faas.provider.function.unit"]
    assert any(r.levelname == "INFO" and r.getMessage().startswith("listening on http://")
               for r in records)
    assert "listening on" in handle.output_tail()


def test_host_launcher_reports_a_runtime_that_cannot_start(tmp_path: Path) -> None:
    from oscar_faas.launchers.host.launcher import HostLauncher
    from oscar_faas.launchers.launch import LaunchError
    with pytest.raises(LaunchError) as err:
        HostLauncher(os.environ).start(_spec(tmp_path, b"", OSCAR_WORKER="'unbalanced"))
    assert "exited with status 2" in str(err.value) and "OSCAR_WORKER" in str(err.value)


def test_spec_fingerprint_follows_the_spec(tmp_path: Path) -> None:
    one, same = _spec(tmp_path, b"echo 1"), _spec(tmp_path, b"echo 1")
    assert one.fingerprint == same.fingerprint and len(one.fingerprint) == 32
    assert _spec(tmp_path, b"echo 2").fingerprint != one.fingerprint


def test_make_server_in_a_thread(tmp_path: Path) -> None:
    """What ``serve`` does, with a handle to stop it: port 0, ready, answers, shuts down."""
    import requests

    from oscar_faas.provider import make_server

    server = make_server("127.0.0.1", 0, tmp_path, "u", "p")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert requests.get(server.url + "/healthz", timeout=10).status_code == 200
        assert requests.get(server.url + "/system/info", timeout=10).status_code == 401
        assert requests.get(server.url + "/system/info", auth=("u", "p"),
                            timeout=10).status_code == 200
    finally:
        server.shutdown()
        server.close()
        thread.join(10)
