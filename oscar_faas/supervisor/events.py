"""Storage events: a MinIO bucket notification as the body makes the input the new object.

OSCAR's faas-supervisor (``faassupervisor/events``) does this for every job MinIO's webhook
starts: when the JSON body's ``Records[0].eventSource`` is a storage source, the object
``Records[0].s3.bucket.name`` / ``unquote_plus(Records[0].s3.object.key)`` is downloaded into
the input folder and becomes ``$INPUT_FILE_PATH``; ``STORAGE_OBJECT_KEY`` and ``EVENT_TIME``
are set for the script. The object is read with the ``minio.default`` credentials of the
service's storage secret (OSCAR's only input provider).

A job whose body was too large for the queue arrives as a reference to where the gateway put
it (:data:`~oscar_faas.contract.STORED_INPUT_KEY`): the body is read from there and decoded as
if it had come inline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import unquote_plus

from ..contract import STORED_INPUT_KEY
from .config import FunctionConfig, OutputSpec
from .errors import FunctionConfigError, InvalidInput, UploadError
from .logs import SupervisorLog
from .upload import _cause, _client, _resolve, read_storage_secret

#: ``eventSource`` values of storage events (faas-supervisor's MinIO and S3 events).
STORAGE_SOURCES = frozenset({"minio:s3", "aws:s3"})
#: A notification is small; larger JSON bodies are not looked into.
MAX_EVENT = 1 << 20


def resolve_input(input_path: Path, kind: str, input_dir: Path, config: FunctionConfig,
                  env: Mapping[str, str], log: SupervisorLog) -> dict[str, str]:
    """What a JSON body stands for: the variables to change for the script (none for an
    ordinary JSON input). A storage event makes the input its object; a stored job input
    (:data:`~oscar_faas.contract.STORED_INPUT_KEY`) is read and decoded as the body.

    :raises InvalidInput: a malformed event, or a stored input that is not JSON or base64.
    :raises UploadError: the object cannot be read.
    """
    if kind != "json" or input_path.stat().st_size > MAX_EVENT:
        return {}
    try:
        doc = json.loads(input_path.read_bytes())
    except (ValueError, UnicodeDecodeError):
        return {}
    stored = doc.get(STORED_INPUT_KEY) if isinstance(doc, dict) else None
    if isinstance(stored, dict) and stored.get("bucket") and stored.get("key"):
        return _stored_input(str(stored["bucket"]), str(stored["key"]), input_path, config,
                             env, log)
    event = storage_event(input_path)
    return {} if event is None else fetch_event_object(event, input_dir, config, env, log)


def _stored_input(bucket: str, key: str, input_path: Path, config: FunctionConfig,
                  env: Mapping[str, str], log: SupervisorLog) -> dict[str, str]:
    """Read a job's body from the gateway's bucket and decode it into ``input_path``."""
    from .inputs import save_body

    raw = input_path.with_name(input_path.name + ".stored")
    _download(bucket, key, raw, config, env, "stored job input")
    try:
        with open(raw, "rb") as body:
            decoded, _ = save_body(body, input_path.parent)
    finally:
        raw.unlink(missing_ok=True)
    decoded.replace(input_path)
    log.info("job input read from %s/%s", bucket, key)
    return {}


def _download(bucket: str, key: str, path: Path, config: FunctionConfig,
              env: Mapping[str, str], what: str) -> None:
    """:raises FunctionConfigError: no minio.default credentials. :raises UploadError: the
    object cannot be read."""
    from minio.error import MinioException
    from urllib3.exceptions import HTTPError

    spec = OutputSpec(provider="minio.default", kind="minio", ident="default", bucket=bucket)
    try:
        target = _resolve(spec, config, read_storage_secret(env))
    except FunctionConfigError as err:
        raise FunctionConfigError(f"{what}: {err}") from None
    client, http = _client(target, env)
    try:
        client.fget_object(bucket, key, str(path))
    except (MinioException, HTTPError, ValueError, OSError) as err:
        raise UploadError(f"{what}: cannot read '{key}' from bucket '{bucket}' "
                          f"({target.provider} at {target.endpoint}): {_cause(err)}") from None
    finally:
        http.clear()


def storage_event(path: Path) -> tuple[str, str, str] | None:
    """``(bucket, key, event_time)`` when the stored JSON body is a storage event.

    :raises InvalidInput: it is one, but without a bucket name or object key (400, named).
    """
    if path.stat().st_size > MAX_EVENT:
        return None
    try:
        doc = json.loads(path.read_bytes())
        record = doc["Records"][0]
        source = record.get("eventSource")
    except (ValueError, UnicodeDecodeError, KeyError, IndexError, TypeError, AttributeError):
        return None
    if source not in STORAGE_SOURCES:
        return None
    s3: Any = record.get("s3") or {}
    try:
        bucket = s3["bucket"]["name"]
        key = unquote_plus(s3["object"]["key"])
    except (KeyError, TypeError):
        raise InvalidInput(f"storage event ({source}) without Records[0].s3.bucket.name or "
                           f"Records[0].s3.object.key") from None
    if not isinstance(bucket, str) or not bucket or not key:
        raise InvalidInput("storage event with an empty bucket name or object key")
    return bucket, key, str(record.get("eventTime") or "")


def fetch_event_object(event: tuple[str, str, str], input_dir: Path, config: FunctionConfig,
                       env: Mapping[str, str], log: SupervisorLog) -> dict[str, str]:
    """Download the event's object into ``input_dir``; the variables the script gets.

    :raises FunctionConfigError: the service has no ``minio.default`` credentials.
    :raises UploadError: the object cannot be read (502, naming bucket, key and cause).
    """
    bucket, key, event_time = event
    path = input_dir / (Path(key).name or "event-object")
    _download(bucket, key, path, config, env, "storage event")
    log.info("storage event: downloaded %s/%s", bucket, key)
    return {"INPUT_FILE_PATH": str(path), "STORAGE_OBJECT_KEY": key, "EVENT_TIME": event_time}
