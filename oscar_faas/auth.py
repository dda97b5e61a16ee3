"""Credential checks: HTTP Basic for ``/system/*``, service tokens for ``/run``.

Every comparison is constant-time (``hmac.compare_digest``), so response timing tells an
attacker nothing about how much of a guess was right.
"""

from __future__ import annotations

import hmac

from .config import Settings
from .contract import basic_credentials, bearer_token
from .errors import Unauthorized

#: The realm gin's BasicAuth sends, which OSCAR clients have always seen.
REALM = 'Basic realm="Authorization Required"'


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def is_admin(header: str | None, settings: Settings) -> bool:
    """True when ``header`` carries the cluster's Basic credentials."""
    creds = basic_credentials(header)
    if creds is None:
        return False
    user_ok = _equal(creds[0], settings.oscar_username)
    pass_ok = _equal(creds[1], settings.oscar_password)
    return user_ok and pass_ok


def require_admin(header: str | None, settings: Settings) -> None:
    """:raises Unauthorized: the header does not carry the cluster's Basic credentials."""
    if not is_admin(header, settings):
        raise Unauthorized("")


def require_run_access(header: str | None, token: str, settings: Settings) -> None:
    """Allow a /run call with the service's token (as OSCAR, oscar-python and the dashboard
    send it) or, more leniently than OSCAR, with the cluster's Basic credentials, which
    current oscar-cli sends when ``--token`` is not given.

    :raises Unauthorized: neither is present and right.
    """
    given = bearer_token(header)
    if given is not None and token and _equal(given, token):
        return
    if given is None and is_admin(header, settings):
        return
    raise Unauthorized("invalid or missing service token: send 'Authorization: Bearer <token>'"
                       " (see the 'token' field of GET /system/services/<name>)")
