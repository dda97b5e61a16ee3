"""The proxy's delivery rule against a scripted runtime over real loopback sockets: a call
the runtime never read is sent again whole, one it read is never sent twice (issue 22).
The proxy is ``function_proxy.forward`` on the upstream client, on an event loop."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading

import pytest

from oscar_faas.provider.http.function_proxy import RequestBody, forward
from oscar_faas.upstream import NotSent, Upstream


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


def _body(data: bytes) -> RequestBody:
    """The client's body as the ASGI server hands it over (one message)."""
    messages = [{"type": "http.request", "body": data, "more_body": False}]

    async def receive() -> dict:
        return messages.pop(0)

    return RequestBody(receive, len(data), chunked=False)


async def _call(pool: Upstream, body: RequestBody) -> bytes:
    answer = await forward(pool, "POST", "/", [("Host", "x")], body)
    try:
        data = await answer.read()
    except BaseException:
        answer.close()
        raise
    answer.release()  # read whole: its connection goes back to the pool
    return data


def _pool(runtime: Runtime) -> Upstream:
    return Upstream("127.0.0.1", runtime.port, 5.0, None)


def test_a_call_the_runtime_never_read_is_sent_again_whole() -> None:
    runtime = Runtime("reset")
    pool = _pool(runtime)

    async def calls() -> None:
        assert await _call(pool, _body(b"one")) == b"first"
        assert await _call(pool, _body(b"two!")) == b"two!"
        pool.close()

    asyncio.run(calls())
    runtime.thread.join(5)
    assert runtime.seen == [b"one", b"two!"]  # delivered once, whole
    runtime.close()


def test_a_call_the_runtime_read_is_never_sent_twice() -> None:
    runtime = Runtime("taken")
    pool = _pool(runtime)

    async def calls() -> None:
        assert await _call(pool, _body(b"one")) == b"first"
        with pytest.raises(ConnectionError) as err:
            await _call(pool, _body(b"two!"))
        assert not isinstance(err.value, NotSent)  # not for the caller to retry
        pool.close()

    asyncio.run(calls())
    runtime.thread.join(3)
    assert runtime.seen == [b"one", b"two!"]
    runtime.close()


def test_a_call_never_read_by_a_runtime_that_is_gone_keeps_its_body() -> None:
    runtime = Runtime("reset", listen_after=False)
    pool = _pool(runtime)

    async def calls() -> None:
        assert await _call(pool, _body(b"one")) == b"first"
        body = _body(b"the whole body")
        with pytest.raises(NotSent):  # the caller may wait for the next runtime
            await _call(pool, body)
        assert await body.whole() == b"the whole body"  # kept: a retry sends all of it
        pool.close()

    asyncio.run(calls())
    runtime.thread.join(5)
    assert runtime.seen == [b"one"]
