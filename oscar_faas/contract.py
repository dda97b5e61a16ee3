"""The function contract: every name and rule the gateway, the provider, the supervisor and
the template build share, stated once (docs/internals.md, "Function env contract").

Pure constants and tiny pure helpers, no imports from the rest of the package, so any layer
(including the standalone supervisor frozen into function images) can import it.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Mapping

# --------------------------------------------------------------------------- paths

#: The supervisor path OSCAR uses: images built from ``function-templates/oscar`` have it
#: (the template's ``fprocess``), and the embedded provider gives such functions a long-lived
#: runtime each (``oscar_faas.runtime``). Every FunctionDeployment the gateway makes has it as
#: ``envProcess``.
SUPERVISOR_PROCESS = "/oscar/bin/supervisor"
#: The module form of the same process; also a runtime per function on the embedded provider.
SUPERVISOR_MODULE = "python -m oscar_faas.supervisor"
#: Where OpenFaaS mounts a function's secrets (and the gateway's, when it runs as one).
OPENFAAS_SECRETS_DIR = "/var/openfaas/secrets"

# --------------------------------------------------------------------------- names

#: The annotation that carries the stored service (credentials masked).
SERVICE_ANNOTATION = "com.oscar-faas.service"


#: Exit status of the supervisor when the request body is the client's mistake (not JSON,
#: not base64): ``EX_DATAERR`` of sysexits.h. The embedded provider answers it with 400
#: (a user script that exits with it says the same: its input was bad).
EXIT_BAD_INPUT = 65

#: Every storage secret's name starts with this (then the service name).
STORAGE_SECRET_PREFIX = "oscar-storage-"


def storage_secret_name(service_name: str) -> str:
    """The OpenFaaS secret of an OSCAR service: its token, its storage credentials and its
    environment secrets (one JSON object, docs/internals.md)."""
    return f"{STORAGE_SECRET_PREFIX}{service_name}"


#: The key of the service's token in its secret: the function's runtime answers only calls
#: that carry it (``Authorization: Bearer <token>``; Basic ``<name>:<token>`` for an exposed
#: service with ``set_auth``), whichever hop they came through.
SECRET_TOKEN_KEY = "token"


# --------------------------------------------------------------------------- env names

#: base64 of the user script.
ENV_SCRIPT = "SCRIPT"
#: base64 of the service as YAML (no script, credentials masked).
ENV_FUNCTION_CONFIG = "FUNCTION_CONFIG"
#: The service's ``log_level``.
ENV_LOG_LEVEL = "LOG_LEVEL"
#: Name of the storage secret (:func:`storage_secret_name`), when the function has one.
ENV_STORAGE_SECRET = "OSCAR_STORAGE_SECRET"
#: Folder the storage secret is read from (:data:`OPENFAAS_SECRETS_DIR` when unset).
ENV_SECRETS_DIR = "OSCAR_SECRETS_DIR"
#: Classic watchdog settings the gateway sets on every function.
WATCHDOG_MAX_INFLIGHT = "max_inflight"
WATCHDOG_EXEC_TIMEOUT = "exec_timeout"
WATCHDOG_READ_TIMEOUT = "read_timeout"
WATCHDOG_WRITE_TIMEOUT = "write_timeout"
WATCHDOG_WRITE_DEBUG = "write_debug"
WATCHDOG_COMBINE_OUTPUT = "combine_output"
#: The watchdog's answer ``Content-Type`` (unset, it echoes the request's: curl's ``-d`` makes
#: that ``application/x-www-form-urlencoded``).
WATCHDOG_CONTENT_TYPE = "content_type"
#: What an OSCAR service's ``/run`` answers: text (base64 of its output file(s), or its
#: script's own output when it wrote none).
RUN_ANSWER_CONTENT_TYPE = "text/plain; charset=utf-8"
#: Set to ``stdin`` by a parent that holds the other end of a runtime's stdin (the embedded
#: provider): the runtime stops when that pipe closes, however the parent ended.
ENV_RUNTIME_LIFELINE = "OSCAR_RUNTIME_LIFELINE"
#: Set to ``1`` by the embedded provider for a function that runs as a user of its own (as
#: root, host mode isolation): its runtime then explains files it cannot see.
ENV_ISOLATED = "OSCAR_FUNCTION_ISOLATED"
#: The embedded provider's bound on calls waiting for a ``max_inflight`` slot.
WATCHDOG_MAX_QUEUE = "max_queue"
#: The classic watchdog's command, split on single spaces and run once per call.
ENV_FPROCESS = "fprocess"
#: Set to ``true`` by the embedded provider for a function whose ``envProcess`` is not the
#: oscar supervisor (what faas-cli deploys): its runtime then runs :data:`ENV_FPROCESS` once
#: per call, as the classic watchdog does, instead of the OSCAR I/O contract.
ENV_RUNTIME_CLASSIC = "OSCAR_RUNTIME_CLASSIC"

# --------------------------------------------------------------------------- exposed services

#: The port the exposed service's server listens on (the first of ``expose.api_port``).
#: Its presence puts the runtime in expose mode (a reverse proxy to that server).
ENV_EXPOSE_PORT = "OSCAR_EXPOSE_PORT"
#: The path the runtime probes (GET, 200-399 = healthy) as the server sees it (the exposed
#: prefix included when ``rewrite_target``); empty: the port accepting a connection is enough.
ENV_EXPOSE_HEALTH_PATH = "OSCAR_EXPOSE_HEALTH_PATH"
#: ``true``: run the image's own command (:data:`ENV_EXPOSE_COMMAND`) instead of the script.
ENV_EXPOSE_DEFAULT_COMMAND = "OSCAR_EXPOSE_DEFAULT_COMMAND"
#: The image's own command line (shlex-split) for ``default_command: true``: a function image
#: or a container launcher sets it from the image's ENTRYPOINT/CMD; a user may set it too.
ENV_EXPOSE_COMMAND = "OSCAR_EXPOSE_COMMAND"
#: Seconds a request waits for the server to be healthy before the runtime answers 503.
ENV_EXPOSE_READY_WAIT = "OSCAR_EXPOSE_READY_WAIT"
#: Set for the server, as OSCAR does: the public path prefix it is reached under.
ENV_SERVICE_BASE_PATH = "OSCAR_SERVICE_BASE_PATH"


def exposed_prefix(service_name: str) -> str:
    """The public path of an exposed service (OSCAR's ``getAPIPath``)."""
    return f"/system/services/{service_name}/exposed"

# --------------------------------------------------------------------------- connection timeouts
# One place for the idle limits of every hop, ordered so that no hop reuses a connection its
# server may be closing at that moment: each client stops reusing an idle keep-alive connection
# well before the server behind it closes it.
#
#   gateway's pool to the provider      reuses up to POOL_REUSE_IDLE (4 s)
#   provider                            closes idle ones after KEEPALIVE_IDLE (15 s)
#   provider's pool to each runtime     reuses up to POOL_REUSE_IDLE (4 s)
#   runtime (uvicorn)                   closes idle ones after RUNTIME_KEEPALIVE (5 s)
#
# An idle connection is closed quietly, never answered (a 408 would be taken for the answer
# to the client's next request); a request's own deadlines start with its first byte: the
# head (HEADER_TIMEOUT, 30 s) and each read or write once it is under way (300 s provider,
# BODY_TIMEOUT gateway), so the time a connection spent idle never counts against a request.
# FIRST_BYTE_TIMEOUT bounds a new connection that has sent nothing (no thread, nor a slot of
# the connection cap, is spent on it meanwhile; a full server closes the oldest such first).

#: A pooled keep-alive connection idle for longer is not reused (by the gateway, the provider).
POOL_REUSE_IDLE = 4.0
#: uvicorn's default ``timeout_keep_alive``, which the runtimes keep.
RUNTIME_KEEPALIVE = 5.0
#: The provider closes a keep-alive connection idle for this long (quietly).
KEEPALIVE_IDLE = 15.0
#: A new connection that has sent nothing within this many seconds is closed (quietly), by
#: the provider and by the gateway's workers.
FIRST_BYTE_TIMEOUT = 5.0
#: The provider's proxy gives up connecting to a function's runtime (on this machine, or a
#: container on it) after this many seconds and treats it as not listening.
RUNTIME_CONNECT_TIMEOUT = 5.0


def refused_exposed_method(method: str) -> str | None:
    """Why ``method`` is not passed to an exposed service's server (answered 501), or None.

    Every other method the HTTP parser knows (WebDAV's ``PROPFIND``, ``TRACE``, ...) is. A
    ``CONNECT`` asks a proxy for a tunnel to another host (``host:port``), which the server
    of one service cannot be.
    """
    if method == "CONNECT":
        return ("CONNECT is not passed to exposed services (it asks a proxy for a tunnel to "
                "another host); every other method reaches the service's server")
    return None

# --------------------------------------------------------------------------- rules

#: The longest DNS-1123 label (Kubernetes object names, faas-netes function names).
DNS1123_MAX_LENGTH = 63
#: A DNS-1123 label, as a regular expression (names are matched whole).
DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL = re.compile(DNS1123_LABEL)

#: Words a boolean setting reads as true (case-insensitive).
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})

