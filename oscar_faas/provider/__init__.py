"""The embedded OpenFaaS-compatible local provider.

It speaks the faas-provider REST contract (``/system/*``, ``/function/*``, ``/healthz``) and
runs functions on one machine: every function gets one long-lived runtime (:mod:`.runtimes.manager`)
to which ``/function/<name>`` is proxied. An OSCAR service's runs as a host process or a
container of its ``image`` (``--runtime``); any other ``fprocess`` gets a host runtime in
classic-watchdog mode, which starts a process per call, so the gateway talks to it exactly as
to an OpenFaaS cluster.

Its parts, as faas-provider's: a route table over a backend that manages runtimes, plus a
proxy. :mod:`.http` is the HTTP side (uvicorn, the ``/system`` routes, the ``/function`` proxy);
:mod:`.backend` the functions and secrets behind it; :mod:`.runtimes` starts, watches and
restarts each function's runtime through a launcher of :mod:`oscar_faas.launchers` (a child
process, a uid of its own as root, or a container of the function's image); :mod:`.state`
keeps deployments and secrets in the data dir; :mod:`.logs` and :mod:`.async_calls` serve
``/system/logs`` and ``/async-function``.

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
        from .http import startup as server
        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
