"""An ASGI app served by a real uvicorn on a free loopback port, in a thread of the test.

The wire tests need the gateway's real server path (its event loop, its HTTP parser, real
sockets) while also holding the app object, e.g. to seed its service cache.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

from oscar_faas.serve import free_port


class ThreadedServer:
    """``with ThreadedServer(app) as url:`` serves ``app`` until the block ends."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, loop="uvloop",
                                http="httptools", lifespan="on", log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
