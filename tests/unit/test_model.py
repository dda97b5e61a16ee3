"""Service model: both client dialects in, OSCAR's defaults, validation, Go-typed JSON out."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from oscar_faas.errors import InvalidService
from oscar_faas.model import Service, dumps

DATA = Path(__file__).parent.parent / "data"
MINIO = {"endpoint": "http://minio:9000", "verify": True, "region": "us-east-1"}


def oscar_cli_body() -> dict:
    return json.loads((DATA / "oscar_cli_cowsay.json").read_text())


def parse(body: dict, **kw) -> Service:
    svc = Service.from_dict(body).normalized(minio=MINIO, **kw)
    svc.validate()
    return svc


def test_minimal_oscar_python_body_gets_oscar_defaults():
    svc = parse({"name": "hello", "image": "alpine", "script": "echo hi"})
    out = svc.to_dict()
    assert out["memory"] == "256Mi" and out["cpu"] == "0.2"
    assert out["log_level"] == "INFO" and out["visibility"] == "private"
    assert out["owner"] == "cluster_admin"
    assert out["labels"] == {"oscar_service": "hello", "applicationId": "hello",
                             "queue": "root.oscar-queue.hello"}
    assert out["storage_providers"] == {"minio": {"default": {
        "endpoint": "http://minio:9000", "verify": True, "access_key": "hidden",
        "secret_key": "hidden", "region": "us-east-1"}}}
    assert re.fullmatch(r"[0-9a-f]{64}", out["token"])


def test_go_types_and_no_nulls_in_output():
    out = parse({"name": "hello", "image": "alpine", "script": "x"}).to_dict()
    assert out["enable_gpu"] is False and out["rescheduler_threshold"] == 0
    assert out["synchronous"] == {"min_scale": 0, "max_scale": 0}
    assert out["input"] == [] and out["output"] == [] and out["annotations"] == {}
    assert out["environment"] == {"variables": {}, "secrets": {}}
    assert out["mount"] == {"storage_provider": "", "path": ""}
    assert None not in out.values()
    assert "replicas" not in out and "image_pull_secrets" not in out  # omitempty
    assert '"name":"hello"' in dumps(out)  # compact, as gin emits it


def test_oscar_cli_full_struct_with_nulls_and_capital_variables():
    svc = parse(oscar_cli_body())
    assert svc.environment["variables"] == {"INPUT_TYPE": "json"}
    assert svc.log_level == "CRITICAL"  # upper-cased
    assert svc.memory == "1Gi" and svc.cpu == "1.0"
    assert svc.input == [] and svc.labels["oscar_service"] == "cowsay"
    assert "\r" not in svc.script  # CRLF normalised


def test_client_token_and_owner_are_ignored():
    body = {"name": "a", "image": "i", "script": "s", "token": "f" * 64, "owner": "mallory"}
    svc = parse(body)
    assert svc.token != "f" * 64 and svc.owner == "cluster_admin"
    assert parse(body, token="a" * 64).token == "a" * 64


def test_keys_match_case_insensitively_and_numeric_cpu_is_accepted():
    svc = parse({"Name": "a", "IMAGE": "i", "Script": "s", "cpu": 1.5, "Memory": "1Gi"})
    assert (svc.name, svc.image, svc.cpu, svc.memory) == ("a", "i", "1.5", "1Gi")
    assert parse({"name": "a", "image": "i", "script": "s", "cpu": 2}).cpu == "2"


def test_unknown_log_level_becomes_info():
    assert parse({"name": "a", "image": "i", "script": "s", "log_level": "loud"}).log_level \
        == "INFO"


@pytest.mark.parametrize("missing", ["name", "image", "script"])
def test_required_fields(missing):
    body = {"name": "a", "image": "i", "script": "s"}
    body[missing] = ""
    with pytest.raises(InvalidService, match=f"'{missing}' is required"):
        parse(body)


@pytest.mark.parametrize("name, rule", [
    ("Upper", "DNS-1123"), ("under_score", "DNS-1123"), ("-lead", "DNS-1123"),
    ("trail-", "DNS-1123"), ("dot.ted", "DNS-1123"), ("a" * 40, "at most 39"),
])
def test_bad_names(name, rule):
    with pytest.raises(InvalidService, match=rule):
        parse({"name": name, "image": "i", "script": "s"})


def test_39_character_name_is_fine():
    assert parse({"name": "a" * 39, "image": "i", "script": "s"}).name == "a" * 39


@pytest.mark.parametrize("field, value", [
    ("memory", "lots"), ("memory", "1GB"), ("cpu", "-1"), ("cpu", "1 core"), ("cpu", True)])
def test_bad_quantities(field, value):
    with pytest.raises(InvalidService, match=field):
        parse({"name": "a", "image": "i", "script": "s", field: value})


@pytest.mark.parametrize("value", ["128974848", "129e6", "123Mi", "500m", "0.5", "1Gi", ".5"])
def test_good_quantities(value):
    assert parse({"name": "a", "image": "i", "script": "s", "memory": value}).memory == value


@pytest.mark.parametrize("provider, message", [
    ("", "storage_provider"), ("ftp.x", "storage_provider"), ("minio.", "storage_provider"),
    ("s3.missing", "not defined in storage_providers"),
])
def test_bad_storage_provider_strings(provider, message):
    body = {"name": "a", "image": "i", "script": "s",
            "output": [{"storage_provider": provider, "path": "bucket/out"}]}
    with pytest.raises(InvalidService, match=message):
        parse(body)


def test_input_on_s3_is_unrecognised_as_in_oscar():
    body = {"name": "a", "image": "i", "script": "s",
            "storage_providers": {"s3": {"aws": {"access_key": "k", "secret_key": "s"}}},
            "input": [{"storage_provider": "s3.aws", "path": "b/in"}]}
    with pytest.raises(InvalidService, match="unrecognized input"):
        parse(body)


def test_wrong_types_name_the_field():
    with pytest.raises(InvalidService, match="'enable_gpu' must be true or false"):
        parse({"name": "a", "image": "i", "script": "s", "enable_gpu": "yes"})
    with pytest.raises(InvalidService, match="'input' must be a list"):
        parse({"name": "a", "image": "i", "script": "s", "input": "b/in"})


def test_masked_hides_every_credential():
    body = {"name": "a", "image": "i", "script": "s",
            "storage_providers": {"s3": {"aws": {"access_key": "AK", "secret_key": "SK",
                                                 "region": "eu-west-1"}}},
            "environment": {"variables": {"V": "1"}, "secrets": {"PASS": "pw"}},
            "clusters": {"c": {"endpoint": "e", "auth_user": "u", "auth_password": "pw"}}}
    text = dumps(parse(body).masked().to_dict())
    for secret in ("AK", "SK", '"pw"'):
        assert secret not in text
    assert '"region":"eu-west-1"' in text and '"V":"1"' in text


def test_round_trip_through_json_is_stable():
    svc = parse(oscar_cli_body())
    again = Service.from_dict(json.loads(dumps(svc.to_dict())))
    assert again.to_dict() == svc.to_dict()


# --------------------------------------------------------------------------- expose

def exposed(**expose) -> dict:
    return {"name": "web", "image": "nginx", "script": "nginx -g 'daemon off;'",
            "expose": expose}


@pytest.mark.parametrize("port", [8888, [8888], [8888, 9999], 8888.0])
def test_expose_api_port_as_number_or_list_round_trips(port):
    svc = parse(exposed(api_port=port, health_path="/health", set_auth=True))
    assert svc.exposed and svc.expose_port == 8888
    out = svc.to_dict()["expose"]
    assert out["api_port"] == port and type(out["api_port"]) is type(port if port != 8888.0
                                                                      else 8888)
    assert (out["health_path"], out["set_auth"], out["rewrite_target"]) == ("/health", True,
                                                                            False)
    again = Service.from_dict(json.loads(dumps(svc.to_dict())))
    assert again.expose == svc.expose


def test_not_exposed_omits_api_port_as_go_does():
    out = parse({"name": "a", "image": "b", "script": "c"}).to_dict()["expose"]
    assert "api_port" not in out and out["min_scale"] == 0 and out["health_path"] == ""


@pytest.mark.parametrize("expose, message", [
    ({"api_port": "80"}, "'expose.api_port' must be a whole number or a list"),
    ({"api_port": [80, "x"]}, "'expose.api_port[1]' must be a whole number"),
    ({"api_port": 70000}, "'expose.api_port' must be a port from 1 to 65535, got 70000"),
    ({"api_port": [0]}, "'expose.api_port' must list ports from 1 to 65535"),
    ({"api_port": 80, "min_scale": -1}, "'expose.min_scale' must not be negative"),
    ({"api_port": 80, "min_scale": 3, "max_scale": 2}, "'expose.max_scale' (2) must not be below"),
    ({"api_port": 80, "health_path": "health"}, "'expose.health_path' must be a path"),
    ({"api_port": 80, "set_auth": "yes"}, "'expose.set_auth'"),
])
def test_bad_expose_settings_are_400s_naming_the_field(expose, message):
    with pytest.raises(InvalidService) as err:
        parse(exposed(**expose))
    assert message in str(err.value)
    assert err.value.status == 400


def test_expose_translates_to_runtime_env_and_scale_labels():
    from oscar_faas.config import Settings
    from oscar_faas.translate import service_to_deployment
    svc = parse(exposed(api_port=[80], health_path="/h", min_scale=2, max_scale=5,
                        rewrite_target=True, default_command=True))
    fd = service_to_deployment(svc, Settings.from_env({}), None)
    env = fd["envVars"]
    assert env["OSCAR_EXPOSE_PORT"] == "80"
    assert env["OSCAR_EXPOSE_HEALTH_PATH"] == "/system/services/web/exposed/h"  # OSCAR's probe
    assert env["OSCAR_EXPOSE_DEFAULT_COMMAND"] == "true"
    assert env["OSCAR_SERVICE_BASE_PATH"] == "/system/services/web/exposed"
    assert fd["labels"]["com.openfaas.scale.min"] == "2"
    assert fd["labels"]["com.openfaas.scale.max"] == "5"
    plain = service_to_deployment(parse(exposed()), Settings.from_env({}), None)
    assert "OSCAR_EXPOSE_PORT" not in plain["envVars"]
    assert "com.openfaas.scale.min" not in plain["labels"]
    no_rewrite = parse(exposed(api_port=80, health_path="/h"))
    assert service_to_deployment(no_rewrite, Settings.from_env({}), None)[
        "envVars"]["OSCAR_EXPOSE_HEALTH_PATH"] == "/h"
