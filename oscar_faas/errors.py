"""One error tree for the whole package.

Each class carries the HTTP ``status`` it maps to (as werkzeug's exceptions carry ``code``),
so the API needs one error handler, and mixins let callers catch the builtin side too
(``InvalidService`` is also a ``ValueError``).
"""

from __future__ import annotations


class OscarFaasError(Exception):
    """Base of every error raised on purpose; ``str(err)`` is the message shown to users."""

    status: int = 500
    #: extra headers of the answer (a 503's ``Retry-After``); set per instance, never mutated
    headers: dict[str, str] = {}

    def __init__(self, message: str = "", *, status: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        if headers:
            self.headers = dict(headers)

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(OscarFaasError, ValueError):
    """A setting has the wrong form."""


class InvalidService(OscarFaasError, ValueError):
    """The service definition breaks a rule; the message names the field and the rule."""

    status = 400


class FDLError(OscarFaasError, ValueError):
    """An FDL file cannot be read or parsed; the message names the file (and line)."""

    status = 400


class ServiceNotFound(OscarFaasError, LookupError):
    status = 404


class ServiceExists(OscarFaasError):
    status = 409


class BadBucketRequest(OscarFaasError, ValueError):
    """A bucket request breaks OSCAR's rules (name, visibility, presign bounds)."""

    status = 400


class BucketForbidden(OscarFaasError, PermissionError):
    """The bucket belongs to a service: OSCAR protects it from update and delete."""

    status = 403


class BucketNotFound(ServiceNotFound):
    status = 404


class NotInvocable(OscarFaasError):
    """``/run`` on an exposed service, whose function is its own server, not a script."""

    status = 400


class Unauthorized(OscarFaasError, PermissionError):
    status = 401


class BodyTooLarge(OscarFaasError):
    status = 413


class UpstreamError(OscarFaasError):
    """OpenFaaS answered with an error we pass on (its 4xx keeps its status)."""

    status = 502


class UpstreamUnreachable(UpstreamError, ConnectionError):
    status = 502


class UpstreamNotReady(UpstreamError):
    status = 503


class UpstreamTimeout(UpstreamError, TimeoutError):
    status = 504


class StorageError(OscarFaasError):
    """MinIO/S3 refused or could not be reached; the message names the bucket and cause."""

    status = 502
