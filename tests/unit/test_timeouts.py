"""The idle limits of every hop are ordered (contract.py), and a body read but never
delivered can be read again whole (the provider's proxy resends only that)."""

from __future__ import annotations

import io

import uvicorn

from oscar_faas.config import Settings
from oscar_faas.contract import (FIRST_BYTE_TIMEOUT, KEEPALIVE_IDLE, POOL_REUSE_IDLE,
                                 RUNTIME_KEEPALIVE)
from oscar_faas.provider.http_handler import HttpLimits
from oscar_faas.provider.httpio import BodyReader
from oscar_faas.upstream import POOL_REUSE_IDLE as IDLE_LIMIT  # the pool to each runtime


def test_each_client_stops_reusing_before_its_server_closes() -> None:
    # the runtimes run uvicorn with its default keep-alive
    assert uvicorn.Config(app=None).timeout_keep_alive == RUNTIME_KEEPALIVE
    assert IDLE_LIMIT == POOL_REUSE_IDLE < RUNTIME_KEEPALIVE  # provider -> runtime
    assert POOL_REUSE_IDLE < HttpLimits().keepalive_timeout == KEEPALIVE_IDLE  # gateway -> provider
    # a silent connection is given up long before a request's own head deadline
    assert HttpLimits().first_byte_timeout == Settings().first_byte_timeout == FIRST_BYTE_TIMEOUT
    assert FIRST_BYTE_TIMEOUT < HttpLimits().header_timeout


def test_a_body_put_back_is_read_again_whole() -> None:
    wire = io.BufferedReader(io.BytesIO(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nNEXT"))
    body = BodyReader(wire, None, chunked=True)
    first = body.read(7)
    body.unread(first)
    assert body.read() == b"hello world"
    assert body.done and wire.read() == b"NEXT"  # the connection stays in step
    sized = BodyReader(io.BufferedReader(io.BytesIO(b"abcdef")), 6, chunked=False)
    got = sized.read(6)
    sized.unread(got)
    assert not sized.read(0) and sized.read(4) == b"abcd" and sized.read(10) == b"ef"
    assert sized.read(10) == b""
