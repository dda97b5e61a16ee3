"""``/system/buckets``: OSCAR's buckets API (the dashboard's Buckets page, oscar-cli ``bucket
list|get``), on the gateway's MinIO; the rules are in :mod:`oscar_faas.buckets`.

Status codes are OSCAR's: create 201 and update/delete 204 with empty bodies, reads 200 JSON,
400 for a bad body, 403 for a service's bucket, 404 for a missing bucket. Without MinIO
configured every route answers 501 naming the settings to set.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, request

from ..buckets import BucketStore, PresignRequest
from ..errors import BadBucketRequest, OscarFaasError
from ..storage import default_paths, minio_client
from .context import gateway
from .system import json_response

bp = Blueprint("buckets", __name__)

_STORE = "oscar_faas.buckets"


class MinIONotConfigured(OscarFaasError):
    status = 501


def store() -> BucketStore:
    """The app's :class:`BucketStore` (one MinIO client per app).

    :raises MinIONotConfigured: no ``MINIO_ENDPOINT``.
    """
    gw = gateway()
    settings = gw.settings
    if not settings.minio_configured:
        raise MinIONotConfigured(
            "the buckets API needs MinIO: set MINIO_ENDPOINT, MINIO_ACCESS_KEY and "
            "MINIO_SECRET_KEY for the gateway")
    found = current_app.extensions.get(_STORE)
    if found is None:
        def service_buckets() -> dict[str, str]:
            return {path.bucket: service.name for service in gw.registry.all()
                    for path in default_paths(service)}
        found = current_app.extensions[_STORE] = BucketStore(
            minio_client(settings), settings.oscar_name, service_buckets)
    return found


def _body() -> Any:
    try:
        return json.loads(request.get_data() or b"null")
    except (ValueError, RecursionError):
        raise BadBucketRequest("The Bucket specification is not valid: invalid JSON") from None


@bp.get("/system/buckets")
def list_buckets() -> Response:
    return json_response(store().list())


@bp.post("/system/buckets")
def create_bucket() -> Response:
    bucket_store = store()
    bucket_store.create(_body(), gateway().settings.oscar_name)
    return Response(status=201)


@bp.put("/system/buckets")
def update_bucket() -> Response:
    store().update(_body())
    return Response(status=204)


@bp.get("/system/buckets/<bucket>")
def get_bucket(bucket: str) -> Response:
    """One page of objects (:data:`~oscar_faas.buckets.PAGE_SIZE`); ``page`` is the previous
    answer's ``next_page``. oscar-cli's ``limit`` is ignored, as OSCAR ignores it."""
    return json_response(store().get(bucket, request.args.get("page", "")))


@bp.delete("/system/buckets/<bucket>")
def delete_bucket(bucket: str) -> Response:
    store().delete(bucket)
    return Response(status=204)


@bp.post("/system/buckets/<bucket>/presign")
def presign(bucket: str) -> Response:
    bucket_store = store()
    return json_response(bucket_store.presign(bucket, PresignRequest.from_dict(_body())))
