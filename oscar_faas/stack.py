"""faas-cli ``stack.yml`` export, and faas-cli's own stack -> FunctionDeployment mapping.

``oscar-faas stack FDL`` prints a stack file so that a cluster operator can build real
function images (``function-templates/oscar`` on top of each service's image) and deploy them
with ``faas-cli up``, outside the gateway. The promise is that ``faas-cli up -f stack.yml``
sends OpenFaaS the *same* FunctionDeployment the gateway would send, so a service deployed
either way behaves (and is listed by the gateway) the same. :func:`stack_to_deployments`
re-implements faas-cli's mapping (reference/openfaas.md section 2) so tests can check that
promise field by field without faas-cli or Docker.

Intended differences between a gateway FunctionDeployment ``fd`` and what faas-cli sends for
``stack_yaml([fd])`` (everything else is equal):

* ``image``: the stack builds a *function* image ``[<registry>/]<name>:<tag>`` from the
  template, passing ``fd["image"]`` as build arg ``BASE_IMAGE``;
* ``envProcess``: always the template's ``fprocess`` (``/oscar/bin/supervisor``), the only
  process a template-built image has; it equals the gateway's ``SUPERVISOR_PROCESS``, and
  any other value is named in a comment of the stack;
* ``limits``/``requests``: faas-cli copies only ``memory`` and ``cpu`` (a GPU request such as
  ``nvidia.com/gpu`` cannot be expressed; the stack says so in a comment) and drops the
  object when both are empty;
* ``labels``/``annotations``: faas-cli always sends them, ``{}`` when absent;
* ``envVars``: faas-cli omits an empty map.

faas-cli passes the whole file through drone/envsubst (v1.0.3) before parsing it: ``${VAR}``
is replaced from the process environment (unset = empty), ``$$`` becomes ``$`` and a
backslash followed by ``\\`` or ``/`` is dropped. :func:`envsubst_escape` escapes exactly
those sequences, so every value (user env values, the service JSON annotation) survives.
Keep faas-cli's default ``--envsubst=true``: with it off, an escaped ``$$`` stays doubled.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from .errors import OscarFaasError

#: The faas-cli template every exported function is built with.
TEMPLATE_LANG = "oscar"
#: The template's ``fprocess`` (``function-templates/oscar/template.yml``; a test keeps them
#: equal): the process every template-built image runs.
TEMPLATE_FPROCESS = "/oscar/bin/supervisor"
#: Where this repository keeps its faas-cli templates (``function-templates/<lang>/``).
TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "function-templates"
#: faas-cli's default gateway, also the default ``provider.gateway`` of exported stacks.
DEFAULT_GATEWAY = "http://127.0.0.1:8080"
#: Handler of functions with no script to bake in: the template's own (empty) function
#: folder, which exists once the template is in ``./template/``, so no per-function folder
#: is needed when the script travels in the ``SCRIPT`` env var.
SHARED_HANDLER = f"./template/{TEMPLATE_LANG}/function"
#: File name a baked-in script gets inside the handler folder (and the image's
#: ``/oscar/function/``); the standalone supervisor runs it when ``SCRIPT`` is unset.
SCRIPT_FILE = "script.sh"
#: Resource keys faas-cli copies from a stack's ``limits``/``requests``.
RESOURCE_KEYS = ("memory", "cpu")

#: faas-cli ``new`` and faas-netes' name rule (DNS-1123 label).
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
#: drone/envsubst v1.0.3 variable names.
_ENV_NAME = re.compile(r"\w+")
#: The ``${NAME<op>default}`` operators that drone/envsubst v1.0.3 evaluates as "value, or
#: the default when the value is empty" (it treats ``:+`` and ``:?`` the same way).
_DEFAULT_OPS = (":-", ":=", ":?", ":+", "=")
_YAML_WIDTH = 1 << 30


class _StackDumper(yaml.SafeDumper):
    """SafeDumper writing multi-line strings as literal blocks (``|``), which read as the
    value is; PyYAML falls back to a quoted style when a block cannot hold the value."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_StackDumper.add_representer(str, _represent_str)


