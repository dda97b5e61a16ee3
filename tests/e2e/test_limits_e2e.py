"""Issue 15: an unauthenticated client cannot stall the gateway. Hostile input goes over real
sockets to a real ``oscar-faas serve``; the gateway still answers everyone else."""

from __future__ import annotations

import socket
import time

import pytest
import requests

from tests.livegateway import LiveGateway

MAX_HEADER = 8192
MAX_CONNECTIONS = 40
#: Generous bound on how long a socket waits for the gateway to close it (not asserted).
PATIENCE = 60


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    env = {"MAX_HEADER_SIZE": str(MAX_HEADER), "HEADER_TIMEOUT": "1", "BODY_TIMEOUT": "1",
           "KEEPALIVE_TIMEOUT": "2", "MAX_CONNECTIONS": str(MAX_CONNECTIONS),
           "FIRST_BYTE_TIMEOUT": "1"}
    with LiveGateway(tmp_path_factory.mktemp("limits-gw"), env=env) as gw:
        yield gw


def _connect(gw: LiveGateway) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=PATIENCE)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def _healthy(gw: LiveGateway) -> bool:
    return requests.get(gw.url + "/health", timeout=PATIENCE).status_code == 200


def test_huge_header_is_431_and_others_still_served(gateway: LiveGateway) -> None:
    with _connect(gateway) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:  # the gateway answers and closes while we are still sending
            for _ in range(64):
                sock.sendall(b"a" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"MAX_HEADER_SIZE" in answer
    assert _healthy(gateway)


def test_long_request_line_is_431(gateway: LiveGateway) -> None:
    with _connect(gateway) as sock:
        try:
            sock.sendall(b"GET /" + b"a" * (MAX_HEADER * 2) + b" HTTP/1.1\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert _read_all(sock).startswith(b"HTTP/1.1 431 ")


def test_headers_under_the_limit_pass(gateway: LiveGateway) -> None:
    resp = requests.get(gateway.url + "/health", headers={"X-Ok": "a" * (MAX_HEADER // 2)},
                        timeout=PATIENCE)
    assert resp.status_code == 200


def test_silent_and_slow_connections_are_closed(gateway: LiveGateway) -> None:
    silent, slow = _connect(gateway), _connect(gateway)
    slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
    with silent, slow:
        assert _read_all(silent) == b""  # closed without a word
        assert _read_all(slow).startswith(b"HTTP/1.1 408 ")


def test_silent_body_closes_the_connection(gateway: LiveGateway) -> None:
    with _connect(gateway) as sock:
        sock.sendall(b"POST /system/services HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                     b"Authorization: Basic b3NjYXI6dGVzdC1wYXNzd29yZA==\r\n\r\n{")
        _read_all(sock)  # returns: the gateway closed it (whatever it answered first)


def test_idle_keepalive_connection_is_closed(gateway: LiveGateway) -> None:
    with _connect(gateway) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_all(sock).startswith(b"HTTP/1.1 200 ")


def test_idle_sockets_do_not_lock_callers_out(gateway: LiveGateway) -> None:
    """Issue 23 item 4: four times the per-worker cap in sockets that send nothing, for each
    of the 2 workers, then as many kept-alive connections idle after one unauthenticated
    call: a caller with credentials is served at once, every time, while they stay open."""
    auth = (gateway.user, gateway.password)

    def served_at_once() -> None:
        for _ in range(3):
            started = time.monotonic()
            resp = requests.get(gateway.url + "/system/services", auth=auth, timeout=PATIENCE)
            assert resp.status_code == 200, resp.text
            assert time.monotonic() - started < 3

    silent = [_connect(gateway) for _ in range(MAX_CONNECTIONS * 2 * 4)]
    kept = []
    try:
        served_at_once()
        for _ in range(MAX_CONNECTIONS * 2):
            sock = _connect(gateway)
            kept.append(sock)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        served_at_once()
        for sock in silent:  # each closed quietly: made room for another, or timed out
            assert _read_all(sock) == b""
    finally:
        for sock in silent + kept:
            sock.close()
    assert _healthy(gateway)
