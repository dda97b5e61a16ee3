"""The idle limits of every hop are ordered (contract.py), and a body read but never
delivered can be read again whole (the provider's proxy resends only that)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import uvicorn

from oscar_faas.config import Settings
from oscar_faas.contract import (FIRST_BYTE_TIMEOUT, KEEPALIVE_IDLE, POOL_REUSE_IDLE,
                                 RUNTIME_KEEPALIVE)
from oscar_faas.httpserver import HttpLimits
from oscar_faas.provider.http.messages import RequestBody
from oscar_faas.upstream import POOL_REUSE_IDLE as IDLE_LIMIT  # the pool to each runtime


def test_each_client_stops_reusing_before_its_server_closes() -> None:
    # the runtimes run uvicorn with its default keep-alive
    assert uvicorn.Config(app=None).timeout_keep_alive == RUNTIME_KEEPALIVE
    assert IDLE_LIMIT == POOL_REUSE_IDLE < RUNTIME_KEEPALIVE  # provider -> runtime
    assert POOL_REUSE_IDLE < HttpLimits().keepalive_timeout == KEEPALIVE_IDLE  # gateway -> provider
    # a silent connection is given up long before a request's own head deadline
    assert HttpLimits().first_byte_timeout == Settings().first_byte_timeout == FIRST_BYTE_TIMEOUT
    assert FIRST_BYTE_TIMEOUT < HttpLimits().header_timeout


def _body(pieces: list[bytes], length: int | None) -> tuple[RequestBody, list[bytes]]:
    """A request body as the provider's app receives it (ASGI messages on an event loop),
    read from this thread; the pieces not received yet are the second value."""
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    left = list(pieces)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": left.pop(0), "more_body": len(left) > 0}

    return RequestBody(receive, loop, length, chunked=length is None), left


def test_a_body_put_back_is_read_again_whole() -> None:
    body, left = _body([b"hello", b" world"], None)
    first = body.read(7)
    body.unread(first)
    assert body.read() == b"hello world"
    assert body.done and left == []  # nothing more was asked of the connection
    sized, _ = _body([b"abcdef"], 6)
    got = sized.read(6)
    sized.unread(got)
    assert not sized.read(0) and sized.read(4) == b"abcd" and sized.read(10) == b"ef"
    assert sized.read(10) == b""
