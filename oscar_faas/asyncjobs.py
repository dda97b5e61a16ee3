"""Submitting a job to OpenFaaS's async API and proving its callback.

A job goes to ``POST /async-function/<name>`` (a cluster's gateway puts it on its NATS queue;
the embedded provider on its queue on disk) with ``X-Call-Id`` = the job's name, so the
queue's records and ours name the same thing, and an ``X-Callback-Url`` back to this gateway.
The queue is given no cluster credentials: the callback URL carries an HMAC of the service and
job under a key only the gateways know, so nobody else can write a job's result.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import BinaryIO, Mapping

import requests

from .config import Settings
from .contract import (ASYNC_FUNCTION_PATH, HEADER_CALL_ID, HEADER_CALLBACK_URL,
                       JOB_CALLBACK_PREFIX)
from .errors import UpstreamError, UpstreamTimeout, UpstreamUnreachable
from .openfaas import OpenFaaSClient


def _key(settings: Settings) -> bytes:
    """``JOB_CALLBACK_SECRET``, else one derived from the cluster's credentials (which every
    replica of the gateway shares)."""
    if settings.job_callback_secret:
        return settings.job_callback_secret.encode()
    seed = f"oscar-faas job callback\0{settings.oscar_username}\0{settings.oscar_password}"
    return hashlib.sha256(seed.encode()).digest()


def signature(settings: Settings, service: str, job: str) -> str:
    return hmac.new(_key(settings), f"{service}/{job}".encode(), hashlib.sha256).hexdigest()


def valid_signature(settings: Settings, service: str, job: str, given: str) -> bool:
    return hmac.compare_digest(signature(settings, service, job).encode(),
                               given.encode("utf-8", "replace"))


def callback_url(settings: Settings, base: str, service: str, job: str) -> str:
    """Where the queue reports on ``job``: ``JOB_CALLBACK_URL`` (or ``base``, the URL the
    client reached this gateway at) + ``/job-callback/<svc>/<job>/<hmac>``."""
    root = (settings.job_callback_url or base).rstrip("/")
    return f"{root}{JOB_CALLBACK_PREFIX}{service}/{job}/{signature(settings, service, job)}"


def submit(client: OpenFaaSClient, name: str, job: str, callback: str,
           body: bytes | BinaryIO, headers: Mapping[str, str]) -> None:
    """``POST /async-function/<name>``; OpenFaaS answers 202 once the call is queued.

    No Basic auth is sent (the async path is open, as ``/function`` is); ``headers`` carry
    the service token the function checks.

    :raises UpstreamError: not queued (the message names the status and what OpenFaaS said).
    """
    url = f"{client.base_url}{ASYNC_FUNCTION_PATH}{name}"
    sent = {**headers, HEADER_CALL_ID: job, HEADER_CALLBACK_URL: callback}
    try:
        resp = client.session.post(url, data=body, headers=sent, timeout=client.timeout)
    except requests.Timeout:
        raise UpstreamTimeout(f"OpenFaaS at {client.base_url} did not queue the job within "
                              f"{client.timeout} s") from None
    except requests.ConnectionError:
        raise UpstreamUnreachable(f"cannot reach OpenFaaS at {client.base_url} to queue the "
                                  f"job: is the gateway running and OPENFAAS_URL right?") from None
    if resp.status_code in (200, 202):
        return
    detail = resp.text.strip() or resp.reason or ""
    if resp.status_code == 404:
        detail += (" (does the OpenFaaS gateway have NATS and the queue-worker? "
                   "/async-function needs them)")
    raise UpstreamError(f"OpenFaaS did not queue the job: {resp.status_code}: {detail}",
                        status=resp.status_code if resp.status_code in (413, 429) else 502)
