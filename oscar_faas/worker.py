"""The gunicorn worker ``oscar-faas serve`` runs: uvicorn's, on uvloop and httptools.

gunicorn stays the process manager (master, worker restarts, timeouts, signals); inside a
worker, one event loop serves every connection, which costs a fraction of gthread's
per-request thread hand-off. Naming the loop and the parser makes a missing C extension an
error at start instead of a silent fall-back to the pure-Python ones.
"""

from __future__ import annotations

from typing import Any, ClassVar

from uvicorn_worker import UvicornWorker


class GatewayWorker(UvicornWorker):
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "uvloop", "http": "httptools", "lifespan": "on",
        "server_header": False, "date_header": True,
    }
