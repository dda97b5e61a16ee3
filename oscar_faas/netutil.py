"""Sockets and descriptors, one way each: the free-port helper (the gateway's embedded
provider, the container launcher's published ports, the tests and the bench) and the
connection cap that leaves descriptors to spare (the gateway's workers and the provider)."""

from __future__ import annotations

import resource
import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (whoever binds it next may still lose a race)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def descriptor_cap(wanted: int, reserve: int) -> int:
    """Raise the soft descriptor limit to the hard one and return how many connections fit
    in it with ``reserve`` descriptors to spare (files, upstream connections), at most
    ``wanted``: a server over it would lock every client out, not just the newest."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - reserve))
