"""``/system/status``, ``/system/quotas``, service logs, ``/metrics`` and the OSCAR v4 routes
oscar-faas has no use for.

``GET /system/status`` answers OSCAR v4's ``StatusInfo`` (the dashboard's status page,
OSCAR's federation). The node part describes the machine the functions run on when that is
this machine (``OPENFAAS_URL`` on a loopback address: the embedded provider, or a faasd next to
the gateway; :mod:`oscar_faas.hoststatus`); OpenFaaS' REST API says nothing about a cluster's
nodes, so against a remote OpenFaaS the node list is empty. The ``oscar`` part counts the OSCAR
services' functions as pods, with their readiness as OpenFaaS reports it; ``minio`` counts the
gateway's buckets and objects.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, request
from werkzeug.wsgi import ClosingIterator

from ..errors import InvalidService, OscarFaasError
from ..hoststatus import CpuSampler, cluster, machine_node, pod_states
from ..metrics import exposition
from ..model import Service
from ..quantities import parse_quantity
from ..translate import is_oscar_function, status_to_service
from .context import gateway
from .logstream import wants_follow
from .system import json_response

bp = Blueprint("status", __name__)

#: Written by hand from the contracts (docs: README "API and compatibility notes").
OPENAPI = Path(__file__).resolve().parent.parent / "openapi.json"

_LOOPBACK = {"127.0.0.1", "localhost", "::1", "0:0:0:0:0:0:0:1"}
_SAMPLER = "oscar_faas.cpu_sampler"
_STARTED = "oscar_faas.started"
_FOLLOWERS = "oscar_faas.log_followers"
#: Followed log streams the Flask route serves at once (each holds one of its threads).
FLASK_FOLLOWERS = 4


@bp.record_once
def _remember_start(state: Any) -> None:
    """The gateway's start, shown as its "deployment" creation time."""
    state.app.extensions[_STARTED] = datetime.now(timezone.utc)
    state.app.extensions[_SAMPLER] = CpuSampler()
    state.app.extensions[_FOLLOWERS] = threading.BoundedSemaphore(FLASK_FOLLOWERS)


def _functions_here(openfaas_url: str | None) -> bool:
    return (urlsplit(openfaas_url or "").hostname or "") in _LOOPBACK


def _requested(services: list[Service]) -> tuple[int, int]:
    """``(millicores, bytes)`` the services ask for (their ``cpu`` and ``memory``)."""
    cpu = mem = 0
    for service in services:
        try:
            cpu += int(parse_quantity(service.cpu) * 1000)
            mem += int(parse_quantity(service.memory))
        except InvalidService:
            continue
    return cpu, mem


def _minio_counts() -> dict[str, int]:
    """Buckets and objects of the gateway's MinIO (zeros without one, or when it fails)."""
    if not gateway().settings.minio_configured:
        return {"buckets_count": 0, "total_objects": 0}
    from .buckets import store
    try:
        buckets, objects = store().counts()
    except OscarFaasError as exc:
        current_app.logger.warning("status: MinIO counts unavailable: %s", exc)
        return {"buckets_count": 0, "total_objects": 0}
    return {"buckets_count": buckets, "total_objects": objects}


@bp.get("/system/status")
def status() -> Response:
    """OSCAR's current ``StatusInfo`` (``cluster``, ``oscar``, ``minio``), as the dashboard's
    status page and OSCAR's federation read it; OSCAR 3.6's camelCase shape is gone (no
    current client reads it: see README "Dashboard-facing API")."""
    gw = gateway()
    try:
        functions = gw.openfaas.list_functions()
        ready = True
    except OscarFaasError:  # the page still shows, saying the backend is not ready
        functions, ready = [], False
    oscar_functions = [f for f in functions if is_oscar_function(f)]
    services = [s for s in map(status_to_service, oscar_functions) if s]
    app = current_app
    nodes = ([machine_node(app.extensions[_SAMPLER], _requested(services))]
             if _functions_here(gw.settings.openfaas_url) else [])
    started = app.extensions[_STARTED]
    pods = pod_states((f.get("availableReplicas") or 0) > 0 for f in oscar_functions)
    return json_response({
        "cluster": cluster(nodes),
        "oscar": {
            "deployment_name": "oscar-faas", "ready": ready,
            "deployment": {"available_replicas": int(ready), "ready_replicas": int(ready),
                           "replicas": 1,
                           "creation_timestamp": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
                           "strategy": "none", "labels": {"app": "oscar-faas"}},
            "jobs_count": 0,  # no asynchronous jobs (/job answers 501)
            "pods": pods,
            "oidc": {"enabled": False, "issuers": [], "groups": []},
        },
        "minio": _minio_counts(),
    })


