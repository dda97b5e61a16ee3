"""The embedded OpenFaaS-compatible local provider.

It speaks the faas-provider REST contract (``/system/*``, ``/function/*``, ``/healthz``) and
runs functions on one machine: every function gets one long-lived runtime (:mod:`.runtimes`)
to which ``/function/<name>`` is proxied. An OSCAR service's runs as a host process or a
container of its ``image`` (``--runtime``); any other ``fprocess`` gets a host runtime in
classic-watchdog mode, which starts a process per call, so the gateway talks to it exactly as
to an OpenFaaS cluster.

Entry points: :func:`serve` (blocking) and ``python -m oscar_faas.provider`` (the same as
``oscar-faas provider``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ProviderServer", "make_server", "serve"]


def __getattr__(name: str) -> Any:
    """Load the server on first use, so the command line can read the provider's options
    without importing it."""
    if name in __all__:
        from . import server
        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
