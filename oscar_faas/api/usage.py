"""``/system/metrics``: OSCAR v4's metrics API (the dashboard's Metrics page), from the
gateway's own request counts (:mod:`oscar_faas.usage`).

* ``GET /system/metrics`` -> ``{start, end, totals, sources}``;
* ``GET /system/metrics/breakdown?group_by=service|user|country[&include_users=true]
  [&format=json|csv]`` -> ``{start, end, group_by, items}`` or CSV;
* ``GET /system/metrics/<service>[?metric=KEY]``.

``start``/``end`` are RFC 3339 (default: the last 24 h); a bad one, or an end before the
start, is a 400 ``{"error": ...}`` as in OSCAR. Counts have one-hour resolution. CPU/GPU hours
and countries have no source here: they are 0 and ``sources`` says why.
"""

from __future__ import annotations

import csv
import io
import sqlite3
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from flask import Blueprint, Response, current_app, request

from ..contract import basic_credentials
from ..errors import OscarFaasError
from ..usage import ASYNC, EXPOSED, SYNC, Row, UsageStore, caller, last_updated
from .context import gateway
from .system import json_response

bp = Blueprint("usage", __name__)

USAGE = "oscar_faas.usage"
METRIC_KEYS = ("services-count", "cpu-hours", "gpu-hours", "requests-sync-per-service",
               "requests-async-per-service", "requests-exposed-per-service",
               "requests-per-user", "users-per-service", "countries-count", "countries-list")
#: The keys ``/system/metrics/<svc>`` answers (OSCAR's ``MetricValue``), in its order.
SERVICE_KEYS = ("cpu-hours", "gpu-hours", "requests-sync-per-service",
                "requests-async-per-service", "requests-exposed-per-service",
                "users-per-service")


@bp.record_once
def _open_store(state: Any) -> None:
    state.app.extensions[USAGE] = UsageStore(
        state.app.extensions["oscar_faas"].settings.usage_db or None)


def usage_store() -> UsageStore:
    return current_app.extensions[USAGE]


@bp.after_app_request
def _count_jobs(resp: Response) -> Response:
    """An accepted ``POST /job/<name>`` is an asynchronous request."""
    if (request.method == "POST" and request.path.startswith("/job/")
            and resp.status_code in (201, 202)):
        header = request.headers.get("Authorization")
        creds = basic_credentials(header)
        user, auth = caller(header, creds[0] if creds else None)
        usage_store().record(request.path[len("/job/"):], ASYNC, user, auth)
    return resp


class BadMetricsRequest(OscarFaasError, ValueError):
    status = 400


def _error(err: BadMetricsRequest) -> Response:
    return json_response({"error": err.message}, status=400)


bp.register_error_handler(BadMetricsRequest, _error)


def _time(name: str) -> datetime | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("z", "Z"))
    except ValueError:
        raise BadMetricsRequest(f"invalid {name} timestamp") from None
    if moment.tzinfo is None or "T" not in raw.upper():
        raise BadMetricsRequest(f"invalid {name} timestamp")
    return moment.astimezone(timezone.utc)


def time_range() -> tuple[datetime, datetime]:
    """``start``/``end`` as OSCAR reads them: end defaults to now, start to end - 24 h.

    :raises BadMetricsRequest: unparsable, or end before start.
    """
    end = _time("end") or datetime.now(timezone.utc)
    start = _time("start") or end - timedelta(hours=24)
    if end < start:
        raise BadMetricsRequest("end must be after start")
    return start, end


def _stamp(moment: datetime) -> str:
    text = moment.isoformat().replace("+00:00", "Z")
    return text


def _rows(start: datetime, end: datetime, service: str | None = None
          ) -> tuple[list[Row], dict[str, Any]]:
    """The counts, and the ``request-logs`` source's status."""
    store = usage_store()
    where = f"gateway request counts in {store.path}" if store.persistent else \
        "gateway request counts in memory only (lost on restart): set USAGE_DB"
    try:
        rows = store.rows(start, end, service)
    except sqlite3.Error as exc:
        return [], {"name": "request-logs", "status": "missing", "notes": f"{where}: {exc}"}
    status: dict[str, Any] = {"name": "request-logs",
                              "status": "ok" if store.persistent else "partial",
                              "notes": where + " (one-hour resolution)"}
    updated = last_updated(store)
    if updated:
        status["last_updated"] = updated
    return rows, status


def _count(rows: Iterable[Row], *kinds: str) -> int:
    return sum(r.n for r in rows if r.kind in kinds)


_NO_USAGE = {"name": "usage-metrics", "status": "missing",
             "notes": "CPU and GPU hours are not measured by oscar-faas"}
_NO_COUNTRY = {"name": "country-attribution", "status": "missing",
               "notes": "no GeoIP source: requests are not attributed to countries"}


@bp.get("/system/metrics")
def summary() -> Response:
    start, end = time_range()
    rows, source = _rows(start, end)
    try:
        active = len(gateway().registry.all())
        inventory = {"name": "service-inventory", "status": "ok"}
    except OscarFaasError as exc:
        active, inventory = 0, {"name": "service-inventory", "status": "missing",
                                "notes": exc.message}
    users = sorted({r.user for r in rows if r.user and r.kind != EXPOSED})
    return json_response({
        "start": _stamp(start), "end": _stamp(end),
        "totals": {
            "services_count_active": active,
            "services_count_total": len({r.service for r in rows}),
            "cpu_hours_total": 0.0, "gpu_hours_total": 0.0,
            "requests_count_total": _count(rows, SYNC, ASYNC),
            "requests_count_sync": _count(rows, SYNC),
            "requests_count_async": _count(rows, ASYNC),
            "requests_count_exposed": _count(rows, EXPOSED),
            "countries_count": 0, "countries": [],
            "users_count": len(users), "users": users,
        },
        "sources": [inventory, _NO_USAGE, source, {**source, "name": "exposed-request-logs"},
                    _NO_COUNTRY],
    })


