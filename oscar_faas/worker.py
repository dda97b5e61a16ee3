"""The gunicorn worker ``oscar-faas serve`` runs: uvicorn's, on uvloop and httptools.

gunicorn stays the process manager (master, worker restarts, timeouts, signals); inside a
worker, one event loop serves every connection, which costs a fraction of gthread's
per-request thread hand-off. Naming the loop and the parser makes a missing C extension an
error at start instead of a silent fall-back to the pure-Python ones.

The bounds on what a client may cost (head size and timeouts, the connection cap) are the
shared :mod:`oscar_faas.httpserver` protocol's, with this worker's settings from
:class:`~oscar_faas.config.Settings` (``MAX_HEADER_SIZE``, ``HEADER_TIMEOUT``,
``BODY_TIMEOUT``, ``KEEPALIVE_TIMEOUT``, ``FIRST_BYTE_TIMEOUT``, ``MAX_CONNECTIONS``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from uvicorn_worker import UvicornWorker

from .config import Settings
from .httpserver import HttpLimits, server_options

#: Descriptors kept free for everything that is not a client connection.
FD_RESERVE = 128


class GatewayWorker(UvicornWorker):
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "uvloop", "http": "httptools", "lifespan": "on",
        "server_header": False, "date_header": True,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = Settings.from_env()
        limits = HttpLimits(max_header_size=settings.max_header_size,
                            header_timeout=settings.header_timeout,
                            keepalive_timeout=settings.keepalive_timeout,
                            first_byte_timeout=settings.first_byte_timeout,
                            body_timeout=settings.body_timeout,
                            max_connections=settings.max_connections)
        self.CONFIG_KWARGS = {**self.CONFIG_KWARGS,  # type: ignore[misc]
                              **server_options(limits, FD_RESERVE, loop="uvloop")}
        super().__init__(*args, **kwargs)  # the keep-alive timer: server_options'