#: Hop-by-hop headers (RFC 9110, 7.6.1), lower case: never forwarded either way.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "proxy-connection", "te", "trailer", "trailers", "transfer-encoding",
                        "upgrade"})
#: The same names as bytes, as ASGI servers give header names.
HOP_BY_HOP_BYTES = frozenset(name.encode() for name in HOP_BY_HOP)


def canonical_header(name: str) -> str:
    """Go's canonical form (``x-call-id`` -> ``X-Call-Id``): how a watchdog names headers,
    and so the classic watchdog's CGI variables."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def is_dns1123_label(name: str, max_length: int = DNS1123_MAX_LENGTH) -> bool:
    """True when ``name`` is a DNS-1123 label (lower-case letters, digits and '-', starting
    and ending with a letter or digit) of at most ``max_length`` characters."""
    return len(name) <= max_length and _DNS1123_LABEL.fullmatch(name) is not None


def is_true(value: str | None) -> bool:
    """``value`` is one of :data:`TRUE_WORDS`."""
    return (value or "").strip().lower() in TRUE_WORDS


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else ``None``."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """``(user, password)`` from an ``Authorization: Basic ...`` header, else ``None``."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


#: A watchdog timeout (``exec_timeout``, ``read_timeout``, ...): a bare number of seconds or a
#: Go duration; the rule the classic watchdog, the provider and the runtime all read.
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                   "h": 3600.0}


