"""Asynchronous invocations, with OSCAR's shapes: ``POST /job/<svc>`` and ``/system/logs/<svc>``.

``POST /job`` records the job (Pending) and hands it to OpenFaaS's async API
(:mod:`oscar_faas.asyncjobs`); the queue calls ``/job-callback/...`` back when it starts the
job (the embedded provider does; a cluster's queue-worker does not) and with the function's
answer, which becomes the job's status and log (:mod:`oscar_faas.jobstore`).
"""

from __future__ import annotations

import io
import json
import tempfile
import threading
import time
import uuid
from typing import BinaryIO

from flask import Blueprint, Response, current_app, request

from .. import asyncjobs
from ..auth import require_run_access
from ..contract import (HEADER_DUPLICATE, HEADER_FUNCTION_STATUS, HEADER_JOB_ANSWER,
                        HEADER_JOB_EVENT, HEADER_JOB_NAME, JOB_ANSWER_LOG,
                        JOB_CALLBACK_PREFIX, JOB_EVENT_CLAIM, JOB_EVENT_STARTED,
                        STORED_INPUT_KEY, is_true, job_name)
from ..errors import (BodyTooLarge, InvalidService, NotInvocable, OscarFaasError,
                      UpstreamError)
from ..jobstore import MAX_LOG, JobStore
from .context import gateway
from .system import json_response

bp = Blueprint("jobs", __name__)

_STORE = "oscar_faas_jobs"
_store_lock = threading.Lock()
#: Request headers the function gets from ``/job`` as ``/run`` passes them.
_FORWARDED = ("Content-Type", "Accept")


class JobNotFound(OscarFaasError, LookupError):
    status = 404


def job_store() -> JobStore:
    """This app's store, made on first use (it may open a MinIO client)."""
    store = current_app.extensions.get(_STORE)
    if store is None:
        with _store_lock:
            store = current_app.extensions.get(_STORE)
            if store is None:
                store = current_app.extensions[_STORE] = JobStore.from_settings(
                    gateway().settings)
    return store


@bp.post("/job/<name>")
def submit_job(name: str) -> Response:
    """OSCAR's answer (201, empty body) plus the job's name in :data:`HEADER_JOB_NAME` and
    its log in ``Location``; the body (base64 of a file, JSON, a MinIO event) goes to the
    function as ``/run`` sends it.

    ``POST /run/<name>`` with ``Prefer: respond-async`` (RFC 7240) comes here too (the ASGI
    front sends it): then ``202`` with the job's name as the body and
    ``Preference-Applied``, instead of waiting for the answer."""
    job = _queue(name)
    headers = {HEADER_JOB_NAME: job, "Location": f"/system/logs/{name}/{job}"}
    if "respond-async" in request.headers.get("Prefer", "").lower():
        headers["Preference-Applied"] = "respond-async"
        return Response(f"{job}\n", status=202, mimetype="text/plain", headers=headers)
    return Response(status=201, headers=headers)


def _queue(name: str) -> str:
    """Record the job and hand it to OpenFaaS's queue; its name.

    :raises OscarFaasError: unknown service (404), bad credentials (401), an exposed
        service (400), or OpenFaaS did not queue it (then no job is kept).
    """
    gw = gateway()
    service = gw.registry.get_cached(name)
    require_run_access(request.headers.get("Authorization"), service.token, gw.settings)
    if service.exposed:
        raise NotInvocable(f"service {name} is an exposed service: it has no script to run "
                           f"as a job")
    body, size = _spool_body(gw.settings.max_body_size, gw.settings.job_inline_limit)
    job = job_name(name, str(uuid.uuid4()))
    store = job_store()
    store.create(name, job)
    headers = {k: request.headers[k] for k in _FORWARDED if k in request.headers}
    if size > gw.settings.job_inline_limit:  # too large for a queue message: via the bucket
        where = store.put_input(name, job, body, size)
        if where is not None:
            body.close()
            body = io.BytesIO(json.dumps({STORED_INPUT_KEY: {"bucket": where[0],
                                                             "key": where[1]}}).encode())
            headers["Content-Type"] = "application/json"
        else:
            body.seek(0)
    headers["Authorization"] = f"Bearer {service.token}"  # the function checks its caller
    headers[HEADER_JOB_ANSWER] = JOB_ANSWER_LOG  # outputs go to storage; the answer is the log
    callback = asyncjobs.callback_url(gw.settings, request.host_url, name, job)
    # small bodies as bytes: requests would move a spooled file to disk to learn its size
    payload = body.read() if size <= gw.settings.job_inline_limit else body
    try:
        asyncjobs.submit(gw.openfaas, name, job, callback, payload, headers)
    except OscarFaasError:
        store.delete(name, job)  # never queued: no job to list
        raise
    finally:
        body.close()
    return job


