"""/run/<service> against a fake OpenFaaS: exactly what is forwarded and what comes back.

The gateway runs as ``oscar-faas serve`` runs it (the ASGI front on a real uvicorn with
uvloop and httptools, on a loopback port); pytest-httpserver plays OpenFaaS.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import socket
import threading
import time
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest
import requests
from werkzeug import Response as WResponse

from oscar_faas.api import create_app
from oscar_faas.api.asgi import GatewayASGI
from oscar_faas.config import Settings
from oscar_faas.serve import free_port
from oscar_faas.model import Service

from ..asgiserver import ThreadedServer
from .conftest import ADMIN, OPENFAAS_AUTH, function_status, sent

TOKEN = "ab" * 32
SERVICE = {"name": "cowsay", "image": "alpine", "script": "cat", "token": TOKEN}
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@contextmanager
def served(app_or_settings):
    """The gateway's ASGI front over ``app_or_settings`` (a Flask app or Settings), live."""
    app = app_or_settings if not isinstance(app_or_settings, Settings) else create_app(
        app_or_settings)
    with ThreadedServer(GatewayASGI(app, threads=4)) as url:
        yield url


@pytest.fixture
def gw(app):
    """Base URL of the live gateway over the ``app`` fixture (settings of conftest)."""
    with served(app) as url:
        yield url


@pytest.fixture
def deployed(httpserver):
    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        function_status(SERVICE))
    return httpserver


def forwarded(httpserver):
    return [req for req, _ in httpserver.log if req.path.startswith("/function/")]


