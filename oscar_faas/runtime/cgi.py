"""The classic watchdog's CGI variables (``Http_Method``, ``Http_Path``, ``Http_<Header>``...)
from an ASGI request, as the runtime passes them to the script, a warm worker or a classic
``fprocess``.

Exists so that mapping (Go's canonical header names, which headers are left out) is stated in
one place of the package: every process a function call starts gets it from here.
"""

from __future__ import annotations

from ..contract import HOP_BY_HOP, canonical_header
from .asgi_io import Scope

#: Headers that are no CGI variable: hop-by-hop ones and the framing.
_HOP_BY_HOP = HOP_BY_HOP | {"host", "content-length"}


def cgi_env(scope: Scope) -> dict[str, str]:
    """The classic watchdog's CGI variables for one request (``Http_Method``, ``Http_Path``,
    ``Http_<Header>``...), which it passes to the process it forks and so to the script."""
    env: dict[str, str] = {}
    length, chunked, host = "-1", False, ""
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        lower = name.lower()
        if lower == "content-length":
            length = value
        elif lower == "transfer-encoding":
            chunked = "chunked" in value.lower()
        elif lower == "host":
            host = value
        if lower in _HOP_BY_HOP:
            continue
        env.setdefault("Http_" + canonical_header(name).replace("-", "_"), value)
    env["Http_Method"] = scope["method"]
    env["Http_ContentLength"] = env["Http_Content_Length"] = "-1" if chunked else length
    query = scope.get("query_string", b"").decode("latin-1")
    if query:
        env["Http_Query"] = query
    env["Http_Path"] = scope.get("path") or "/"
    if host:
        env["Http_Host"] = host
    if chunked:
        env["Http_Transfer_Encoding"] = "chunked"
    return env
