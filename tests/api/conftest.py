"""The gateway app against pytest-httpserver playing the OpenFaaS gateway, for tests that
must assert on exactly what is sent to OpenFaaS."""

from __future__ import annotations

import base64
import json

import pytest

from oscar_faas.api import create_app
from oscar_faas.config import Settings
from oscar_faas.contract import SERVICE_ANNOTATION
from oscar_faas.model import Service

ADMIN = {"Authorization": "Basic " + base64.b64encode(b"oscar:s3cret").decode()}
OPENFAAS_AUTH = "Basic " + base64.b64encode(b"ofadmin:ofpass").decode()


@pytest.fixture
def settings(httpserver) -> Settings:
    return Settings.from_env({
        "OPENFAAS_URL": httpserver.url_for("/").rstrip("/"),
        "OPENFAAS_USERNAME": "ofadmin", "OPENFAAS_PASSWORD": "ofpass",
        "OSCAR_USERNAME": "oscar", "OSCAR_PASSWORD": "s3cret",
        "RUN_READY_WAIT": "1", "SERVICE_CACHE_TTL": "0",
    })


@pytest.fixture
def app(settings):
    return create_app(settings)


@pytest.fixture
def client(app):
    return app.test_client()


def function_status(service: dict, **extra) -> dict:
    """A FunctionStatus as OpenFaaS returns it for a function the gateway deployed."""
    stored = Service.from_dict(service).normalized(token=service.get("token")).to_dict()
    return {"name": service["name"], "image": service.get("image", "alpine"),
            "annotations": {SERVICE_ANNOTATION: json.dumps(stored)},
            # every service this gateway deploys reads its secret (token, credentials)
            "secrets": [f"oscar-storage-{service['name']}"],
            "replicas": 1, "availableReplicas": 1, **extra}


def sent(httpserver, method: str, path: str) -> list:
    """Requests the fake OpenFaaS received with that method and path."""
    return [req for req, _ in httpserver.log if req.method == method and req.path == path]
