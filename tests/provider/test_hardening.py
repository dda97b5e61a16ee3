"""Issue 15 on the provider's own port: HTTP framing, head limits, timeouts, the connection
cap and one log line per client disconnect. Everything goes over raw sockets to a real
``python -m oscar_faas.provider``."""

from __future__ import annotations

import socket
import time
from typing import Callable

import pytest
import requests

from .conftest import ProviderProcess

PATIENCE = 60


def _exchange(p: ProviderProcess, raw: bytes, *, shut: bool = False) -> bytes:
    """Send ``raw``, then read until the provider closes (or stops answering)."""
    with socket.create_connection(("127.0.0.1", p.port), timeout=PATIENCE) as sock:
        try:
            sock.sendall(raw)
            if shut:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        return data


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


@pytest.fixture
def cat_provider(make_provider: Callable[..., ProviderProcess]) -> ProviderProcess:
    p = make_provider(extra_args=["--header-timeout", "1", "--max-header-size", "8192",
                                  "--max-connections", "8", "--first-byte-timeout", "1"])
    p.deploy("echo", "cat")
    p.deploy("slow", "sleep 10")  # longer than any burst of connects takes, even under load
    return p


def _post(body_headers: bytes, body: bytes = b"") -> bytes:
    return (b"POST /function/echo HTTP/1.1\r\nHost: x\r\n" + body_headers + b"\r\n" + body)


