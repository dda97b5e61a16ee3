"""`oscar-faas stack FDL` end to end: the stack faas-cli would deploy matches, field by field,
the FunctionDeployment the gateway sends for the same FDL; the use case's own FDL (for real
clusters) loads, validates, translates and exports."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from oscar_faas.cli import stack_plans
from oscar_faas.config import Settings
from oscar_faas.fdl import load_fdl
from oscar_faas.contract import SERVICE_ANNOTATION
from oscar_faas.openfaas import OpenFaaSClient
from oscar_faas.plan import plan_deployment, prepare_service
from oscar_faas.registry import ServiceRegistry

from .faascli_model import deployment_differences, stack_to_deployments

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
        gateway_fd = plan_deployment(
            prepare_service(service, settings, token=stored["token"]), settings).deployment
        diff = deployment_differences(gateway_fd, from_stack[service.name])
        assert set(diff) == {"image"}, diff  # the stack deploys the image it builds
        assert diff["image"] == (service.image, f"registry.example.org/me/{service.name}:v1")
        fn = yaml.safe_load(text)["functions"][service.name]
        assert fn["lang"] == "oscar" and fn["build_args"] == {"BASE_IMAGE": service.image}


def test_use_case_fdl_loads_validates_translates():
    (service,) = load_fdl(PLANTS).services
    settings = Settings.from_env({})
    fd = plan_deployment(prepare_service(service, settings), settings).deployment
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
    fd = plan_deployment(prepare_service(service, settings), settings).deployment
    assert fd["image"] == from_stack["image"]


@pytest.mark.parametrize("fdl", sorted(REPO.glob("examples/*/*.yaml")), ids=lambda p: p.stem)
@pytest.mark.parametrize("env", [{}, {"MINIO_ENDPOINT": "http://minio:9000",
                                      "MINIO_ACCESS_KEY": "ak", "MINIO_SECRET_KEY": "sk"}],
                         ids=["no-minio", "minio"])
def test_stack_and_apply_make_the_same_plan(fdl, env):
    """``oscar-faas stack`` plans each service exactly as the gateway plans the body
    ``oscar-faas apply`` sends for it (same defaults, checks, secret, buckets, deployment)."""
    settings = dataclasses.replace(Settings.from_env(env), function_image="",
                                   openfaas_url="http://openfaas.invalid:8080")
    registry = ServiceRegistry(settings, OpenFaaSClient(settings))
    plans = stack_plans(fdl, settings)
    assert [p.service.name for p in plans] == [s.name for s in load_fdl(fdl).services]
    for plan, service in zip(plans, load_fdl(fdl).services):
        applied = registry.prepare(service.to_dict(), token=plan.service.token)
        assert applied == plan


@pytest.mark.parametrize("extra,message", [
    ("output: [{storage_provider: minio, path: out}]", "has no MinIO"),
    ("output: [{storage_provider: s3.mine, path: out}]\n"
     "      storage_providers: {s3: {mine: {access_key: hidden, secret_key: k}}}",
     "reads 'hidden'"),
], ids=["no-minio", "masked-credential"])
def test_stack_refuses_what_apply_refuses(tmp_path, extra, message):
    """stack runs the checks apply runs: minio.default needs a MinIO, and a masked credential
    cannot be deployed."""
    (tmp_path / "script.sh").write_text("echo hi\n")
    fdl = tmp_path / "svc.yaml"
    fdl.write_text("functions:\n  oscar:\n  - c:\n      name: svc\n      image: alpine\n"
                   f"      script: script.sh\n      {extra}\n")
    done = subprocess.run([sys.executable, "-m", "oscar_faas.cli", "stack", str(fdl)],
                          capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin"})
    assert done.returncode == 1 and message in done.stderr, done.stderr
    assert done.stdout == ""


def test_stack_deploys_as_printed_without_a_template(tmp_path):
    """``faas-cli deploy -f`` reads ./template/<lang>/template.yml only for a function with
    no fprocess; every exported function has one, so the printed stack deploys as it is."""
    text = run_stack(REPO / "examples" / "hello" / "hello.yaml")
    assert yaml.safe_load(text)["functions"]["hello"]["fprocess"] == "/oscar/bin/supervisor"
    empty = tmp_path / "no-templates"
    empty.mkdir()
    (fd,) = stack_to_deployments(text, env={}, templates_dir=empty)  # no template needed
    assert fd["envProcess"] == "/oscar/bin/supervisor"


def test_stack_output_writes_the_template_and_buildable_contexts(tmp_path):
    """One step for ``faas-cli up``: -o writes the stack and ./template/oscar beside it;
    --shrinkwrap writes contexts whose Dockerfile needs no --build-arg."""
    out = tmp_path / "deploy" / "stack.yml"
    out.parent.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "oscar_faas.cli", "stack", str(REPO / "examples" / "hello" /
         "hello.yaml"), "-o", str(out), "--shrinkwrap", str(tmp_path / "build")],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "faas-cli up -f" in done.stderr
    template = out.parent / "template" / "oscar"
    assert yaml.safe_load((template / "template.yml").read_text())["language"] == "oscar"
    assert (template / "oscar_faas" / "supervisor" / "core.py").is_file()
    (fd,) = stack_to_deployments(out.read_text(), env={}, templates_dir=out.parent / "template")
    # the function's secret, with the token the stored service carries (issue 21)
    secret = out.parent / "secrets" / "oscar-storage-hello.json"
    assert fd["secrets"] == ["oscar-storage-hello"] and secret.stat().st_mode & 0o777 == 0o600
    stored = json.loads(fd["annotations"]["com.oscar-faas.service"])
    assert json.loads(secret.read_text())["token"] == stored["token"]
    assert f"faas-cli secret create oscar-storage-hello --from-file {secret}" in done.stderr
    context = tmp_path / "build" / "hello"
    dockerfile = (context / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=alpine:3.20\n" in dockerfile
    assert "ARG BASE_IMAGE\n" not in dockerfile
    assert (context / "oscar_faas" / "supervisor" / "__main__.py").is_file()
    assert (context / "function").is_dir()


def test_stack_gateway_flag_sets_the_provider_gateway():
    text = run_stack(REPO / "examples" / "hello" / "hello.yaml", "--gateway",
                     "https://gateway.example.org:8443")
    assert yaml.safe_load(text)["provider"] == {"name": "openfaas",
                                                "gateway": "https://gateway.example.org:8443"}
