"""`oscar-faas stack FDL` end to end: the stack faas-cli would deploy matches, field by field,
the FunctionDeployment the gateway sends for the same FDL; the use case's own FDL (for real
clusters) loads, validates, translates and exports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from oscar_faas.config import Settings
from oscar_faas.fdl import load_fdl
from oscar_faas.stack import deployment_differences, stack_to_deployments
from oscar_faas.translate import SERVICE_ANNOTATION, service_to_deployment

REPO = Path(__file__).resolve().parents[2]
PLANTS = REPO / "examples" / "plant-classification-sync" / "plant-classification-sync.yaml"
EXAMPLES = [PLANTS, REPO / "examples" / "hello" / "hello.yaml",
            REPO / "examples" / "image-classification-sync" / "image-classification-sync.yaml"]


def run_stack(fdl: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "oscar_faas.cli", "stack", str(fdl), *args],
                          capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin"})
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("fdl", EXAMPLES, ids=lambda p: p.stem)
def test_stack_and_gateway_send_the_same_deployment(fdl):
    text = run_stack(fdl, "--registry", "registry.example.org/me", "--tag", "v1")
    from_stack = {fd["service"]: fd for fd in stack_to_deployments(text, env={})}
    settings = Settings.from_env({})
    for service in load_fdl(fdl).services:
        stored = json.loads(from_stack[service.name]["annotations"][SERVICE_ANNOTATION])
        # Same service, same token: the gateway would rebuild exactly this service.
        gateway_fd = service_to_deployment(
            service.normalized(token=stored["token"], minio={}), settings)
        diff = deployment_differences(gateway_fd, from_stack[service.name])
        assert set(diff) == {"image"}, diff  # the stack deploys the image it builds
        assert diff["image"] == (service.image, f"registry.example.org/me/{service.name}:v1")
        fn = yaml.safe_load(text)["functions"][service.name]
        assert fn["lang"] == "oscar" and fn["build_args"] == {"BASE_IMAGE": service.image}


def test_use_case_fdl_loads_validates_translates():
    (service,) = load_fdl(PLANTS).services
    service = service.normalized(minio={})
    service.validate()
    fd = service_to_deployment(service, Settings.from_env({}))
    assert fd["service"] == "plant-classification-sync"
    assert fd["image"] == "deephdc/deep-oc-plants-classification-tf"
    assert fd["limits"] == {"memory": "2Gi", "cpu": "1.0"}
    assert fd["envVars"]["LOG_LEVEL"] == "CRITICAL"
    text = run_stack(PLANTS)
    assert yaml.safe_load(text)["provider"] == {"name": "openfaas",
                                                "gateway": "http://127.0.0.1:8080"}


def test_function_image_setting_matches_the_stack_images():
    """FUNCTION_IMAGE set to the stack's registry/tag makes the gateway deploy the images
    the stack builds."""
    settings = Settings.from_env({"FUNCTION_IMAGE": "registry.example.org/me/{name}:v1"})
    text = run_stack(PLANTS, "--registry", "registry.example.org/me", "--tag", "v1")
    (from_stack,) = stack_to_deployments(text, env={})
    (service,) = load_fdl(PLANTS).services
    fd = service_to_deployment(service.normalized(minio={}), settings)
    assert fd["image"] == from_stack["image"]


def test_stack_gateway_flag_sets_the_provider_gateway():
    text = run_stack(REPO / "examples" / "hello" / "hello.yaml", "--gateway",
                     "https://gateway.example.org:8443")
    assert yaml.safe_load(text)["provider"] == {"name": "openfaas",
                                                "gateway": "https://gateway.example.org:8443"}
