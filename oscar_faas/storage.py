"""MinIO buckets and folders for services, through the ``minio`` SDK.

OSCAR creates each input/output bucket and a ``folder/`` marker object, and deletes buckets
with their contents when a service goes. We create them the same way (idempotently) but never
delete user data on service removal unless explicitly asked to (``purge``).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Iterable
from urllib.parse import urlsplit

import urllib3

from .config import Settings
from .errors import InvalidService, StorageError
from .model import Service
from .service_parts import StorageIOConfig

if TYPE_CHECKING:  # the SDK costs ~7 MB per gateway worker: load it only when MinIO is used
    from minio import Minio


def minio_client(settings: Settings) -> Minio:
    """A client for the gateway's MinIO (``minio.default``)."""
    return client_for(settings.minio_endpoint, settings.minio_access_key,
                      settings.minio_secret_key, settings.minio_region,
                      settings.minio_tls_verify)


def client_for(endpoint: str, access_key: str, secret_key: str, region: str | None,
               verify: bool = True) -> Minio:
    """Build a ``Minio`` client from an OSCAR-style endpoint URL (``http://host:port``)."""
    from minio import Minio

    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    http_client = None
    if parts.scheme == "https" and not verify:
        http_client = urllib3.PoolManager(cert_reqs="CERT_NONE")
    return Minio(parts.netloc, access_key=access_key, secret_key=secret_key,
                 region=region or None, secure=parts.scheme == "https",
                 http_client=http_client)


def default_paths(service: Service) -> list[StorageIOConfig]:
    """The service's input and output paths that live on ``minio.default``."""
    return [io_ for io_ in (*service.input, *service.output)
            if io_.provider == ("minio", "default")]


def check_configured(service: Service, settings: Settings) -> None:
    """:raises InvalidService: the service uses ``minio.default`` but no MinIO is set up."""
    paths = default_paths(service)
    if paths and not settings.minio_configured:
        raise InvalidService(
            f"service '{service.name}' uses minio.default ({paths[0].path}) but the gateway "
            f"has no MinIO: set MINIO_ENDPOINT, MINIO_ACCESS_KEY and MINIO_SECRET_KEY")


def ensure_paths(client: Minio, paths: Iterable[StorageIOConfig]) -> None:
    """Create each bucket and folder marker if missing; running twice changes nothing.

    :raises StorageError: MinIO refused or could not be reached; names bucket and cause.
    """
    from minio.error import MinioException, S3Error

    for path in paths:
        bucket = path.bucket
        try:
            if not client.bucket_exists(bucket):
                client.make_bucket(bucket)
            if path.folder:
                client.put_object(bucket, path.folder + "/", io.BytesIO(b""), 0)
        except S3Error as exc:
            raise StorageError(f"cannot create bucket '{bucket}': {exc.code}: {exc.message}")
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageError(f"cannot create bucket '{bucket}': {exc}")


def purge_paths(client: Minio, paths: Iterable[StorageIOConfig]) -> list[str]:
    """Delete the buckets of ``paths`` with everything in them; return the bucket names.

    :raises StorageError: as :func:`ensure_paths`.
    """
    from minio.error import MinioException, S3Error

    removed: list[str] = []
    for bucket in dict.fromkeys(p.bucket for p in paths):
        try:
            if not client.bucket_exists(bucket):
                continue
            for obj in client.list_objects(bucket, recursive=True):
                client.remove_object(bucket, obj.object_name)
            client.remove_bucket(bucket)
            removed.append(bucket)
        except S3Error as exc:
            raise StorageError(f"cannot delete bucket '{bucket}': {exc.code}: {exc.message}")
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageError(f"cannot delete bucket '{bucket}': {exc}")
    return removed