class StackError(OscarFaasError, ValueError):
    """A deployment cannot be written as a stack, or a stack cannot be read back;
    the message names the function and the field."""

    status = 400


# --------------------------------------------------------------------------- envsubst


def envsubst_escape(text: str) -> str:
    """Escape ``text`` so that drone/envsubst (faas-cli's ``--envsubst``) gives it back.

    Only what envsubst would change is touched: a ``$`` before ``{`` or ``$`` becomes
    ``$$``, a backslash before a backslash or ``/`` is doubled. Text without those sequences
    is returned unchanged, so a stack stays readable (and correct with ``--envsubst=false``)
    in the common case.
    """
    out: list[str] = []
    for index, char in enumerate(text):
        following = text[index + 1] if index + 1 < len(text) else ""
        if char == "$" and following in ("{", "$"):
            out.append("$$")
        elif char == "\\" and following in ("\\", "/"):
            out.append("\\\\")
        else:
            out.append(char)
    return "".join(out)


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


# --------------------------------------------------------------------------- export


def function_image(name: str, registry: str | None = None, tag: str | None = None) -> str:
    """The image faas-cli builds for function ``name``: ``[<registry>/]<name>:<tag>``."""
    prefix = (registry or "").strip().rstrip("/")
    image = f"{name}:{tag or 'latest'}"
    return f"{prefix}/{image}" if prefix else image


def stack_yaml(deployments: Sequence[Mapping[str, Any]], *,
               gateway: str = DEFAULT_GATEWAY,
               registry: str | None = None,
               tag: str | None = None,
               scripts: Mapping[str, str] | None = None) -> str:
    """A faas-cli ``stack.yml`` that builds and deploys ``deployments``.

    Each FunctionDeployment (the JSON the gateway POSTs to ``/system/functions``) becomes a
    function with ``lang: oscar``: its image is built from ``function-templates/oscar`` on
    top of the deployment's image (``build_args.BASE_IMAGE``); env, labels, annotations,
    secrets, limits and requests are carried over so that ``faas-cli up`` sends the same
    deployment (see the module docstring for the intended differences).

    :param gateway: ``provider.gateway`` (faas-cli's ``--gateway`` and ``OPENFAAS_URL`` win).
    :param registry: image prefix, e.g. ``ghcr.io/me``; none gives ``<name>:<tag>``.
    :param tag: image tag, ``latest`` by default.
    :param scripts: function name -> script text the caller bakes into the image: those
        functions get ``handler: ./<name>`` and the caller writes ``./<name>/script.sh``
        (see :func:`write_handlers`); the others share the template's empty function folder
        and run the script from their ``SCRIPT`` env var, which always wins anyway.
    :raises StackError: a name that is not a DNS-1123 label, a duplicate, a missing image
        or a value that is not a string.
    """
    scripts = scripts or {}
    functions: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    for fd in deployments:
        name = _checked_name(fd, functions)
        functions[name] = _stack_function(fd, name, registry=registry, tag=tag,
                                          handler=f"./{name}" if name in scripts
                                          else SHARED_HANDLER, notes=notes)
    unknown = sorted(set(scripts) - set(functions))
    if unknown:
        raise StackError(f"scripts given for unknown functions: {', '.join(unknown)}")
    document = {
        "version": 1.0,
        "provider": {"name": "openfaas", "gateway": gateway},
        "functions": functions,
    }
    body = yaml.dump(document, Dumper=_StackDumper, sort_keys=False,
                     default_flow_style=False, allow_unicode=True, width=_YAML_WIDTH)
    return envsubst_escape(_header(notes) + body)


