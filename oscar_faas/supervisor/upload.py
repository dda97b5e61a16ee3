"""Upload output files to MinIO/S3 for the service's ``output`` entries.

Credentials come from the storage secret (see docs/internals.md): the JSON file
``$OSCAR_SECRETS_DIR/$OSCAR_STORAGE_SECRET`` (secrets dir defaults to where OpenFaaS mounts
them). Endpoint, region and verify may also come from the service's ``storage_providers``, whose
keys are normally masked as ``hidden``; the secret wins wherever it has a value. Targets are
resolved *before* the script runs, so a missing credential fails fast with a clear message
instead of after minutes of work.

Every failure (bad credentials, missing bucket, unreachable endpoint) becomes an
:class:`UploadError` naming the file, bucket, provider and cause; it is never swallowed.
"""

from __future__ import annotations

import json
import mimetypes
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from ..contract import ENV_SECRETS_DIR, ENV_STORAGE_SECRET, OPENFAAS_SECRETS_DIR
from .config import FunctionConfig, OutputSpec
from .errors import FunctionConfigError, UploadError
from .logs import SupervisorLog
from .outputs import entry_name, open_output

#: Where OpenFaaS mounts a function's secrets.
#: Endpoint used for ``s3.<id>`` providers that name none.
AWS_ENDPOINT = "https://s3.amazonaws.com"
#: Values that mean "no value" in a service definition (GET masks keys as "hidden").
_MASKED = {None, "", "hidden"}
#: Connect/read timeouts (s) and retries: a dead endpoint should fail in seconds, not minutes.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 300.0
RETRIES = 2


@dataclass(frozen=True)
class StorageTarget:
    """A resolved provider: everything needed to build a ``minio.Minio`` client."""

    provider: str
    endpoint: str  # the full URL, for messages
    host: str  # host[:port], what the SDK wants
    secure: bool
    verify: bool
    region: str | None
    access_key: str
    secret_key: str


def read_storage_secret(env: Mapping[str, str]) -> dict[str, Any]:
    """The parsed storage secret, or ``{}`` when the function has none.

    :raises FunctionConfigError: the secret is named but missing, unreadable or not JSON.
    """
    name = env.get(ENV_STORAGE_SECRET, "").strip()
    if not name:
        return {}
    path = Path(env.get(ENV_SECRETS_DIR) or OPENFAAS_SECRETS_DIR) / name
    try:
        doc = json.loads(path.read_text())
    except OSError as err:
        raise FunctionConfigError(f"cannot read storage secret {path}: {err.strerror or err}") from None
    except ValueError as err:
        raise FunctionConfigError(f"storage secret {path} is not valid JSON: {err}") from None
    if not isinstance(doc, dict):
        raise FunctionConfigError(f"storage secret {path} must be a JSON object")
    return doc


def secret_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The service's ``environment.secrets``, which travel in the storage secret (never as
    OpenFaaS env vars) and are exported to the user script, as OSCAR's ``envFrom`` does.

    :raises FunctionConfigError: as :func:`read_storage_secret`, or a malformed entry.
    """
    values = read_storage_secret(env).get("environment") or {}
    if not isinstance(values, dict):
        raise FunctionConfigError("storage secret: 'environment' must be an object")
    return {str(k): str(v) for k, v in values.items()}


def resolve_targets(
    config: FunctionConfig, env: Mapping[str, str]
) -> list[tuple[OutputSpec, StorageTarget]]:
    """Pair every output with its resolved provider.

    :raises FunctionConfigError: a provider type is unsupported, unknown, or lacks keys or endpoint.
    """
    if not config.outputs:
        return []
    secret = read_storage_secret(env)
    return [(spec, _resolve(spec, config, secret)) for spec in config.outputs]


def _resolve(spec: OutputSpec, config: FunctionConfig, secret: Mapping[str, Any]) -> StorageTarget:
    if spec.kind not in ("minio", "s3"):
        raise FunctionConfigError(
            f"output to bucket '{spec.bucket}': storage provider type '{spec.kind}' "
            "is not supported for outputs (use minio or s3)"
        )
    merged: dict[str, Any] = {}
    for source in (config.storage_providers, secret):
        entry = _lookup(source, spec.kind, spec.ident)
        merged.update({k: v for k, v in entry.items() if v not in _MASKED})
    name = f"{spec.kind}.{spec.ident}"
    missing = [k for k in ("access_key", "secret_key") if not merged.get(k)]
    if missing:
        raise FunctionConfigError(
            f"output to bucket '{spec.bucket}': no credentials for storage provider '{name}' "
            f"(missing {' and '.join(missing)} in the storage secret)"
        )
    endpoint = str(merged.get("endpoint") or (AWS_ENDPOINT if spec.kind == "s3" else ""))
    if not endpoint:
        raise FunctionConfigError(
            f"output to bucket '{spec.bucket}': storage provider '{name}' has no endpoint"
        )
    host, secure = _split_endpoint(endpoint, name)
    return StorageTarget(
        provider=name,
        endpoint=endpoint,
        host=host,
        secure=secure,
        verify=_as_bool(merged.get("verify", True)),
        region=str(merged["region"]) if merged.get("region") else None,
        access_key=str(merged["access_key"]),
        secret_key=str(merged["secret_key"]),
    )


def _lookup(source: Mapping[str, Any], kind: str, ident: str) -> Mapping[str, Any]:
    group = source.get(kind)
    entry = group.get(ident) if isinstance(group, dict) else None
    return entry if isinstance(entry, dict) else {}


def _split_endpoint(endpoint: str, name: str) -> tuple[str, bool]:
    """``http://h:p`` -> (``h:p``, False); a bare ``h:p`` is taken as https, as the SDK does."""
    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise FunctionConfigError(f"storage provider '{name}' has an invalid endpoint {endpoint!r}")
    return parts.netloc, parts.scheme == "https"


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "off")
    return bool(value)


