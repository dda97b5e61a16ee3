"""The gateway's application factories.

:func:`create_app` builds the Flask app that serves the OSCAR API; :func:`create_asgi_app`
puts the ``/run`` fast path (:mod:`.run`) in front of it, which is what ``oscar-faas serve``
runs. State lives in ``app.extensions["oscar_faas"]`` (no module globals), so each gunicorn
worker and each test gets its own settings, OpenFaaS connection pools and service cache.
"""

from __future__ import annotations

from flask import Flask

from ..config import Settings
from ..errors import ConfigError
from ..openfaas import OpenFaaSClient
from ..registry import ServiceRegistry
from . import buckets, errors, jobs, services, status, system, usage
from .context import EXTENSION, Gateway, gateway

__all__ = ["create_app", "create_asgi_app", "gateway", "Gateway"]


def create_app(settings: Settings | None = None) -> Flask:
    """Build the gateway app; ``settings`` default to the process environment.

    :raises ConfigError: a setting is malformed or ``OPENFAAS_URL`` is missing.
    """
    settings = settings or Settings.from_env()
    if not settings.openfaas_url:
        raise ConfigError("OPENFAAS_URL is not set: point it at an OpenFaaS gateway, or use "
                          "'oscar-faas serve', which starts the embedded provider")
    app = Flask(__name__)
    # Management bodies: werkzeug refuses a larger Content-Length before reading (413) and
    # stops a body without one (chunked) as soon as it passes the cap.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_api_body_size
    client = OpenFaaSClient(settings)
    app.extensions[EXTENSION] = Gateway(settings, client, ServiceRegistry(settings, client))
    for blueprint in (system.bp, services.bp, jobs.bp, status.bp, usage.bp, buckets.bp):
        app.register_blueprint(blueprint)
    errors.init_app(app)
    return app


def create_asgi_app(settings: Settings | None = None, threads: int = 32):
    """The gateway as ``oscar-faas serve`` runs it: ``POST /run/<name>`` on the event loop,
    everything else in Flask on ``threads`` threads.

    :raises ConfigError: as :func:`create_app`.
    """
    from .asgi import GatewayASGI  # the ASGI stack is only needed by servers
    from .cors import CORSMiddleware
    app = create_app(settings)
    front = GatewayASGI(app, threads=threads)
    origins = app.extensions[EXTENSION].settings.cors_allowed_origins
    return CORSMiddleware(front, origins) if origins else front