def _by(rows: Iterable[Row], key: str) -> dict[str, list[Row]]:
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(getattr(row, key), []).append(row)
    return dict(sorted(groups.items()))


def _membership(rows: list[Row]) -> str:
    """OSCAR's classification by how the user authenticated (a service token: external)."""
    return "external" if any(r.auth == "service_token" for r in rows) else "unknown"


def breakdown_items(rows: list[Row], group_by: str, include_users: bool) -> list[dict]:
    if group_by == "service":
        items = []
        for key, group in _by(rows, "service").items():
            users = sorted({r.user for r in group if r.user and r.kind != EXPOSED})
            item: dict[str, Any] = {
                "key": key, "requests_count_total": _count(group, SYNC, ASYNC),
                "requests_count_sync": _count(group, SYNC),
                "requests_count_async": _count(group, ASYNC),
                "requests_count_exposed": _count(group, EXPOSED),
                "unique_users_count": len(users), "countries": []}
            if include_users:
                item["users"] = users
            items.append(item)
        return items
    requests = [r for r in rows if r.kind != EXPOSED]
    if group_by == "user":
        return [{"key": key, "membership": _membership(group),
                 "executions_count": sum(r.n for r in group), "countries": []}
                for key, group in _by(requests, "user").items()]
    if not requests:
        return []
    total = sum(r.n for r in requests)
    return [{"key": "unknown", "executions_count": total,
             "unique_users_count": len({r.user for r in requests if r.user}),
             "countries": [{"country": "unknown", "request_count": total}]}]


def _csv(group_by: str, items: list[dict]) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = {"service": ["key", "membership", "requests_count_total", "requests_count_sync",
                           "requests_count_async", "requests_count_exposed",
                           "unique_users_count", "countries"],
               "user": ["key", "membership", "executions_count", "countries"],
               "country": ["key", "membership", "executions_count", "unique_users_count",
                           "countries"]}[group_by]
    writer.writerow(columns)
    for item in items:
        countries = "|".join(f"{c['country']}:{c['request_count']}" for c in item["countries"])
        writer.writerow([countries if c == "countries" else item.get(c, "")
                         for c in columns])
    return Response(out.getvalue(), mimetype="text/csv")


@bp.get("/system/metrics/breakdown")
def breakdown() -> Response:
    start, end = time_range()
    group_by = request.args.get("group_by", "").strip().lower()
    if not group_by:
        raise BadMetricsRequest("group_by is required")
    fmt = request.args.get("format", "json").strip().lower()
    if fmt not in ("json", "csv"):
        raise BadMetricsRequest("invalid format")
    if group_by not in ("service", "user", "country"):
        raise BadMetricsRequest("unsupported group_by")
    include_users = request.args.get("include_users", "false").strip().lower() == "true"
    if fmt == "csv" and group_by == "service" and include_users:
        raise BadMetricsRequest("include_users is not supported for csv")
    rows, _ = _rows(start, end)
    items = breakdown_items(rows, group_by, include_users)
    if fmt == "csv":
        return _csv(group_by, items)
    return json_response({"start": _stamp(start), "end": _stamp(end), "group_by": group_by,
                          "items": items})


def _value(key: str, rows: list[Row], source: dict[str, Any]) -> tuple[float, str, list]:
    if key in ("cpu-hours", "gpu-hours"):
        return 0.0, "hours", [_NO_USAGE]
    if key == "requests-exposed-per-service":
        return float(_count(rows, EXPOSED)), "", [{**source, "name": "exposed-request-logs"}]
    if key == "users-per-service":
        return float(len({r.user for r in rows if r.user and r.kind != EXPOSED})), "", [source]
    kind = SYNC if key == "requests-sync-per-service" else ASYNC
    return float(_count(rows, kind)), "", [source]


def _metric(key: str, value: float, unit: str, sources: list) -> dict[str, Any]:
    item: dict[str, Any] = {"metric": key, "value": value}
    if unit:
        item["unit"] = unit
    item["sources"] = sources
    return item


@bp.get("/system/metrics/<service>")
def service_metrics(service: str) -> Response:
    service = service.strip()
    start, end = time_range()
    key = request.args.get("metric", "").strip()
    if key and key not in METRIC_KEYS:
        raise BadMetricsRequest("invalid metric key")
    if key and key not in SERVICE_KEYS:
        raise BadMetricsRequest("unsupported metric for value query")
    rows, source = _rows(start, end, service)
    if not key:
        return json_response({"service_name": service, "start": _stamp(start),
                              "end": _stamp(end),
                              "metrics": [_metric(k, *_value(k, rows, source))
                                          for k in SERVICE_KEYS]})
    value, unit, sources = _value(key, rows, source)
    answer: dict[str, Any] = {"service_id": service, "metric": key, "start": _stamp(start),
                              "end": _stamp(end), "value": value}
    if unit:
        answer["unit"] = unit
    answer["sources"] = sources
    return json_response(answer)
