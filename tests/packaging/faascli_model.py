"""faas-cli's own reading of a stack file, re-implemented for tests (no faas-cli, no Docker).

``stack_to_deployments`` maps a stack to the FunctionDeployments ``faas-cli deploy`` would send
(faas-cli's ``stack`` and ``deploy`` code); :func:`envsubst` is drone/envsubst v1.0.3 as faas-cli runs
it over the whole file; :func:`deployment_differences` compares the result with the gateway's
own FunctionDeployment. Only what ``oscar_faas.stack`` writes needs to be covered.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from oscar_faas.stack import RESOURCE_KEYS, TEMPLATES_DIR, StackError

#: drone/envsubst v1.0.3 variable names.
_ENV_NAME = re.compile(r"\w+")
#: The ``${NAME<op>default}`` operators that drone/envsubst v1.0.3 evaluates as "value, or
#: the default when the value is empty" (it treats ``:+`` and ``:?`` the same way).
_DEFAULT_OPS = (":-", ":=", ":?", ":+", "=")


def envsubst(text: str, env: Mapping[str, str] | None = None) -> str:
    """Expand ``text`` as faas-cli's drone/envsubst v1.0.3 does, for the forms stacks use.

    Handles the escapes (``$$``, ``\\\\``, ``\\/``), ``${NAME}`` and ``${NAME:-default}``
    (and the other default operators, which v1.0.3 all treat as "default when empty").
    Unset variables expand to "". ``$NAME`` without braces is left alone, as envsubst does.

    :param env: the variables (``{}`` when omitted, i.e. a clean environment).
    :raises StackError: an expression faas-cli would reject, or one this model does not
        cover (substring, case and pattern functions).
    """
    env = {} if env is None else env
    out, pos = _envsubst_text(text, 0, env, top_level=True)
    assert pos == len(text)
    return out


def _envsubst_text(text: str, pos: int, env: Mapping[str, str], *,
                   top_level: bool) -> tuple[str, int]:
    """Expand from ``pos``; at top level until the end, inside a default until ``}``."""
    out: list[str] = []
    while pos < len(text):
        char = text[pos]
        following = text[pos + 1] if pos + 1 < len(text) else ""
        if char == "$" and following == "{":
            value, pos = _envsubst_expression(text, pos + 2, env)
            out.append(value)
        elif not top_level and char == "}":
            return "".join(out), pos
        elif top_level and char == "$" and following == "$":
            out.append("$")
            pos += 2
        elif top_level and char == "\\" and following in ("\\", "/"):
            out.append(following)
            pos += 2
        else:
            out.append(char)
            pos += 1
    if not top_level:
        raise StackError("envsubst: missing closing brace")
    return "".join(out), pos


def _envsubst_expression(text: str, pos: int, env: Mapping[str, str]) -> tuple[str, int]:
    """Evaluate the ``${...}`` whose name starts at ``pos``; return value and end."""
    match = _ENV_NAME.match(text, pos)
    if not match:
        raise StackError(f"envsubst: unable to parse variable name at {text[pos - 2:pos + 8]!r}")
    name, pos = match.group(0), match.end()
    value = env.get(name, "")
    if text.startswith("}", pos):
        return value, pos + 1
    for op in _DEFAULT_OPS:
        if text.startswith(op, pos):
            default, pos = _envsubst_text(text, pos + len(op), env, top_level=False)
            return (value or default), pos + 1
    raise StackError(f"envsubst: unsupported expression after ${{{name}")


def load_stack(text: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read a stack file as faas-cli does: envsubst first, then YAML.

    Scalars are kept as the strings written (PyYAML's BaseLoader), as Go's YAML decoder
    does for faas-cli's ``map[string]string`` fields (``write_debug: false`` is "false").
    """
    data = yaml.load(envsubst(text, env), Loader=yaml.BaseLoader)  # noqa: S506 (BaseLoader)
    if not isinstance(data, dict):
        raise StackError("stack file: not a YAML mapping")
    return data


def template_fprocess(lang: str, templates_dir: str | Path | None = None) -> str:
    """The ``fprocess`` of template ``lang`` (faas-cli's ``--read-template``).

    :raises StackError: the template or its ``template.yml`` is missing, as faas-cli fails.
    """
    path = Path(templates_dir or TEMPLATES_DIR) / lang / "template.yml"
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise StackError(f"template {lang!r}: cannot read {path}: {err.strerror}") from None
    return str((data or {}).get("fprocess") or "")