def raw_post(url: str, path: str, headers: dict[str, str], chunks: list[bytes]):
    """POST exactly these headers and a chunked body, as oscar-cli's Go client sends
    base64: no Content-Type, no Accept-Encoding, nothing added by a client library."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.putrequest("POST", path, skip_accept_encoding=True)
    for key, value in {**headers, "Transfer-Encoding": "chunked"}.items():
        conn.putheader(key, value)
    conn.endheaders()
    for chunk in chunks:
        conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    conn.send(b"0\r\n\r\n")
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp, body


def test_unknown_service_is_404_before_auth(gw, httpserver):
    httpserver.expect_request("/system/function/ghost").respond_with_data("", 404)
    resp = requests.post(gw + "/run/ghost", data=b"aGk=")
    assert resp.status_code == 404
    assert forwarded(httpserver) == []


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer " + "cd" * 32}, {"Authorization": "Bearer short"},
    {"Authorization": "Basic " + base64.b64encode(b"oscar:wrong").decode()}])
def test_wrong_or_missing_credentials_are_401(gw, deployed, headers):
    resp = requests.post(gw + "/run/cowsay", data=b"aGk=", headers=headers)
    assert resp.status_code == 401
    assert "Bearer" in resp.text
    assert resp.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert forwarded(deployed) == []


def test_body_headers_and_answer_pass_through(gw, deployed):
    deployed.expect_request("/function/cowsay", method="POST").respond_with_response(
        WResponse(b"bW9v\n", status=200, headers={
            "Content-Type": "text/plain", "X-Duration-Seconds": "0.010000",
            "X-Call-Id": "call-1"}))
    resp = requests.post(gw + "/run/cowsay", data=b"aGVsbG8=", headers={
        **BEARER, "Content-Type": "application/octet-stream", "X-Call-Id": "call-1",
        "X-Custom": "yes", "Expect": "100-continue", "Connection": "keep-alive"})
    assert resp.status_code == 200 and resp.content == b"bW9v\n"
    assert resp.headers["Content-Type"] == "text/plain"
    assert resp.headers["X-Duration-Seconds"] == "0.010000"
    assert resp.headers["X-Call-Id"] == "call-1"
    assert "Server" not in resp.headers or "Werkzeug" not in resp.headers["Server"]
    (req,) = forwarded(deployed)
    assert req.get_data() == b"aGVsbG8="
    assert req.headers["Content-Type"] == "application/octet-stream"
    assert req.headers["Content-Length"] == "8"
    assert req.headers["X-Custom"] == "yes" and req.headers["X-Call-Id"] == "call-1"
    # the service's token, which its runtime checks; never our OpenFaaS credentials
    assert req.headers["Authorization"] == f"Bearer {TOKEN}"
    assert "Expect" not in req.headers


def test_cluster_basic_credentials_are_accepted_like_oscar_cli_sends(gw, deployed):
    deployed.expect_request("/function/cowsay").respond_with_data("ok")
    resp = requests.post(gw + "/run/cowsay", data=b"aGk=", headers=ADMIN)
    assert resp.status_code == 200 and resp.content == b"ok"


def test_function_errors_keep_their_status_and_body(gw, deployed):
    deployed.expect_request("/function/cowsay").respond_with_data(
        "exit status 3\nboom\n", status=500, headers={"X-Duration-Seconds": "0.1"})
    resp = requests.post(gw + "/run/cowsay", data=b"aGk=", headers=BEARER)
    assert resp.status_code == 500 and resp.text == "exit status 3\nboom\n"


def test_chunked_body_without_content_type_is_forwarded_as_sent(gw, deployed):
    deployed.expect_request("/function/cowsay").respond_with_data("ok")
    chunks = [b"aGVs", b"bG8g", b"d29y", b"bGQ="]
    resp, body = raw_post(gw, "/run/cowsay", BEARER, chunks)
    assert resp.status == 200 and body == b"ok"
    (req,) = forwarded(deployed)
    assert req.get_data() == b"".join(chunks)
    for invented in ("Content-Type", "Accept-Encoding", "User-Agent", "Accept"):
        assert invented not in req.headers, invented


def test_large_body_streams_through_unchanged(gw, deployed):
    payload = base64.b64encode(bytes(range(256)) * 12_000)  # ~4 MB, past the replay size
    deployed.expect_request("/function/cowsay").respond_with_handler(
        lambda req: WResponse(hashlib.sha256(req.get_data()).hexdigest()))
    resp = requests.post(gw + "/run/cowsay", data=payload, headers=BEARER)
    assert resp.status_code == 200
    assert resp.text == hashlib.sha256(payload).hexdigest()
    (req,) = forwarded(deployed)  # streamed once, with its length rather than re-chunked
    assert req.headers["Content-Length"] == str(len(payload))


def test_large_answer_streams_back_unchanged(gw, deployed):
    answer = bytes(range(256)) * 40_000  # ~10 MB, several reads of the relay
    deployed.expect_request("/function/cowsay").respond_with_data(
        answer, content_type="application/octet-stream")
    resp = requests.post(gw + "/run/cowsay", data=b"aGk=", headers=BEARER)
    assert resp.status_code == 200
    assert hashlib.sha256(resp.content).digest() == hashlib.sha256(answer).digest()


def test_503_while_starting_is_retried(gw, deployed):
    deployed.expect_oneshot_request("/function/cowsay").respond_with_data(
        "No endpoints available for: cowsay.", status=503)
    deployed.expect_oneshot_request("/function/cowsay").respond_with_data(
        "No endpoints available for: cowsay.", status=503)
    deployed.expect_request("/function/cowsay").respond_with_data(
        "ready", headers={"X-Duration-Seconds": "0.001"})
    resp = requests.post(gw + "/run/cowsay", data=b"aGk=", headers=BEARER)
    assert resp.status_code == 200 and resp.text == "ready"
    assert len(forwarded(deployed)) == 3
    assert all(req.get_data() == b"aGk=" for req in forwarded(deployed))


def test_503_from_the_function_itself_is_not_retried(gw, deployed):
    deployed.expect_request("/function/cowsay").respond_with_data(
        "busy", status=503, headers={"X-Duration-Seconds": "0.001"})
    resp = requests.post(gw + "/run/cowsay", data=b"aGk=", headers=BEARER)
    assert resp.status_code == 503 and resp.text == "busy"
    assert len(forwarded(deployed)) == 1


def test_503_past_the_bound_says_not_ready(gw, deployed):
    deployed.expect_request("/function/cowsay").respond_with_data(
        "No endpoints available for: cowsay.", status=503)
    # RUN_READY_WAIT is 1 s here (the default is 30): the answer must come well before the
    # default would, after more than one try.
    resp = requests.post(gw + "/run/cowsay", data=b"aGk=", headers=BEARER, timeout=1 + 9)
    assert resp.status_code == 503
    assert "not ready" in resp.text and "1 s" in resp.text
    assert len(forwarded(deployed)) >= 2


def test_a_streamed_body_waits_for_an_available_replica_before_it_is_sent(
        httpserver, settings):
    """A body past the replay buffer can be sent only once: /run polls the function's
    status (with the OpenFaaS credentials) until a replica is available, then sends it."""
    polls = []

    def status(req):
        polls.append(req)
        # The registry's lookup, then two polls that see the function still starting.
        ready = 1 if len(polls) > 3 else 0
        return WResponse(json.dumps(function_status(SERVICE, availableReplicas=ready)),
                         content_type="application/json")

    def function(req):
        if len(polls) <= 3:  # called before a replica was ready: what OpenFaaS answers
            return WResponse("No endpoints available for: cowsay.", status=503)
        return WResponse(hashlib.sha256(req.get_data()).hexdigest(),
                         headers={"X-Duration-Seconds": "0.001"})

    httpserver.expect_request("/system/function/cowsay").respond_with_handler(status)
    httpserver.expect_request("/function/cowsay").respond_with_handler(function)
    payload = b"QUFB" * 400_000  # 1.6 MB: streamed, not replayable
    with served(Settings(**{**settings.__dict__, "run_ready_wait": 20})) as url:
        resp = requests.post(url + "/run/cowsay", data=payload, headers=BEARER, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.text == hashlib.sha256(payload).hexdigest()
    assert len(polls) == 4 and len(forwarded(httpserver)) == 1
    assert all(req.headers["Authorization"] == OPENFAAS_AUTH for req in polls[1:])


def test_timeout_is_504(httpserver, settings):
    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        function_status(SERVICE))
    release = threading.Event()

    def slow(_req):
        release.wait(10)
        return WResponse("late")

    httpserver.expect_request("/function/cowsay").respond_with_handler(slow)
    with served(Settings(**{**settings.__dict__, "run_timeout": 0.3})) as url:
        resp = requests.post(url + "/run/cowsay", data=b"aGk=", headers=BEARER, timeout=9)
    assert resp.status_code == 504 and "RUN_TIMEOUT" in resp.text
    release.set()
    deadline = time.monotonic() + 10
    while not forwarded(httpserver):  # let the fake finish before the next test starts
        assert time.monotonic() < deadline, "the fake OpenFaaS never finished the call"
        time.sleep(0.01)


def test_openfaas_down_is_502():
    url = f"http://127.0.0.1:{free_port()}"
    app = create_app(Settings.from_env({"OPENFAAS_URL": url, "SERVICE_CACHE_TTL": "60"}))
    # The service is known (cached from an earlier lookup) but OpenFaaS has gone away.
    app.extensions["oscar_faas"].registry.cache.put(Service.from_dict(SERVICE))
    with served(app) as gateway_url:
        resp = requests.post(gateway_url + "/run/cowsay", data=b"aGk=", headers=BEARER)
    assert resp.status_code == 502 and url in resp.text


def test_openfaas_down_for_the_lookup_is_502():
    url = f"http://127.0.0.1:{free_port()}"
    with served(Settings.from_env({"OPENFAAS_URL": url})) as gateway_url:
        resp = requests.post(gateway_url + "/run/cowsay", data=b"aGk=", headers=BEARER)
    assert resp.status_code == 502 and "OPENFAAS_URL" in resp.text


@pytest.mark.parametrize("chunked", [False, True])
def test_body_over_the_limit_is_413(httpserver, settings, chunked):
    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        function_status(SERVICE))
    httpserver.expect_request("/function/cowsay").respond_with_data("ok")
    with served(Settings(**{**settings.__dict__, "max_body_size": 1000})) as url:
        body = b"A" * 1004
        if chunked:
            resp, text = raw_post(url, "/run/cowsay", BEARER, [body])
            status = resp.status
        else:
            got = requests.post(url + "/run/cowsay", data=body, headers=BEARER)
            status, text = got.status_code, got.content
    assert status == 413 and b"1000 bytes" in text
    assert forwarded(httpserver) == []


class RawOpenFaaS:
    """A loopback OpenFaaS stand-in on plain sockets, for what pytest-httpserver cannot
    show: how a request to ``/function/`` ended. It answers the status lookup with the
    service and records each function request's bytes until the gateway closes it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.function_requests: list[bytes] = []
        self.ended = threading.Event()  # a /function/ connection reached its end
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(20)
        data = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in data:
                    try:
                        more = conn.recv(65536)
                    except OSError:  # a kept-alive connection the gateway left idle 20 s
                        return
                    if not more:
                        return
                    data += more
                head, _, data = data.partition(b"\r\n\r\n")
                if head.startswith(b"GET /system/function/cowsay"):
                    body = json.dumps(function_status(SERVICE)).encode()
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                    continue
                # /function/cowsay: read until the gateway ends the request or the link.
                got = head + b"\r\n\r\n" + data
                try:
                    while not got.endswith(b"\r\n0\r\n\r\n"):
                        more = conn.recv(65536)
                        if not more:
                            break
                        got += more
                except OSError:  # reset, or the 20 s without a byte
                    pass
                self.function_requests.append(got)
                self.ended.set()
                if got.endswith(b"\r\n0\r\n\r\n"):
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                return

    def close(self) -> None:
        self.sock.close()


