"""The ``oscar-faas`` console script.

Server commands (``serve``, ``provider``) run oscar-faas; client commands (``apply``, ``run``,
``ls``, ``get``, ``rm``) talk to any OSCAR-compatible endpoint, with defaults matching a local
``serve`` so a local user types nothing extra; ``stack`` works offline.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from . import __version__
from .config import DEFAULT_DATA_DIR
from .errors import OscarFaasError

if TYPE_CHECKING:
    from .config import Settings
    from .plan import DeploymentPlan


def _client(args: argparse.Namespace):
    from .client import Endpoint, OscarClient
    return OscarClient(Endpoint(url=args.endpoint, user=args.user, password=args.password,
                                verify=not args.insecure))


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import serve
    from .provider.__main__ import ENV_RUNTIME, RUNTIMES
    if args.runtime not in RUNTIMES:
        print(f"error: {ENV_RUNTIME}={args.runtime!r}: must be one of {', '.join(RUNTIMES)}",
              file=sys.stderr)
        return 2
    return serve(args.host, args.port, Path(args.data_dir), args.workers, args.threads,
                 args.runtime)


def cmd_provider(args: argparse.Namespace) -> int:
    from .provider.__main__ import run
    return run(args, os.environ)


def cmd_runtime(args: argparse.Namespace) -> int:
    from .runtime.server import serve as runtime_serve
    return runtime_serve(args.host, args.port)


def _env_pairs(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise OscarFaasError(f"--env takes KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def cmd_apply(args: argparse.Namespace) -> int:
    """Apply, then (unless ``--no-wait``) wait for each service to be ready: exit 1 with the
    cause when one cannot start."""
    from .readiness import wait_ready
    client = _client(args)
    names = []
    for name, what in client.apply(args.fdl, _env_pairs(args.env)):
        print(f"{name}: {what}", flush=True)
        names.append(name)
    if args.no_wait:
        return 0
    return 0 if wait_ready(client, names, args.timeout) else 1


def cmd_run(args: argparse.Namespace) -> int:
    import io
    client = _client(args)
    if args.input:
        path = Path(args.input)
        try:
            source = path.open("rb")
        except OSError as exc:
            raise OscarFaasError(f"cannot read input file {path}: {exc.strerror}") from None
        size = path.stat().st_size
    else:
        data = args.text_input.encode("utf-8")
        source, size = io.BytesIO(data), len(data)
    out = open(args.output, "wb") if args.output else sys.stdout.buffer
    try:
        with source:
            client.run(args.service, source, size, out, token=args.token,
                       timeout=args.timeout)
    finally:
        if args.output:
            out.close()
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from .readiness import deployment, state_text
    client = _client(args)
    services = client.list_services()
    rows = [("NAME", "IMAGE", "CPU", "MEMORY", "STATE")] + [
        (s.get("name", ""), s.get("image", ""), s.get("cpu", ""), s.get("memory", ""),
         state_text(deployment(client, s.get("name", "")))) for s in services]
    widths = [max(len(str(r[i])) for r in rows) for i in range(5)]
    for row in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    import yaml
    service = _client(args).get_service(args.service)
    if args.json:
        print(json.dumps(service, indent=2))
    else:
        print(yaml.safe_dump(service, sort_keys=False), end="")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    client = _client(args)
    for name in args.service:
        client.remove_service(name, purge=args.purge)
        print(f"{name}: removed" + (" (buckets purged)" if args.purge else ""))
    return 0


def stack_plans(fdl_path: str | Path, settings: Settings) -> list[DeploymentPlan]:
    """The plans ``stack`` exports for an FDL file: the very plans a gateway with
    ``settings`` makes when the file is applied (same defaults, checks and translation).

    :raises OscarFaasError: the file does not load, or a service breaks a rule.
    """
    from .fdl import load_fdl
    from .plan import plan_deployment, prepare_service

    return [plan_deployment(prepare_service(service, settings), settings)
            for service in load_fdl(fdl_path).services]


def since_time(value: str, now: float | None = None) -> str:
    """``--since``: a duration back from now (``30s``, ``10m``, ``2h``, ``1h30m``) or an
    RFC 3339 time, as RFC 3339 UTC for the API.

    :raises OscarFaasError: neither.
    """
    import time
    from datetime import datetime, timezone

    from .contract import parse_duration
    if not value:
        return ""
    seconds = parse_duration(value)  # None for anything but a duration
    if seconds is not None:
        moment = datetime.fromtimestamp((time.time() if now is None else now) - seconds,
                                        timezone.utc)
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise OscarFaasError(f"--since takes a duration (10m, 1h) or an RFC 3339 time, "
                             f"got {value!r}") from None
    return value


def cmd_logs(args: argparse.Namespace) -> int:
    for message in _client(args).logs(args.service, since_time(args.since), args.tail,
                                      args.follow):
        print(f"{message.get('timestamp', '')} {message.get('text', '')}", flush=True)
    return 0


def cmd_stack(args: argparse.Namespace) -> int:
    from .config import Settings
    from .stack import stack_yaml

    # The stack builds function images *from* the FDL images: deploy those as the base.
    settings = dataclasses.replace(Settings.from_env(), function_image="")
    plans = stack_plans(args.fdl, settings)
    deployments = [plan.deployment for plan in plans]
    text = stack_yaml(deployments, gateway=args.gateway, registry=args.registry, tag=args.tag)
    if not args.output and not args.shrinkwrap:
        sys.stdout.write(text)
        print("note: each service reads its secret (its token, checked by the function; "
              "storage credentials): with -o FILE the secrets are written beside the stack, "
              "with the faas-cli commands that create them", file=sys.stderr)
        return 0
    from .stack import prepare_template, shrinkwrap
    base = Path(args.output).resolve().parent if args.output else Path.cwd()
    template = prepare_template(base / "template")  # faas-cli reads ./template/<lang>
    if args.output:
        Path(args.output).write_text(text)
        for plan in plans:
            if plan.secret is not None:  # the token in the annotation is the one in here
                path = base / "secrets" / f"{plan.secret.name}.json"
                path.parent.mkdir(mode=0o700, exist_ok=True)
                path.touch(mode=0o600)
                path.write_text(plan.secret.value)
                print(f"wrote {path} (keep it secret); create it first: faas-cli secret "
                      f"create {plan.secret.name} --from-file {path}", file=sys.stderr)
        print(f"wrote {args.output} and {template}; build, push and deploy with: "
              f"faas-cli up -f {args.output}", file=sys.stderr)
    if args.shrinkwrap:
        for context in shrinkwrap(deployments, args.shrinkwrap, template=template):
            print(f"wrote {context}: docker build -t <image> {context}", file=sys.stderr)
    return 0


def _client_flags(p: argparse.ArgumentParser) -> None:
    env = os.environ
    p.add_argument("--endpoint", default=env.get("OSCAR_ENDPOINT", "http://127.0.0.1:8080"),
                   help="OSCAR endpoint (env OSCAR_ENDPOINT; default %(default)s)")
    p.add_argument("--user", default=env.get("OSCAR_USERNAME", "oscar"),
                   help="basic-auth user (env OSCAR_USERNAME; default %(default)s)")
    p.add_argument("--password", default=env.get("OSCAR_PASSWORD", "oscar"),
                   help="basic-auth password (env OSCAR_PASSWORD; default: oscar)")
    p.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oscar-faas",
        description="OSCAR-compatible serverless gateway on OpenFaaS. Start it with 'serve', "
                    "then deploy FDL files with 'apply' and invoke them with 'run'.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "serve", help="run the gateway (embedded provider unless OPENFAAS_URL is set)",
        description="Run the OSCAR API gateway under gunicorn. With OPENFAAS_URL unset it "
                    "also starts the embedded local provider, which runs functions as host "
                    "processes (--runtime host) or as containers of their images "
                    "(--runtime container). Settings come from the environment (see the README).")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    p.add_argument("--port", type=int, default=8080, help="port (default %(default)s)")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                   help="embedded provider state (default %(default)s)")
    p.add_argument("--workers", type=int, default=1,
                   help="gunicorn worker processes (default 1: about 45 MB each; add one per "
                        "spare core when the gateway itself is the bottleneck)")
    p.add_argument("--threads", type=int, default=32,
                   help="threads per worker for the management API (/system/*); /run calls "
                        "do not use them: any number wait on the worker's event loop "
                        "(default %(default)s)")
    from .provider.__main__ import ENV_RUNTIME, RUNTIMES, default_runtime
    p.add_argument("--runtime", choices=RUNTIMES, default=default_runtime(),
                   help="embedded provider: run functions as 'host' processes or as "
                        "'container's of their own images (Docker or Podman at DOCKER_HOST; "
                        f"default: ${ENV_RUNTIME}, else host)")
    p.set_defaults(func=cmd_serve)

    from .runtime import DESCRIPTION as runtime_description
    from .runtime.__main__ import add_arguments as runtime_arguments
    p = sub.add_parser("runtime", help="run one OSCAR function as a long-lived HTTP server "
                       "(the function image's process)", description=runtime_description,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    runtime_arguments(p)
    p.set_defaults(func=cmd_runtime)

    p = sub.add_parser(
        "provider", help="run only the embedded OpenFaaS-compatible provider",
        description="Run the embedded local provider alone: the OpenFaaS REST API on one "
                    "machine. Its /system routes need basic auth when OPENFAAS_USERNAME and "
                    "OPENFAAS_PASSWORD are set.")
    from .provider.__main__ import add_arguments
    add_arguments(p)
    p.set_defaults(func=cmd_provider)

    p = sub.add_parser("apply", help="create or update the services of an FDL file",
                       description="Create or update every service of an FDL file (any "
                                   "cluster-id key is accepted), then wait until each is "
                                   "ready, showing what takes long; exit 1 with the cause "
                                   "when one cannot start.")
    p.add_argument("fdl", help="FDL YAML file")
    p.add_argument("--env", "-e", action="append", default=[], metavar="KEY=VALUE",
                   help="add or override an environment variable of every service "
                        "(repeatable)")
    p.add_argument("--no-wait", action="store_true",
                   help="do not wait for the services to be ready")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds to wait for each service to be ready (default %(default)g)")
    _client_flags(p)
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("run", help="invoke a service synchronously",
                       description="Invoke a service synchronously: the input goes base64 "
                                   "encoded; a base64 answer is decoded, text is printed as "
                                   "it came.")
    p.add_argument("service", help="service name")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", "-f", "--file-input", dest="input", help="input file")
    src.add_argument("--text-input", "-i", dest="text_input", help="input text")
    p.add_argument("--output", "-o", help="write the answer here (default: stdout)")
    p.add_argument("--token", "-t", help="service token (default: use --user/--password)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds to wait for the answer (default: no limit)")
    _client_flags(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("ls", help="list services and their state (Ready, Starting, Failed: "
                                  "cause)")
    _client_flags(p)
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("get", help="show a service (YAML)")
    p.add_argument("service")
    p.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    _client_flags(p)
    p.set_defaults(func=cmd_get)

    p = sub.add_parser("rm", help="remove services (their buckets stay unless --purge)")
    p.add_argument("service", nargs="+")
    p.add_argument("--purge", action="store_true",
                   help="also delete the services' minio.default buckets and their contents")
    _client_flags(p)
    p.set_defaults(func=cmd_rm)

    p = sub.add_parser("logs", help="print a service's log lines",
                       description="Print the log lines of a service's function (the "
                                   "supervisor's lines at the service's log_level, and its "
                                   "stderr), oldest first")
    p.add_argument("service")
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep printing new lines as they come")
    p.add_argument("--since", default="",
                   help="only lines newer than a duration (10m, 1h) or an RFC 3339 time")
    p.add_argument("--tail", type=int, default=0, help="only the last N lines")
    _client_flags(p)
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("stack", help="print a faas-cli stack.yml for an FDL file",
                       description="Print a faas-cli stack.yml that builds (from "
                                   "function-templates/oscar) and deploys the same functions "
                                   "the gateway would deploy: faas-cli up -f stack.yml")
    p.add_argument("fdl", help="FDL YAML file")
    p.add_argument("--registry", default=None, help="image registry/prefix for built images")
    p.add_argument("--gateway", default="http://127.0.0.1:8080",
                   help="OpenFaaS gateway URL (default %(default)s)")
    p.add_argument("--tag", default=None, help="image tag (default latest)")
    p.add_argument("--output", "-o", default=None,
                   help="write the stack to this file, and the template faas-cli builds "
                        "from to ./template/oscar beside it (faas-cli up works in one step)")
    p.add_argument("--shrinkwrap", default=None, metavar="DIR",
                   help="also write DIR/<name>/, a build context per function that builds "
                        "as it is (docker build DIR/<name>, no --build-arg needed)")
    p.set_defaults(func=cmd_stack)

    from .cli_jobs import add_parsers as add_job_parsers
    add_job_parsers(sub, _client_flags, _client)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except OscarFaasError as exc:
        print(f"oscar-faas: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