@bp.get("/system/quotas/user")
@bp.get("/system/quotas/user/<user>")
def quota(user: str | None = None) -> Response:
    """OSCAR's ``QuotaResponse`` saying "no quota": oscar-faas sets none (no Kueue cluster
    queue, no MinIO quotas), so only ``user_id`` is given, as OSCAR answers for a user
    without any (every other field is ``omitempty``). Without a user: the caller's own,
    i.e. the Basic user."""
    return json_response({"user_id": user or gateway().settings.oscar_username})


@bp.put("/system/quotas/user/<user>")
def set_quota(user: str) -> Response:
    return Response(f"quotas are not available in oscar-faas: it has no per-user limits to "
                    f"set for '{user}'\n", status=501, mimetype="text/plain")


@bp.get("/system/services/<name>/logs")
def service_logs(name: str) -> Response:
    """The function's log lines, from OpenFaaS' ``/system/logs`` (faas-provider's logs
    contract: the embedded provider, or faas-netes/faasd on a cluster), passed on as they
    come: NDJSON ``{"name","namespace","instance","timestamp","text"}``. Query: ``since``
    (RFC 3339), ``tail`` (last N lines), ``follow`` (a live stream). OSCAR's
    ``/system/logs/<name>`` stays the list of asynchronous jobs (none here)."""
    gw = gateway()
    gw.registry.get(name)  # 404 for an unknown service, as every /system/services route
    tail = request.args.get("tail", "")
    if tail and not tail.lstrip("-").isdigit():
        return Response("tail must be a whole number\n", status=422, mimetype="text/plain")
    follow = wants_follow(request.args.get("follow"))
    # ``oscar-faas serve`` answers follow streams on the event loop (:mod:`.logstream`);
    # here (plain WSGI) each holds a thread, so only a few may run at once.
    slots: threading.BoundedSemaphore = current_app.extensions[_FOLLOWERS]
    if follow and not slots.acquire(blocking=False):
        return too_many_followers(FLASK_FOLLOWERS)
    try:
        upstream = gw.openfaas.logs(name, request.args.get("since", ""), int(tail or 0),
                                    follow)
    except BaseException:
        if follow:
            slots.release()
        raise
    # werkzeug hands a direct_passthrough body to the server as it is (its own close hooks
    # never run), so the body itself closes the upstream stream and frees the slot
    closers = [upstream.close, slots.release] if follow else [upstream.close]
    body = ClosingIterator(upstream.iter_content(chunk_size=None), closers)
    return Response(body, status=200, mimetype="application/x-ndjson",
                    direct_passthrough=True)


def too_many_followers(limit: int) -> Response:
    return Response(f"too many log streams followed at once (at most {limit} per gateway "
                    f"worker): stop one, or read without follow\n", status=429,
                    mimetype="text/plain", headers={"Retry-After": "10"})


@bp.get("/metrics")
def prometheus() -> Response:
    """The gateway's Prometheus metrics (every worker's, see :mod:`oscar_faas.metrics`); no
    credentials, as OpenFaaS' own ``/metrics``: labels hold service names and codes only.
    Series of services that no longer exist are left out (and dropped where the process
    can drop them), so deleted services do not grow the answer."""
    try:
        live = {s.name for s in gateway().registry.all()}
    except OscarFaasError:  # OpenFaaS unreachable: show everything rather than nothing
        live = None
    body, content_type = exposition(live_services=live)
    return Response(body, content_type=content_type)


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 document of the whole API (``oscar_faas/openapi.json``), open to all
    as the API's shape is no secret."""
    return Response(OPENAPI.read_bytes(), mimetype="application/json")


@bp.get("/system/volumes")
def volumes() -> Response:
    """No persistent volumes: functions keep nothing between calls but what goes to MinIO."""
    return json_response([])