def _header(notes: Iterable[str]) -> str:
    lines = [
        "Generated by oscar-faas. Deploy already built images: faas-cli deploy -f stack.yml",
        "Build and deploy: oscar-faas stack FDL -o stack.yml (also writes ./template/oscar,",
        "the template with the supervisor source), then faas-cli up -f stack.yml",
        "Values are escaped for faas-cli's envsubst (keep --envsubst on): a dollar before {",
        "or a dollar, and a backslash before a backslash or /, are doubled.",
        *notes,
    ]
    return "".join(f"# {line}\n" for line in lines)


def _checked_name(fd: Mapping[str, Any], seen: Mapping[str, Any]) -> str:
    name = fd.get("service")
    if not isinstance(name, str) or not _DNS1123_LABEL.match(name) or len(name) > 63:
        raise StackError(f"function {name!r}: field 'service' must be a DNS-1123 label "
                         f"(lowercase letters, digits and '-', at most 63 characters)")
    if name in seen:
        raise StackError(f"function {name!r}: defined twice")
    if not isinstance(fd.get("image"), str) or not fd["image"]:
        raise StackError(f"function {name!r}: field 'image' (the base image) is missing")
    return name


def _stack_function(fd: Mapping[str, Any], name: str, *, registry: str | None,
                    tag: str | None, handler: str, notes: list[str]) -> dict[str, Any]:
    """One ``functions.<name>`` entry, in faas-cli's usual key order."""
    if fd.get("envProcess") and fd["envProcess"] != TEMPLATE_FPROCESS:
        notes.append(f"{name}: envProcess {fd['envProcess']!r} is replaced by the template's "
                     f"{TEMPLATE_FPROCESS!r}, the only process its image has")
    fn: dict[str, Any] = {
        "lang": TEMPLATE_LANG,
        "handler": handler,
        "image": function_image(name, registry, tag),
        # Written out, so ``faas-cli deploy`` needs no ./template (it reads the template's
        # only when a function has none).
        "fprocess": TEMPLATE_FPROCESS,
        "build_args": {"BASE_IMAGE": fd["image"]},
    }
    if fd.get("namespace"):
        fn["namespace"] = _string(name, "namespace", fd["namespace"])
    env = _string_map(name, "envVars", fd.get("envVars"))
    if env:
        fn["environment"] = env
    secrets = fd.get("secrets") or []
    if secrets:
        fn["secrets"] = [_string(name, "secrets", s) for s in secrets]
    for field in ("labels", "annotations"):
        values = _string_map(name, field, fd.get(field))
        if values:
            fn[field] = values
    for field in ("limits", "requests"):
        resources = _string_map(name, field, fd.get(field))
        kept = {key: resources[key] for key in RESOURCE_KEYS if resources.get(key)}
        dropped = sorted(set(k for k, v in resources.items() if v) - set(kept))
        if dropped:
            notes.append(f"{name}: {field} {', '.join(dropped)} cannot be set through "
                         f"faas-cli (only memory and cpu); set it on the cluster")
        if kept:
            fn[field] = kept
    if fd.get("constraints"):
        fn["constraints"] = [_string(name, "constraints", c) for c in fd["constraints"]]
    if fd.get("readOnlyRootFilesystem"):
        fn["readonly_root_filesystem"] = True
    return fn