def test_streamed_body_over_the_limit_is_cut_with_413(settings):
    """A chunked body larger than the replay buffer is streamed; passing the limit midway
    stops it with 413, and the half-sent upstream request is abandoned: its connection is
    closed before the body's end (the function never gets a complete, truncated input)."""
    upstream = RawOpenFaaS()
    try:
        limited = Settings(**{**settings.__dict__, "openfaas_url": upstream.url,
                              "max_body_size": 2_000_000})
        with served(limited) as url:
            resp, text = raw_post(url, "/run/cowsay", BEARER, [b"A" * 500_000] * 6)
            assert resp.status == 413 and b"2000000 bytes" in text
            assert upstream.ended.wait(15), "the gateway never started or ended the request"
        (got,) = upstream.function_requests
        assert got.startswith(b"POST /function/cowsay ")
        assert not got.endswith(b"\r\n0\r\n\r\n"), "the cut body was sent as complete"
        assert len(got) < 2_100_000
    finally:
        upstream.close()


def test_other_methods_and_paths_fall_through_to_the_api(gw, deployed):
    assert requests.get(gw + "/run/cowsay").status_code == 404
    assert requests.post(gw + "/run/cowsay/extra", headers=BEARER).status_code == 404
    assert requests.get(gw + "/health").text.strip() == "Ok"
    assert forwarded(deployed) == []


