"""``/system/status``, ``/system/metrics`` and the OSCAR v4 routes oscar-faas has no use for.

``GET /system/status`` answers OSCAR's ``GeneralInfo`` (oscar-cli ``cluster status``, the
dashboard, OSCAR's resource manager on a peer cluster). The node part describes the machine
the functions run on when that is this machine (``OPENFAAS_URL`` on a loopback address: the
embedded provider, or a faasd next to the gateway); OpenFaaS' REST API says nothing about a
cluster's nodes, so against a remote OpenFaaS the node list is empty. The ``OSCAR`` part lists
the OSCAR services' functions with their readiness, as OpenFaaS reports it.
"""

from __future__ import annotations

import os
import platform
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, request

from ..errors import OscarFaasError
from ..metrics import exposition
from ..translate import is_oscar_function
from .context import gateway
from .system import json_response

bp = Blueprint("status", __name__)

#: Written by hand from the contracts (docs: README "API and compatibility notes").
OPENAPI = Path(__file__).resolve().parent.parent / "openapi.json"

_LOOPBACK = {"127.0.0.1", "localhost", "::1", "0:0:0:0:0:0:0:1"}


def _meminfo() -> dict[str, int]:
    """``/proc/meminfo`` in bytes (empty where there is none)."""
    values: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                values[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    except OSError:
        pass
    return values


def machine_node() -> dict[str, Any]:
    """This machine as one OSCAR ``NodeInfo``: CPU in millicores (use = 1-minute load
    average, capped), memory in bytes (use = total - available)."""
    cpus = os.cpu_count() or 1
    capacity = cpus * 1000
    try:
        used = min(capacity, int(os.getloadavg()[0] * 1000))
    except OSError:
        used = 0
    mem = _meminfo()
    mem_total = mem.get("MemTotal", 0)
    mem_used = max(0, mem_total - mem.get("MemAvailable", mem.get("MemFree", 0)))
    gpus = len(list(Path("/dev").glob("nvidia[0-9]*")))
    return {
        "nodeName": platform.node() or "localhost",
        "cpuCapacity": str(capacity), "cpuUsage": str(used),
        "cpuPercentage": f"{100 * used / capacity:.2f}",
        "memoryCapacity": str(mem_total), "memoryUsage": str(mem_used),
        "memoryPercentage": f"{100 * mem_used / mem_total:.2f}" if mem_total else "0.00",
        "isInterLink": False, "hasGPU": gpus > 0, "gpus": gpus,
        "conditions": [{"type": "Ready", "status": "True"}],
    }


def _functions_here(openfaas_url: str | None) -> bool:
    return (urlsplit(openfaas_url or "").hostname or "") in _LOOPBACK


def _pods(functions: list[dict[str, Any]]) -> dict[str, Any]:
    pods = [{"name": f.get("name", ""),
             "state": "Running" if (f.get("availableReplicas") or 0) > 0 else "Pending"}
            for f in functions if is_oscar_function(f)]
    states: dict[str, int] = {}
    for pod in pods:
        states[pod["state"]] = states.get(pod["state"], 0) + 1
    return {"pods": pods, "total": len(pods), "states": states}


@bp.get("/system/status")
def status() -> Response:
    gw = gateway()
    try:
        functions = gw.openfaas.list_functions()
        ready = True
    except OscarFaasError:  # the page still shows, saying the backend is not ready
        functions, ready = [], False
    nodes = [machine_node()] if _functions_here(gw.settings.openfaas_url) else []
    free_cpu = [int(n["cpuCapacity"]) - int(n["cpuUsage"]) for n in nodes]
    free_mem = [int(n["memoryCapacity"]) - int(n["memoryUsage"]) for n in nodes]
    gpus = sum(n.pop("gpus") for n in nodes)
    return json_response({
        "numberNodes": len(nodes),
        "cpuFreeTotal": sum(free_cpu), "cpuMaxFree": max(free_cpu, default=0),
        "memoryFreeTotal": sum(free_mem), "memoryMaxFree": max(free_mem, default=0),
        "hasGPU": gpus > 0, "gpusTotal": gpus,
        "detail": nodes,
        "OSCAR": {
            "deploymentName": "oscar-faas", "deploymentReady": ready,
            "deploymentInfo": {}, "jobsCount": {},
            "podsInfo": _pods(functions),
            "OIDC": {"enabled": False, "issuers": [], "groups": []},
        },
        "MinIO": {"buckets": []},
    })


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@bp.get("/system/metrics")
def metrics() -> Response:
    """Per service, the synchronous calls OpenFaaS has counted (``invocationCount``: since
    the provider started, or what the OpenFaaS gateway's Prometheus holds), in the item shape
    of OSCAR v4's service breakdown. Prometheus figures are at ``GET /metrics``."""
    end = datetime.now(timezone.utc)
    items = []
    for f in gateway().openfaas.list_functions():
        if not is_oscar_function(f):
            continue
        count = int(f.get("invocationCount") or 0)
        items.append({"key": f.get("name", ""), "requests_count_total": count,
                      "requests_count_sync": count, "requests_count_async": 0,
                      "requests_count_exposed": 0, "unique_users_count": 0,
                      "countries": []})
    return json_response({"start": _rfc3339(end - timedelta(hours=24)),
                          "end": _rfc3339(end), "group_by": "service", "items": items})


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
    follow = request.args.get("follow", "").lower() in ("1", "t", "true")
    upstream = gw.openfaas.logs(name, request.args.get("since", ""), int(tail or 0), follow)
    resp = Response(upstream.iter_content(chunk_size=None), status=200,
                    mimetype="application/x-ndjson", direct_passthrough=True)
    resp.call_on_close(upstream.close)
    return resp


@bp.get("/metrics")
def prometheus() -> Response:
    """The gateway's Prometheus metrics (every worker's, see :mod:`oscar_faas.metrics`); no
    credentials, as OpenFaaS' own ``/metrics``: labels hold service names and codes only."""
    body, content_type = exposition()
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

