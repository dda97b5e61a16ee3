"""Reading SCRIPT / FUNCTION_CONFIG / LOG_LEVEL and the output filters."""

from __future__ import annotations

import logging

import pytest

from oscar_faas.supervisor.config import OutputSpec, load_config, load_script
from oscar_faas.supervisor.errors import FunctionConfigError

from .conftest import b64, make_env


def test_no_config_is_fine() -> None:
    config = load_config({})
    assert (config.log_level, config.outputs, dict(config.storage_providers)) == (logging.INFO, (), {})
    assert load_config({"FUNCTION_CONFIG": ""}).outputs == ()


def test_outputs_are_parsed() -> None:
    env = make_env("x", {"output": [
        {"storage_provider": "minio", "path": "/bucket/"},
        {"storage_provider": "s3.aws", "path": "b2/a/b/", "suffix": [".txt"], "prefix": None},
        {"storage_provider": "minio.other", "path": "b3/x", "prefix": "res"},
    ]})
    first, second, third = load_config(env).outputs
    assert (first.kind, first.ident, first.bucket, first.folder) == ("minio", "default", "bucket", "")
    assert (second.kind, second.ident, second.bucket, second.folder) == ("s3", "aws", "b2", "a/b")
    assert (second.suffixes, second.prefixes) == ((".txt",), ())
    assert third.prefixes == ("res",)


def test_filters_and_keys() -> None:
    spec = OutputSpec("minio.default", "minio", "default", "b", "f", ("res", "out"), (".txt", ".json"))
    assert spec.matches("result.txt") and spec.matches("out.json")
    assert not spec.matches("result.log") and not spec.matches("x-result.txt")
    assert spec.key_for("sub/a.txt") == "f/sub/a.txt"
    assert OutputSpec("minio", "minio", "default", "b").key_for("a.txt") == "a.txt"
    assert OutputSpec("minio", "minio", "default", "b").matches("anything")


@pytest.mark.parametrize(
    "config_level, env_level, expected",
    [("CRITICAL", None, logging.CRITICAL), ("CRITICAL", "debug", logging.DEBUG),
     (None, None, logging.INFO), ("bogus", None, logging.INFO), ("ERROR", "bogus", logging.ERROR)],
)
def test_log_level(config_level: str | None, env_level: str | None, expected: int) -> None:
    env = make_env("x", {"log_level": config_level})
    if env_level:
        env["LOG_LEVEL"] = env_level
    assert load_config(env).log_level == expected


@pytest.mark.parametrize(
    "value, message",
    [("%%", "not base64"), (b64("a: [unclosed"), "not YAML"), (b64("- a list"), "mapping"),
     (b64("output: [{path: b}]"), "no storage_provider"),
     (b64("output: [{storage_provider: minio, path: /}]"), "empty path")],
)
def test_bad_config(value: str, message: str) -> None:
    with pytest.raises(FunctionConfigError, match=message):
        load_config({"FUNCTION_CONFIG": value})


def test_script_decoding() -> None:
    assert load_script({}) is None
    assert load_script({"SCRIPT": b64("echo hi\n")[:8] + "\n" + b64("echo hi\n")[8:]}) == b"echo hi\n"
    with pytest.raises(FunctionConfigError, match="invalid SCRIPT"):
        load_script({"SCRIPT": "not*base64"})
