"""faas-cli passes stack files through drone/envsubst: our escape must survive it.

The Python model (:func:`tests.packaging.faascli_model.envsubst`) is checked against the real library
(v1.0.3, faas-cli's pin) when it can be built here, so the model is not just our own belief.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import yaml

from oscar_faas.stack import StackError, envsubst_escape, stack_yaml

from .conftest import ROOT, run_envsubst
from .faascli_model import envsubst, stack_to_deployments

ALPHABET = ["$", "$", "{", "}", "\\", "\\", "/", "a", "B_1", ":", "-", " ", "\n", '"', "é"]


def random_texts(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 24)))
            for _ in range(count)]


#: Expressions stacks use, with the environment {SET: x, EMPTY: ""}.
EXPRESSIONS = {
    "plain $HOME text": "plain $HOME text",
    "${SET}": "x",
    "${UNSET}": "",
    "${SET:-d}": "x",
    "${EMPTY:-d}": "d",
    "${UNSET:-docker.io/me}/fn:${TAG:-latest}": "docker.io/me/fn:latest",
    "${UNSET:-http://gateway.openfaas:8080}": "http://gateway.openfaas:8080",
    "${UNSET=d} ${UNSET:=d} ${UNSET:?d}": "d d d",
    "${SET:+p} ${EMPTY:+p}": "x p",  # v1.0.3 treats :+ as a default too
    "a${UNSET:-${SET}}b": "axb",
    "${UNSET:-a$$b} ${UNSET:-a\\/b}": "a$$b a\\/b",  # no escapes inside a default
    "$${X} $$ $$$ \\\\ \\/ \\x $": "${X} $ $$ \\ / \\x $",
    "price: $5, end$": "price: $5, end$",
}


@pytest.mark.parametrize("text,expected", list(EXPRESSIONS.items()))
def test_model(text: str, expected: str) -> None:
    assert envsubst(text, {"SET": "x", "EMPTY": ""}) == expected


@pytest.mark.parametrize("text", ["${}", "${ x}", "${SET", "${SET-d}", "${SET,,}"])
def test_model_rejects(text: str) -> None:
    with pytest.raises(StackError, match="envsubst"):
        envsubst(text, {"SET": "x"})


def test_escape_round_trips_in_the_model() -> None:
    for text in random_texts(3000):
        assert envsubst(envsubst_escape(text), {"B_1": "oops", "a": "oops"}) == text, text


def test_escape_leaves_plain_text_alone() -> None:
    for text in ["$5", "a$b", "C:\\dir\\file", "http://x/y", "{json}", "50% off $"]:
        assert envsubst_escape(text) == text


# The first test builds the Go oracle (up to 300 s on a slow machine) inside its time.
@pytest.mark.timeout(420)
class TestAgainstDroneEnvsubst:
    """The same checks, run through the real Go library faas-cli uses."""

    @pytest.mark.parametrize("text,expected", list(EXPRESSIONS.items()))
    def test_model_matches(self, drone_envsubst: str, text: str, expected: str) -> None:
        assert run_envsubst(drone_envsubst, text, {"SET": "x", "EMPTY": ""}) == expected

    def test_escape_round_trips(self, drone_envsubst: str) -> None:
        texts = random_texts(150, seed=11)
        # Not NUL as separator: drone/envsubst's scanner takes rune 0 for the end of input.
        joined = "|SEP|".join(envsubst_escape(t) for t in texts)
        assert run_envsubst(drone_envsubst, joined, {"B_1": "oops"}).split("|SEP|") == texts

    def test_generated_stack(self, drone_envsubst: str,
                             deployments: list[dict[str, Any]]) -> None:
        text = stack_yaml(deployments, registry="reg.example/me")
        env = {"HOME": "/root", "NOT_A_VAR": "oops", "MODEL": "oops"}
        real = yaml.load(run_envsubst(drone_envsubst, text, env), Loader=yaml.BaseLoader)
        assert real == yaml.load(envsubst(text, env), Loader=yaml.BaseLoader)
        sent = stack_to_deployments(real)
        assert sent[0]["envVars"] == deployments[0]["envVars"]
        assert sent[0]["annotations"] == deployments[0]["annotations"]

    def test_repository_stack(self, drone_envsubst: str) -> None:
        text = (ROOT / "stack.yml").read_text()
        env = {"REGISTRY": "r", "OSCAR_PASSWORD": "pw"}
        assert run_envsubst(drone_envsubst, text, env) == envsubst(text, env)