def test_management_api_is_served_behind_the_front(gw, httpserver):
    """The Flask API behind a2wsgi, with a chunked JSON body (no Content-Length)."""
    httpserver.expect_request("/system/function/cowsay").respond_with_data("", 404)
    httpserver.expect_request("/system/functions", method="POST").respond_with_data("", 202)
    httpserver.expect_request("/system/secrets").respond_with_data("", 200)
    body = json.dumps(SERVICE).encode()
    resp, text = raw_post(gw, "/system/services", {**ADMIN, "Content-Type":
                          "application/json"}, [body[:10], body[10:]])
    assert resp.status == 201, text
    (req,) = sent(httpserver, "POST", "/system/functions")
    assert req.get_json()["service"] == "cowsay"


def test_a_client_that_leaves_mid_body_is_dropped_quietly(gw, deployed):
    """No answer to write and nothing to log: the upload is abandoned, the gateway goes on."""
    import logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        deployed.expect_request("/function/cowsay").respond_with_data("ok")
        parts = urlsplit(gw)
        with socket.create_connection((parts.hostname, parts.port)) as sock:
            sock.sendall(b"POST /run/cowsay HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                         + TOKEN.encode() + b"\r\nContent-Length: 5000000\r\n\r\n"
                         + b"A" * 2_000_000)
        time.sleep(0.3)
        resp = requests.post(gw + "/run/cowsay", data=b"aGk=", headers=BEARER)
        assert resp.status_code == 200 and resp.text == "ok"
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == []
    assert [req.get_data() for req in forwarded(deployed)] == [b"aGk="]


