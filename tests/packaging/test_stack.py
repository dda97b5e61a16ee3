"""stack.yml export: faas-cli must send the FunctionDeployment the gateway sends.

``faascli_model.stack_to_deployments`` re-implements faas-cli's mapping (envsubst, names, env, labels,
annotations, limits, template fprocess), so these tests check the promise field by field.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from oscar_faas import stack as st
from oscar_faas.contract import SUPERVISOR_PROCESS
from oscar_faas.stack import StackError, stack_yaml

from .conftest import ROOT, TEMPLATE_DIR
from .faascli_model import (deployment_differences, envsubst, load_stack,
                            stack_to_deployments, template_fprocess)

DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
#: What is allowed to differ, and why (see the oscar_faas.stack docstring).
INTENDED = {"image"}


def test_stack_parses_and_has_faas_cli_shape(deployments: list[dict[str, Any]]) -> None:
    text = stack_yaml(deployments, gateway="http://gw:8080", registry="reg.example/me", tag="v1")
    data = yaml.safe_load(text)
    assert data["version"] == 1.0
    assert re.search(r"^version: 1\.0$", text, re.M), "written as faas-cli new writes it"
    assert data["provider"] == {"name": "openfaas", "gateway": "http://gw:8080"}
    assert list(data["functions"]) == ["plants", "hello"]
    plants = data["functions"]["plants"]
    assert plants["lang"] == "oscar"
    assert plants["image"] == "reg.example/me/plants:v1"
    assert plants["build_args"] == {"BASE_IMAGE": "deephdc/deep-oc-plants-classification-tf"}
    # written out, so faas-cli deploy does not need ./template/oscar/template.yml
    assert plants["fprocess"] == SUPERVISOR_PROCESS
    assert plants["handler"] == st.SHARED_HANDLER
    assert plants["limits"] == {"memory": "2Gi", "cpu": "1.5"}
    assert plants["secrets"] == ["oscar-storage-plants"]
    hello = data["functions"]["hello"]
    assert hello["namespace"] == "openfaas-fn"
    assert hello["limits"] == {"memory": "128Mi"}
    assert "requests" not in hello and "labels" not in hello and "annotations" not in hello
    for name in data["functions"]:
        assert DNS1123.match(name)


def test_round_trip_through_faas_cli_mapping(deployments: list[dict[str, Any]]) -> None:
    """The core promise: envsubst + faas-cli's mapping gives back the gateway's deployment."""
    text = stack_yaml(deployments, registry="reg.example/me")
    # A hostile environment: every ${VAR} the values mention is set, so any unescaped
    # expression would change a value.
    env = {"HOME": "/root", "NOT_A_VAR": "oops", "MODEL": "oops"}
    sent = stack_to_deployments(text, env=env)
    assert [fd["service"] for fd in sent] == ["plants", "hello"]
    for gateway_fd, stack_fd in zip(deployments, sent):
        differences = deployment_differences(gateway_fd, stack_fd)
        assert set(differences) == INTENDED, differences
        assert stack_fd["image"] == f"reg.example/me/{gateway_fd['service']}:latest"
        assert stack_fd["envVars"] == gateway_fd["envVars"]
        assert stack_fd["annotations"] == gateway_fd["annotations"]
    service = json.loads(sent[0]["annotations"]["com.oscar-faas.service"])
    assert service["description"] == 'Uses "${MODEL}" at C:\\models\\plants, cost $$ — ünïcode'


def test_round_trip_from_parsed_mapping(deployments: list[dict[str, Any]]) -> None:
    """The brief's form: yaml.safe_load of the stack, for values envsubst leaves alone."""
    plain = copy.deepcopy(deployments[1])
    sent = stack_to_deployments(yaml.safe_load(stack_yaml([plain])))
    assert set(deployment_differences(plain, sent[0])) == INTENDED


def test_envprocess_is_the_templates_and_the_gateways() -> None:
    fprocess = template_fprocess("oscar")
    assert fprocess == SUPERVISOR_PROCESS == "/oscar/bin/supervisor", (
        "the gateway's envProcess must be the path the template image has")