def _string(name: str, field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise StackError(f"function {name!r}: field {field!r} must hold strings, "
                         f"got {type(value).__name__}")
    return value


def _string_map(name: str, field: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise StackError(f"function {name!r}: field {field!r} must be an object")
    return {_string(name, field, k): _string(name, f"{field}.{k}", v)
            for k, v in value.items()}


def write_handlers(directory: str | Path, scripts: Mapping[str, str]) -> list[Path]:
    """Write ``<directory>/<name>/script.sh`` for every script given to :func:`stack_yaml`.

    :returns: the files written.
    """
    written = []
    for name, script in scripts.items():
        if not _DNS1123_LABEL.match(name):
            raise StackError(f"function {name!r}: not a DNS-1123 label")
        path = Path(directory) / name / SCRIPT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(script)
        path.chmod(0o755)
        written.append(path)
    return written


def prepare_template(destination: str | Path, *, lang: str = TEMPLATE_LANG,
                     templates_dir: str | Path | None = None,
                     package_dir: str | Path | None = None) -> Path:
    """Copy the template to ``<destination>/<lang>`` with the supervisor source inside it.

    faas-cli builds from a copy of ``./template/<lang>/`` only, so the oscar_faas package
    the template freezes with PyInstaller must be in that folder (as ``oscar_faas/``).
    Call it with ``destination="./template"`` next to the stack file.

    :param package_dir: the ``oscar_faas`` package to copy (this one by default).
    :returns: the prepared template folder.
    """
    source = Path(templates_dir or TEMPLATES_DIR) / lang
    if not (source / "template.yml").is_file():
        raise StackError(f"template {lang!r} not found in {source.parent}")
    target = Path(destination) / lang
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "dist")
    shutil.copytree(source, target, dirs_exist_ok=True, ignore=ignore)
    package = Path(package_dir or Path(__file__).resolve().parent)
    shutil.copytree(package, target / "oscar_faas", dirs_exist_ok=True, ignore=ignore)
    return target


_ARG_BASE_IMAGE = re.compile(r"^ARG BASE_IMAGE(=\S*)?$", re.M)


def shrinkwrap(deployments: Sequence[Mapping[str, Any]], destination: str | Path, *,
               template: str | Path) -> list[Path]:
    """Build contexts that build as they are: ``<destination>/<name>/`` per function, a
    copy of the prepared ``template`` folder whose Dockerfile defaults ``BASE_IMAGE`` to the
    function's image (``faas-cli build --shrinkwrap`` writes contexts that still need
    ``--build-arg BASE_IMAGE=...``). ``docker build <destination>/<name>`` then works.

    :raises StackError: an image that cannot be a build-arg default (spaces, quotes).
    """
    written = []
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for fd in deployments:
        name, image = fd["service"], fd["image"]
        if not re.fullmatch(r"[^\s\"'$\\]+", image or ""):
            raise StackError(f"function {name!r}: image {image!r} cannot be a build default")
        target = Path(destination) / name
        shutil.copytree(template, target, dirs_exist_ok=True, ignore=ignore)
        dockerfile = target / "Dockerfile"
        text, count = _ARG_BASE_IMAGE.subn(f"ARG BASE_IMAGE={image}", dockerfile.read_text(),
                                           count=1)
        if count != 1:
            raise StackError(f"{dockerfile}: no 'ARG BASE_IMAGE' line to give a default")
        dockerfile.write_text(text)
        written.append(target)
    return written


# --------------------------------------------------------------------------- faas-cli model


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

    A re-implementation of faas-cli's mapping (reference/openfaas.md section 2), with no
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


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m oscar_faas.stack template DEST``: prepare the faas-cli template folder.

    ``stack FILE`` reads FunctionDeployment JSON (a list) and prints the stack, for
    scripting without an FDL.
    """
    parser = argparse.ArgumentParser(prog="python -m oscar_faas.stack")
    sub = parser.add_subparsers(dest="command", required=True)
    tpl = sub.add_parser("template", help="copy the oscar template (with the supervisor "
                                          "source) to DEST/oscar, e.g. DEST=./template")
    tpl.add_argument("destination")
    tpl.add_argument("--templates-dir", default=None,
                     help="the repository's function-templates folder (default: the one "
                          "next to this package, i.e. a source checkout)")
    stk = sub.add_parser("stack", help="FunctionDeployment JSON list -> stack.yml")
    stk.add_argument("file", help="JSON file, '-' for stdin")
    stk.add_argument("--gateway", default=DEFAULT_GATEWAY)
    stk.add_argument("--registry")
    stk.add_argument("--tag")
    args = parser.parse_args(argv)
    try:
        if args.command == "template":
            print(prepare_template(args.destination, templates_dir=args.templates_dir))
        else:
            raw = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
            sys.stdout.write(stack_yaml(json.loads(raw), gateway=args.gateway,
                                        registry=args.registry, tag=args.tag))
    except (StackError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
