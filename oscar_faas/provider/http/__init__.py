"""The provider's HTTP side, on the same server stack as the gateway (uvicorn, httptools and
the bounded protocol of :mod:`oscar_faas.httpserver`):

* :mod:`.startup`: binding, the uvicorn server and start-up (``python -m oscar_faas.provider``);
* :mod:`.app`: the ASGI app: ``/function/*`` to :mod:`.function_proxy`, Basic auth on
  ``/system/*``, ``/metrics``, routing and error mapping;
* :mod:`.routes`: the route table, one short blocking function per path and method;
* :mod:`.messages`: the request and answer values routes are written against.

Nothing is imported here, so the routes' modules import :mod:`.messages` without pulling the
server in.
"""
