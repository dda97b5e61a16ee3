"""The provider's own errors, each with the status faas-provider (faas-netes) answers.

They hang off the package's error tree, so the routes turn any of them (and the shared
``InvalidService``/``ServiceNotFound`` the data shapes raise) into ``text/plain`` answers.
"""

from __future__ import annotations

from ..errors import OscarFaasError


class ProviderError(OscarFaasError):
    """Base of the errors only the provider raises."""


class FunctionExists(ProviderError):
    """Deploying a function whose name is taken: 400, as faas-netes answers."""

    status = 400


class SecretExists(ProviderError):
    """Creating a secret that exists: 409, as faas-netes answers."""

    status = 409


class Unsupported(ProviderError, ValueError):
    """A request this provider cannot honour (e.g. scaling to zero)."""

    status = 400


class RequestTooLarge(ProviderError):
    """A request body over the limit."""

    status = 413

