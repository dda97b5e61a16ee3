"""``python -m oscar_faas.provider`` and ``oscar-faas provider``: run the embedded local
provider on its own. Both are this module (:func:`add_arguments` + :func:`run`), so they
behave the same: options, logging, SIGTERM and the credential check."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Mapping, Sequence

from ..config import DEFAULT_DATA_DIR
from ..errors import ConfigError, OscarFaasError
from ..httpserver import HttpLimits

#: Where each OSCAR function's runtime runs: a host process, or a container of its image.
RUNTIMES = ("host", "container")
#: The default of ``--runtime`` (``oscar-faas serve`` and ``oscar-faas provider``).
ENV_RUNTIME = "OSCAR_FAAS_RUNTIME"

DESCRIPTION = """\
Run the oscar-faas embedded local provider: an OpenFaaS-compatible REST API
(/system/functions, /system/secrets, /function/<name>, /healthz, ...) on one machine.
OSCAR services (envProcess /oscar/bin/supervisor) get one long-lived runtime each
(oscar-faas runtime; warm workers with OSCAR_WORKER), to which /function/<name> is proxied:
with --runtime host (the default) a process on this host (the function's image is ignored),
with --runtime container a container of the function's own image through the Docker Engine
API at DOCKER_HOST (Docker, or Podman's `podman system service`). Any other envProcess
gets a runtime on this host in classic-watchdog mode: a process per call inside it (request
body on stdin, stdout as the answer, exec_timeout, max_inflight), its image ignored.
SIGTERM or Ctrl-C stops the runtimes and what they run.

Deployments and secrets are stored under --data-dir and survive a restart.
Basic auth on /system/* and /function/* is enabled when OPENFAAS_USERNAME and
OPENFAAS_PASSWORD are set, or with --credentials-file (better: the environment a process
was started with stays readable in /proc to processes of the same user). Run as root, each
function runs as an unprivileged user of its own (OSCAR_FAAS_ISOLATION=off: not isolated).
"""

#: Variables the provider removes from its environment at start: its own credentials and
#: the gateway's secrets, which nothing started from here may inherit.
SECRET_VARIABLES = ("OPENFAAS_USERNAME", "OPENFAAS_PASSWORD", "OSCAR_PASSWORD",
                    "MINIO_SECRET_KEY", "MINIO_ACCESS_KEY")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m oscar_faas.provider", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The provider's options, for this module's parser and ``oscar-faas provider``."""
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8081,
                        help="port to listen on, 0 for any free one (default: %(default)s)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help="where deployments, secrets and secret files are kept "
                             "(default: %(default)s)")
    parser.add_argument("--credentials-file", type=Path, default=None,
                        help="read the basic-auth username (first line) and password (second "
                             "line) from this file instead of OPENFAAS_USERNAME and "
                             "OPENFAAS_PASSWORD (what `oscar-faas serve` does: 0600, in its "
                             "data dir)")
    parser.add_argument("--runtime", choices=RUNTIMES, default=default_runtime(),
                        help="where functions run: 'host' processes, or 'container's of "
                             f"their images (default: ${ENV_RUNTIME}, else host)")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="provider log verbosity (default: %(default)s)")
    parser.add_argument("--log-file", type=Path, default=None,
                        help="log to this file, rotated at --log-max-bytes (default: stderr)")
    parser.add_argument("--log-max-bytes", type=int, default=10 * 1024 * 1024,
                        help="rotate --log-file at this size (default: %(default)s)")
    parser.add_argument("--log-backups", type=int, default=3,
                        help="rotated log files kept (default: %(default)s)")
    defaults = HttpLimits()
    parser.add_argument("--max-header-size", type=int, default=defaults.max_header_size,
                        help="largest request line plus headers in bytes, 431 above "
                             "(default: %(default)s)")
    parser.add_argument("--header-timeout", type=float, default=defaults.header_timeout,
                        help="seconds a client has to send a request head, from its first "
                             "byte (408 after; default: %(default)s)")
    parser.add_argument("--keepalive-timeout", type=float, default=defaults.keepalive_timeout,
                        help="seconds an idle keep-alive connection stays open; then it is "
                             "closed quietly (default: %(default)s)")
    parser.add_argument("--first-byte-timeout", type=float, default=defaults.first_byte_timeout,
                        help="seconds a new connection may stay silent; then it is closed "
                             "quietly (default: %(default)s)")
    parser.add_argument("--socket-timeout", type=float, default=defaults.body_timeout,
                        help="seconds a request body may stay silent, or an answer unread by "
                             "its client; then the connection is closed (default: %(default)s)")
    parser.add_argument("--max-connections", type=int, default=defaults.max_connections,
                        help="connections open at once; over it, the one idle the longest is "
                             "closed to make room, else the newest is answered 503 (default: "
                             "%(default)s)")


def default_runtime(env: Mapping[str, str] | None = None) -> str:
    """``$OSCAR_FAAS_RUNTIME``, else ``host`` (checked by :func:`run`)."""
    return ((os.environ if env is None else env).get(ENV_RUNTIME) or "host").strip().lower()


def _stop(signum: int, frame: FrameType | None) -> None:
    """The first SIGTERM or SIGINT stops the provider; later ones are ignored, so that they
    cannot cut its shutdown short (stopping every function and removing its container).
    Ctrl-C under ``serve`` brings two: the terminal's SIGINT, then ``serve``'s SIGTERM.

    Ignored by a handler that does nothing, not by ``SIG_IGN``: an ignored signal stays
    ignored across exec, so a runtime still being started during the shutdown would ignore
    SIGTERM too, and with it its lifeline."""
    signal.signal(signal.SIGTERM, _ignore)
    signal.signal(signal.SIGINT, _ignore)
    raise KeyboardInterrupt


def _ignore(signum: int, frame: FrameType | None) -> None:
    """A signal received while the provider stops: nothing to do."""


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    return run(build_parser().parse_args(argv), os.environ if env is None else env)


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Serve until SIGTERM or Ctrl-C; the exit code (2: only one credential is set)."""
    log_format = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    if getattr(args, "log_file", None):
        from logging.handlers import RotatingFileHandler
        handler: logging.Handler = RotatingFileHandler(
            args.log_file, maxBytes=max(1, args.log_max_bytes),
            backupCount=max(0, args.log_backups))
        handler.setFormatter(logging.Formatter(log_format))
        logging.basicConfig(level=args.log_level, handlers=[handler])
    else:
        logging.basicConfig(level=args.log_level, stream=sys.stderr, format=log_format)
    username = env.get("OPENFAAS_USERNAME") or None
    password = env.get("OPENFAAS_PASSWORD") or None
    if env is os.environ:
        for name in SECRET_VARIABLES:  # nothing started from here inherits them
            os.environ.pop(name, None)
    credentials_file = getattr(args, "credentials_file", None)
    if credentials_file is not None:
        try:
            lines = credentials_file.expanduser().read_text().splitlines()
        except OSError as err:
            print(f"error: --credentials-file: {err}", file=sys.stderr)
            return 2
        username = (lines[0].strip() if lines else "") or None
        password = (lines[1].strip() if len(lines) > 1 else "") or None
    if bool(username) != bool(password):
        print("error: set both OPENFAAS_USERNAME and OPENFAAS_PASSWORD, or neither",
              file=sys.stderr)
        return 2
    runtime = getattr(args, "runtime", "host")
    if runtime not in RUNTIMES:
        print(f"error: {ENV_RUNTIME}={runtime!r}: must be one of {', '.join(RUNTIMES)}",
              file=sys.stderr)
        return 2
    from .http.startup import serve

    limits = HttpLimits(max_header_size=max(1024, args.max_header_size),
                        header_timeout=args.header_timeout,
                        keepalive_timeout=args.keepalive_timeout,
                        first_byte_timeout=args.first_byte_timeout,
                        body_timeout=args.socket_timeout,
                        write_timeout=args.socket_timeout,
                        max_connections=max(1, args.max_connections),
                        strict_transfer_encoding=True)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        serve(args.host, args.port, args.data_dir.expanduser(), username, password,
              limits=limits, runtime=runtime)
    except KeyboardInterrupt:
        logging.getLogger("oscar_faas.provider").info("stopped")
    except (ConfigError, OscarFaasError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
