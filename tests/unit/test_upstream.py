"""The /run hot path's HTTP client against raw sockets that answer exactly as scripted."""

from __future__ import annotations

import asyncio

import pytest

from oscar_faas.upstream import HIGH_WATER, Upstream


async def scripted_server(handler):
    """A loopback server whose connections are handled by ``handler(reader, writer)``."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def read_request(reader) -> tuple[bytes, bytes]:
    """One request: head and body (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        body = b""
        while True:
            size = int((await reader.readline()).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return head, body
            body += chunk[:-2]
    length = 0
    for line in lower.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_keep_alive_reuses_one_connection_and_frames_bodies():
    async def main():
        connections = []

        async def handler(reader, writer):
            connections.append(writer)
            while True:
                try:
                    head, body = await read_request(reader)
                except asyncio.IncompleteReadError:
                    return
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Echo: 1\r\n\r\n%s"
                             % (len(body), body))

        server, port = await scripted_server(handler)
        up = Upstream("127.0.0.1", port, 5, 5)

        async def stream():
            yield b"ab"
            yield b""
            yield b"cd"

        for body, expected in ((b"hello", b"hello"), (stream(), b"abcd"), (b"", b"")):
            resp = await up.request("POST", "/function/x", {"X-A": "b"}, body)
            assert resp.status == 200 and resp.header(b"x-echo") == b"1"
            got = await resp.read()
            resp.release()
            assert got == expected
        assert len(connections) == 1
        up.close()
        server.close()

    run(main())


def test_a_request_the_server_took_is_never_sent_again():
    """The server reads a whole request on a kept-alive connection, then closes it without
    answering (it died, or its idle timeout fired as the request came). It may have run the
    call: sending the body again would run a script twice (issue 22), so the caller gets an
    error, and the next call goes out on a fresh connection."""
    async def main():
        seen = []
        connections = []

        async def handler(reader, writer):
            connections.append(writer)
            head, body = await read_request(reader)
            seen.append(body)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            try:  # keep-alive promised; the next request on it is taken, then dropped
                head, body = await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            seen.append(b"dropped " + body)
            writer.close()

        server, port = await scripted_server(handler)
        up = Upstream("127.0.0.1", port, 5, 5)
        resp = await up.request("POST", "/f", {}, b"call0")
        assert await resp.read() == b"ok"
        resp.release()
        with pytest.raises(ConnectionError):
            await up.request("POST", "/f", {}, b"call1")
        resp = await up.request("POST", "/f", {}, b"call2")
        assert await resp.read() == b"ok"
        resp.release()
        assert seen == [b"call0", b"dropped call1", b"call2"]  # each call once
        assert len(connections) == 2
        up.close()
        server.close()

    run(main())


def test_a_pooled_connection_idle_past_the_reuse_limit_is_not_reused(monkeypatch):
    """The pool stops reusing a connection before the server behind it would close it
    (contract.POOL_REUSE_IDLE), so a close never races a request."""
    import oscar_faas.upstream as upstream

    monkeypatch.setattr(upstream, "POOL_REUSE_IDLE", 0.2)

    async def main():
        connections = []

        async def handler(reader, writer):
            connections.append(writer)
            while True:
                try:
                    await read_request(reader)
                except asyncio.IncompleteReadError:
                    return
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

        server, port = await scripted_server(handler)
        up = Upstream("127.0.0.1", port, 5, 5)
        for pause in (0, 0.05, 0.3):
            await asyncio.sleep(pause)
            resp = await up.request("POST", "/f", {}, b"x")
            assert await resp.read() == b"ok"
            resp.release()
        assert len(connections) == 2  # reused after 0.05 s, not after 0.3 s
        up.close()
        server.close()

    run(main())


def test_a_stream_is_not_re_sent_when_the_pooled_connection_drops_it():
    async def main():
        seen = []

        async def handler(reader, writer):
            head, body = await read_request(reader)
            seen.append(body)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            try:
                head, body = await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            seen.append(b"dropped " + body)
            writer.close()

        async def stream():
            yield b"streamed"

        server, port = await scripted_server(handler)
        up = Upstream("127.0.0.1", port, 5, 5)
        resp = await up.request("POST", "/f", {}, b"first")
        await resp.read()
        resp.release()
        with pytest.raises(ConnectionError):
            await up.request("POST", "/f", {}, stream())
        assert seen == [b"first", b"dropped streamed"]
        up.close()
        server.close()

    run(main())


@pytest.mark.parametrize("answer, expected", [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
     b"abcde"),
    (b"HTTP/1.0 200 OK\r\n\r\nuntil the close", b"until the close"),
])
def test_chunked_and_close_delimited_answers(answer, expected):
    async def main():
        async def handler(reader, writer):
            await read_request(reader)
            writer.write(answer)
            await writer.drain()
            writer.close()

        server, port = await scripted_server(handler)
        up = Upstream("127.0.0.1", port, 5, 5)
        resp = await up.request("POST", "/f", {}, b"x")
        assert await resp.read() == expected
        resp.release()
        if answer.startswith(b"HTTP/1.0"):
            assert up._idle == []  # no keep-alive: not pooled
        server.close()

    run(main())