@pytest.mark.parametrize("headers, body", [
    (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
    (b"Transfer-Encoding: xchunkedx\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
    (b"Transfer-Encoding: gzip, chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
    (b"Transfer-Encoding: chunked\r\n", b"0x5\r\nhello\r\n0\r\n\r\n"),
    (b"Transfer-Encoding: chunked\r\n", b"1_0\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n"),
    (b"Transfer-Encoding: chunked\r\n", b"-1\r\nhello\r\n0\r\n\r\n"),
    (b"Transfer-Encoding: chunked\r\n", b" 5\r\nhello\r\n0\r\n\r\n"),
    (b"Transfer-Encoding: chunked\r\n", b"5\r\nhelloXX0\r\n\r\n"),
    (b"Content-Length: +5\r\n", b"hello"),
    (b"Content-Length: 1_0\r\n", b"a" * 10),
    (b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"),
], ids=["cl+te", "xchunkedx", "gzip-chunked", "0x", "underscore", "negative", "space",
        "no-crlf", "plus", "cl-underscore", "two-lengths"])
def test_bad_framing_is_400_and_closes(cat_provider: ProviderProcess, headers: bytes,
                                       body: bytes) -> None:
    # the socket is not shut for writing: a provider waiting for more would hang the test
    answer = _exchange(cat_provider, _post(headers, body))
    assert _status(answer) == 400, answer[:300]
    assert b"Connection: close" in answer


def test_good_framing_still_works(cat_provider: ProviderProcess) -> None:
    answer = _exchange(cat_provider, _post(b"Transfer-Encoding: Chunked\r\nConnection: close"
                                           b"\r\n", b"5;ext=1\r\nhello\r\n0\r\n\r\n"))
    assert _status(answer) == 200 and answer.endswith(b"hello")
    answer = _exchange(cat_provider, _post(b"Content-Length: 5\r\nConnection: close\r\n",
                                           b"hello"))
    assert _status(answer) == 200 and answer.endswith(b"hello")


def test_huge_head_is_431(cat_provider: ProviderProcess) -> None:
    answer = _exchange(cat_provider, b"GET /healthz HTTP/1.1\r\n"
                       + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 1000) for i in range(50)))
    assert _status(answer) == 431
    answer = _exchange(cat_provider, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n")
    assert _status(answer) in (414, 431)
    assert requests.get(cat_provider.url + "/healthz", timeout=PATIENCE).status_code == 200


def test_silent_and_slow_clients_are_closed(cat_provider: ProviderProcess) -> None:
    with socket.create_connection(("127.0.0.1", cat_provider.port), timeout=PATIENCE) as s:
        assert s.recv(100) == b""  # never sent anything: closed after --first-byte-timeout
    with socket.create_connection(("127.0.0.1", cat_provider.port), timeout=PATIENCE) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        data = b""
        while chunk := s.recv(1000):
            data += chunk
            s.sendall(b"X-Drip: 1\r\n")  # one line per answer read: never done
        # closed with or without a 408, but closed
    assert requests.get(cat_provider.url + "/healthz", timeout=PATIENCE).status_code == 200


def test_connections_over_the_cap_are_refused_not_queued(cat_provider: ProviderProcess
                                                         ) -> None:
    """Eight calls running fill the cap: the ones after them are answered 503 at once."""
    socks = []
    try:
        for _ in range(20):
            socks.append(socket.create_connection(("127.0.0.1", cat_provider.port),
                                                  timeout=PATIENCE))
            socks[-1].sendall(_post(b"Content-Length: 0\r\n").replace(b"echo", b"slow"))
        answers = []
        for sock in socks:
            data = b""
            while b"\r\n\r\n" not in data and (chunk := sock.recv(1000)):
                data += chunk
            answers.append(data)
        heads = [a.split(b"\r\n", 1)[0] for a in answers]
        assert sum(a.startswith(b"HTTP/1.1 503 ") for a in answers) >= 12, heads
        assert sum(a.startswith(b"HTTP/1.1 200 ") for a in answers) >= 1, heads
    finally:
        for sock in socks:
            sock.close()
    assert requests.get(cat_provider.url + "/healthz", timeout=PATIENCE).status_code == 200


def test_client_disconnects_are_one_line_each(make_provider: Callable[..., ProviderProcess],
                                              script: Callable[[str, str], str]) -> None:
    p = make_provider()
    p.deploy("chatty", script("chatty", "head -c 2000000 /dev/zero"))
    p.deploy("slow-reader", script("slow", "sleep 0.2; cat >/dev/null; echo done"))
    for _ in range(10):
        with socket.create_connection(("127.0.0.1", p.port), timeout=PATIENCE) as sock:
            sock.sendall(_post(b"Content-Length: 0\r\n").replace(b"echo", b"chatty"))
            sock.recv(100)  # the answer has started; leave in the middle of it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00"
                            b"\x00\x00\x00\x00")
        with socket.create_connection(("127.0.0.1", p.port), timeout=PATIENCE) as sock:
            sock.sendall(_post(b"Content-Length: 100000\r\n", b"x" * 1000)
                         .replace(b"echo", b"slow-reader"))  # leave in the middle of the body
    assert requests.get(p.url + "/healthz", timeout=PATIENCE).status_code == 200
    p.stop()
    log = p.log()
    assert "Traceback" not in log, log[-3000:]


def test_an_answer_left_unread_is_cut_after_the_socket_timeout(
        make_provider: Callable[..., ProviderProcess]) -> None:
    """A client that stops reading its answer holds the connection for --socket-timeout at
    most (then it is cut, not drained: the answer never leaves)."""
    p = make_provider(extra_args=["--socket-timeout", "2"])
    p.deploy("big", "head -c 200000000 /dev/zero")
    with socket.create_connection(("127.0.0.1", p.port), timeout=PATIENCE) as sock:
        sock.sendall(_post(b"Content-Length: 0\r\n").replace(b"echo", b"big"))
        time.sleep(5)  # reads nothing
        got = 0
        try:
            while chunk := sock.recv(1 << 20):
                got += len(chunk)
        except ConnectionResetError:
            pass
    assert got < 100_000_000, got
    assert requests.get(p.url + "/healthz", timeout=PATIENCE).status_code == 200
    assert "Traceback" not in p.log()


def test_log_file_is_rotated_at_its_cap(make_provider: Callable[..., ProviderProcess],
                                        tmp_path) -> None:
    log_file = tmp_path / "rotated.log"
    p = make_provider(extra_args=["--log-file", str(log_file), "--log-max-bytes", "5000",
                                  "--log-backups", "2"])
    p.deploy("echo", "cat")
    for _ in range(300):  # an access line each, about 100 bytes
        assert p.invoke("echo", b"x").status_code == 200
    p.stop()
    files = sorted(tmp_path.glob("rotated.log*"))
    assert [f.name for f in files] == ["rotated.log", "rotated.log.1", "rotated.log.2"]
    assert all(f.stat().st_size <= 5000 for f in files)