def parse_duration(value: str | None) -> float | None:
    """Seconds from a watchdog timeout: a bare number means seconds, else a Go duration
    (``10s``, ``1m30s``, ``500ms``); ``None`` when unset or unparsable."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    pos, total = 0, 0.0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None:
            return None
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    return total


#: ``Server-Timing`` names, in the order a call goes through them, with their descriptions
#: (no commas: naive parsers split the header on them). The runtime and the provider's
#: per-call watchdog both answer with it; the gateway passes it on.
TIMING_PHASES = (("queue", "waiting for a slot (max_inflight)"),
                 ("setup", "configuration and input"),
                 ("script", "the user script"),
                 ("upload", "outputs to storage and the answer"))


def server_timing(timings: Mapping[str, float]) -> str:
    """``Server-Timing`` (W3C) from phase -> seconds: ``queue;dur=0.1;desc="..."``, in ms."""
    return ", ".join(f'{phase};dur={timings[phase] * 1000:.3f};desc="{desc}"'
                     for phase, desc in TIMING_PHASES if phase in timings)


# --------------------------------------------------------------------------- asynchronous jobs

#: OpenFaaS's asynchronous invocation path (the gateway's queue, or the embedded provider's).
ASYNC_FUNCTION_PATH = "/async-function/"
#: Request and callback headers of OpenFaaS's async API (openfaas/nats-queue-worker).
HEADER_CALL_ID = "X-Call-Id"
HEADER_CALLBACK_URL = "X-Callback-Url"
HEADER_FUNCTION_STATUS = "X-Function-Status"
HEADER_FUNCTION_NAME = "X-Function-Name"
HEADER_DURATION = "X-Duration-Seconds"
#: Sent by the embedded provider on a body-less callback when it takes a job off its queue,
#: so the job shows ``Running``; a cluster's queue-worker never sends it.
HEADER_JOB_EVENT = "X-Oscar-Faas-Job-Event"
JOB_EVENT_STARTED = "started"
#: Sent by the function's runtime before it runs a job it got with an ``X-Callback-Url``
#: (a cluster's queue-worker passes the original headers on): the gateway answers 204 the
#: first time (the job is then ``Running``) and 409 to a redelivery (a call that outlived
#: the queue's ``ack_wait``), which the runtime then refuses to run.
JOB_EVENT_CLAIM = "claim"
#: On the runtime's answer to a redelivered job it did not run; the gateway drops such an
#: answer when the queue-worker calls back with it.
HEADER_DUPLICATE = "X-Oscar-Faas-Duplicate"
#: Sent with every job: the function answers with the script's output (the job's log), not
#: with its output files, which a job delivers through storage only (as OSCAR's jobs do).
HEADER_JOB_ANSWER = "X-Oscar-Faas-Answer"
JOB_ANSWER_LOG = "log"
#: The same header as the classic watchdog's CGI variable, as the function sees it.
CGI_JOB_ANSWER = "Http_X_Oscar_Faas_Answer"
#: A job body too large for the queue travels through the gateway's bucket: the queue carries
#: ``{"oscar-faas-stored-input": {"bucket": B, "key": K}}`` and the function reads the body
#: from there (with its minio.default credentials), then decodes it as if it had come inline.
STORED_INPUT_KEY = "oscar-faas-stored-input"
#: The gateway's answer to ``POST /job/<svc>`` names the job here (OSCAR's body is empty).
HEADER_JOB_NAME = "X-Oscar-Job-Name"
#: Where the queue calls the gateway back about a job (outside ``/system``: the queue has no
#: cluster credentials; an HMAC of the job in the path proves the URL came from the gateway).
JOB_CALLBACK_PREFIX = "/job-callback/"
#: OSCAR's job statuses (pod phases) as ``/system/logs/<svc>`` shows them.
JOB_PENDING, JOB_RUNNING, JOB_SUCCEEDED, JOB_FAILED = "Pending", "Running", "Succeeded", "Failed"


def job_name(service_name: str, uuid_text: str) -> str:
    """OSCAR's job name (``pkg/handlers/job.go``): the service name, cut to its first 16
    characters when it has 25 or more, ``-`` and a UUID4."""
    prefix = service_name[:16] if len(service_name) >= 25 else service_name
    return f"{prefix}-{uuid_text}"
