from __future__ import annotations

import pytest

from tests.livegateway import LiveGateway

#: Small enough to test the limit, large enough for every example input.
MAX_BODY = 4_000_000


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    with LiveGateway(tmp_path_factory.mktemp("gateway"),
                     env={"MAX_BODY_SIZE": str(MAX_BODY)}) as gw:
        yield gw