def test_a_client_that_leaves_mid_answer_is_dropped_and_the_gateway_goes_on(gw, deployed):
    answer = b"Z" * 64_000_000
    deployed.expect_request("/function/cowsay").respond_with_data(
        answer, content_type="application/octet-stream")
    with requests.post(gw + "/run/cowsay", data=b"aGk=", headers=BEARER, stream=True) as r:
        assert r.status_code == 200
        first = next(r.iter_content(65536))
        assert first and set(first) == {ord("Z")}
    # The gateway is still fine, and the next call gets a whole answer.
    deployed.clear_all_handlers()
    deployed.expect_request("/system/function/cowsay").respond_with_json(
        function_status(SERVICE))
    deployed.expect_request("/function/cowsay").respond_with_data("ok")
    resp = requests.post(gw + "/run/cowsay", data=b"aGk=", headers=BEARER)
    assert resp.status_code == 200 and resp.text == "ok"


def test_an_answer_that_breaks_off_closes_the_client_connection(httpserver, settings):
    """OpenFaaS promises more than it sends, then hangs up: the client must not get a
    response that looks complete."""
    import asyncio as aio

    async def liar(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n"
                     b"X-Duration-Seconds: 0.1\r\n\r\n" + b"x" * 1000)
        await writer.drain()
        writer.close()

    loop = aio.new_event_loop()
    server = loop.run_until_complete(aio.start_server(liar, "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    port = server.sockets[0].getsockname()[1]
    app = create_app(Settings(**{**settings.__dict__,
                                 "openfaas_url": f"http://127.0.0.1:{port}",
                                 "service_cache_ttl": 60}))
    app.extensions["oscar_faas"].registry.cache.put(Service.from_dict(SERVICE))
    try:
        with served(app) as url:
            with pytest.raises(requests.exceptions.ChunkedEncodingError):
                requests.post(url + "/run/cowsay", data=b"aGk=", headers=BEARER).content
            ok = requests.get(url + "/health")
            assert ok.status_code == 200
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def _bare_502(delay: float):
    """What the OpenFaaS gateway sends when it gives up: 502, empty body, no watchdog
    headers (after ``upstream_timeout``, or at once when its provider is unreachable)."""
    def handler(_req):
        time.sleep(delay)
        return WResponse(b"", status=502)
    return handler


def test_openfaas_upstream_timeout_502_is_504_naming_it(gw, deployed):
    deployed.expect_request("/function/cowsay").respond_with_handler(
        _bare_502(1.2))  # past invoker.TIMEOUT_HINT_AFTER
    resp = requests.post(gw + "/run/cowsay", data=b"aGk=", headers=BEARER, timeout=30)
    assert resp.status_code == 504
    assert "upstream_timeout" in resp.text and "cowsay" in resp.text
    assert resp.headers["Content-Type"].startswith("text/plain")


def test_openfaas_bare_502_at_once_says_it_cannot_reach_the_function(gw, deployed):
    deployed.expect_request("/function/cowsay").respond_with_handler(_bare_502(0))
    resp = requests.post(gw + "/run/cowsay", data=b"aGk=", headers=BEARER, timeout=30)
    assert resp.status_code == 502
    assert "cannot reach" in resp.text and "upstream_timeout" not in resp.text


def test_a_functions_own_502_passes_through(gw, deployed):
    deployed.expect_request("/function/cowsay").respond_with_data(
        "bad upstream of mine", status=502, headers={"X-Duration-Seconds": "0.1"})
    resp = requests.post(gw + "/run/cowsay", data=b"aGk=", headers=BEARER, timeout=30)
    assert resp.status_code == 502 and resp.text == "bad upstream of mine"
