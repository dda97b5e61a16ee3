"""A WebSocket passthrough for ASGI servers: the client's connection (an ASGI ``websocket``
scope) bridged message by message to an upstream WebSocket server.

Used twice for exposed services: by the gateway (client -> OpenFaaS ``/function/<name>/...``)
and by the function runtime in expose mode (-> the service's own server on 127.0.0.1). An ASGI
server hands over WebSocket messages, not the raw socket, so the bridge opens its own upstream
connection (the ``websockets`` library) with the client's subprotocols, cookies, origin and
other end-to-end headers, accepts the client with the subprotocol the upstream chose, then
copies text and binary messages both ways until either side closes (its close code is passed
on). Each hop answers its own pings.

Back-pressure, both ways, so a peer that stops reading costs a bounded amount of memory (about
:data:`MAX_QUEUE` + 2 messages of at most :data:`MAX_MESSAGE`, a few hundred KB for
ordinary ones) and then stalls the other side instead of filling memory:

* upstream -> client: ``send`` waits while the ASGI server's write buffer is full (uvicorn
  pauses it at the transport's high-water mark), and the upstream connection stops reading
  once :data:`MAX_QUEUE` frames wait, so the upstream server's own sends block;
* client -> upstream: the next client message is read only when the upstream connection's
  write buffer has drained (``websockets`` waits for it in ``send``), and uvicorn stops
  reading the client's socket while a message waits to be received.

Compression (``permessage-deflate``) is never negotiated, neither by the upstream connection
nor by the ASGI servers in front (:data:`SERVER_OPTIONS`): a compressed stream defeats the
bounds above, as one socket read of deflated frames inflates to hundreds of MB before any
flow control runs (a stalled client cost the gateway and the runtime ~200 MB this way); the
hops the bridge opens are usually on one machine, where compression saves nothing.

An upstream that refuses the handshake (e.g. 403, 404) is answered with the same status and
body when the server supports the ASGI ``websocket.http.response`` extension (uvicorn does),
else by closing before accepting (which servers turn into a 403).
"""

from __future__ import annotations

import asyncio
import logging
from ssl import SSLContext
from typing import Any, Awaitable, Callable, Iterable, Mapping, MutableMapping

from .contract import HOP_BY_HOP

log = logging.getLogger(__name__)

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: Request headers the bridge never copies upstream: the handshake's own (the upstream
#: handshake makes its own) and framing.
_HANDSHAKE = HOP_BY_HOP | {
    "host", "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
    "sec-websocket-protocol", "sec-websocket-accept", "content-length"}
#: Seconds to wait for the upstream handshake (longer than a runtime waits for its server
#: to be healthy, so its 503 is what the client hears).
OPEN_TIMEOUT = 30.0
#: Largest message passed (bytes); larger ones close the connection (1009). uvicorn's own
#: limit on what a client sends (``ws_max_size``) is the same.
MAX_MESSAGE = 16 << 20
#: uvicorn ``Config`` options for a server whose WebSockets are bridged (the gateway's
#: workers, the runtime in expose mode): the same message limit, no compression.
SERVER_OPTIONS: dict[str, Any] = {"ws_max_size": MAX_MESSAGE, "ws_per_message_deflate": False}
#: Frames received from upstream that may wait for a client that is slow to read; beyond
#: it the upstream connection stops reading (its low-water mark is 0: resume when empty).
MAX_QUEUE = 2


def client_headers(scope: Scope, drop: Iterable[str] = ()) -> list[tuple[str, str]]:
    """The client's end-to-end headers for the upstream handshake (minus ``drop``)."""
    skip = _HANDSHAKE | {name.lower() for name in drop}
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]
            if k.decode("latin-1").lower() not in skip]


def requested_subprotocols(scope: Scope) -> list[str]:
    return [p for p in scope.get("subprotocols") or [] if p]


async def deny(send: Send, scope: Scope, status: int, body: bytes,
               headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Refuse a WebSocket handshake with an HTTP answer (or a bare close when the server
    lacks the denial extension)."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await send({"type": "websocket.http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode()), *headers]})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})


async def bridge(scope: Scope, receive: Receive, send: Send, *, host: str, port: int,
                 path: str, headers: list[tuple[str, str]], ssl: SSLContext | None = None,
                 what: str = "the upstream") -> None:
    """Bridge the client's WebSocket to ``ws(s)://host:port/path`` (``path`` with its query).

    The ``Host`` the client sent is kept (servers such as Jupyter compare it with ``Origin``).
    """
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

    message = await receive()
    if message["type"] != "websocket.connect":
        return
    authority = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
    authority = authority or (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    uri = f"{'wss' if ssl else 'ws'}://{authority}{path}"
    try:
        upstream = await connect(
            uri, host=host, port=port, ssl=ssl, server_hostname=host if ssl else None,
            additional_headers=headers, subprotocols=requested_subprotocols(scope) or None,
            open_timeout=OPEN_TIMEOUT, ping_interval=None, max_size=MAX_MESSAGE,
            max_queue=(MAX_QUEUE, 0), compression=None, user_agent_header=None, proxy=None)
    except InvalidStatus as err:
        resp = err.response
        keep = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in resp.headers.raw_items()
                if k.lower() in ("www-authenticate", "location", "set-cookie")]
        await deny(send, scope, resp.status_code, bytes(resp.body or b""), keep)
        return
    except (OSError, asyncio.TimeoutError, InvalidHandshake, ValueError) as err:
        log.warning("websocket to %s failed: %s", what, err)
        await deny(send, scope, 502, f"cannot open a WebSocket to {what}: {err}\n".encode())
        return
    await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})

    async def client_to_upstream() -> None:
        while True:
            msg = await receive()
            if msg["type"] == "websocket.receive":
                data = msg.get("text")
                await upstream.send(data if data is not None else msg.get("bytes") or b"")
            elif msg["type"] == "websocket.disconnect":
                code = msg.get("code") or 1000
                await upstream.close(code if code in range(1000, 5000) and code not in
                                     (1005, 1006, 1015) else 1000)
                return

    async def upstream_to_client() -> None:
        try:
            async for data in upstream:
                if isinstance(data, str):
                    await send({"type": "websocket.send", "text": data})
                else:
                    await send({"type": "websocket.send", "bytes": data})
        except ConnectionClosed:
            pass
        code = upstream.close_code or 1000
        if code in (1005, 1006, 1015):  # reserved: not sent in a close frame
            code = 1000 if code == 1005 else 1011
        await send({"type": "websocket.close", "code": code,
                    "reason": upstream.close_reason or ""})

    tasks = [asyncio.ensure_future(client_to_upstream()),
             asyncio.ensure_future(upstream_to_client())]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, ConnectionClosed, OSError, RuntimeError):
                pass  # the other side is gone: nothing to tell it
    finally:
        await upstream.close()
