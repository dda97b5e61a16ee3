"""``/system/services``: OSCAR's service CRUD, with OSCAR's status codes and bodies."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, request

from ..contract import is_true
from ..errors import BodyTooLarge, InvalidService
from .context import gateway
from .jobs import forget_service
from .system import json_response

bp = Blueprint("services", __name__)



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
