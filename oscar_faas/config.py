"""Gateway settings, read once from an injectable environment.

Every setting the gateway knows lives here, so the rest of the code never reads
``os.environ``: tests pass a plain dict, production passes ``os.environ``.
OSCAR's own variable names are used wherever OSCAR has one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .contract import FIRST_BYTE_TIMEOUT, OPENFAAS_SECRETS_DIR, TRUE_WORDS
from .errors import ConfigError

#: Where ``oscar-faas serve`` and the provider keep their state (relative to the cwd).
DEFAULT_DATA_DIR = ".oscar-faas"

#: OSCAR's default for ``INGRESS_SERVICES_CORS_ALLOWED_ORIGINS`` (the hosted dashboards and a
#: dashboard served locally, e.g. by its development server): the browsers OSCAR lets in.
DEFAULT_CORS_ORIGINS = ("https://dashboard.oscar.grycap.net",
                        "https://dashboard-devel.oscar.grycap.net",
                        "https://dashboard-demo.oscar.grycap.net",
                        "http://localhost", "http://localhost:5173")

_FALSE = {"0", "false", "no", "off", ""}


def parse_bool(name: str, value: str) -> bool:
    """Parse a boolean setting strictly, so a typo is an error rather than ``False``."""
    lowered = value.strip().lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def parse_float(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {value!r}") from None
    if number < 0:
        raise ConfigError(f"{name} must not be negative, got {value!r}")
    return number


def parse_int(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {value!r}") from None
    if number < 0:
        raise ConfigError(f"{name} must not be negative, got {value!r}")
    return number


def _positive(name: str, number: int) -> int:
    if number <= 0:
        raise ConfigError(f"{name} must be at least 1, got {number}")
    return number


def parse_image_template(value: str) -> str:
    """Check ``FUNCTION_IMAGE`` now, so a typo fails at start-up, not at the first deploy."""
    value = value.strip()
    try:
        value.format(name="x")
    except (KeyError, IndexError, ValueError):
        raise ConfigError(
            f"FUNCTION_IMAGE may only use the placeholder {{name}}, got {value!r}") from None
    return value


def parse_origins(value: str | None) -> tuple[str, ...]:
    """``CORS_ALLOWED_ORIGINS``: comma-separated origins (``scheme://host[:port]``), ``*`` for
    any, empty for none; unset gives :data:`DEFAULT_CORS_ORIGINS`."""
    if value is None:
        return DEFAULT_CORS_ORIGINS
    origins = tuple(o.strip().rstrip("/") for o in value.split(",") if o.strip())
    for origin in origins:
        if origin != "*" and "://" not in origin:
            raise ConfigError(f"CORS_ALLOWED_ORIGINS takes origins like https://host:port "
                              f"or *, got {origin!r}")
    return origins


def _read_secret_file(directory: str, name: str) -> str | None:
    path = Path(directory) / name
    try:
        return path.read_text().strip()
    except OSError:
        return None


@dataclass(frozen=True)
class Settings:
    """Everything the gateway is configured with.

    Defaults match what ``oscar-faas serve`` uses locally, so a local user types nothing extra.
    """

    oscar_username: str = "oscar"
    oscar_password: str = "oscar"
    oscar_name: str = "oscar"
    oscar_namespace: str = "oscar"
    services_namespace: str = "oscar-svc"

    #: Base URL of the OpenFaaS gateway; ``None`` means "start the embedded provider".
    openfaas_url: str | None = None
    openfaas_username: str | None = None
    openfaas_password: str | None = None
    #: Seconds to wait for OpenFaaS management calls (deploy, list, ...).
    openfaas_timeout: float = 30.0

    minio_endpoint: str = ""
    minio_access_key: str = ""
    minio_secret_key: str = ""
    minio_region: str = "us-east-1"
    minio_tls_verify: bool = True

    #: Longest synchronous invocation, in seconds (OSCAR's WRITE_TIMEOUT default).
    run_timeout: float = 300.0
    #: How long /run retries while a freshly deployed function answers 503 (not ready).
    run_ready_wait: float = 30.0
    #: Largest /run request body in bytes; 0 means no limit.
    max_body_size: int = 0

    #: Watchdog settings handed to every function (OSCAR's WATCHDOG_* variables).
    #: 0 = no per-replica limit (OSCAR's 1 makes concurrent calls fail with 429 until
    #: OpenFaaS scales out); the embedded provider caps it at 4 x CPUs and queues the rest.
    watchdog_max_inflight: int = 0
    watchdog_exec_timeout: int = 0
    watchdog_read_timeout: int = 300
    watchdog_write_timeout: int = 300

    #: Image to deploy instead of the FDL's, with ``{name}`` for the service name (e.g.
    #: ``registry.example.org/me/{name}:latest``): on a real cluster, the function images
    #: built from ``function-templates/oscar`` (``oscar-faas stack``). Empty: the FDL image.
    function_image: str = ""

    #: How long the gateway caches a service (for the /run token check), in seconds.
    service_cache_ttl: float = 5.0

    #: Origins whose browser pages may call the API (CORS); ``*`` for any, empty for none.
    cors_allowed_origins: tuple[str, ...] = DEFAULT_CORS_ORIGINS
    #: Largest request line plus headers, in bytes (431 above).
    max_header_size: int = 64 * 1024
    #: Seconds a client has to send a whole request head, from its first byte (408).
    header_timeout: float = 30.0
    #: Seconds a new connection may stay silent before it is closed (quietly).
    first_byte_timeout: float = FIRST_BYTE_TIMEOUT
    #: Seconds a request body may stay silent before the connection is closed.
    body_timeout: float = 60.0
    #: Seconds an idle keep-alive connection stays open.
    keepalive_timeout: float = 75.0
    #: Client connections per gateway worker (also capped by the descriptor limit).
    max_connections: int = 1000
    #: Largest management request body (``/system/*``), in bytes (413 above).
    max_api_body_size: int = 8 * 1024 * 1024
    #: ``serve`` started the provider (and restarts it): ``/health`` checks it.
    embedded_provider: bool = False
    #: The SQLite file of request counts behind ``/system/metrics`` (``serve``: in its data
    #: dir); empty: counts in memory only, lost on restart.
    usage_db: str = ""
    #: Log streams (``follow=true``) one gateway worker serves at once (429 above).
    max_log_followers: int = 256
    #: At start, delete ``oscar-storage-*`` secrets whose service does not exist (turn off
    #: when several gateways share one OpenFaaS: one starting could race another's create).
    clean_orphan_secrets: bool = True

    #: Asynchronous jobs (``/job``, ``/system/logs/<svc>``): where their records and logs
    #: live without MinIO (``serve`` sets it to ``<data dir>/jobs``).
    jobs_dir: str = ""
    #: The gateway's own bucket for job records and logs when MinIO is configured.
    jobs_bucket: str = "oscar-faas-jobs"
    #: Jobs per page of ``GET /system/logs/<svc>`` (OSCAR's JOB_LISTING_LIMIT).
    job_listing_limit: int = 70
    #: Seconds a finished job is kept (OSCAR's TTL_JOB, 30 days).
    ttl_job: int = 2592000
    #: Seconds an unfinished job waits for its answer before it is reported Failed (its
    #: callback was lost: a queue or provider gone); 0 = for ever. One day by default.
    job_answer_deadline: int = 86400
    #: This gateway's base URL as the async queue reaches it (the callback's host);
    #: ``serve`` sets it for the embedded provider.
    job_callback_url: str = ""
    #: Key of the HMAC that proves a callback URL; default: derived from OSCAR_PASSWORD.
    job_callback_secret: str = ""
    #: Job bodies larger than this many bytes go through the jobs bucket, not the queue
    #: (OpenFaaS's NATS takes 1 MB messages, the body base64-encoded in them), with MinIO.
    job_inline_limit: int = 512 * 1024

    @property
    def minio_configured(self) -> bool:
        """True when a MinIO endpoint is set, so buckets can be created and outputs written."""
        return bool(self.minio_endpoint)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Build settings from ``env`` (``os.environ`` when omitted).

        :raises ConfigError: a value has the wrong form; the message names the variable.
        """
        env = os.environ if env is None else env
        get = env.get
        secrets_dir = get("OPENFAAS_SECRETS_DIR", OPENFAAS_SECRETS_DIR)
        of_user = get("OPENFAAS_USERNAME") or _read_secret_file(secrets_dir, "basic-auth-user")
        of_pass = get("OPENFAAS_PASSWORD") or _read_secret_file(secrets_dir, "basic-auth-password")
        url = (get("OPENFAAS_URL") or "").strip().rstrip("/") or None
        if url and "://" not in url:
            url = "http://" + url
        return cls(
            oscar_username=get("OSCAR_USERNAME", cls.oscar_username),
            oscar_password=get("OSCAR_PASSWORD", cls.oscar_password),
            oscar_name=get("OSCAR_NAME", cls.oscar_name),
            oscar_namespace=get("OSCAR_NAMESPACE", cls.oscar_namespace),
            services_namespace=get("OSCAR_SERVICES_NAMESPACE", cls.services_namespace),
            openfaas_url=url,
            openfaas_username=of_user or None,
            openfaas_password=of_pass or None,
            openfaas_timeout=parse_float("OPENFAAS_TIMEOUT", get("OPENFAAS_TIMEOUT", "30")),
            minio_endpoint=get("MINIO_ENDPOINT", "").strip().rstrip("/"),
            minio_access_key=get("MINIO_ACCESS_KEY", ""),
            minio_secret_key=get("MINIO_SECRET_KEY", ""),
            minio_region=get("MINIO_REGION") or cls.minio_region,
            minio_tls_verify=parse_bool("MINIO_TLS_VERIFY", get("MINIO_TLS_VERIFY", "true")),
            run_timeout=parse_float("RUN_TIMEOUT", get("RUN_TIMEOUT", "300")),
            run_ready_wait=parse_float("RUN_READY_WAIT", get("RUN_READY_WAIT", "30")),
            max_body_size=parse_int("MAX_BODY_SIZE", get("MAX_BODY_SIZE", "0")),
            watchdog_max_inflight=parse_int(
                "WATCHDOG_MAX_INFLIGHT", get("WATCHDOG_MAX_INFLIGHT", "0")),
            watchdog_exec_timeout=parse_int(
                "WATCHDOG_EXEC_TIMEOUT", get("WATCHDOG_EXEC_TIMEOUT", "0")),
            watchdog_read_timeout=parse_int(
                "WATCHDOG_READ_TIMEOUT", get("WATCHDOG_READ_TIMEOUT", "300")),
            watchdog_write_timeout=parse_int(
                "WATCHDOG_WRITE_TIMEOUT", get("WATCHDOG_WRITE_TIMEOUT", "300")),
            function_image=parse_image_template(get("FUNCTION_IMAGE", "")),
            service_cache_ttl=parse_float(
                "SERVICE_CACHE_TTL", get("SERVICE_CACHE_TTL", "5")),
            cors_allowed_origins=parse_origins(get("CORS_ALLOWED_ORIGINS")),
            max_header_size=_positive(
                "MAX_HEADER_SIZE", parse_int("MAX_HEADER_SIZE", get("MAX_HEADER_SIZE", "65536"))),
            header_timeout=parse_float("HEADER_TIMEOUT", get("HEADER_TIMEOUT", "30")),
            first_byte_timeout=parse_float("FIRST_BYTE_TIMEOUT", get(
                "FIRST_BYTE_TIMEOUT", str(FIRST_BYTE_TIMEOUT))),
            body_timeout=parse_float("BODY_TIMEOUT", get("BODY_TIMEOUT", "60")),
            keepalive_timeout=parse_float("KEEPALIVE_TIMEOUT", get("KEEPALIVE_TIMEOUT", "75")),
            max_connections=_positive("MAX_CONNECTIONS", parse_int(
                "MAX_CONNECTIONS", get("MAX_CONNECTIONS", "1000"))),
            embedded_provider=parse_bool(
                "OSCAR_EMBEDDED_PROVIDER", get("OSCAR_EMBEDDED_PROVIDER", "false")),
            clean_orphan_secrets=parse_bool(
                "CLEAN_ORPHAN_SECRETS", get("CLEAN_ORPHAN_SECRETS", "true")),
            usage_db=get("USAGE_DB", "").strip(),
            max_log_followers=_positive("MAX_LOG_FOLLOWERS", parse_int(
                "MAX_LOG_FOLLOWERS", get("MAX_LOG_FOLLOWERS", "256"))),
            max_api_body_size=_positive("MAX_API_BODY_SIZE", parse_int(
                "MAX_API_BODY_SIZE", get("MAX_API_BODY_SIZE", str(8 * 1024 * 1024)))),
            jobs_dir=get("JOBS_DIR", ""),
            jobs_bucket=get("JOBS_BUCKET", "") or cls.jobs_bucket,
            job_listing_limit=_positive("JOB_LISTING_LIMIT", parse_int(
                "JOB_LISTING_LIMIT", get("JOB_LISTING_LIMIT", "70"))),
            ttl_job=parse_int("TTL_JOB", get("TTL_JOB", "2592000")),
            job_answer_deadline=parse_int("JOB_ANSWER_DEADLINE",
                                          get("JOB_ANSWER_DEADLINE", "86400")),
            job_callback_url=get("JOB_CALLBACK_URL", "").strip().rstrip("/"),
            job_callback_secret=get("JOB_CALLBACK_SECRET", ""),
            job_inline_limit=parse_int("JOB_INLINE_LIMIT", get("JOB_INLINE_LIMIT", "524288")),
        )
