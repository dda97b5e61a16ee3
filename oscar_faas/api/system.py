"""``/health``, ``/system/info`` and ``/system/config``."""

from __future__ import annotations

import platform

from flask import Blueprint, Response, request

from .. import OSCAR_API_VERSION, __version__
from ..auth import require_admin
from ..model import dumps
from .context import gateway

bp = Blueprint("system", __name__)

_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def json_response(data: object, status: int = 200) -> Response:
    """Compact JSON with gin's content type."""
    return Response(dumps(data), status=status, mimetype="application/json")


@bp.before_app_request
def guard_system_routes() -> None:
    """Basic auth on every ``/system/*`` route, as OSCAR guards its ``/system`` group."""
    if request.path.startswith("/system/") or request.path == "/system":
        require_admin(request.headers.get("Authorization"), gateway().settings)


@bp.get("/health")
def health() -> Response:
    """``Ok``; with the embedded provider, 503 ``Degraded`` while it does not answer (``serve``
    restarts it)."""
    gw = gateway()
    if gw.settings.embedded_provider and not gw.openfaas.healthy():
        return Response("Degraded: the embedded provider is not answering; oscar-faas serve "
                        "is restarting it\n", status=503, mimetype="text/plain")
    return Response("Ok", mimetype="text/plain")


@bp.get("/system/info")
def info() -> Response:
    backend = gateway().openfaas.info()
    version = (backend.get("version") or {}).get("release") or "unknown"
    return json_response({
        "version": OSCAR_API_VERSION,
        "git_commit": f"oscar-faas-{__version__}",
        "architecture": _ARCH,
        "kubernetes_version": "",
        "serverless_backend": {"name": "OpenFaaS", "version": version},
    })


@bp.get("/system/config")
@bp.get("/system/config/")
def config() -> Response:
    s = gateway().settings
    return json_response({
        "config": {
            "name": s.oscar_name,
            "namespace": s.oscar_namespace,
            "services_namespace": s.services_namespace,
            "gpu_available": False,
            "interLink_available": False,
            "serverless_backend": "openfaas",
            "yunikorn_enable": False,
            "oidc_groups": [""],
        },
        "minio_provider": {
            "endpoint": s.minio_endpoint,
            "verify": s.minio_tls_verify,
            "access_key": s.minio_access_key,
            "secret_key": s.minio_secret_key,
            "region": s.minio_region,
        },
    })