def _spool_body(limit: int, in_memory: int) -> tuple[BinaryIO, int]:
    """The request body in a temporary file (in memory up to ``in_memory`` bytes) and its
    size, at most ``limit`` bytes (MAX_BODY_SIZE, as ``/run``; 0: none).

    :raises BodyTooLarge: 413, before reading when the Content-Length says so.
    """
    length = request.content_length
    message = f"request body larger than the limit of {limit} bytes (MAX_BODY_SIZE)"
    if limit and length is not None and length > limit:
        raise BodyTooLarge(message)
    stream = request.environ["wsgi.input"]  # werkzeug's own would stop at MAX_API_BODY_SIZE
    spool = tempfile.SpooledTemporaryFile(max_size=in_memory)
    size = 0
    try:
        while length is None or size < length:
            chunk = stream.read(65536 if length is None else min(65536, length - size))
            if not chunk:
                break
            size += len(chunk)
            if limit and size > limit:
                raise BodyTooLarge(message)
            spool.write(chunk)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool, size


@bp.post(f"{JOB_CALLBACK_PREFIX}<service>/<job>/<sig>")
def job_callback(service: str, job: str, sig: str) -> Response:
    """The queue's word on a job: started (:data:`HEADER_JOB_EVENT`), or finished with the
    function's status and answer. Repeats change nothing (a redelivered call's second
    answer is dropped)."""
    settings = gateway().settings
    if not asyncjobs.valid_signature(settings, service, job, sig):
        return Response("invalid job callback signature\n", status=403, mimetype="text/plain")
    store = job_store()
    event = request.headers.get(HEADER_JOB_EVENT)
    if event == JOB_EVENT_STARTED:
        store.started(service, job)
        return Response(status=204)
    if event == JOB_EVENT_CLAIM:  # the function's runtime, before it runs (runtime/claim.py)
        if store.claim(service, job):
            return Response(status=204)
        return Response(f"job {job} was already delivered\n", status=409,
                        mimetype="text/plain")
    if request.headers.get(HEADER_DUPLICATE):  # the answer of a redelivery that did not run
        _read_log()
        return Response(status=204)
    raw = request.headers.get(HEADER_FUNCTION_STATUS, "")
    if not raw.isdigit():
        raise InvalidService(f"callback without a numeric {HEADER_FUNCTION_STATUS} header "
                             f"(got {raw!r})")
    status = int(raw)
    log = _read_log()
    if not log and not 200 <= status < 300:
        log = f"the function call failed with status {status} and no output\n".encode()
    store.finished(service, job, status, log)
    return Response(status=204)


def _read_log() -> bytes:
    """The callback's body up to :data:`MAX_LOG` + 1 bytes (the store cuts it, saying so);
    the rest is read and dropped, so a long answer still finishes its job (werkzeug's own
    stream would refuse it past MAX_API_BODY_SIZE)."""
    stream = request.environ["wsgi.input"]
    length = request.content_length
    kept, size = [], 0
    while length is None or size < length:
        chunk = stream.read(65536 if length is None else min(65536, length - size))
        if not chunk:
            break
        if size <= MAX_LOG:
            kept.append(chunk)
        size += len(chunk)
    return b"".join(kept)[:MAX_LOG + 1]


def _known_service(name: str) -> None:
    """:raises ServiceNotFound: 404, as OSCAR's authorisation lookup answers. OpenFaaS
    being unreachable (a provider restarting) does not hide the jobs: the store has them."""
    try:
        gateway().registry.get(name)
    except UpstreamError as err:
        if err.status == 404:
            raise


@bp.get("/system/logs/<name>")
def list_jobs(name: str) -> Response:
    """``{"jobs": {name: JobInfo}, "next_page", "remaining_jobs"}``; ``?page=`` continues."""
    _known_service(name)
    limit = gateway().settings.job_listing_limit
    records, next_page, remaining = job_store().page(name, request.args.get("page", ""), limit)
    body: dict = {"jobs": {r.name: r.info() for r in records}}
    if next_page:  # omitempty, as OSCAR's JobsResponse
        body["next_page"] = next_page
        body["remaining_jobs"] = remaining
    return json_response(body)


@bp.get("/system/logs/<name>/<job>")
def job_log(name: str, job: str) -> Response:
    """The function's answer for the job as text (empty while it runs); ``?timestamps=true``
    starts each line with the time the answer came, as ``kubectl logs --timestamps``."""
    store = job_store()
    record = store.get(name, job)
    if record is None:
        raise JobNotFound(f"job {job} of service {name} not found")
    text = store.log(name, job).decode("utf-8", "replace")
    if is_true(request.args.get("timestamps")) and record.finish_time and text:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.finish_time))
        stamp += f".{int(record.finish_time % 1 * 1e9):09d}Z "
        text = "".join(stamp + line for line in text.splitlines(keepends=True))
    return Response(text, mimetype="text/plain")


@bp.delete("/system/logs/<name>/<job>")
def delete_job(name: str, job: str) -> Response:
    store = job_store()
    if store.get(name, job) is None:
        raise JobNotFound(f"job {job} of service {name} not found")
    store.delete(name, job)
    return Response(status=204)


@bp.delete("/system/logs/<name>")
def delete_jobs(name: str) -> Response:
    """Succeeded jobs, as OSCAR; ``?all=true`` every job (pending and running ones too:
    their answers, when they come, are dropped)."""
    _known_service(name)
    job_store().delete_many(name, is_true(request.args.get("all")))
    return Response(status=204)


def forget_service(name: str) -> None:
    """Deleting a service deletes its jobs (OSCAR's ``deleteServiceJobs``)."""
    job_store().delete_many(name, every=True)
