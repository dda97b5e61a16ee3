"""The provider's HTTP side: an ASGI app served by uvicorn (routes, the /function proxy)."""
