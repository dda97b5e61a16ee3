"""A job runs once, even when OpenFaaS's queue delivers it twice.

OpenFaaS CE's queue-worker redelivers a call that outlives its ``ack_wait`` (openfaas/faas
#1108, #1673): the function would run the job again. The runtime is the one place every
delivery reaches, so before it runs a job (a call with ``X-Call-Id``, ``X-Callback-Url`` and
the job answer header) it *claims* it from the gateway through the callback URL: the first
claim is 204 (and the job shows ``Running`` from then on, which a cluster's queue-worker alone
never tells), a later one 409, and the runtime then answers 409 with
:data:`~oscar_faas.contract.HEADER_DUPLICATE` without running anything; the gateway drops that
answer when the queue calls back with it. The embedded provider queues each call id once and
does not pass ``X-Callback-Url`` on, so its calls are never claimed twice.

When the gateway cannot be reached the job runs (a lost claim must not lose the job), and the
log says so.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Iterable

from ..contract import (HEADER_CALL_ID, HEADER_CALLBACK_URL, HEADER_JOB_ANSWER,
                        HEADER_JOB_EVENT, JOB_EVENT_CLAIM)

#: Seconds to wait for the gateway's word on a claim.
CLAIM_TIMEOUT = 10.0
_CALL_ID = HEADER_CALL_ID.lower().encode()
_CALLBACK = HEADER_CALLBACK_URL.lower().encode()
_ANSWER = HEADER_JOB_ANSWER.lower().encode()


def claim_target(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str, str] | None:
    """``(call id, callback URL)`` when this call is a queued job to claim, else None."""
    found: dict[bytes, str] = {}
    for key, value in headers:
        if key in (_CALL_ID, _CALLBACK, _ANSWER):
            found[key] = value.decode("latin-1")
    url = found.get(_CALLBACK, "")
    if _ANSWER in found and found.get(_CALL_ID) and url.startswith(("http://", "https://")):
        return found[_CALL_ID], url
    return None


def claim(url: str, timeout: float = CLAIM_TIMEOUT) -> tuple[bool, str]:
    """Claim the job at its callback ``url``: ``(run it?, what happened in words)``."""
    request = urllib.request.Request(url, data=b"", method="POST",
                                     headers={HEADER_JOB_EVENT: JOB_EVENT_CLAIM})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return True, f"claimed ({resp.status})"
    except urllib.error.HTTPError as err:
        if err.code == 409:
            return False, "already delivered: this is a redelivery"
        return True, f"the gateway answered the claim with {err.code}; running it anyway"
    except (OSError, ValueError) as err:
        return True, f"the claim did not reach the gateway ({err}); running it anyway"
