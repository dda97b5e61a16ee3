"""The proxy's delivery rule against a scripted runtime over real loopback sockets: a call
the runtime never read is sent again whole, one it read is never sent twice (issue 22)."""

from __future__ import annotations

import asyncio
import io
import socket
import struct
import threading

import pytest

from oscar_faas.provider.http.messages import RequestBody
from oscar_faas.provider.proxy import ConnectionPool, RuntimeUnreachable, forward


def _read_request(conn: socket.socket) -> bytes:
    """One request with a Content-Length body; its body."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += conn.recv(65536)
    return body


def _answer(conn: socket.socket, body: bytes) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


class Runtime:
    """Serves its first connection's first request, then treats the second as ``second``
    says: ``reset`` (closes without reading it: a reset) or ``taken`` (reads it whole, then
    closes without answering); every later connection is served normally."""

    def __init__(self, second: str, listen_after: bool = True) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.seen: list[bytes] = []
        self.second, self.listen_after = second, listen_after
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn, _ = self.listener.accept()
        self.seen.append(_read_request(conn))
        _answer(conn, b"first")
        if self.second == "reset":
            conn.recv(1, socket.MSG_PEEK)  # the next request has come: never read it
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if not self.listen_after:
                self.listener.close()
            conn.close()
        else:
            self.seen.append(_read_request(conn))
            conn.close()
        if not self.listen_after:
            return
        self.listener.settimeout(1)
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            body = _read_request(conn)
            self.seen.append(body)
            _answer(conn, body)

    def close(self) -> None:
        self.listener.close()


def _call(pool: ConnectionPool, body: io.RawIOBase | RequestBody, length: int) -> bytes:
    answer = forward(pool, "POST", "/", [("Host", "x")], body, length, False)
    try:
        return b"".join(answer.chunks)
    finally:
        answer.close()


def test_a_call_the_runtime_never_read_is_sent_again_whole() -> None:
    runtime = Runtime("reset")
    pool = ConnectionPool(f"http://127.0.0.1:{runtime.port}")
    assert _call(pool, io.BytesIO(b"one"), 3) == b"first"
    assert _call(pool, io.BytesIO(b"two!"), 4) == b"two!"
    runtime.thread.join(5)
    assert runtime.seen == [b"one", b"two!"]  # delivered once, whole
    runtime.close()
    pool.close()


def test_a_call_the_runtime_read_is_never_sent_twice() -> None:
    runtime = Runtime("taken")
    pool = ConnectionPool(f"http://127.0.0.1:{runtime.port}")
    assert _call(pool, io.BytesIO(b"one"), 3) == b"first"
    with pytest.raises(ConnectionError) as err:
        _call(pool, io.BytesIO(b"two!"), 4)
    assert not isinstance(err.value, RuntimeUnreachable)  # not for the caller to retry
    runtime.thread.join(3)
    assert runtime.seen == [b"one", b"two!"]
    runtime.close()
    pool.close()


def test_a_call_never_read_by_a_runtime_that_is_gone_keeps_its_body() -> None:
    runtime = Runtime("reset", listen_after=False)
    pool = ConnectionPool(f"http://127.0.0.1:{runtime.port}")
    assert _call(pool, io.BytesIO(b"one"), 3) == b"first"
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def receive() -> dict[str, object]:  # the body as the provider's app receives it
        return {"type": "http.request", "body": b"the whole body", "more_body": False}

    body = RequestBody(receive, loop, 14)
    with pytest.raises(RuntimeUnreachable):  # the caller may wait for the next runtime
        _call(pool, body, 14)
    assert body.read() == b"the whole body"  # put back: a retry sends all of it
    runtime.thread.join(5)
    assert runtime.seen == [b"one"]
    pool.close()
