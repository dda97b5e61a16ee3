"""Errors the supervisor turns into a one-line message on ``out`` and exit code 1.

They hang off the package's error tree so callers can catch ``OscarFaasError`` everywhere;
``str(err)`` is the line the caller sees in the HTTP error body, so it must name the problem.
"""

from __future__ import annotations

from ..errors import OscarFaasError


class SupervisorError(OscarFaasError):
    """Base of the errors that end an invocation with a message instead of a response."""


class FunctionConfigError(SupervisorError, ValueError):
    """``SCRIPT``/``FUNCTION_CONFIG`` or the storage secret is malformed or incomplete.

    Not the gateway's ``oscar_faas.errors.ConfigError`` (a gateway setting): this one is about
    the function's own env and secret, and ends the invocation with exit code 1.
    """


class InvalidInput(SupervisorError, ValueError):
    """The request body is neither JSON nor base64."""

    status = 400


class UploadError(SupervisorError):
    """An output could not be written to MinIO/S3; the message names the bucket and cause."""

    status = 502