def test_garbage_refused_and_silent_upstreams_raise_builtin_errors():
    async def main():
        async def garbage(reader, writer):
            await read_request(reader)
            writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
            await writer.drain()

        server, port = await scripted_server(garbage)
        with pytest.raises(ConnectionError, match="invalid HTTP"):
            await Upstream("127.0.0.1", port, 5, 5).request("POST", "/f", {}, b"x")
        server.close()

        async def silent(reader, writer):
            await read_request(reader)
            await asyncio.sleep(5)

        server, port = await scripted_server(silent)
        with pytest.raises(TimeoutError):
            await Upstream("127.0.0.1", port, 5, 0.2).request("POST", "/f", {}, b"x")
        server.close()
        await server.wait_closed()
        with pytest.raises(ConnectionError, match="cannot connect"):
            await Upstream("127.0.0.1", port, 5, 5).request("POST", "/f", {}, b"x")

    run(main())


def test_an_early_answer_stops_the_upload_and_is_returned():
    async def main():
        async def handler(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 413 Too Large\r\nContent-Length: 3\r\nConnection: close"
                         b"\r\n\r\nbig")
            await writer.drain()
            writer.close()

        server, port = await scripted_server(handler)
        up = Upstream("127.0.0.1", port, 5, 5)
        sent = 0

        async def endless():
            nonlocal sent
            for _ in range(10_000):  # 640 MB at most; the server stops it long before
                sent += 65536
                yield b"A" * 65536
                await asyncio.sleep(0)

        resp = await up.request("POST", "/f", {}, endless(), 10_000 * 65536)
        assert resp.status == 413 and await resp.read() == b"big"
        assert sent < 10_000 * 65536
        server.close()

    run(main())


def test_a_slow_reader_pauses_the_socket_instead_of_buffering_the_answer():
    async def main():
        size = 40 * 1024 * 1024

        async def handler(reader, writer):
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            block = b"B" * (1024 * 1024)
            for _ in range(size // len(block)):
                writer.write(block)
                await writer.drain()

        server, port = await scripted_server(handler)
        up = Upstream("127.0.0.1", port, 5, 5)
        resp = await up.request("POST", "/f", {}, b"x")
        conn = resp._conn
        got = 0
        peak = 0
        async for chunk in resp.chunks():
            got += len(chunk)
            peak = max(peak, conn._buffered)
            await asyncio.sleep(0.001)  # a client slower than the function
        resp.release()
        assert got == size
        assert peak <= HIGH_WATER + 1024 * 1024  # bounded by the high-water mark
        server.close()

    run(main())


def test_idle_connections_the_server_timed_out_are_never_used():
    """A server that closes keep-alive connections after 0.2 s idle (uvicorn: 5 s, the
    OpenFaaS gateway: its own): a burst of calls after a pause must all succeed."""
    async def main():
        async def handler(reader, writer):
            while True:
                try:
                    await asyncio.wait_for(read_request(reader), 0.2)
                except (asyncio.TimeoutError, asyncio.IncompleteReadError):
                    writer.close()
                    return
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

        server, port = await scripted_server(handler)
        up = Upstream("127.0.0.1", port, 5, 5)

        async def call(body):
            resp = await up.request("POST", "/f", {}, body)
            data = await resp.read()
            resp.release()
            return resp.status, data

        for _ in range(2):  # fill the pool with 16 connections, let them all time out
            assert await asyncio.gather(*(call(b"x") for _ in range(16))) == [(200, b"ok")] * 16
            await asyncio.sleep(0.4)
        up.close()
        server.close()

    run(main())


def _self_signed(tmp_path):
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_https_upstream(tmp_path):
    """OPENFAAS_URL may be https://: the same client over TLS, certificate checked."""
    import ssl

    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)

    async def main():
        async def handler(reader, writer):
            head, body = await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()

        server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        trusted = ssl.create_default_context(cafile=str(cert))
        up = Upstream("127.0.0.1", port, 5, 5, ssl=trusted)
        resp = await up.request("POST", "/f", {}, b"secret")
        assert resp.status == 200 and await resp.read() == b"secret"
        resp.release()
        up.close()
        with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await Upstream("127.0.0.1", port, 5, 5, ssl=ssl.create_default_context()).request(
                "POST", "/f", {}, b"x")
        server.close()

    run(main())


def test_openfaas_url_must_be_http_or_https():
    from oscar_faas.config import Settings
    from oscar_faas.errors import ConfigError
    from oscar_faas.invoker import FunctionInvoker

    with pytest.raises(ConfigError, match="http:// or https://"):
        FunctionInvoker(Settings.from_env({"OPENFAAS_URL": "ftp://gateway:8080"}))
    tls = FunctionInvoker(Settings.from_env({"OPENFAAS_URL": "https://gw.example.org/of"}))
    assert (tls.upstream.port, tls.upstream.ssl is not None, tls._prefix) == (443, True, "/of")


def test_interim_answers_are_skipped():
    async def main():
        async def handler(reader, writer):
            await read_request(reader)
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n"
                         b"Link: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n"
                         b"X-Final: 1\r\n\r\nok")
            await writer.drain()

        server, port = await scripted_server(handler)
        up = Upstream("127.0.0.1", port, 5, 5)
        resp = await up.request("POST", "/f", {}, b"x")
        assert resp.status == 201 and await resp.read() == b"ok"
        assert resp.header(b"x-final") == b"1" and resp.header(b"link") is None
        resp.release()
        assert len(up._idle) == 1  # still a reusable keep-alive connection
        up.close()
        server.close()

    run(main())