def test_escaping_is_minimal(deployments: list[dict[str, Any]]) -> None:
    """Values envsubst leaves alone are written as they are (readable, and right even with
    faas-cli --envsubst=false); only ${, $$, \\\\ and \\/ are escaped."""
    text = stack_yaml(deployments)
    assert "PRICE: $5" in text
    assert "TEMPLATE: $${HOME}/x" in text
    assert "DOLLARS: $$$ and $$$${NOT_A_VAR} and trailing $\n" in text
    assert "MULTILINE: |\n        line one\n        line two: with colon\n" in text
    assert yaml.safe_load(envsubst(text))["functions"]["plants"]["environment"] == \
        deployments[0]["envVars"]


def test_long_json_annotation_stays_one_valid_string(deployments: list[dict[str, Any]]) -> None:
    big = {"script": "x" * 5000, "note": "a: b, {c}: [d] # not a comment", "n": 1}
    fd = copy.deepcopy(deployments[1])
    fd["annotations"] = {"com.oscar-faas.service": json.dumps(big)}
    text = stack_yaml([fd])
    line = next(ln for ln in text.splitlines() if "com.oscar-faas.service" in ln)
    assert len(line) > 5000, "not folded over several lines"
    loaded = load_stack(text)["functions"]["hello"]["annotations"]["com.oscar-faas.service"]
    assert json.loads(loaded) == big


def test_gpu_limits_are_reported_not_silently_lost(deployments: list[dict[str, Any]]) -> None:
    text = stack_yaml(deployments)
    assert "# plants: limits nvidia.com/gpu cannot be set through faas-cli" in text
    assert "nvidia.com/gpu" not in yaml.safe_load(text)["functions"]["plants"]["limits"]


def test_other_envprocess_is_reported(deployments: list[dict[str, Any]]) -> None:
    fd = dict(deployments[1], envProcess="python -m oscar_faas.supervisor")
    text = stack_yaml([fd])
    assert "# hello: envProcess 'python -m oscar_faas.supervisor' is replaced" in text
    (sent,) = stack_to_deployments(text)
    assert set(deployment_differences(fd, sent)) == {"image", "envProcess"}


def test_default_image_and_tag(deployments: list[dict[str, Any]]) -> None:
    data = yaml.safe_load(stack_yaml(deployments))
    assert data["functions"]["hello"]["image"] == "hello:latest"
    assert data["provider"]["gateway"] == st.DEFAULT_GATEWAY
    assert st.function_image("a", "reg/", "t") == "reg/a:t"


def test_every_function_shares_the_template_function_folder(
        deployments: list[dict[str, Any]]) -> None:
    """The script travels in ``SCRIPT``: no function needs a handler folder of its own."""
    data = yaml.safe_load(stack_yaml(deployments))
    assert {fn["handler"] for fn in data["functions"].values()} == {"./template/oscar/function"}


@pytest.mark.parametrize("name", ["Plants", "my_fn", "-a", "a-", "a.b", "", "x" * 64, None])
def test_names_must_be_dns1123_labels(deployments: list[dict[str, Any]], name: Any) -> None:
    fd = dict(deployments[1], service=name)
    with pytest.raises(StackError, match="DNS-1123"):
        stack_yaml([fd])


def test_rejects_duplicates_missing_image_and_non_strings(
        deployments: list[dict[str, Any]]) -> None:
    with pytest.raises(StackError, match="defined twice"):
        stack_yaml([deployments[1], deployments[1]])
    with pytest.raises(StackError, match="'image'"):
        stack_yaml([dict(deployments[1], image="")])
    with pytest.raises(StackError, match=r"'hello'.*envVars.N.*strings"):
        stack_yaml([dict(deployments[1], envVars={"N": 3})])


def test_faas_cli_mapping_rules(tmp_path: Path) -> None:
    """stack_to_deployments follows faas-cli on hand-written stacks too."""
    (tmp_path / "env.yml").write_text("environment:\n  B: from-file\n  C: file\n")
    text = """
provider: {name: openfaas}
functions:
  fn:
    lang: oscar
    handler: ./fn
    image: ${REG:-docker.io/me}/fn:${TAG}
    fprocess: cat
    environment: {A: 1, B: inline, D: false}
    environment_file: [env.yml]
    secrets: [s1, s1, s2]
    limits: {memory: 1Gi, cpu: "", nvidia.com/gpu: "1"}
    readonly_root_filesystem: true
  df:
    lang: dockerfile
    handler: .
    image: df
"""
    fn, df = stack_to_deployments(text, env={"TAG": "t"}, base_dir=tmp_path,
                                  namespace="team")
    assert fn == {
        "service": "fn", "image": "docker.io/me/fn:t", "namespace": "team",
        "envProcess": "cat",
        "envVars": {"A": "1", "B": "from-file", "C": "file", "D": "false"},
        "secrets": ["s1", "s2"], "labels": {}, "annotations": {},
        "limits": {"memory": "1Gi"}, "readOnlyRootFilesystem": True,
    }
    assert df == {"service": "df", "image": "df", "namespace": "team",
                  "labels": {}, "annotations": {}}


