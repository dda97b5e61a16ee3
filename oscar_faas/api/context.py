"""The per-app state the views share, kept in ``app.extensions`` (never module globals)."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from ..config import Settings
from ..openfaas import OpenFaaSClient
from ..registry import ServiceRegistry

EXTENSION = "oscar_faas"


@dataclass
class Gateway:
    """What the views need, built once per app."""

    settings: Settings
    openfaas: OpenFaaSClient
    registry: ServiceRegistry


def gateway() -> Gateway:
    """The current app's :class:`Gateway`."""
    return current_app.extensions[EXTENSION]