def upload_outputs(
    targets: list[tuple[OutputSpec, StorageTarget]],
    output_dir: Path,
    files: list[str],
    env: Mapping[str, str],
    log: SupervisorLog,
) -> list[str]:
    """Upload the matching ``files`` for each output; return one error line per failed output.

    An output stops at its first failing file (the rest would fail the same way), the other
    outputs are still tried, so the caller sees every broken destination at once.
    """
    errors = []
    for spec, target in targets:
        chosen = [name for name in files if spec.matches(name)]
        if not chosen:
            log.info("output %s/%s: no file matches the filters", spec.bucket, spec.folder)
            continue
        try:
            _upload(spec, target, output_dir, chosen, env, log)
        except UploadError as err:
            log.error("%s", err)
            errors.append(str(err))
    return errors


def _upload(
    spec: OutputSpec,
    target: StorageTarget,
    output_dir: Path,
    names: list[str],
    env: Mapping[str, str],
    log: SupervisorLog,
) -> None:
    from minio.error import MinioException  # imported here: only functions with outputs pay
    from urllib3.exceptions import HTTPError

    client, http = _client(target, env)
    try:
        for name in names:
            key = spec.key_for(entry_name(name))
            try:
                with open_output(output_dir, name) as source:  # never through a link
                    client.put_object(
                        spec.bucket, key, source, os.fstat(source.fileno()).st_size,
                        content_type=mimetypes.guess_type(name)[0] or "application/octet-stream",
                    )
            except (MinioException, HTTPError, ValueError, OSError) as err:
                raise UploadError(
                    f"upload of '{name}' to bucket '{spec.bucket}' ({target.provider} at "
                    f"{target.endpoint}) failed: {_cause(err)}"
                ) from None
            log.info("uploaded %s to %s/%s", name, spec.bucket, key)
    finally:
        http.clear()


def _client(target: StorageTarget, env: Mapping[str, str]) -> tuple[Any, Any]:
    """A fresh client per invocation (thread-safe) with short timeouts and few retries."""
    import certifi
    import urllib3
    from minio import Minio

    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT),
        retries=urllib3.Retry(total=RETRIES, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        cert_reqs="CERT_REQUIRED" if target.verify else "CERT_NONE",
        ca_certs=env.get("SSL_CERT_FILE") or certifi.where(),
    )
    client = Minio(
        target.host,
        access_key=target.access_key,
        secret_key=target.secret_key,
        secure=target.secure,
        region=target.region,
        http_client=http,
    )
    return client, http


def _cause(err: BaseException) -> str:
    """A short, one-line reason: the S3 error code and message, or the network failure."""
    code = getattr(err, "code", None)
    message = getattr(err, "message", None)
    if code and isinstance(code, str):
        text = f"{code}: {message}" if message else code
    else:
        reason = getattr(err, "reason", None) or err
        text = re.sub(r"<[^>]*>:\s*", "", str(reason))
        text = f"cannot reach the endpoint ({text})" if getattr(err, "reason", None) else text
    return " ".join(text.split())