def test_faas_cli_errors(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="provider.name"):
        stack_to_deployments("provider: {name: swarm}\nfunctions: {}\n")
    with pytest.raises(StackError, match="version"):
        stack_to_deployments("version: 2.0\nprovider: {name: openfaas}\n")
    with pytest.raises(StackError, match="template 'nope'"):
        stack_to_deployments("provider: {name: openfaas}\nfunctions:\n"
                             "  f: {lang: nope, image: x}\n", templates_dir=tmp_path)


def test_repository_stack_deploys_the_gateway() -> None:
    """The top-level stack.yml: the gateway as a `lang: dockerfile` function."""
    text = (ROOT / "stack.yml").read_text()
    (fd,) = stack_to_deployments(text, env={"REGISTRY": "reg.example/me", "TAG": "0.1.0",
                                            "OSCAR_PASSWORD": "s3cret$"})
    assert fd["service"] == "oscar-faas"
    assert fd["image"] == "reg.example/me/oscar-faas:0.1.0"
    assert "envProcess" not in fd, "the image's own CMD serves HTTP; no watchdog"
    env = fd["envVars"]
    assert env["OPENFAAS_URL"] == "http://gateway.openfaas:8080"
    assert env["OSCAR_PASSWORD"] == "s3cret$"
    assert "OPENFAAS_PASSWORD" not in env, "read from the basic-auth secret files"
    assert fd["secrets"] == ["basic-auth-user", "basic-auth-password"]
    assert fd["annotations"]["com.openfaas.health.http.path"] == "/health"
    assert not any(key.startswith("com.openfaas.scale.zero") for key in fd["labels"]), \
        "Pro-only label: faas-netes CE rejects it"
    defaults = stack_to_deployments(text)[0]
    assert defaults["image"] == "localhost:5000/oscar-faas:latest"


def test_prepare_template_copies_the_supervisor_source(tmp_path: Path) -> None:
    target = st.prepare_template(tmp_path / "template")
    assert target == tmp_path / "template" / "oscar"
    for name in ("template.yml", "Dockerfile", "supervisor_entry.py", "runtime_entry.py",
                 "build-runtime.sh", "build-requirements.txt", "function/README.md"):
        assert (target / name).is_file(), name
    assert (target / "oscar_faas" / "__init__.py").is_file()
    assert (target / "oscar_faas" / "stack.py").is_file()
    assert not list(target.rglob("__pycache__"))
    assert template_fprocess("oscar", tmp_path / "template") == "/oscar/bin/supervisor"


def test_main_template_and_stack(tmp_path: Path, deployments: list[dict[str, Any]],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert st.main(["template", str(tmp_path / "t")]) == 0
    assert (tmp_path / "t" / "oscar" / "oscar_faas").is_dir()
    source = tmp_path / "fds.json"
    source.write_text(json.dumps(deployments))
    capsys.readouterr()
    assert st.main(["stack", str(source), "--registry", "r", "--tag", "x"]) == 0
    out = capsys.readouterr().out
    assert stack_to_deployments(out)[0]["image"] == "r/plants:x"
    source.write_text(json.dumps([dict(deployments[0], service="Bad")]))
    assert st.main(["stack", str(source)]) == 1
    assert "DNS-1123" in capsys.readouterr().err


def test_template_yml_matches_the_dockerfile() -> None:
    template = yaml.safe_load((TEMPLATE_DIR / "template.yml").read_text())
    assert template["language"] == "oscar"
    assert template["fprocess"] == "/oscar/bin/supervisor"
    assert template["welcome_message"].strip()
    dockerfile = (TEMPLATE_DIR / "Dockerfile").read_text()
    assert f"fprocess={template['fprocess']} " in dockerfile
