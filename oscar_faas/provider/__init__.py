"""The embedded OpenFaaS-compatible local provider.

It speaks the faas-provider REST contract (``/system/*``, ``/function/*``, ``/healthz``) and
runs each function as host processes with classic-watchdog semantics, so the gateway talks to
it exactly as to an OpenFaaS cluster. ``image`` is ignored.

Entry points: :func:`serve` (blocking) and ``python -m oscar_faas.provider``.
"""

from __future__ import annotations

from .server import ProviderServer, make_server, serve
__all__ = ["ProviderServer", "make_server", "serve"]
