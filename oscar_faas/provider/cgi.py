"""The classic watchdog's CGI variables: request headers and facts as ``Http_*`` env."""

from __future__ import annotations

from .. import contract as c

#: Request headers that become no CGI variable (``Http_Host`` is set on its own).
_NOT_CGI = c.HOP_BY_HOP | {"host", "content-length"}


def canonical_header(name: str) -> str:
    """Go's canonical form (``x-call-id`` -> ``X-Call-Id``), which decides the CGI names."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def cgi_env(method: str, path: str, query: str, headers: list[tuple[str, str]], host: str,
            content_length: int | None, chunked: bool) -> dict[str, str]:
    """The classic watchdog's ``cgi_headers`` variables for one request.

    Every header becomes ``Http_<Canonical_Name>`` (first value wins), plus ``Http_Method``,
    ``Http_ContentLength``/``Http_Content_Length`` (-1 when unknown), ``Http_Query`` (when
    non-empty), ``Http_Path``, ``Http_Host`` and ``Http_Transfer_Encoding`` (when chunked).
    """
    env: dict[str, str] = {}
    for name, value in headers:
        if name.lower() in _NOT_CGI:
            continue
        env.setdefault("Http_" + canonical_header(name).replace("-", "_"), value)
    length = str(content_length if content_length is not None else -1)
    env["Http_Method"] = method
    env["Http_ContentLength"] = length
    env["Http_Content_Length"] = length
    if query:
        env["Http_Query"] = query
    env["Http_Path"] = path or "/"
    if host:
        env["Http_Host"] = host
    if chunked:
        env["Http_Transfer_Encoding"] = "chunked"
    return env
