"""``POST /job/<service>``: asynchronous invocation, which oscar-faas does not offer."""

from __future__ import annotations

from flask import Blueprint, Response, request

from ..auth import require_run_access
from .context import gateway

bp = Blueprint("jobs", __name__)


@bp.post("/job/<name>")
def job(name: str) -> Response:
    """Asynchronous invocations need a job runner, which oscar-faas does not have yet; say so
    (after the same lookup and auth as /run) instead of a bare 404."""
    gw = gateway()
    service = gw.registry.get_cached(name)
    require_run_access(request.headers.get("Authorization"), service.token, gw.settings)
    return Response(f"asynchronous invocation (/job) is not supported by oscar-faas: invoke "
                    f"{name} synchronously with POST /run/{name}\n", status=501,
                    mimetype="text/plain")
