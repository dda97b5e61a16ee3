"""``/system/services``: OSCAR's service CRUD, with OSCAR's status codes and bodies, and
OSCAR's deployment view of a service (``/deployment``, ``/deployment/logs``): what the
dashboard's Deployment tab and ``oscar-faas ls``/``apply`` show."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Mapping

from flask import Blueprint, Response, request

from ..contract import is_true
from ..errors import BodyTooLarge, InvalidService, OscarFaasError
from ..model import Service
from .context import gateway
from .jobs import forget_service
from .system import json_response

bp = Blueprint("services", __name__)

#: OSCAR's ``tailLines``: default, and the most it returns.
TAIL_DEFAULT, TAIL_MAX = 200, 1000
#: The provider's runtime states -> OSCAR's deployment states.
STATES = {"ready": "ready", "starting": "pending", "failed": "failed"}


def _read_capped(limit: int) -> bytes:
    """The request body, at most ``limit`` bytes: a larger Content-Length is refused before
    anything is read, a body without one (chunked) as soon as it passes the limit.

    :raises BodyTooLarge: 413, naming the limit and its setting.
    """
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(too_large(limit))
    stream = request.environ["wsgi.input"]  # werkzeug's wrapper would cut at the limit
    parts, size = [], 0
    while chunk := stream.read(min(65536, limit + 1 - size) if request.content_length is None
                               else min(65536, request.content_length - size)):
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(too_large(limit))
        parts.append(chunk)
        if request.content_length is not None and size >= request.content_length:
            break
    return b"".join(parts)


def too_large(limit: int) -> str:
    return f"request body larger than the limit of {limit} bytes (MAX_API_BODY_SIZE)"


def _body() -> Any:
    """The JSON body whatever its Content-Type (oscar-cli and curl do not always set it)."""
    raw = _read_capped(gateway().settings.max_api_body_size)
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise InvalidService(f"The service specification is not valid: invalid JSON: {exc}")
    except RecursionError:
        raise InvalidService("The service specification is not valid: the JSON is nested "
                             "too deeply") from None


@bp.get("/system/services")
def list_services() -> Response:
    return json_response([s.to_dict() for s in gateway().registry.all()])


@bp.post("/system/services")
def create_service() -> Response:
    gateway().registry.create(_body())
    return Response(status=201)


@bp.put("/system/services")
def update_service() -> Response:
    gateway().registry.update(_body())
    return Response(status=204)


@bp.get("/system/services/<name>")
def get_service(name: str) -> Response:
    return json_response(gateway().registry.get(name).to_dict())


@bp.delete("/system/services/<name>")
def delete_service(name: str) -> Response:
    """``?purge=true`` also deletes the service's minio.default buckets and their contents
    (OSCAR always does; we keep user data unless asked)."""
    purge = is_true(request.args.get("purge"))
    gateway().registry.delete(name, purge=purge)
    forget_service(name)
    return Response(status=204)


@bp.get("/system/services/<name>/deployment")
def deployment(name: str) -> Response:
    """OSCAR's ``ServiceDeploymentStatus`` of the service's function: its state (``ready``,
    ``pending`` while its runtime starts, ``failed`` with the cause), since when, and its
    instances (one runtime per service here)."""
    gw = gateway()
    service = gw.registry.get(name)
    status = gw.openfaas.get_function(name)
    return json_response(deployment_status(service, status, gw.settings.services_namespace))


def deployment_status(service: Service, status: Mapping[str, Any],
                      namespace: str) -> dict[str, Any]:
    """The OSCAR shape from an OpenFaaS function status: the embedded provider's ``runtime``
    field when there (state, cause, time of change), else ``availableReplicas``."""
    runtime = status.get("runtime") if isinstance(status.get("runtime"), dict) else None
    available = int(status.get("availableReplicas") or 0)
    since = None
    if runtime is not None:
        state = STATES.get(str(runtime.get("state")), "unavailable")
        reason = str(runtime.get("reason") or "")
        since = runtime.get("since")
        # a failed runtime may run (warm workers that cannot start) or not (back-off)
        active = 1 if runtime.get("running", "retryIn" not in runtime) else 0
        if "retryIn" in runtime:
            reason += f" (next try in {runtime['retryIn']:g} s)"
    else:
        state = "ready" if available > 0 else "pending"
        reason = "" if available > 0 else "no replica of its function is available yet"
        active = max(available, int(status.get("replicas") or 0))
    if state == "ready":
        reason = reason or "Deployment is ready."
    out: dict[str, Any] = {"service_name": service.name, "namespace": namespace,
                           "state": state, "reason": reason}
    if since:
        out["last_transition_time"] = since
    out.update(active_instances=active,
               affected_instances=max(0, active - (1 if state == "ready" else 0)),
               resource_kind="exposed_service" if service.exposed else "knative_service")
    return out


@bp.get("/system/services/<name>/deployment/logs")
def deployment_logs(name: str) -> Response:
    """OSCAR's ``DeploymentLogStream``: the service's last ``tailLines`` log lines (default
    200, at most 1000) as ``entries``, with ``timestamp`` when ``timestamps=true``."""
    gw = gateway()
    service = gw.registry.get(name)
    timestamps = request.args.get("timestamps", "false") in ("1", "t", "T", "TRUE", "true",
                                                             "True")
    tail = tail_lines(request.args.get("tailLines", ""))
    out: dict[str, Any] = {"service_name": service.name, "available": False, "entries": []}
    try:
        upstream = gw.openfaas.logs(name, tail=tail)
    except OscarFaasError as err:  # a provider without logs (501)
        out["message"] = f"Deployment logs are unavailable for this service: {err}"
        return json_response(out)
    entries = []
    try:
        for line in upstream.iter_lines():
            try:
                message = json.loads(line) if line.strip() else None
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            entry = {"message": str(message.get("text", ""))}
            if timestamps and message.get("timestamp"):
                entry = {"timestamp": _seconds(str(message["timestamp"])), **entry}
            entries.append(entry)
    finally:
        upstream.close()
    out["entries"] = entries[-tail:]
    out["available"] = bool(entries)
    if not entries:
        out["message"] = "Deployment logs are not yet available."
    return json_response(out)


def tail_lines(value: str) -> int:
    """OSCAR's rule: not a whole number or below 1 -> the default; above the maximum -> it."""
    try:
        lines = int(value)
    except ValueError:
        return TAIL_DEFAULT
    return TAIL_DEFAULT if lines < 1 else min(lines, TAIL_MAX)


def _seconds(stamp: str) -> str:
    """RFC 3339 to whole seconds in UTC, as OSCAR formats log times."""
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
