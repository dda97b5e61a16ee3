"""Idle connections on the provider's port (issue 22 item 2, issue 23 item 4): time spent
idle is never held against a request, an idle connection is closed quietly (never a 408),
and connections that send nothing cannot lock callers out. Raw sockets, loopback only, to a
real ``python -m oscar_faas.provider``."""

from __future__ import annotations

import socket
import time
from typing import Callable

import requests

from .conftest import ProviderProcess

AUTH = ("admin", "secret")


def _request(sock: socket.socket, path: str = "/healthz") -> None:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


def _answer(sock: socket.socket) -> bytes:
    """One answer with a Content-Length body, or what came before the close."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_a_request_after_an_idle_pause_longer_than_the_head_timeout_is_served(
        make_provider: Callable[..., ProviderProcess]) -> None:
    p = make_provider(extra_args=["--header-timeout", "1"])
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as sock:
        _request(sock)
        assert _answer(sock).startswith(b"HTTP/1.1 200 ")
        time.sleep(1.5)  # idle past the head timeout, not past the keep-alive one
        _request(sock)
        answer = _answer(sock)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    # a client that reuses its pooled connection after the same pause: one answer, right
    session = requests.Session()
    assert session.get(p.url + "/healthz", timeout=10).status_code == 200
    time.sleep(1.5)
    assert session.get(p.url + "/healthz", timeout=10).status_code == 200
    # the head timeout still holds once a request has started
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert _answer(sock).startswith(b"HTTP/1.1 408 ")


def test_an_idle_keep_alive_connection_is_closed_quietly(
        make_provider: Callable[..., ProviderProcess]) -> None:
    p = make_provider(extra_args=["--header-timeout", "1", "--keepalive-timeout", "1.5",
                                  "--first-byte-timeout", "1"])
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as sock:
        _request(sock)
        assert _answer(sock).startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        assert sock.recv(1000) == b""  # closed without a word: no 408
        assert 1.0 < time.monotonic() - started < 5
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as sock:
        started = time.monotonic()
        assert sock.recv(1000) == b""  # never said anything: closed, no answer
        assert time.monotonic() - started < 5
    # a client whose pooled connection was closed opens a new one
    session = requests.Session()
    assert session.get(p.url + "/healthz", timeout=10).status_code == 200
    time.sleep(2)
    assert session.get(p.url + "/healthz", timeout=10).status_code == 200


def test_idle_sockets_do_not_lock_callers_out(
        make_provider: Callable[..., ProviderProcess]) -> None:
    """Five times the connection cap in silent sockets, then the cap again in kept-alive
    connections that made one unauthenticated call: a caller with credentials is served at
    once, every time."""
    cap = 40
    p = make_provider(auth=AUTH, extra_args=["--max-connections", str(cap)])
    silent = []
    kept = []
    try:
        for _ in range(5 * cap):
            silent.append(socket.create_connection(("127.0.0.1", p.port), timeout=10))
        time.sleep(0.3)  # all accepted
        for _ in range(3):
            started = time.monotonic()
            resp = requests.get(p.url + "/system/functions", auth=AUTH, timeout=10)
            assert resp.status_code == 200, resp.text
            assert time.monotonic() - started < 3
        for _ in range(cap):
            sock = socket.create_connection(("127.0.0.1", p.port), timeout=10)
            kept.append(sock)
            _request(sock)
            assert _answer(sock).startswith(b"HTTP/1.1 200 ")
        for _ in range(3):
            started = time.monotonic()
            resp = requests.get(p.url + "/system/functions", auth=AUTH, timeout=10)
            assert resp.status_code == 200, resp.text
            assert time.monotonic() - started < 3
    finally:
        for sock in silent + kept:
            sock.close()
    assert "Traceback" not in p.log()
