"""The runtime's HTTP side in classic-watchdog mode: the routes, caller check, admission and
thread pool of :class:`~.server.RuntimeApp`, with ``fprocess`` per call (:mod:`.classic`)
instead of the OSCAR I/O contract.

Exists so a function faas-cli deploys gets the answers a classic watchdog gives, through the
same runtime (and so the same limiter, CGI map and process guardian) as an OSCAR service:

* 429 ``Concurrent request limit exceeded. Max concurrent requests: N`` when ``max_inflight``
  calls run and ``max_queue`` more wait;
* the answer is sent whole once the process is done, with its ``Content-Length`` (the status
  is the exit code's), ``Content-Type`` the function's ``content_type``, else the request's,
  else ``text/plain``, and ``Server-Timing`` (``queue``, ``script``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable, Mapping

from .asgi_io import Answer, BodyReader, Receive, Scope, Send
from .cgi import cgi_env
from .classic import ClassicRunner, Result
from .server import RuntimeApp, call_head


class ClassicApp(RuntimeApp):
    """:class:`~.server.RuntimeApp` whose calls run ``fprocess`` (``settings.classic``)."""

    invoker: ClassicRunner  # type: ignore[assignment]

    def _invoker(self, env: Mapping[str, str],  # type: ignore[override]
                 workdir: Path) -> ClassicRunner:
        return ClassicRunner(env, self.settings, self.log)

    def _queue_full(self) -> bytes:
        return ("Concurrent request limit exceeded. Max concurrent requests: "
                f"{self.limiter.slots}\n").encode()

    async def _invoke(self, scope: Scope, receive: Receive, send: Send, started: float,
                      queued: float, release: Callable[[], None]) -> None:
        """As :meth:`RuntimeApp._invoke`, but the answer is the process's output; the slot
        is freed once the whole call ends (``release`` is not used early here)."""
        loop = asyncio.get_running_loop()
        first = await receive()
        if first["type"] == "http.disconnect":
            return
        headers, length, chunked = call_head(scope, self.settings.content_type)
        body = BodyReader(loop, receive, first, self.settings.read_timeout)
        result: Result = await loop.run_in_executor(
            self.executor, self.invoker.run, body, None if chunked else length, cgi_env(scope))
        try:
            answer = Answer(loop, send, headers, started, self.settings.write_timeout)
            answer.status = result.status
            answer.timings.update(queue=queued, **result.timings)
            await self._send(send, answer.start_message(result.length))
            for chunk in result.chunks():  # the spool: memory, or a file in the page cache
                await self._send(send, {"type": "http.response.body", "body": chunk,
                                        "more_body": True})
            await self._send(send, {"type": "http.response.body", "body": b""})
        finally:
            result.close()

    async def _send(self, send: Send, message: dict[str, Any]) -> None:
        """One send, within ``write_timeout`` (the client taking the answer)."""
        timeout = self.settings.write_timeout
        if timeout <= 0:
            await send(message)
            return
        try:
            await asyncio.wait_for(send(message), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"write_timeout ({timeout:g}s) reached while sending the "
                               "answer") from None
