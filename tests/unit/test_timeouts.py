"""The idle limits of every hop are ordered (contract.py)."""

from __future__ import annotations

import uvicorn

from oscar_faas.config import Settings
from oscar_faas.contract import (FIRST_BYTE_TIMEOUT, KEEPALIVE_IDLE, POOL_REUSE_IDLE,
                                 RUNTIME_KEEPALIVE)
from oscar_faas.httpserver import HttpLimits
from oscar_faas.upstream import POOL_REUSE_IDLE as IDLE_LIMIT  # the pool to each runtime


def test_each_client_stops_reusing_before_its_server_closes() -> None:
    # the runtimes run uvicorn with its default keep-alive
    assert uvicorn.Config(app=None).timeout_keep_alive == RUNTIME_KEEPALIVE
    assert IDLE_LIMIT == POOL_REUSE_IDLE < RUNTIME_KEEPALIVE  # provider -> runtime
    assert POOL_REUSE_IDLE < HttpLimits().keepalive_timeout == KEEPALIVE_IDLE  # gateway -> provider
    # a silent connection is given up long before a request's own head deadline
    assert HttpLimits().first_byte_timeout == Settings().first_byte_timeout == FIRST_BYTE_TIMEOUT
    assert FIRST_BYTE_TIMEOUT < HttpLimits().header_timeout
