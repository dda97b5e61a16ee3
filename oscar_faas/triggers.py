"""Bucket triggers: an upload into a service's MinIO input folder becomes a job, as in OSCAR.

OSCAR (``pkg/utils/minio.go``) registers a MinIO webhook target per service,
``notify_webhook:<svc> endpoint=<OSCAR>/job/<svc> auth_token=<service token>`` (MinIO sends
the token as ``Authorization: Bearer``), restarts MinIO so the target is loaded, and adds to
each input bucket a notification of ``s3:ObjectCreated:*`` under ``<folder>/`` to the target's
ARN ``arn:minio:sqs:<region>:<svc>:webhook``. Deleting the service removes both. The job then
gets MinIO's event as its body, which makes the new object the script's input
(:mod:`oscar_faas.supervisor.events`).

Only MinIO has the admin API: against another S3 (or when the gateway's URL for MinIO is not
known) the service still works, without triggers, and the gateway's log says why.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterable

import urllib3

from .config import Settings
from .model import Service
from .service_parts import StorageIOConfig

log = logging.getLogger(__name__)

#: The event OSCAR subscribes input folders to.
EVENTS = ["s3:ObjectCreated:*"]
#: How long to wait for MinIO to answer again after its restart.
RESTART_WAIT = 30.0


def webhook_arn(settings: Settings, service: str) -> str:
    return f"arn:minio:sqs:{settings.minio_region}:{service}:webhook"


def input_paths(service: Service) -> list[StorageIOConfig]:
    """The service's inputs on ``minio.default`` (OSCAR's only trigger source)."""
    return [p for p in service.input if p.provider == ("minio", "default")]


def _admin(settings: Settings) -> Any:
    from urllib.parse import urlsplit

    from minio.credentials import StaticProvider
    from minio.minioadmin import MinioAdmin

    parts = urlsplit(settings.minio_endpoint if "://" in settings.minio_endpoint
                     else f"https://{settings.minio_endpoint}")
    return MinioAdmin(endpoint=parts.netloc, secure=parts.scheme == "https",
                      credentials=StaticProvider(settings.minio_access_key,
                                                 settings.minio_secret_key),
                      region=settings.minio_region, cert_check=settings.minio_tls_verify)


def _restart(admin: Any) -> None:
    """Restart MinIO (it loads notification targets at start) and wait until it answers."""
    admin.service_restart()
    deadline = time.monotonic() + RESTART_WAIT
    while True:
        time.sleep(0.5)
        try:
            admin.info()
            return
        except Exception:  # noqa: BLE001 - still restarting
            if time.monotonic() > deadline:
                raise


def _set_notifications(client: Any, bucket: str, arn: str,
                       folders: Iterable[str] | None) -> None:
    """Keep every queue of the bucket's notification but ``arn``'s, then add ``arn`` for
    each of ``folders`` (none: only remove)."""
    from minio.notificationconfig import NotificationConfig, PrefixFilterRule, QueueConfig

    current = client.get_bucket_notification(bucket)
    queues = [q for q in (current.queue_config_list or []) if q.queue != arn]
    for folder in folders or ():
        queues.append(QueueConfig(EVENTS, prefix_filter_rule=PrefixFilterRule(
            f"{folder}/" if folder else ""), queue=arn))
    client.set_bucket_notification(bucket, NotificationConfig(
        cloud_func_config_list=current.cloud_func_config_list,
        queue_config_list=queues, topic_config_list=current.topic_config_list))


def register(service: Service, settings: Settings) -> bool:
    """Make uploads into ``service``'s input folders start its jobs; True when done.

    Never raises: a MinIO without the admin API, or a gateway that does not know its own URL
    (``JOB_CALLBACK_URL``), leaves the service without triggers, and the log says so.
    """
    paths = input_paths(service)
    if not paths or not settings.minio_configured:
        return False
    if not settings.job_callback_url:
        log.warning("service %s: no bucket trigger for its input: set JOB_CALLBACK_URL to "
                    "this gateway's URL as MinIO reaches it", service.name)
        return False
    from .storage import minio_client
    try:
        admin = _admin(settings)
        admin.config_set(f"notify_webhook:{service.name}", {
            "endpoint": f"{settings.job_callback_url}/job/{service.name}",
            "auth_token": service.token})
        _restart(admin)
        client = minio_client(settings)
        arn = webhook_arn(settings, service.name)
        folders: dict[str, list[str]] = {}
        for path in paths:
            folders.setdefault(path.bucket, []).append(path.folder)
        for bucket, wanted in folders.items():
            _set_notifications(client, bucket, arn, wanted)
    except (Exception, urllib3.exceptions.HTTPError) as err:  # noqa: BLE001 - see above
        log.warning("service %s: no bucket trigger for its input (is MINIO_ENDPOINT a MinIO "
                    "with its admin API?): %s", service.name, err)
        return False
    log.info("service %s: uploads into %s start its jobs", service.name,
             ", ".join(f"{p.bucket}/{p.folder}" for p in paths))
    return True


def unregister(service: Service, settings: Settings) -> None:
    """Undo :func:`register` (best effort: the service is going anyway)."""
    paths = input_paths(service)
    if not paths or not settings.minio_configured or not settings.job_callback_url:
        return
    from .storage import minio_client
    try:
        client = minio_client(settings)
        arn = webhook_arn(settings, service.name)
        for bucket in dict.fromkeys(p.bucket for p in paths):
            if client.bucket_exists(bucket):
                _set_notifications(client, bucket, arn, None)
        admin = _admin(settings)
        admin.config_reset(f"notify_webhook:{service.name}")
        _restart(admin)
    except (Exception, urllib3.exceptions.HTTPError) as err:  # noqa: BLE001 - see above
        log.warning("service %s: its bucket trigger could not be removed: %s",
                    service.name, err)