def stack_to_deployments(stack: Mapping[str, Any] | str, *,
                         env: Mapping[str, str] | None = None,
                         templates_dir: str | Path | None = None,
                         namespace: str | None = None,
                         base_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """The FunctionDeployments ``faas-cli deploy`` would send for ``stack``.

    A re-implementation of faas-cli's mapping (faas-cli's ``stack`` and ``deploy`` code), with no
    command-line overrides except ``--namespace``.

    :param stack: the stack file text (envsubst is applied with ``env``), or its parsed
        mapping (taken as already substituted).
    :param templates_dir: where ``<lang>/template.yml`` is read (``function-templates``).
    :param namespace: faas-cli's ``--namespace`` flag.
    :param base_dir: folder ``environment_file`` paths are relative to (the stack's).
    :raises StackError: what faas-cli rejects (provider, version, missing template).
    """
    data = load_stack(stack, env) if isinstance(stack, str) else dict(stack)
    provider = data.get("provider") or {}
    if _go_string(provider.get("name")) not in ("openfaas", "faas"):
        raise StackError(f"provider.name must be 'openfaas', got {provider.get('name')!r}")
    version = data.get("version")
    if version is not None and _go_string(version) != "1.0":
        raise StackError(f"version must be 1.0, got {version!r}")
    functions = data.get("functions") or {}
    return [_function_deployment(str(name), fn or {}, templates_dir=templates_dir,
                                 namespace=namespace, base_dir=base_dir)
            for name, fn in functions.items()]


def _function_deployment(name: str, fn: Mapping[str, Any], *,
                         templates_dir: str | Path | None, namespace: str | None,
                         base_dir: str | Path | None) -> dict[str, Any]:
    fd: dict[str, Any] = {"service": name, "image": _go_string(fn.get("image"))}
    ns = namespace or _go_string(fn.get("namespace"))
    if ns:
        fd["namespace"] = ns
    lang = _go_string(fn.get("lang"))
    fprocess = _go_string(fn.get("fprocess"))
    if not fprocess and lang.lower() != "dockerfile":
        fprocess = template_fprocess(lang, templates_dir)
    if fprocess:
        fd["envProcess"] = fprocess
    env_vars = _go_map(fn.get("environment"))
    for env_file in fn.get("environment_file") or []:
        path = Path(base_dir or ".") / _go_string(env_file)
        try:
            loaded = yaml.load(path.read_text(), Loader=yaml.BaseLoader) or {}  # noqa: S506
        except OSError as err:
            raise StackError(f"function {name!r}: environment_file {path}: "
                             f"{err.strerror}") from None
        env_vars.update(_go_map(loaded.get("environment")))
    if env_vars:
        fd["envVars"] = env_vars
    secrets = [_go_string(s) for s in fn.get("secrets") or []]
    if secrets:
        fd["secrets"] = list(dict.fromkeys(secrets))
    fd["labels"] = _go_map(fn.get("labels"))
    fd["annotations"] = _go_map(fn.get("annotations"))
    if fn.get("constraints"):
        fd["constraints"] = [_go_string(c) for c in fn["constraints"]]
    for field in ("limits", "requests"):
        resources = _go_map(fn.get(field))
        kept = {key: resources[key] for key in RESOURCE_KEYS if resources.get(key)}
        if kept:
            fd[field] = kept
    if _go_string(fn.get("readonly_root_filesystem")).lower() == "true":
        fd["readOnlyRootFilesystem"] = True
    return fd


def _go_string(value: Any) -> str:
    """A YAML scalar as Go's decoder puts it in a string field."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _go_map(value: Any) -> dict[str, str]:
    if not value:
        return {}
    if not isinstance(value, Mapping):
        raise StackError(f"expected a mapping, got {value!r}")
    return {_go_string(k): _go_string(v) for k, v in value.items()}


def deployment_differences(gateway_fd: Mapping[str, Any],
                           stack_fd: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Fields where ``stack_fd`` (from :func:`stack_to_deployments`) differs from the
    gateway's ``gateway_fd`` once faas-cli's normalisation is applied to the latter
    (empty maps, memory/cpu only). Only ``image`` and ``envProcess`` should remain."""
    expected = dict(gateway_fd)
    for field in ("labels", "annotations"):
        expected[field] = dict(expected.get(field) or {})
    if not expected.get("envVars"):
        expected.pop("envVars", None)
    for field in ("limits", "requests"):
        kept = {k: v for k, v in (expected.get(field) or {}).items()
                if k in RESOURCE_KEYS and v}
        if kept:
            expected[field] = kept
        else:
            expected.pop(field, None)
    for field in ("secrets", "constraints", "namespace"):
        if not expected.get(field):
            expected.pop(field, None)
    if not expected.get("readOnlyRootFilesystem"):
        expected.pop("readOnlyRootFilesystem", None)
    keys = set(expected) | set(stack_fd)
    return {key: (expected.get(key), stack_fd.get(key)) for key in sorted(keys)
            if expected.get(key) != stack_fd.get(key)}
