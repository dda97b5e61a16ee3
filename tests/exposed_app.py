"""A tiny exposed-service server for the tests: ``python -m tests.exposed_app PORT``.

A raw ASGI app on uvicorn (whose WebSocket side is the ``websockets`` library):

* ``GET /info?...`` -> JSON: method, path, query, Host, the ``X-Test`` header, ``$EXPOSED_TAG``;
* ``POST /echo`` (any method but GET) -> the body back, same Content-Type;
* ``GET /big?n=N`` -> N bytes, streamed in 64 KiB pieces;
* ``GET /health`` -> 200, or 500 when ``$EXPOSED_SICK`` is set;
* ``GET /exit`` -> the process exits (status 3) just after answering;
* WebSocket ``/ws`` -> every message back, text prefixed with ``$EXPOSED_TAG: ``; the
  chosen subprotocol is the first the client offered;
* WebSocket ``/flood?size=N`` -> binary messages of N bytes (default 64 KiB), sent as fast as
  the connection takes them, until the client goes (for back-pressure tests).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import uvicorn

TAG = os.environ.get("EXPOSED_TAG", "v1")


async def app(scope, receive, send):  # noqa: ANN001, ANN201 - a test fixture
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "websocket" and scope["path"] == "/flood":
        await flood(scope, receive, send)
        return
    if scope["type"] == "websocket":
        await receive()
        offered = scope.get("subprotocols") or []
        await send({"type": "websocket.accept",
                    "subprotocol": offered[0] if offered else None})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                if message["text"] == "close-4001":
                    await send({"type": "websocket.close", "code": 4001, "reason": "asked"})
                    return
                await send({"type": "websocket.send", "text": f"{TAG}: {message['text']}"})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    path = scope["path"]
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)

    async def answer(status: int, data: bytes, ctype: str = "application/json") -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", ctype.encode())]})
        await send({"type": "http.response.body", "body": data})

    if path == "/health":
        await answer(500 if os.environ.get("EXPOSED_SICK") else 200, b"ok", "text/plain")
    elif path == "/big":
        n = int(dict(p.split("=") for p in scope["query_string"].decode().split("&"))["n"])
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        while n > 0:
            piece = min(n, 65536)
            await send({"type": "http.response.body", "body": b"x" * piece, "more_body": True})
            n -= piece
        await send({"type": "http.response.body", "body": b""})
    elif path == "/exit":
        await answer(200, b"bye", "text/plain")
        asyncio.get_running_loop().call_later(0.1, os._exit, 3)
    elif scope["method"] != "GET" and path.endswith("/echo"):
        await answer(200, body, headers.get("content-type", "application/octet-stream"))
    else:
        await answer(200, json.dumps({
            "method": scope["method"], "path": path, "raw_path": scope["raw_path"].decode(),
            "query": scope["query_string"].decode(), "host": headers.get("host"),
            "x_test": headers.get("x-test"), "authorization": headers.get("authorization"),
            "tag": TAG, "base_path": os.environ.get("OSCAR_SERVICE_BASE_PATH"),
            "secret": os.environ.get("EXPOSED_SECRET")}).encode())


async def flood(scope, receive, send):  # noqa: ANN001, ANN201 - a test fixture
    """Send until the client disconnects: uvicorn's ``send`` waits while the socket's write
    buffer is full, so this server itself holds a bounded amount."""
    await receive()
    query = dict(p.split("=") for p in scope["query_string"].decode().split("&") if p)
    piece = b"f" * int(query.get("size", 65536))
    await send({"type": "websocket.accept"})
    try:
        while True:
            await send({"type": "websocket.send", "bytes": piece})
    except Exception:  # noqa: BLE001 - the client went: stop
        return


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                ws="auto", lifespan="on")
