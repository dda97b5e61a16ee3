"""A client's request body over ASGI, piece by piece, the signs that the client left, and the
server's life span.

Shared by the gateway's ``/run`` (and exposed services) and the provider's ``/function`` proxy,
so the one rule of reading an ASGI body (skip empty messages, stop at ``more_body`` false, a
``http.disconnect`` means nobody is left to answer) is written once; so is the ASGI lifespan
exchange both servers answer.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, MutableMapping

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class ClientGone(Exception):
    """The client disconnected before its body was complete: nobody to answer."""


class BodyPieces:
    """The body's pieces as they come (:meth:`next_chunk`); :attr:`more` until the last."""

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.more = True

    async def next_chunk(self) -> bytes:
        """The next non-empty piece, ``b""`` at the end.

        :raises ClientGone: the client disconnected first.
        """
        while self.more:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            self.more = message.get("more_body", False)
            chunk = message.get("body", b"")
            if chunk:
                return chunk
        return b""


async def disconnected(receive: Receive) -> None:
    """Return when the client disconnects (reading past any body left unread: a function
    may answer before it has taken all of its input)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def lifespan(receive: Receive, send: Send, shutdown: Callable[[], Awaitable[None]]) -> None:
    """Answer the server's lifespan messages: nothing to start; ``shutdown()`` at its stop
    (its connections closed), before saying it is complete."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
