"""The one free-port helper: the gateway's embedded provider, the container launcher's
published ports, the tests and the bench all pick a port the same way."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (whoever binds it next may still lose a race)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
