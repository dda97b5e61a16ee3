"""faas-cli ``stack.yml`` export.

``oscar-faas stack FDL`` prints a stack file so that a cluster operator can build real
function images (``function-templates/oscar`` on top of each service's image) and deploy them
with ``faas-cli up``, outside the gateway. The promise is that ``faas-cli up -f stack.yml``
sends OpenFaaS the *same* FunctionDeployment the gateway would send, so a service deployed
either way behaves (and is listed by the gateway) the same. ``tests/packaging/faascli_model.py``
re-implements faas-cli's mapping so tests check that promise field by field without faas-cli
or Docker.

Intended differences between a gateway FunctionDeployment ``fd`` and what faas-cli sends for
``stack_yaml([fd])`` (everything else is equal):

* ``image``: the stack builds a *function* image ``[<registry>/]<name>:<tag>`` from the
  template, passing ``fd["image"]`` as build arg ``BASE_IMAGE``;
* ``envProcess``: always the template's ``fprocess``, the only process a template-built image
  has; it is the gateway's ``contract.SUPERVISOR_PROCESS`` (a test keeps them equal), and
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

from . import SOURCE_ROOT
from .contract import SUPERVISOR_PROCESS, is_dns1123_label
from .errors import OscarFaasError

#: The faas-cli template every exported function is built with.
TEMPLATE_LANG = "oscar"
#: Where this repository keeps its faas-cli templates (``function-templates/<lang>/``).
TEMPLATES_DIR = SOURCE_ROOT / "function-templates"
#: faas-cli's default gateway, also the default ``provider.gateway`` of exported stacks.
DEFAULT_GATEWAY = "http://127.0.0.1:8080"
#: Handler of every function: the template's own (empty) function folder, which exists once
#: the template is in ``./template/``; the script travels in the ``SCRIPT`` env var.
SHARED_HANDLER = f"./template/{TEMPLATE_LANG}/function"
#: Resource keys faas-cli copies from a stack's ``limits``/``requests``.
RESOURCE_KEYS = ("memory", "cpu")

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


# --------------------------------------------------------------------------- export


def function_image(name: str, registry: str | None = None, tag: str | None = None) -> str:
    """The image faas-cli builds for function ``name``: ``[<registry>/]<name>:<tag>``."""
    prefix = (registry or "").strip().rstrip("/")
    image = f"{name}:{tag or 'latest'}"
    return f"{prefix}/{image}" if prefix else image


def stack_yaml(deployments: Sequence[Mapping[str, Any]], *,
               gateway: str = DEFAULT_GATEWAY,
               registry: str | None = None,
               tag: str | None = None) -> str:
    """A faas-cli ``stack.yml`` that builds and deploys ``deployments``.

    Each FunctionDeployment (the JSON the gateway POSTs to ``/system/functions``) becomes a
    function with ``lang: oscar``: its image is built from ``function-templates/oscar`` on
    top of the deployment's image (``build_args.BASE_IMAGE``); env, labels, annotations,
    secrets, limits and requests are carried over so that ``faas-cli up`` sends the same
    deployment (see the module docstring for the intended differences).

    :param gateway: ``provider.gateway`` (faas-cli's ``--gateway`` and ``OPENFAAS_URL`` win).
    :param registry: image prefix, e.g. ``ghcr.io/me``; none gives ``<name>:<tag>``.
    :param tag: image tag, ``latest`` by default.
    :raises StackError: a name that is not a DNS-1123 label, a duplicate, a missing image
        or a value that is not a string.
    """
    functions: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    for fd in deployments:
        name = _checked_name(fd, functions)
        functions[name] = _stack_function(fd, name, registry=registry, tag=tag, notes=notes)
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
    if not isinstance(name, str) or not is_dns1123_label(name):
        raise StackError(f"function {name!r}: field 'service' must be a DNS-1123 label "
                         f"(lowercase letters, digits and '-', at most 63 characters)")
    if name in seen:
        raise StackError(f"function {name!r}: defined twice")
    if not isinstance(fd.get("image"), str) or not fd["image"]:
        raise StackError(f"function {name!r}: field 'image' (the base image) is missing")
    return name


def _stack_function(fd: Mapping[str, Any], name: str, *, registry: str | None,
                    tag: str | None, notes: list[str]) -> dict[str, Any]:
    """One ``functions.<name>`` entry, in faas-cli's usual key order."""
    if fd.get("envProcess") and fd["envProcess"] != SUPERVISOR_PROCESS:
        notes.append(f"{name}: envProcess {fd['envProcess']!r} is replaced by the template's "
                     f"{SUPERVISOR_PROCESS!r}, the only process its image has")
    fn: dict[str, Any] = {
        "lang": TEMPLATE_LANG,
        "handler": SHARED_HANDLER,
        "image": function_image(name, registry, tag),
        # Written out, so ``faas-cli deploy`` needs no ./template (it reads the template's
        # only when a function has none).
        "fprocess": SUPERVISOR_PROCESS,
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
